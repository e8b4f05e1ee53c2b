"""distill.data.views: view 0 is the image, view k >= 1 a seeded augmentation, same everywhere."""

from __future__ import annotations

import hashlib
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import distill
from distill.data import DataError
from distill.data.views import (
    _crop_box,
    _Uniforms,
    encode_view,
    png_bytes,
    view_array,
    view_bytes,
    view_content_id,
    view_image,
)


def _picture(h: int = 48, w: int = 64) -> np.ndarray:
    """A structured RGB image (gradients and a bright square), so crops and flips show."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], axis=-1)
    arr[5:15, 5:20] = 255
    return arr.astype(np.uint8)


def test_view_zero_is_the_image(tmp_path):
    arr = _picture()
    img = Image.fromarray(arr)
    assert np.array_equal(np.asarray(view_image(img, "a.png", 0)), arr)
    grey = img.convert("L")
    out = view_image(grey, "a.png", 0)
    assert out.mode == "RGB" and out.size == grey.size
    path = tmp_path / "a.jpg"
    img.save(path, format="JPEG")
    data, media_type = view_bytes(path, "a.jpg", 0)
    assert data == path.read_bytes() and media_type == "image/jpeg"


def test_views_are_deterministic_and_differ_by_view_and_id():
    img = Image.fromarray(_picture())
    views = [np.asarray(view_image(img, "d/c/x.png", k)) for k in range(1, 6)]
    again = [np.asarray(view_image(img, "d/c/x.png", k)) for k in range(1, 6)]
    for a, b in zip(views, again, strict=True):
        assert np.array_equal(a, b)
        assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    for i in range(len(views)):
        assert not np.array_equal(views[i], _picture())
        for j in range(i + 1, len(views)):
            assert not np.array_equal(views[i], views[j])
    other = np.asarray(view_image(img, "d/c/y.png", 1))
    assert not np.array_equal(other, views[0])


def test_views_match_in_a_fresh_process(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(_picture()).save(path)
    here = [hashlib.sha256(view_bytes(path, "dom/cls/p.png", k)[0]).hexdigest() for k in (1, 2)]
    code = (
        "import hashlib, sys\n"
        "from distill.data.views import view_bytes\n"
        "for k in (1, 2):\n"
        "    print(hashlib.sha256(view_bytes(sys.argv[1], 'dom/cls/p.png', k)[0]).hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(distill.__file__).resolve().parents[1],
    )
    assert out.stdout.split() == here


# sha256 of view 3 of _picture() under id "golden/cat/0001.png", recorded when the algorithm
# was written (numpy 2.4, Pillow 13; the computation uses neither's resampling or RNG).
GOLDEN = "76559aafe1ae21e21c8f3e14135d70c8d7fe539a18daf4e4dad4a581efedc70e"


def test_golden_view_pixels_do_not_change():
    # Cached teacher views are keyed by these exact pixels: a change here silently
    # invalidates every cached augmented view, so it must be deliberate.
    arr = view_array(_picture(), "golden/cat/0001.png", 3)
    assert hashlib.sha256(arr.tobytes()).hexdigest() == GOLDEN


def test_hflip_off_never_mirrors():
    arr = _picture()
    flipped = 0
    for k in range(1, 21):
        with_flip = view_array(arr, "f.png", k)
        without = view_array(arr, "f.png", k, hflip=False)
        if np.array_equal(with_flip, without):
            continue
        # Same crop and colour change; only the mirror differs (colour ops commute with it).
        assert np.array_equal(with_flip, without[:, ::-1])
        flipped += 1
    assert 3 <= flipped <= 17  # p = 0.5 over 20 views


def test_crop_boxes_stay_in_bounds_and_scale():
    areas, ratios = [], []
    for i in range(300):
        top, left, h, w = _crop_box(_Uniforms(f"id{i}", 1), 64, 48)
        assert top >= 0 and top + h <= 48 and left >= 0 and left + w <= 64
        areas.append(h * w / (64 * 48))
        ratios.append(w / h)
    assert min(areas) >= 0.66 and max(areas) <= 1.0
    assert min(areas) < 0.75 and max(areas) > 0.95
    assert min(ratios) >= 0.7 and max(ratios) <= 1.4
    u = _Uniforms("x", 1)
    draws = [u() for _ in range(2000)]
    assert min(draws) >= 0.0 and max(draws) < 1.0
    assert math.isclose(sum(draws) / len(draws), 0.5, abs_tol=0.03)


def test_png_bytes_roundtrip_and_view_bytes(tmp_path):
    arr = _picture(300, 301)  # more than one 64 KB stored block
    data = png_bytes(arr)
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.mode == "RGB"
        assert np.array_equal(np.asarray(im), arr)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    data1, media_type = view_bytes(path, "x.png", 1)
    assert media_type == "image/png"
    with Image.open(io.BytesIO(data1)) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), view_array(arr, "x.png", 1))


def test_view_bytes_rejects_bad_files(tmp_path, png_bomb):
    (tmp_path / "t.png").write_text("not an image")
    with pytest.raises(DataError):
        view_bytes(tmp_path / "t.png", "t.png", 0)
    with pytest.raises(DataError):
        view_bytes(tmp_path / "t.png", "t.png", 1)
    (tmp_path / "bomb.png").write_bytes(png_bomb)
    with pytest.raises(DataError, match="too large"):
        view_bytes(tmp_path / "bomb.png", "bomb.png", 1)
    with pytest.raises(ValueError):
        view_array(_picture(), "x", -1)


def test_a_views_content_id_names_everything_its_pixels_depend_on():
    from distill.data.views import view_content_id

    base = {"hflip": True, "encoding": "jpeg-q90"}
    ref = view_content_id("ab" * 32, "d/c/x.png", 1, **base)
    assert ref == view_content_id("ab" * 32, "d/c/x.png", 1, **base)  # stable
    others = {
        view_content_id("cd" * 32, "d/c/x.png", 1, **base),  # another source file
        view_content_id("ab" * 32, "d/c/y.png", 1, **base),  # another seed
        view_content_id("ab" * 32, "d/c/x.png", 2, **base),  # another view
        view_content_id("ab" * 32, "d/c/x.png", 1, hflip=False, encoding="jpeg-q90"),
        view_content_id("ab" * 32, "d/c/x.png", 1, hflip=True, encoding="png-zlib"),
    }
    assert ref not in others and len(others) == 5
    with pytest.raises(ValueError, match="view 0"):
        view_content_id("ab" * 32, "d/c/x.png", 0, **base)


def test_encode_view_png_is_lossless_and_jpeg_close():
    from distill.data.views import encode_view, view_encoding

    arr = view_array(_picture(), "d/c/x.png", 1)
    assert view_encoding(("image/png", "image/jpeg")) == "jpeg-q90"
    assert view_encoding(("image/png",)) == "png-zlib"
    data, media_type = encode_view(arr, "png-zlib")
    assert media_type == "image/png" and len(data) < len(png_bytes(arr))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), arr)
    data, media_type = encode_view(arr, "jpeg-q90")
    assert media_type == "image/jpeg" and data[:3] == b"\xff\xd8\xff"
    decoded = np.asarray(Image.open(io.BytesIO(data))).astype(int)
    assert decoded.shape == arr.shape and np.abs(decoded - arr).mean() < 8
    with pytest.raises(ValueError, match="unknown view encoding"):
        encode_view(arr, "gif")


def test_a_view_is_computed_from_the_bytes_its_content_id_names(tmp_path):
    """A file replaced while its chunk is being built (after it was read and hashed, before
    its view was computed): the view was computed from the new file, but named by the old
    bytes' digest, so the cache kept the new picture's answer under the old picture's key
    (served for it on every later run)."""
    from distill.view_requests import build_requests, upload_encoding
    from tests.data.test_exif_orientation import FakeViewClient, Item

    path = tmp_path / "d" / "c" / "img.png"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    old = path.read_bytes()

    class ReplacingClient(FakeViewClient):
        def cached(self, kind, keys, fallback=()):  # after the read, before the views
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
            return super().cached(kind, keys, fallback)

    built = build_requests(ReplacingClient(), [Item(path, "c/img.png", 1)], hflip=True)
    [request] = built.requests
    assert request.image.content_id == view_content_id(
        hashlib.sha256(old).hexdigest(), "c/img.png", 1, hflip=True,
        encoding=upload_encoding("local:hash"),
    )  # fmt: skip
    src = Image.open(io.BytesIO(old)).convert("RGB")
    want, _ = encode_view(
        view_array(src, "c/img.png", 1, hflip=True), upload_encoding("local:hash")
    )
    assert request.image.data == want

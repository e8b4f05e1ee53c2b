"""EXIF orientation: the teacher's view 0, its augmented views and the student's pixels are
the same upright picture, whether or not the provider honours EXIF; files without an
orientation still upload their exact bytes (their cache keys do not change)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps
from pydantic import SecretStr

from cache import EmbeddingStore
from distill.cli import main
from distill.data import Sample, scan
from distill.data.views import (
    exif_orientation,
    load_rgb,
    view_array,
    view_bytes,
    view_content_id,
)
from distill.server import HashBackend, ServerConfig, ServerThread, create_app
from distill.view_requests import build_requests, upload_encoding
from vlmclient import AnswerResult, EmbeddingResult, ImageEmbeddingRequest, Kind
from vlmclient import Image as VImage

SIDE = 64
ORIENTATION = ExifTags.Base.Orientation
TOKEN = "exif-token-5c1d"
# The transpose that undoes each orientation's display transform: the stored pixels of an
# image whose upright picture is U are U.transpose(_STORE[o]).
_STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def upright_picture(w: int = SIDE, h: int = SIDE) -> np.ndarray:
    """Smooth (JPEG keeps it closely) and asymmetric: every flip or turn of it differs."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 60)], axis=-1)
    arr[: h // 4, : w // 3] = (250, 250, 250)  # a bright block in the top-left corner
    return arr.astype(np.uint8)


def write_oriented(
    path: Path, orientation: int | None, fmt: str = "JPEG", upright: np.ndarray | None = None
) -> Path:
    """A file whose pixels are stored as a camera stores them for ``orientation`` (None:
    no EXIF at all), so that a viewer honouring EXIF shows ``upright``."""
    up = Image.fromarray(upright_picture() if upright is None else upright)
    method = _STORE[orientation or 1]
    stored = up if method is None else up.transpose(method)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, object] = {"quality": 95} if fmt == "JPEG" else {}
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        exif[ExifTags.Base.Make] = "PhoneCam"
        kwargs["exif"] = exif
    stored.save(path, fmt, **kwargs)
    return path


def decode_ignoring_exif(data: bytes) -> np.ndarray:
    """What a provider that ignores EXIF sees."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int64) - b.astype(np.int64)).mean())


JPEG_TOLERANCE = 3.0  # mean |difference| of two q95 JPEG round trips of the smooth picture
FAR = 30.0  # a flipped or turned picture differs by far more than that


def sample(path: Path, root: Path) -> Sample:
    return Sample(id=path.relative_to(root).as_posix(), path=path, label=0, domain="d")


# --- (a) the student's pixels -------------------------------------------------------------


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_student_pixels_are_upright(tmp_path: Path, orientation: int) -> None:
    from distill.data.loaders import load_image  # torch: imported by the test, not at collection

    path = write_oriented(tmp_path / "d" / "c" / "photo.jpg", orientation)
    s = sample(path, tmp_path)
    pixels = load_image(s, 0, SIDE).transpose(1, 2, 0)
    assert mean_diff(pixels, upright_picture()) < JPEG_TOLERANCE
    # and exactly what PIL's own exif_transpose makes of the file
    with Image.open(path) as im:
        reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.array_equal(np.asarray(load_rgb(path)), reference)
    # augmented views are made from the upright pixels too
    assert np.array_equal(load_image(s, 1, SIDE).transpose(1, 2, 0), view_array(reference, s.id, 1))


def test_non_square_photo_is_turned(tmp_path: Path) -> None:
    up = upright_picture(w=48, h=32)
    path = write_oriented(tmp_path / "d" / "c" / "wide.jpg", 6, upright=up)
    with Image.open(path) as im:
        assert im.size == (32, 48)  # stored sideways
    rgb = load_rgb(path)
    assert rgb.size == (48, 32)
    assert mean_diff(np.asarray(rgb), up) < JPEG_TOLERANCE


# --- (b) what is uploaded as view 0 --------------------------------------------------------


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_view0_upload_is_upright_without_exif(tmp_path: Path, orientation: int) -> None:
    from distill.data.loaders import load_image  # torch: imported by the test, not at collection

    path = write_oriented(tmp_path / "d" / "c" / "photo.jpg", orientation)
    data, media_type = view_bytes(path, "d/c/photo.jpg", 0)
    assert media_type == "image/jpeg" and data != path.read_bytes()
    seen = decode_ignoring_exif(data)
    assert mean_diff(seen, upright_picture()) < JPEG_TOLERANCE
    stored = decode_ignoring_exif(path.read_bytes())
    assert mean_diff(seen, stored) > FAR
    # a provider honouring EXIF sees the same: no orientation is left to apply
    with Image.open(io.BytesIO(data)) as im:
        assert im.getexif().get(ORIENTATION, 1) == 1
        assert np.array_equal(np.asarray(ImageOps.exif_transpose(im).convert("RGB")), seen)
    # the teacher's view 0 and the student's view 0 are the same picture
    student = load_image(sample(path, tmp_path), 0, SIDE).transpose(1, 2, 0)
    assert mean_diff(seen, student) < JPEG_TOLERANCE


def test_png_with_orientation_is_uploaded_as_lossless_png(tmp_path: Path) -> None:
    path = write_oriented(tmp_path / "d" / "c" / "shot.png", 6, fmt="PNG")
    data, media_type = view_bytes(path, "d/c/shot.png", 0)
    assert media_type == "image/png"
    assert np.array_equal(decode_ignoring_exif(data), upright_picture())
    assert np.array_equal(np.asarray(load_rgb(path)), upright_picture())


class FakeViewClient:
    """The cache-lookup side of a client: nothing is cached, preparation changes nothing."""

    teacher = "local:hash"

    def prepare(self, item: ImageEmbeddingRequest) -> ImageEmbeddingRequest:
        return item

    def cache_key(self, kind: Kind, item: ImageEmbeddingRequest) -> str:
        return f"{kind}:{item.image.digest}"

    def content_key(self, content_id: str) -> str:
        return content_id

    def cached(
        self, kind: Kind, keys: Sequence[str], fallback: Sequence[str | None] = ()
    ) -> list[EmbeddingResult | AnswerResult | None]:
        return [None] * len(keys)


class Item:
    def __init__(self, path: Path, image_id: str, view: int) -> None:
        self.path, self.image_id, self.view = path, image_id, view


def test_harvest_requests_upload_what_view_bytes_gives(tmp_path: Path) -> None:
    """The harvest's chunk path (reads each file once) sends the same bytes as
    ``view_bytes`` (export, dry run, pseudo-labels), and names augmented views of a turned
    photo apart from the sideways views a cache made before this may hold."""
    turned = write_oriented(tmp_path / "d" / "c" / "turned.jpg", 6)
    plain = write_oriented(tmp_path / "d" / "c" / "plain.jpg", None)
    items = [Item(p, f"d/c/{p.name}", k) for p in (turned, plain) for k in (0, 1)]
    built = build_requests(FakeViewClient(), items, hflip=True)
    assert not built.failed and {id(i) for i in built.items} == {id(i) for i in items}
    by_item = dict(zip((id(i) for i in built.items), built.requests, strict=True))
    for item in items:
        sent = by_item[id(item)].image
        if item.view == 0:
            assert (sent.data, sent.media_type) == view_bytes(item.path, item.image_id, 0)
        else:
            source = hashlib.sha256(item.path.read_bytes()).hexdigest()
            before = view_content_id(
                source, item.image_id, 1, hflip=True, encoding=upload_encoding("local:hash")
            )
            assert (sent.content_id == before) == (item.path == plain)
    view0 = by_item[id(items[0])].image.data
    assert mean_diff(decode_ignoring_exif(view0), upright_picture()) < JPEG_TOLERANCE


# --- (c) images without an orientation keep their bytes and keys ---------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "orientation"),
    [
        ("plain.jpg", "JPEG", None),
        ("one.jpg", "JPEG", 1),
        ("plain.png", "PNG", None),
        ("one.png", "PNG", 1),
        ("plain.webp", "WEBP", None),
        ("plain.gif", "GIF", None),
    ],
)
def test_upright_files_upload_their_exact_bytes(
    tmp_path: Path, name: str, fmt: str, orientation: int | None
) -> None:
    path = write_oriented(tmp_path / "d" / "c" / name, orientation, fmt=fmt)
    data, media_type = view_bytes(path, f"d/c/{name}", 0)
    assert data == path.read_bytes()
    # the cache key holds the sha256 and the media type of the bytes sent: both unchanged
    assert VImage(data=data, media_type=media_type).digest == VImage.from_path(path).digest
    assert media_type == VImage.from_path(path).media_type
    built = build_requests(FakeViewClient(), [Item(path, f"d/c/{name}", 0)], hflip=True)
    assert built.requests[0].image.data == path.read_bytes()


# --- (d) a whole harvest against the local hash teacher ------------------------------------


@pytest.fixture
def hash_teacher(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    config = ServerConfig(token=SecretStr(TOKEN))
    with ServerThread(create_app(config, HashBackend(dim=16))) as server:
        yield server.base_url


def test_harvest_of_a_turned_photo_succeeds(tmp_path: Path, hash_teacher: str) -> None:
    data = tmp_path / "DATA"
    write_oriented(data / "phone" / "cat" / "turned.jpg", 6)
    write_oriented(
        data / "phone" / "dog" / "plain.jpg", None, upright=upright_picture()[::-1].copy()
    )
    cache = tmp_path / "cache"
    argv = [
        "harvest",
        str(data),
        "--teacher",
        "local:hash",
        "--base-url",
        hash_teacher,
        "--cache",
        str(cache),
        "--budget",
        "1",
        "--views",
        "2",
    ]
    assert main(argv) == 0
    [store_path] = (cache / "stores").iterdir()
    store = EmbeddingStore.open(store_path)
    assert store.image_ids == [s.id for s in scan(data).samples]
    assert "phone/cat/turned.jpg" in store.image_ids
    assert np.isfinite(store.gather(np.arange(len(store)), np.ones(len(store), np.int64))).all()
    # a rerun finds everything in the cache: the upright bytes are the same every time
    bought = billing(hash_teacher)["images"]
    assert bought == 4
    assert main(argv) == 0
    assert billing(hash_teacher)["images"] == bought


def billing(url: str) -> dict[str, object]:
    r = httpx.get(url + "/admin/billing", headers={"Authorization": f"Bearer {TOKEN}"})
    r.raise_for_status()
    out: dict[str, object] = r.json()
    return out


def test_orientation_is_read_from_the_header_only(tmp_path: Path) -> None:
    """Reading the orientation decodes no pixel (a PNG's own getexif would decode them all)."""
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.png", "PNG")):
        path = write_oriented(tmp_path / name, 6 if name != "c.png" else None, fmt=fmt)
        with Image.open(path) as im:
            assert exif_orientation(im) == (6 if name != "c.png" else 1)
            assert im.tile  # load() empties the tile list: nothing was decoded


def test_malformed_exif_counts_as_no_orientation(tmp_path: Path) -> None:
    path = tmp_path / "d" / "c" / "bad.jpg"
    path.parent.mkdir(parents=True)
    Image.fromarray(upright_picture()).save(path, "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    data, _ = view_bytes(path, "d/c/bad.jpg", 0)
    assert data == path.read_bytes()
    assert mean_diff(np.asarray(load_rgb(path)), upright_picture()) < JPEG_TOLERANCE

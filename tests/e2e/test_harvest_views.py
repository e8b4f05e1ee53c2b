"""`harvest --views K` against the real local server: augmented views are found in the cache
by their recipe (never recomputed), uploaded compactly, and caches made before keep working.

The images are 224 px crops of the two real photos scikit-learn ships (china.jpg,
flower.jpg), so the upload sizes are those of photos, not of flat test patterns.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from cache import EmbeddingStore, ResponseCache
from distill.cli import main
from distill.data import scan
from distill.data.views import load_rgb, png_bytes, view_array, view_bytes, view_content_id
from tests.e2e.conftest import LocalTeacher
from vlmclient import (
    Image,
    ImageEmbeddingRequest,
    content_cache_key,
    endpoint_id,
    get_provider,
    item_cache_key,
    prepare_item,
)

SIDE = 224
VIEWS = 4


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 photos of 224x224 in two class folders, saved as the JPEGs a camera would give."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    from sklearn.datasets import load_sample_images

    for name, photo in zip(("china", "flower"), load_sample_images().images, strict=True):
        (root / name).mkdir(parents=True)
        for i, (top, left) in enumerate(((0, 0), (150, 200), (200, 400))):
            crop = np.ascontiguousarray(photo[top : top + SIDE, left : left + SIDE])
            PILImage.fromarray(crop).save(root / name / f"{i}.jpg", quality=95)
    return root


def harvest(teacher: LocalTeacher, data: Path, cache: Path, views: int) -> int:
    return main(
        [
            "harvest", str(data), "--teacher", "local:hash", "--base-url", teacher.url,
            "--cache", str(cache), "--budget", "1", "--views", str(views),
        ]
    )  # fmt: skip


def views_computed(out: str) -> int:
    match = re.search(r"augmented views computed\D+(\d+)", out)
    assert match is not None, out
    return int(match.group(1))


def export(teacher: LocalTeacher, data: Path, cache: Path) -> int:
    """``cache export --views 4``: the store from the cache alone, nothing sent."""
    return main(
        [
            "cache", "export", str(data), "--teacher", "local:hash", "--base-url", teacher.url,
            "--cache", str(cache), "--views", str(VIEWS),
        ]
    )  # fmt: skip


def store_matrix(cache: Path) -> np.ndarray:
    [path] = (cache / "stores").iterdir()
    store = EmbeddingStore.open(path)
    return np.stack([store.gather(np.arange(len(store)), v) for v in range(VIEWS)])


def jpeg_q90_size(arr: np.ndarray) -> int:
    out = io.BytesIO()
    PILImage.fromarray(arr).save(out, "JPEG", quality=90)
    return len(out.getvalue())


def test_a_cached_rerun_with_views_buys_nothing_and_computes_no_view(
    hash_teacher: LocalTeacher, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    n = len(scan(photos).samples)
    assert harvest(hash_teacher, photos, cache, VIEWS) == 0
    first = hash_teacher.billing()
    assert first["images"] == n * VIEWS
    assert views_computed(capsys.readouterr().out) == n * (VIEWS - 1)
    bought = store_matrix(cache)

    assert harvest(hash_teacher, photos, cache, VIEWS) == 0
    out = capsys.readouterr().out
    assert hash_teacher.billing()["requests"] == first["requests"]  # nothing sent
    assert "spent $0" in out
    assert views_computed(out) == 0  # every view found by its recipe, none recomputed
    np.testing.assert_array_equal(store_matrix(cache), bought)

    # the dry run keys views the same way: nothing left to buy
    argv = ["harvest", str(photos), "--teacher", "local:hash", "--base-url", hash_teacher.url,
            "--cache", str(cache), "--budget", "1", "--views", str(VIEWS), "--dry-run"]  # fmt: skip
    assert main(argv) == 0
    assert f"dry run: 0 of {n * VIEWS} image views" in capsys.readouterr().out

    shutil.rmtree(cache / "stores")
    assert export(hash_teacher, photos, cache) == 0
    assert hash_teacher.billing()["requests"] == first["requests"]
    np.testing.assert_array_equal(store_matrix(cache), bought)


def test_augmented_views_upload_about_a_jpeg_q90_each(
    hash_teacher: LocalTeacher, photos: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    ds = scan(photos)
    assert harvest(hash_teacher, photos, cache, 1) == 0
    before = hash_teacher.billing()
    assert harvest(hash_teacher, photos, cache, 2) == 0  # buys view 1 of each image only
    after = hash_teacher.billing()
    assert after["images"] - before["images"] == len(ds.samples)
    per_view = (after["body_bytes"] - before["body_bytes"]) / len(ds.samples)

    arrays = [view_array(load_rgb(s.path), s.id, 1, hflip=ds.hflip) for s in ds.samples]
    jpeg = np.mean([jpeg_q90_size(a) for a in arrays])
    raw_png = np.mean([len(png_bytes(a)) for a in arrays])  # what views were sent as before
    # JSON + base64 of a JPEG q90 (4/3) is all the body holds; the goal is <= 1.5x
    assert jpeg < per_view <= 1.5 * jpeg, (per_view, jpeg)  # the body holds its base64
    assert per_view * 4 < raw_png, (per_view, raw_png)


def test_the_trainer_sees_the_pixels_that_were_encoded_for_the_teacher(photos: Path) -> None:
    """The loader regenerates view k from the recipe: the same array the harvest encoded
    (load_image at the source size skips the resize, so the arrays compare exactly)."""
    from distill.data.loaders import load_image  # torch: imported by the test, not at collection

    ds = scan(photos)
    for s in ds.samples[:2]:
        for k in range(1, VIEWS):
            harvested = view_array(load_rgb(s.path), s.id, k, hflip=ds.hflip)
            trained = load_image(s, k, SIDE, hflip=ds.hflip).transpose(1, 2, 0)
            np.testing.assert_array_equal(trained, harvested)


def test_a_cache_made_before_content_ids_is_read_and_moved_to_the_new_keys(
    hash_teacher: LocalTeacher, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cache whose views are under the keys main's code gave them (the sha256 of an
    uncompressed PNG, as prepared for the provider) buys nothing; the run after computes
    no view."""
    ds = scan(photos)
    new, old = tmp_path / "new", tmp_path / "old"
    assert harvest(hash_teacher, photos, new, VIEWS) == 0
    bought = store_matrix(new)
    requests = hash_teacher.billing()["requests"]

    local = get_provider("local")
    endpoint = endpoint_id(local, hash_teacher.url)
    moved = {}
    for s in ds.samples:
        digest = hashlib.sha256(s.path.read_bytes()).hexdigest()
        for k in range(1, VIEWS):
            cid = view_content_id(digest, s.id, k, hflip=ds.hflip, encoding="jpeg-q90")
            data, media_type = view_bytes(s.path, s.id, k, hflip=ds.hflip)  # main's bytes
            legacy = ImageEmbeddingRequest(image=Image(data=data, media_type=media_type))
            old_key = item_cache_key(
                local, "hash", {}, "image_embedding", prepare_item(local, legacy), endpoint
            )
            moved[content_cache_key(local, "hash", {}, cid, endpoint)] = old_key
    with ResponseCache(new / "responses") as src, ResponseCache(old / "responses") as dst:
        keys = list(src.iterkeys())
        assert set(moved) <= set(keys)  # the keys computed here are those the harvest used
        entries = src.get_many(keys)
        dst.set_many(
            (moved.get(k, k), e) for k, e in zip(keys, entries, strict=True) if e is not None
        )
    capsys.readouterr()

    assert export(hash_teacher, photos, old) == 0  # export reads the old keys too
    np.testing.assert_array_equal(store_matrix(old), bought)
    shutil.rmtree(old / "stores")

    # the dry run reads them too: nothing to buy (it priced 18 views at $0.0018, for a
    # run that spends $0), and it moves nothing to the new keys
    capsys.readouterr()
    assert main([
        "harvest", str(photos), "--teacher", "local:hash", "--base-url", hash_teacher.url,
        "--cache", str(old), "--budget", "1", "--views", str(VIEWS), "--dry-run",
    ]) == 0  # fmt: skip
    assert f"dry run: 0 of {len(ds.samples) * VIEWS} image views" in capsys.readouterr().out
    with ResponseCache(old / "responses") as rc:
        assert not set(moved) & set(rc.iterkeys())

    assert harvest(hash_teacher, photos, old, VIEWS) == 0
    out = capsys.readouterr().out
    assert hash_teacher.billing()["requests"] == requests  # every old entry was found
    assert "spent $0" in out
    np.testing.assert_array_equal(store_matrix(old), bought)

    assert harvest(hash_teacher, photos, old, VIEWS) == 0
    assert views_computed(capsys.readouterr().out) == 0  # now under the new keys
    assert hash_teacher.billing()["requests"] == requests


def test_export_of_views_not_bought_names_the_harvest_that_buys_them(
    hash_teacher: LocalTeacher, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hint used to omit --views (and any --prompt): the harvest it named bought view 0
    only, and the export failed again."""
    import shlex

    cache = tmp_path / "cache"
    assert harvest(hash_teacher, photos, cache, 1) == 0
    capsys.readouterr()
    assert export(hash_teacher, photos, cache) == 1
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    hint = re.search(r"run `(vlm-distill harvest [^`]+)`", out)
    assert hint is not None, out
    argv = shlex.split(hint.group(1))
    assert argv[argv.index("--views") + 1] == str(VIEWS)
    assert argv[argv.index("--base-url") + 1] == hash_teacher.url
    assert main([*argv[1:], "--budget", "1"]) == 0  # the hint, as printed
    assert export(hash_teacher, photos, cache) == 0

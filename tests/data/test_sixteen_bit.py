"""16-bit greyscale PNGs (scientific, medical and depth images): the student sees their grey
levels, not white, and the teacher's views are the student's pixels."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from cache import EmbeddingStore
from distill.cli import main
from distill.data import Sample
from distill.data.views import load_rgb, view_array, view_bytes, view_content_id
from distill.server import HashBackend, ServerConfig, ServerThread, create_app
from distill.server.backend_base import ImageOut, ImageTask
from distill.view_requests import build_requests, upload_encoding
from tests.data.test_exif_orientation import FakeViewClient, Item

TOKEN = "sixteen-bit-token-9a2e"
SIDE = 32


def picture() -> np.ndarray:
    """An 8-bit grey gradient: its 16-bit twin is each level x 257 (exact both ways)."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    return ((x * 7 + y * 3) % 256).astype(np.uint8)


def write_16bit(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture().astype(np.uint16) * 257).save(path, "PNG")
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # PIL keeps the 16 bits
    return path


def provider_pixels(data: bytes) -> np.ndarray:
    """What a provider's model sees: 16-bit grey levels scaled to 8 bits (as libpng's
    strip-16 and every browser do), RGB."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode.startswith("I"):
            grey = (np.asarray(im, dtype=np.int64) >> 8).astype(np.uint8)
            return np.stack([grey] * 3, axis=-1)
        return np.asarray(im.convert("RGB"))


class PixelHashBackend(HashBackend):
    """A teacher whose vector is a hash of the pixels it decodes (as a provider does, with
    :meth:`pixels`)."""

    pixels = staticmethod(provider_pixels)

    def embed_images(self, tasks: Sequence[ImageTask]) -> list[ImageOut | Exception]:
        return [ImageOut(self.seen(self.pixels(t.data)), "x") for t in tasks]

    def seen(self, pixels: np.ndarray) -> np.ndarray:
        """The vector of an image whose decoded pixels are ``pixels``."""
        return self._vector(b"image", pixels.tobytes())


def serve(monkeypatch: pytest.MonkeyPatch, backend: PixelHashBackend) -> Iterator[str]:
    """``backend`` served on loopback (the base URL), as the local teacher."""
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    with ServerThread(create_app(ServerConfig(token=SecretStr(TOKEN)), backend)) as server:
        yield server.base_url


def view_1_content_ids(path: Path, image_id: str) -> tuple[str | None, str]:
    """View 1's content id as harvest names it now, and the one the file's digest alone
    gave it before (what a cache written then holds its answer under)."""
    built = build_requests(FakeViewClient(), [Item(path, image_id, 1)], hflip=True)
    assert not built.failed
    before = view_content_id(
        hashlib.sha256(path.read_bytes()).hexdigest(), image_id, 1, hflip=True,
        encoding=upload_encoding("local:hash"),
    )  # fmt: skip
    return built.requests[0].image.content_id, before


def harvested_view_0(data: Path, cache: Path, url: str, image_id: str) -> np.ndarray:
    """`vlm-distill harvest DATA` against the teacher at ``url``; the stored view-0 vector
    of ``image_id``."""
    argv = ["harvest", str(data), "--teacher", "local:hash", "--base-url", url,
            "--cache", str(cache), "--budget", "1"]  # fmt: skip
    assert main(argv) == 0
    [store_path] = (cache / "stores").iterdir()
    store = EmbeddingStore.open(store_path)
    row = store.image_ids.index(image_id)
    return np.asarray(store.gather(np.array([row]), 0)[0])


@pytest.fixture
def pixel_teacher(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    yield from serve(monkeypatch, PixelHashBackend(dim=16))


def test_the_student_sees_the_grey_levels_of_a_16_bit_png(tmp_path: Path) -> None:
    from distill.data.loaders import load_image  # torch: imported by the test, not at collection

    path = write_16bit(tmp_path / "d" / "c" / "scan.png")
    grey = np.stack([picture()] * 3, axis=-1)
    assert np.array_equal(np.asarray(load_rgb(path)), grey)  # was all but one pixel 255
    s = Sample(id="d/c/scan.png", path=path, label=0, domain="d")
    assert np.array_equal(load_image(s, 1, SIDE).transpose(1, 2, 0), view_array(grey, s.id, 1))
    # view 0 is uploaded as the student's pixels (8-bit): no provider can decode it otherwise
    data, media_type = view_bytes(path, s.id, 0)
    assert media_type == "image/png" and np.array_equal(provider_pixels(data), grey)


def test_augmented_views_of_a_16_bit_png_are_named_apart_from_the_white_ones(
    tmp_path: Path,
) -> None:
    """A cache written before holds the teacher's answers for views made of white pixels
    under the old content id: they must not be served for the grey-level views."""
    wide = write_16bit(tmp_path / "d" / "c" / "wide.png")
    now, before = view_1_content_ids(wide, "d/c/wide.png")
    assert now != before


def test_a_harvest_s_teacher_sees_the_student_s_pixels_of_a_16_bit_png(
    tmp_path: Path, pixel_teacher: str
) -> None:
    data = tmp_path / "DATA"
    wide = write_16bit(data / "lab" / "cell" / "scan16.png")
    Image.fromarray(np.zeros((SIDE, SIDE), np.uint8)).save(data / "lab" / "cell" / "dark.png")
    stored = harvested_view_0(data, tmp_path / "cache", pixel_teacher, "lab/cell/scan16.png")
    student = np.asarray(load_rgb(wide))
    assert np.allclose(stored, PixelHashBackend(dim=16).seen(student), atol=1e-2)

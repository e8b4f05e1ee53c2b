"""Images with transparency (RGBA, LA, palette PNGs with a transparent colour): the student
and the teacher see them on one background, white, as every viewer shows them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.data.views import load_rgb, view_bytes
from tests.data.test_sixteen_bit import (
    PixelHashBackend,
    harvested_view_0,
    provider_pixels,
    serve,
    view_1_content_ids,
)

TOKEN = "transparency-token-41c7"
SIDE = 32
HIDDEN = (10, 20, 30)  # the colour stored under the transparent pixels


def write_rgba(path: Path, *, alpha_left: int = 0) -> Path:
    """A gradient whose left half has alpha ``alpha_left`` (255: an opaque RGBA file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    rgba = np.zeros((SIDE, SIDE, 4), np.uint8)
    rgba[..., 0] = (x * 7) % 256
    rgba[..., 1] = (y * 5) % 256
    rgba[..., 2] = 90
    rgba[..., 3] = 255
    rgba[:, : SIDE // 2, :3] = HIDDEN
    rgba[:, : SIDE // 2, 3] = alpha_left
    Image.fromarray(rgba, mode="RGBA").save(path, "PNG")
    return path


def grey_backdrop_pixels(data: bytes) -> np.ndarray:
    """What a provider that shows transparency on its own background (grey here, neither
    white nor the hidden colour) gives its model, RGB."""
    with Image.open(io.BytesIO(data)) as im:
        rgba = im.convert("RGBA")
    backdrop = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
    return np.asarray(Image.alpha_composite(backdrop, rgba).convert("RGB"))


class GreyBackdropBackend(PixelHashBackend):
    """A teacher whose vector is a hash of the pixels it shows its model."""

    pixels = staticmethod(grey_backdrop_pixels)


@pytest.fixture
def pixel_teacher(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    yield from serve(monkeypatch, GreyBackdropBackend(dim=16))


def test_the_student_sees_transparent_pixels_as_white(tmp_path: Path) -> None:
    path = write_rgba(tmp_path / "d" / "c" / "logo.png")
    rgb = np.asarray(load_rgb(path))
    assert (rgb[:, : SIDE // 2] == 255).all()  # was HIDDEN: the alpha channel dropped
    with Image.open(path) as im:
        assert np.array_equal(rgb[:, SIDE // 2 :], np.asarray(im.convert("RGB"))[:, SIDE // 2 :])
    # half transparent: blended with white, not with the hidden colour
    half = np.asarray(load_rgb(write_rgba(tmp_path / "d" / "c" / "half.png", alpha_left=128)))
    assert (half[:, : SIDE // 2] > 128).all()


def test_view_0_of_a_transparent_file_is_the_student_s_pixels(tmp_path: Path) -> None:
    path = write_rgba(tmp_path / "d" / "c" / "logo.png")
    data, media_type = view_bytes(path, "d/c/logo.png", 0)
    assert media_type == "image/png"
    assert np.array_equal(provider_pixels(data), np.asarray(load_rgb(path)))
    # no transparency left for a provider to show on a background of its own
    assert np.array_equal(grey_backdrop_pixels(data), np.asarray(load_rgb(path)))


def test_a_transparent_palette_entry_that_no_pixel_uses_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "d" / "c" / "pal.png"
    path.parent.mkdir(parents=True)
    im = Image.new("P", (SIDE, SIDE), 1)
    im.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    im.save(path, "PNG", transparency=0)  # entry 0 is transparent; every pixel is entry 1
    with Image.open(path) as opened:
        assert "transparency" in opened.info
    assert view_bytes(path, "d/c/pal.png", 0)[0] == path.read_bytes()


def test_an_opaque_rgba_file_keeps_its_cache_keys(tmp_path: Path) -> None:
    """An RGBA file whose every pixel is opaque shows the same picture on any background:
    view 0 is its exact bytes and its augmented views keep the content id they had."""
    path = write_rgba(tmp_path / "d" / "c" / "opaque.png", alpha_left=255)
    assert view_bytes(path, "d/c/opaque.png", 0)[0] == path.read_bytes()
    now, before = view_1_content_ids(path, "d/c/opaque.png")
    assert now == before


def test_augmented_views_of_a_transparent_file_are_named_apart_from_the_old_ones(
    tmp_path: Path,
) -> None:
    """A cache written before holds the teacher's answers for views made on the hidden
    colour under the old content id: they must not be served for the white ones."""
    path = write_rgba(tmp_path / "d" / "c" / "logo.png")
    now, before = view_1_content_ids(path, "d/c/logo.png")
    assert now != before


def test_a_harvest_s_teacher_sees_the_student_s_pixels_of_a_transparent_png(
    tmp_path: Path, pixel_teacher: str
) -> None:
    data = tmp_path / "DATA"
    logo = write_rgba(data / "web" / "icon" / "logo.png")
    Image.fromarray(np.zeros((SIDE, SIDE, 3), np.uint8)).save(data / "web" / "icon" / "dark.png")
    stored = harvested_view_0(data, tmp_path / "cache", pixel_teacher, "web/icon/logo.png")
    student = np.asarray(load_rgb(logo))
    assert (student[:, : SIDE // 2] == 255).all()
    assert np.allclose(stored, GreyBackdropBackend(dim=16).seen(student), atol=1e-2)

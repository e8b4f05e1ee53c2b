"""Fixtures shared with the e2e tests: the real local hash teacher and a tiny digits set."""

import shutil
from pathlib import Path

from distill.data import scan
from tests.e2e.conftest import TOKEN, LocalTeacher, digits_data, hash_teacher

__all__ = ["TOKEN", "LocalTeacher", "break_pixels", "digits_data", "flat_folder", "hash_teacher"]


def flat_folder(digits_data: Path, tmp_path: Path, count: int, every: int) -> tuple[Path, Path]:
    """``count`` digits images (every ``every``-th one) flat in one folder, no class
    folders, and the digits class file."""
    ds = scan(digits_data)
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i, s in enumerate(ds.samples[::every][:count]):
        shutil.copy(s.path, folder / f"img{i:02d}.png")
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(ds.class_names) + "\n")
    return folder, classes


def break_pixels(path: Path) -> None:
    """32 bytes in the middle of the image file overwritten: its header still opens, its
    pixels do not decode."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 32] = b"\xff" * 32
    path.write_bytes(bytes(data))

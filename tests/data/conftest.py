"""Fixtures for the data tests: real image files written with PIL, and a few bad ones."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (12, 10), seed: int = 0) -> bytes:
    """A real image with random pixels, encoded in ``fmt``."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format=fmt)
    return buf.getvalue()


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of width x height pixels that is only ~50 KB on disk."""
    row = b"\x00" + bytes((width + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """write_image(path, fmt="PNG", size=(12, 10), seed=0) -> path, creating folders."""

    def write(
        path: Path, fmt: str = "PNG", size: tuple[int, int] = (12, 10), seed: int = 0
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(fmt, size, seed))
        return path

    return write


@pytest.fixture(scope="session")
def png_bomb() -> bytes:
    """The bytes of a 20000x20000 PNG (400 MP) that would need 400 MB to decode."""
    return bomb_png()


@pytest.fixture
def encode() -> Callable[..., bytes]:
    """encode(fmt="PNG", size=(12, 10), seed=0) -> image bytes."""
    return image_bytes

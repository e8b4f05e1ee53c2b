"""Image.size reads simple PNG headers itself: the same (width, height), or the same
InputError, as PIL's header parse, for every header shape (the fast path only takes
sound IHDR-then-IDAT headers and leaves everything else to PIL)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage

from vlmclient import Image, InputError
from vlmclient.models import png_header_size

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png(
    width: int = 5,
    height: int = 3,
    depth: int = 8,
    colour: int = 2,
    filtering: int = 0,
    *,
    bad_crc: bool = False,
    extra: bytes = b"",
    first: bytes = b"",
) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, filtering, 0)
    crc = (zlib.crc32(b"IHDR" + ihdr) ^ 1) if bad_crc else None
    return SIGNATURE + first + chunk(b"IHDR", ihdr + extra, crc) + chunk(b"IDAT", b"x") + chunk(
        b"IEND", b""
    )


def pil_size(data: bytes) -> tuple[int, int] | str:
    """What Image.size said before it read any header itself."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with PILImage.open(io.BytesIO(data)) as im:
                return int(im.width), int(im.height)
    except Exception:
        return "error"


def our_size(data: bytes) -> tuple[int, int] | str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return Image(data=data, media_type="image/png").size
    except (InputError, Warning):
        return "error"


CASES = [
    *(png(depth=d, colour=c) for d in (0, 1, 2, 4, 8, 16, 32) for c in range(8)),
    png(filtering=1),
    png(bad_crc=True),
    png(width=0),
    png(height=0),
    png(width=2**31 - 1, height=2**31 - 1),  # a decompression bomb: PIL's verdict
    png(width=10_000, height=10_000),  # above PIL's warning limit
    png(extra=b"\x00"),  # IHDR longer than 13 bytes
    png(first=chunk(b"tEXt", b"a\x00b")),  # a chunk before IHDR
    SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 3, 8, 2, 0, 0, 0)) + chunk(
        b"pHYs", b"\x00" * 9
    ) + chunk(b"IDAT", b"x"),  # another chunk before IDAT: PIL reads it
    SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 3, 8, 2, 0, 0, 0))[:20],
    b"\x89PNG\r\n\x1a\n....",
]


@pytest.mark.parametrize("data", CASES)
def test_the_header_read_is_what_pil_reads(data: bytes) -> None:
    assert our_size(data) == pil_size(data)


def test_real_pngs_take_the_fast_path_with_pils_answer() -> None:
    rng = np.random.default_rng(0)
    for shape, mode in (((7, 9, 3), "RGB"), ((4, 11), "L"), ((6, 5, 4), "RGBA")):
        out = io.BytesIO()
        PILImage.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(out, "PNG")
        data = out.getvalue()
        assert png_header_size(data) == pil_size(data) == (shape[1], shape[0])

"""Image file checks without decoding pixels: media type from magic bytes, truncation,
declared size, decompression-bomb limit. Nothing here imports torch."""

from __future__ import annotations

import os
import stat
import warnings

from vlmclient.media import media_type_of

__all__ = ["MAX_PIXELS", "check_image", "sniff_image"]

# Images above this many pixels are skipped as "too large": far beyond what any teacher
# accepts, and decoding one (a decompression bomb) could exhaust memory.
MAX_PIXELS = 40_000_000

# The supported formats' magic bytes are the client's table: what a scan accepts is what
# the client can send. sniff_image(head) -> media type or None.
sniff_image = media_type_of

# Recognised but not sendable to the teachers: named in the skip reason.
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"%PDF", "PDF"),
)
_TAIL = 1024


def _truncated(media_type: str, head: bytes, tail: bytes, size: int) -> bool:
    """Cheap end-of-file checks: each format has a trailer or a declared length."""
    if media_type == "image/png":
        return b"IEND" not in tail[-64:]
    if media_type == "image/jpeg":
        # FF D9 cannot occur inside entropy-coded data (FF is always stuffed), so a file cut
        # short has no EOI near its end.
        return b"\xff\xd9" not in tail
    if media_type == "image/gif":
        return b";" not in tail[-16:]
    if media_type == "image/webp":
        return int.from_bytes(head[4:8], "little") + 8 > size
    if media_type == "image/bmp":
        declared = int.from_bytes(head[2:6], "little")
        return declared > size
    return False


def _declared_size(media_type: str, head: bytes) -> tuple[int, int] | None:
    """Width and height from the first 32 bytes, for the formats that keep them there."""
    if media_type == "image/png" and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if media_type == "image/gif":
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if media_type == "image/bmp" and len(head) >= 26:
        w = int.from_bytes(head[18:22], "little", signed=True)
        h = int.from_bytes(head[22:26], "little", signed=True)
        return abs(w), abs(h)
    return None


def _too_large(width: int, height: int) -> str | None:
    if width * height > MAX_PIXELS:
        return (
            f"too large ({width}x{height} = {width * height / 1e6:.0f} MP, "
            f"limit {MAX_PIXELS / 1e6:.0f} MP)"
        )
    return None


def check_image(path: str | os.PathLike[str], *, decode: bool = False) -> str | None:
    """Why the file cannot be used as an image, or None when it looks fine.

    Reads the first and last bytes and the header (PIL, no pixel decode) unless
    ``decode=True``, which also decodes the pixels (slower, catches corrupt image data).

    >>> check_image("empty.png")  # doctest: +SKIP
    'empty file (0 bytes)'
    """
    from PIL import Image, UnidentifiedImageError

    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    truncated: str | None = None
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            media_type = sniff_image(head)
            if media_type is None:
                for magic, name in _OTHER_MAGIC:
                    if head.startswith(magic):
                        return f"unsupported image format ({name}); convert it to PNG or JPEG"
                return "not an image (not PNG, JPEG, GIF, BMP or WebP)"
            f.seek(max(0, st.st_size - _TAIL))
            tail = f.read(_TAIL)
            if _truncated(media_type, head, tail, st.st_size):
                # or a whole image followed by other data (a phone's motion photo: a JPEG
                # with its video appended): told apart by decoding it, for these files only
                truncated = f"truncated {media_type.split('/')[1].upper()} file"
            declared = _declared_size(media_type, head)
            if declared is not None and _too_large(*declared):
                return _too_large(*declared)
            f.seek(0)
            with warnings.catch_warnings():
                # PIL warns (then raises) above its own pixel limit, and warns about odd files;
                # a scan reports reasons instead, and warnings must not abort it.
                warnings.simplefilter("ignore")
                try:
                    with Image.open(f) as img:
                        width, height = img.size
                        if _too_large(width, height):
                            return _too_large(width, height)
                        if width == 0 or height == 0:
                            return "corrupt image (zero width or height)"
                        if decode or truncated:
                            try:
                                img.load()
                            except (OSError, ValueError, SyntaxError, EOFError):
                                if truncated:
                                    return truncated
                                raise
                except Image.DecompressionBombError:
                    return f"too large (decompression bomb, limit {MAX_PIXELS / 1e6:.0f} MP)"
                except UnidentifiedImageError:
                    return truncated or f"corrupt {media_type.split('/')[1].upper()} header"
    except OSError as exc:
        if isinstance(exc, PermissionError) or exc.errno is not None:
            return f"cannot read: {exc.strerror or exc}"
        return truncated or f"corrupt image: {exc}"
    except (ValueError, SyntaxError, EOFError) as exc:  # PIL's decoders raise these too
        return truncated or f"corrupt image: {exc}"
    return None



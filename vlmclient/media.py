"""Image media types from magic bytes: the one table the client (what it sends) and
``distill.data`` (what a scan accepts) both read. Standard library only, so importing it
costs nothing."""

from __future__ import annotations

from typing import Final

__all__ = ["IMAGE_MAGIC", "media_type_of"]

# WebP is told by two fields (RIFF ... WEBP), so it is checked apart from this table.
IMAGE_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


def media_type_of(head: bytes) -> str | None:
    """Media type of a PNG, JPEG, GIF, BMP or WebP image from its first bytes, else None.

    >>> media_type_of(b"\\x89PNG\\r\\n\\x1a\\n...."), media_type_of(b"%PDF-1.7")
    ('image/png', None)
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for magic, media_type in IMAGE_MAGIC:
        if head.startswith(magic):
            return media_type
    return None

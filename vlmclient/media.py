"""Image media types from magic bytes: the one table the client (what it sends) and
``distill.data`` (what a scan accepts) both read. Standard library only, so importing it
costs nothing."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["IMAGE_MAGIC", "MEDIA_TYPES", "canonical_media_type", "media_type_of"]

# WebP is told by two fields (RIFF ... WEBP), so it is checked apart from this table.
IMAGE_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)

# The types media_type_of tells, under their registered names: what the providers take
# (Anthropic's API no other spelling). An Image of another image type (a TIFF) is
# re-encoded to one of them by the providers' image preparation.
MEDIA_TYPES: Final[tuple[str, ...]] = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/bmp",
    "image/webp",
)
# common unregistered names of those types
_ALIASES: Final[dict[str, str]] = {"image/jpg": "image/jpeg"}
# an image type: "image/" and a subtype name of RFC 6838 (section 4.2)
_IMAGE_TYPE: Final = re.compile(r"image/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def canonical_media_type(value: str) -> str | None:
    """The registered lower-case name of the image type ``value`` names; None when it
    names no image type (``text/plain``, ``jpeg``, ``""``).

    Media types are case-insensitive (RFC 2045, RFC 6838); blanks around the name and
    parameters (``; charset=binary``) are dropped, and ``image/jpg`` is ``image/jpeg``.

    >>> canonical_media_type(" Image/JPG; q=1"), canonical_media_type("text/plain")
    ('image/jpeg', None)
    """
    name = value.split(";", 1)[0].strip().lower()
    name = _ALIASES.get(name, name)
    return name if _IMAGE_TYPE.fullmatch(name) else None


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

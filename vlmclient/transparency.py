"""Transparency, shown on one background: white, as image viewers show it.

The client flattens an image it must re-encode as JPEG (``providers.images``), and the
student's decoder (``distill.data.views.load_rgb``) and the bundled teacher server's
(``distill.server.backend_base.decode_rgb``) flatten every image with an alpha channel,
with this one function, so the teacher and the student see the same pixels.
"""

from __future__ import annotations

from PIL import Image

__all__ = ["flatten", "has_alpha", "is_transparent"]

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def has_alpha(im: Image.Image) -> bool:
    """True when ``im`` may have transparent pixels: an alpha channel, or a transparent
    colour (a palette entry or a tRNS colour key). From the mode and header only."""
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def is_transparent(im: Image.Image) -> bool:
    """True when some pixel of ``im`` is not fully opaque (decodes the pixels when
    :func:`has_alpha`): an opaque RGBA file, or a palette whose transparent entry no pixel
    uses, is not.

    >>> is_transparent(Image.new("RGBA", (2, 2), (0, 0, 0, 255)))
    False
    """
    if not has_alpha(im):
        return False
    extrema = im.convert("RGBA").getchannel("A").getextrema()  # (low, high) of one band
    return isinstance(extrema[0], int | float) and extrema[0] < 255


def flatten(im: Image.Image) -> Image.Image:
    """RGB on white: transparent pixels become white, half-transparent ones are blended
    with white. An opaque image gives exactly its ``convert("RGB")`` pixels."""
    rgba = im.convert("RGBA")
    base = Image.new("RGB", rgba.size, (255, 255, 255))
    base.paste(rgba, mask=rgba.getchannel("A"))
    return base

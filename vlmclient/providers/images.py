"""Image preparation before upload: size from the header, downscale oversized images.

Estimates are computed on the image actually sent, so preparation runs before the
estimate and before the cache key (the key hashes the bytes that are sent).
"""

from __future__ import annotations

import io
from collections.abc import Collection

from PIL import Image as PILImage

from ..errors import InputError
from ..models import Image

__all__ = ["MAX_UPLOAD_BYTES", "MAX_UPLOAD_SIDE", "downscale", "image_size", "prepare_for_upload"]

MAX_UPLOAD_SIDE = 2048  # px, long edge; every provider here accepts this
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # smallest per-image cap among the providers (Cohere v3)
MAX_DECODE_PIXELS = 80_000_000  # refuse decompression bombs before decoding


# Not cached: an lru_cache keyed by the bytes kept up to 4,096 whole images alive (GBs
# for photos), and reading a header costs ~50 us.
def _size(data: bytes) -> tuple[int, int]:
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            return int(im.width), int(im.height)
    except Exception as exc:  # PIL raises many types for bad files
        raise InputError(f"cannot read image header: {exc}") from exc


def image_size(image: Image) -> tuple[int, int]:
    """(width, height) from the header, without decoding the pixels."""
    return _size(image.data)


def downscale(image: Image, *, max_side: int, max_bytes: int, quality: int = 90) -> Image:
    """The image itself when within limits, else a JPEG (or PNG with alpha) that fits."""
    w, h = image_size(image)
    if max(w, h) <= max_side and len(image.data) <= max_bytes:
        return image
    if w * h > MAX_DECODE_PIXELS:
        raise InputError(f"image of {w}x{h} pixels is too large to decode safely")
    try:
        with PILImage.open(io.BytesIO(image.data)) as im:
            im.load()
            scale = min(1.0, max_side / max(w, h))
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            im = im.resize(size, PILImage.Resampling.BICUBIC) if scale < 1 else im
            out = io.BytesIO()
            if (im.mode in ("RGBA", "LA", "P") and "transparency" in im.info) or im.mode == "RGBA":
                im.save(out, "PNG", compress_level=1)
                media_type = "image/png"
            else:
                im.convert("RGB").save(out, "JPEG", quality=quality)
                media_type = "image/jpeg"
    except Exception as exc:  # PIL raises many types for corrupt pixel data
        raise InputError(f"cannot decode {image.media_type} image of {w}x{h}: {exc}") from exc
    data = out.getvalue()
    if len(data) > max_bytes:
        raise InputError(f"image still {len(data)} bytes after downscaling to {size}")
    return Image(data=data, media_type=media_type)


def prepare_for_upload(image: Image) -> Image:
    """Default preparation: long edge <= 2048 px and <= 5 MB."""
    return downscale(image, max_side=MAX_UPLOAD_SIDE, max_bytes=MAX_UPLOAD_BYTES)


def fit_image(
    image: Image, *, max_side: int, max_bytes: int, media_types: Collection[str]
) -> Image:
    """The image in one of ``media_types``, long edge <= ``max_side``, <= ``max_bytes``.

    Images already in an accepted format go through :func:`images.downscale`; others
    (a BMP for a JPEG/PNG-only API, a GIF for Gemini) are re-encoded as PNG when they
    have transparency and PNG is accepted, else as JPEG.

    >>> fit_image(img, max_side=512, max_bytes=1 << 20, media_types={"image/png"})  # doctest: +SKIP
    """
    if image.media_type in media_types:
        return downscale(image, max_side=max_side, max_bytes=max_bytes)
    w, h = image_size(image)
    if w * h > MAX_DECODE_PIXELS:
        raise InputError(f"image of {w}x{h} pixels is too large to decode safely")
    try:
        with PILImage.open(io.BytesIO(image.data)) as im:
            im.load()
            alpha = im.mode in ("RGBA", "LA") or "transparency" in im.info
            out = io.BytesIO()
            if (alpha or "image/jpeg" not in media_types) and "image/png" in media_types:
                im.convert("RGBA" if alpha else "RGB").save(out, "PNG", compress_level=1)
                media_type = "image/png"
            elif "image/jpeg" in media_types:
                im.convert("RGB").save(out, "JPEG", quality=90)
                media_type = "image/jpeg"
            else:
                raise InputError(
                    f"cannot convert {image.media_type} to any of {sorted(media_types)}"
                )
    except InputError:
        raise
    except Exception as exc:  # PIL raises many types for bad files
        raise InputError(f"cannot re-encode {image.media_type} image: {exc}") from exc
    converted = Image(data=out.getvalue(), media_type=media_type)
    return downscale(converted, max_side=max_side, max_bytes=max_bytes)

"""Image preparation before upload: size from the header, downscale oversized images.

Estimates are computed on the image actually sent, so preparation runs before the
estimate and before the cache key (the key hashes the bytes that are sent, unless the
image carries a ``content_id``, which re-encoding keeps).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Collection, Iterator

from PIL import Image as PILImage
from PIL import ImageOps

from ..errors import InputError
from ..media import MEDIA_TYPES
from ..models import Image
from ..transparency import flatten, has_alpha

__all__ = [
    "ACCEPTED_MEDIA_TYPES",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_SIDE",
    "base64_size",
    "downscale",
    "fit_image",
    "image_size",
    "is_animated",
    "prepare_for_upload",
]

MAX_UPLOAD_SIDE = 2048  # px, long edge; every provider here accepts this
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # smallest per-image cap among the providers (Cohere v3)
MAX_DECODE_PIXELS = 80_000_000  # refuse decompression bombs before decoding


def is_animated(image: Image) -> bool:
    """True for a GIF with more than one frame (read from its header and frame table;
    other types are not opened)."""
    if image.media_type != "image/gif":
        return False
    try:
        with PILImage.open(io.BytesIO(image.data)) as opened:
            return bool(getattr(opened, "is_animated", False))
    except Exception:  # a broken GIF: fit_image says what is wrong with it
        return False


def image_size(image: Image) -> tuple[int, int]:
    """(width, height) from the header, without decoding the pixels.

    Read once per :class:`Image` (:attr:`Image.size`), not in an lru_cache keyed by the
    bytes: that kept up to 4,096 whole images alive (GBs for photos).
    """
    return image.size


# The image formats each provider accepts, in one place (every adapter's prepare_image
# reads its row). Anything else is re-encoded before the estimate and the cache key.
# Sources (read 2026-11-30 unless noted):
#   openai    platform docs, images and vision: PNG, JPEG, WEBP, non-animated GIF (secondary:
#             our copy of the guide is partial; the pinned spec does not list formats)
#   anthropic anthropic-sdk-python Base64ImageSourceParam.media_type literal
#   gemini    ai.google.dev image understanding: PNG, JPEG, WEBP, HEIC, HEIF (we never
#             produce HEIC/HEIF, so they are left out)
#   vertex    multimodalembedding@001 REST reference: JPEG and PNG only (secondary: issue
#             15 report; our copy of the reference does not list formats, so the strict
#             reading is kept)
#   cohere    pinned spec cohere-openapi-e814c8a1822f.yaml, /v2/embed images: "image/jpeg,
#             image/png, image/webp, or image/gif"
#   voyage    docs.voyageai.com multimodal embeddings: PNG, JPEG, WEBP, GIF
#   jina      jina-clip-v2 docs as recorded in the project's reference notes (2026-11-23)
#   nomic     the official nomic client uploads PNG/JPEG/WEBP after its own resize
#   titan     Bedrock Titan Multimodal Embeddings G1: PNG and JPEG
#   local     the bundled teacher decodes anything PIL reads
ACCEPTED_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "openai": ("image/png", "image/jpeg", "image/webp", "image/gif"),
    "anthropic": ("image/jpeg", "image/png", "image/gif", "image/webp"),
    "gemini": ("image/png", "image/jpeg", "image/webp"),
    "vertex": ("image/jpeg", "image/png"),
    "cohere": ("image/jpeg", "image/png", "image/webp", "image/gif"),
    "voyage": ("image/png", "image/jpeg", "image/webp", "image/gif"),
    "jina": ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"),
    "nomic": ("image/png", "image/jpeg", "image/webp"),
    "titan": ("image/png", "image/jpeg"),
    "local": ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp"),
}

JPEG_QUALITIES = (90, 80, 70, 60)  # tried in turn before the image is made smaller
SHRINK_STEP = 0.75  # each further try shrinks the long edge by this factor
MIN_SIDE = 64  # below this, give up: the provider would see only a thumbnail


def base64_size(data: bytes) -> int:
    """Bytes of the base64 text of ``data``: what a JSON API receives and measures."""
    return 4 * math.ceil(len(data) / 3)


def _encodings(
    im: PILImage.Image, media_types: Collection[str], quality: int
) -> Iterator[tuple[bytes, str]]:
    """Candidate encodings of ``im``, best first: lossless PNG when the image has
    transparency (or JPEG is not accepted), then JPEG at falling qualities."""
    alpha = has_alpha(im)
    if "image/png" in media_types and (alpha or "image/jpeg" not in media_types):
        out = io.BytesIO()
        im.convert("RGBA" if alpha else "RGB").save(out, "PNG", compress_level=1)
        yield out.getvalue(), "image/png"
    if "image/jpeg" in media_types:
        rgb = flatten(im) if alpha else im.convert("RGB")
        for q in (quality, *(q for q in JPEG_QUALITIES if q < quality)):
            out = io.BytesIO()
            rgb.save(out, "JPEG", quality=q)
            yield out.getvalue(), "image/jpeg"
    elif "image/webp" in media_types:
        out = io.BytesIO()
        im.save(out, "WEBP", quality=quality)
        yield out.getvalue(), "image/webp"


def fit_image(
    image: Image,
    *,
    max_side: int,
    max_bytes: int,
    media_types: Collection[str],
    measure: Callable[[bytes], int] = len,
    quality: int = 90,
) -> Image:
    """The image in one of ``media_types``, long edge <= ``max_side``, and
    ``measure(bytes) <= max_bytes`` (``measure=base64_size`` where the provider counts
    the base64 payload).

    An image already within every limit is returned as it is (same bytes, same cache
    key). Otherwise it is decoded once and re-encoded: PNG when it has transparency and
    that fits, else JPEG (transparency flattened onto white) at qualities 90..60, and if
    even that is too large, at 3/4 of the size, again, down to a 64-px long edge. An
    ordinary photo with transparency is therefore sent as a JPEG instead of refused. A
    re-encoding is upright: an EXIF orientation (a phone photo stored sideways) is applied
    to its pixels, since the tag is not carried over.

    >>> fit_image(img, max_side=512, max_bytes=1 << 20, media_types={"image/png"})  # doctest: +SKIP
    """
    w, h = image_size(image)
    if (
        image.media_type in media_types
        and max(w, h) <= max_side
        and measure(image.data) <= max_bytes
    ):
        return image
    if w * h > MAX_DECODE_PIXELS:
        raise InputError(f"image of {w}x{h} pixels is too large to decode safely")
    if not any(t in media_types for t in ("image/png", "image/jpeg", "image/webp")):
        raise InputError(f"cannot convert {image.media_type} to any of {sorted(media_types)}")
    try:
        with PILImage.open(io.BytesIO(image.data)) as opened:
            opened.load()
            # The re-encoding carries no EXIF: its pixels must be upright, as a provider
            # shows the original (stored sideways with an Orientation tag) to its model.
            src = ImageOps.exif_transpose(opened)
            w, h = src.size
            scale = min(1.0, max_side / max(w, h))
            smallest = None
            while True:
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                im = src.resize(size, PILImage.Resampling.BICUBIC) if scale < 1 else src
                for data, media_type in _encodings(im, media_types, quality):
                    smallest = min(smallest or len(data), len(data))
                    if measure(data) <= max_bytes:
                        # same pixels (scaled): a caller's content id still names them
                        return Image(
                            data=data, media_type=media_type, content_id=image.content_id
                        )
                if max(size) * SHRINK_STEP < MIN_SIDE:
                    break
                scale *= SHRINK_STEP
    except InputError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt pixel data
        raise InputError(f"cannot decode {image.media_type} image of {w}x{h}: {exc}") from exc
    raise InputError(
        f"image of {w}x{h} does not fit in {max_bytes} bytes even at {size[0]}x{size[1]} "
        f"(smallest encoding {smallest} bytes)"
    )


def downscale(image: Image, *, max_side: int, max_bytes: int, quality: int = 90) -> Image:
    """The image itself when within limits, else a JPEG (or PNG with alpha) that fits.
    An image of a type no provider takes (a TIFF) is re-encoded whatever its size."""
    own = (image.media_type,) if image.media_type in MEDIA_TYPES else ()
    return fit_image(
        image,
        max_side=max_side,
        max_bytes=max_bytes,
        media_types=(*own, "image/png", "image/jpeg"),
        quality=quality,
    )


def prepare_for_upload(image: Image) -> Image:
    """Default preparation: long edge <= 2048 px and <= 5 MB."""
    return downscale(image, max_side=MAX_UPLOAD_SIDE, max_bytes=MAX_UPLOAD_BYTES)

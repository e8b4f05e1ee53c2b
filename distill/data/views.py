"""Teacher views of an image: view 0 is the image itself, view k >= 1 a seeded augmentation.

We pay per teacher query, so each image gets K cached views. The trainer must feed the student
exactly the pixels the teacher saw, in another process and maybe on another machine, so the
augmentation is computed here with plain integer/IEEE arithmetic in numpy (no torch, no
library resampler whose rounding may change between versions), and its random numbers come
from sha256(image id, k), not from a random number generator:

- RandomResizedCrop: area 70-100 %, aspect ratio 3/4-4/3 (torchvision's algorithm, 10 tries
  then a centre crop), resized back to the original size with bilinear interpolation. The crop
  is never larger than the image, so this only ever upsamples and needs no antialiasing;
- horizontal flip with p = 0.5 (``hflip=False`` turns it off: a mirrored digit is another
  symbol, and a mirrored rotation is another rotation domain);
- brightness then contrast, each a factor in [0.7, 1.3].

A view is named, in cache keys, by :func:`view_content_id`: the sha256 of the source file
plus the recipe (view index, seed, flip setting, augmentation parameters, recipe version,
upload encoding), never by its encoded bytes. So a cached rerun finds a view's answer without
computing the view, and views are uploaded compactly (:func:`encode_view`: JPEG q90 where
the provider accepts JPEG, zlib-compressed PNG otherwise) even though such bytes may change
with the codec's version. The trainer regenerates the view array itself (the pixels before
encoding), so it sees what was encoded for the teacher.

EXIF orientation (phone photos store their pixels sideways plus an Orientation tag) is applied
wherever a file is decoded (:func:`load_rgb`), so views and the student's pixels are upright.
View 0 of a file whose orientation is not 1 is uploaded as an upright re-encoding without
the tag (:func:`upright_bytes`): the teacher sees it upright whether or not its provider
honours EXIF. Every other file is still uploaded as its exact bytes (same cache key). The
orientation is read from the header (:func:`exif_orientation`), never by decoding pixels,
and names the augmented views of such a file in cache keys too.

A 16-bit greyscale PNG (scientific, medical, depth images) is scaled to 8 bits wherever
it is decoded (:func:`eight_bit`; PIL's own conversion clips every level above 255 to
white): the student sees its grey levels, view 0 is uploaded as that 8-bit picture (a PNG,
by :func:`upright_bytes`) and its augmented views are named apart from the white ones a
cache may hold (:func:`source_decoding`, ``sixteen_bit`` in :func:`view_content_id`).

Transparency (RGBA, LA, a palette's transparent colour) is shown on white wherever a file
is decoded (:func:`load_rgb`, with the client's own :func:`vlmclient.transparency.flatten`,
which it applies when it re-encodes an image as JPEG). View 0 of a file that has a pixel
not fully opaque is uploaded as those flattened pixels (:func:`upright_bytes`), so no
provider shows it on a background of its own; its augmented views are named apart from
those a cache may hold, made on the colour hidden under the transparent pixels
(``transparent`` in :func:`view_content_id`). An opaque RGBA file keeps its bytes and keys.

Caches written before this (views keyed by the bytes of an uncompressed PNG) keep working:
:func:`png_bytes` still makes those bytes, so their old keys can be found (see
``distill.view_requests``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from distill.data import MAX_PIXELS, DataError, sniff_image
from vlmclient.transparency import flatten, has_alpha, is_transparent

__all__ = [
    "BRIGHTNESS",
    "CANNOT_DECODE",
    "CONTRAST",
    "JPEG_QUALITY",
    "RATIO",
    "RECIPE_VERSION",
    "SCALE",
    "UPRIGHT_JPEG_QUALITY",
    "eight_bit",
    "encode_view",
    "exif_orientation",
    "load_rgb",
    "pixels_decode",
    "png_bytes",
    "source_decoding",
    "to_rgb",
    "upright_bytes",
    "upright_transpose",
    "view_array",
    "view_bytes",
    "view_content_id",
    "view_encoding",
    "view_image",
]

SCALE = (0.7, 1.0)
RATIO = (3 / 4, 4 / 3)
BRIGHTNESS = 0.3
CONTRAST = 0.3
# Bump when view_array's arithmetic changes: every view's content id (and cache key) changes.
RECIPE_VERSION = 1
JPEG_QUALITY = 90  # views uploaded as JPEG: ~8x smaller than raw PNG at 224 px
CANNOT_DECODE = "cannot decode image"  # how a DataError for undecodable pixels starts
PNG_LEVEL = 6  # zlib level for providers that take no JPEG
_ROW_BLOCK = 256  # rows interpolated at once: bounds memory on large photos
# View 0 of a file with an EXIF orientation is re-encoded upright; a JPEG at this quality
# (a PNG or lossless WebP stays lossless).
UPRIGHT_JPEG_QUALITY = 95

# PIL's modes of a 16-bit greyscale PNG ("I" from older Pillow versions): convert("RGB")
# clips them at 255, so :func:`eight_bit` scales them first.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

# EXIF orientation -> the transpose that shows the stored pixels upright (ImageOps.exif_transpose's
# table; 1 and unknown values: none).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class _Uniforms:
    """Uniform numbers in [0, 1) from sha256(image id, view, counter): same everywhere."""

    def __init__(self, image_id: str, view: int) -> None:
        self._base = f"{image_id}\x00{view}".encode("utf-8", "surrogateescape")
        self._i = 0

    def __call__(self, low: float = 0.0, high: float = 1.0) -> float:
        digest = hashlib.sha256(self._base + self._i.to_bytes(4, "big")).digest()
        self._i += 1
        u = int.from_bytes(digest[:7], "big") / float(1 << 56)  # 56 bits: exact in a float
        return low + (high - low) * u

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high] inclusive."""
        return low + min(int(self() * (high - low + 1)), high - low)


def _crop_box(rand: _Uniforms, width: int, height: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop.get_params picks it."""
    area = width * height
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        target = area * rand(*SCALE)
        aspect = math.exp(rand(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rand.integer(0, height - h), rand.integer(0, width - w), h, w
    # Fallback: the whole image (the ratio bounds always contain some full-size crop for
    # images close to square; extreme panoramas land here).
    return 0, 0, height, width


def _axis(n_out: int, start: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lo, hi) and weights for bilinear resampling of n_in -> n_out pixels."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo + start, hi + start, pos - lo


def _resized_crop(arr: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    """Bilinear resize of arr[top:top+h, left:left+w] back to arr's size, float64 HxWx3."""
    height, width = arr.shape[:2]
    y0, y1, wy = _axis(height, top, h)
    x0, x1, wx = _axis(width, left, w)
    wx = wx[None, :, None]
    out = np.empty((height, width, 3), dtype=np.float64)
    for r in range(0, height, _ROW_BLOCK):
        sl = slice(r, r + _ROW_BLOCK)
        a = arr[y0[sl]].astype(np.float64)
        b = arr[y1[sl]].astype(np.float64)
        t = wy[sl][:, None, None]
        rows = a + (b - a) * t
        left_px, right_px = rows[:, x0], rows[:, x1]
        out[sl] = left_px + (right_px - left_px) * wx
    return out


def _to_uint8(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out


def view_array(
    img: Image.Image | np.ndarray, image_id: str, view: int, *, hflip: bool = True
) -> np.ndarray:
    """View ``view`` of an image as a uint8 HxWx3 array (see :func:`view_image`)."""
    if view < 0:
        raise ValueError(f"view must be >= 0, got {view}")
    arr = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an RGB image or uint8 HxWx3 array, got {arr.shape} {arr.dtype}")
    if view == 0:
        return arr
    rand = _Uniforms(image_id, view)
    height, width = arr.shape[:2]
    top, left, h, w = _crop_box(rand, width, height)
    x = _to_uint8(_resized_crop(arr, top, left, h, w))
    flip = rand() < 0.5  # drawn even when unused, so hflip does not shift later numbers
    if hflip and flip:
        x = x[:, ::-1]
    b = rand(1 - BRIGHTNESS, 1 + BRIGHTNESS)
    c = rand(1 - CONTRAST, 1 + CONTRAST)
    x = _to_uint8(x * b)
    # Contrast blends with the mean grey level (ITU-R 601 luma, as PIL and torchvision);
    # the integer sum makes the mean exact whatever the summation order.
    luma = x.astype(np.int64) @ np.array([299, 587, 114], dtype=np.int64)
    mean = float(luma.sum()) / (1000.0 * luma.size)
    x = _to_uint8(mean + (x.astype(np.float64) - mean) * c)
    return np.ascontiguousarray(x)


def view_image(
    img: Image.Image, image_id: str, view: int, *, hflip: bool = True
) -> Image.Image:
    """View ``view`` of ``img`` as an RGB image; view 0 is ``img`` itself (as RGB).

    Deterministic: the same (image id, view) gives the same pixels in every process.

    >>> v = view_image(Image.open("cat.png"), "cats/cat.png", 1)  # doctest: +SKIP
    """
    return Image.fromarray(view_array(img, image_id, view, hflip=hflip), mode="RGB")


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (2-8) of an opened image, read from its header; 1 when it has
    none (or a value that is not one), as :func:`PIL.ImageOps.exif_transpose` reads it
    (EXIF, else XMP ``tiff:Orientation``).

    No pixel is decoded: PNG's own ``getexif`` decodes the whole image to look for an
    ``eXIf`` chunk after the pixel data, so only the chunks before it count, for the
    upload (:func:`upright_bytes`) and the decode (:func:`load_rgb`) alike.

    >>> exif_orientation(Image.new("RGB", (2, 1)))
    1
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data": then there is none
            value = Image.Image.getexif(im).get(ExifTags.Base.Orientation, 1)
    except Exception:  # PIL raises many types for malformed EXIF; unreadable counts as none
        return 1
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def upright_transpose(orientation: int) -> Image.Transpose | None:
    """The transpose that shows pixels stored for an EXIF ``orientation`` upright (None for
    1: none), as :func:`load_rgb` applies it.

    >>> upright_transpose(6) is Image.Transpose.ROTATE_270, upright_transpose(1)
    (True, None)
    """
    return _UPRIGHT.get(orientation)


def eight_bit(im: Image.Image) -> Image.Image:
    """``im`` with 8-bit levels: a 16-bit greyscale image scaled (the high byte of each
    level, as libpng's strip-16 keeps it) to mode L, anything else as it is (decodes)."""
    if im.mode not in _SIXTEEN_BIT_MODES:
        return im
    levels = np.asarray(im, dtype=np.int64) >> 8
    return Image.fromarray(np.clip(levels, 0, 255).astype(np.uint8), mode="L")


def to_rgb(im: Image.Image) -> Image.Image:
    """``im``'s pixels as RGB, as the student sees them: 16-bit grey scaled to 8 bits
    (:func:`eight_bit`), transparency shown on white (:func:`~vlmclient.transparency.flatten`)
    (decodes). The bundled teacher server decodes what it is sent with it too.

    >>> to_rgb(Image.new("LA", (1, 1), (0, 0))).getpixel((0, 0))
    (255, 255, 255)
    """
    levels = eight_bit(im)
    return flatten(levels) if has_alpha(levels) else levels.convert("RGB")


def source_decoding(data: bytes) -> tuple[int, bool, bool]:
    """What names an image file's decoding in its views' content ids: its
    :func:`exif_orientation` and whether it is 16-bit greyscale (from its header), and
    whether a pixel is not fully opaque (decoded only for a file with an alpha channel or
    a transparent colour); (1, False, False) when PIL cannot open the bytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                orientation, sixteen_bit = exif_orientation(im), im.mode in _SIXTEEN_BIT_MODES
                return orientation, sixteen_bit, _transparent(im)
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError):
        return 1, False, False


def _transparent(im: Image.Image) -> bool:
    """:func:`is_transparent`, for a file not too large to decode (else :func:`load_rgb`
    refuses it anyway); decodes only a file with an alpha channel or transparent colour."""
    if not has_alpha(im) or im.size[0] * im.size[1] > MAX_PIXELS:
        return False
    return is_transparent(im)


def load_rgb(path: str | os.PathLike[str], data: bytes | None = None) -> Image.Image:
    """Open and decode an image file as RGB, upright (its EXIF orientation applied, see
    :func:`exif_orientation`), 16-bit grey scaled to 8 bits (:func:`eight_bit`) and
    transparency shown on white (:func:`~vlmclient.transparency.flatten`, as the client
    re-encodes it); DataError when it cannot be used.

    ``data``: the file's bytes, already read (then decoded, not the file read again: a
    view named by the digest of those bytes must show their pixels, even when the file
    was replaced since)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path if data is None else io.BytesIO(data)) as im:
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    raise DataError(
                        f"image {os.fspath(path)!r} is too large ({im.size[0]}x{im.size[1]})"
                    )
                method = upright_transpose(exif_orientation(im))
                rgb = to_rgb(im)
                return rgb if method is None else rgb.transpose(method)
    except Image.DecompressionBombError as exc:
        raise DataError(f"image {os.fspath(path)!r} is too large: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{CANNOT_DECODE} {os.fspath(path)!r}: {exc}") from exc


def pixels_decode(data: bytes) -> bool:
    """True when every pixel of an encoded image decodes (a header that opens is not
    enough: a truncated download or a damaged stream fails only here).

    >>> pixels_decode(png_bytes(np.zeros((2, 2, 3), np.uint8))), pixels_decode(b"junk")
    (True, False)
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False
    return True


def upright_bytes(data: bytes, media_type: str, name: str = "image") -> tuple[bytes, str]:
    """What is uploaded as view 0 of an image file's bytes, and its media type.

    ``data`` itself when the file has no EXIF orientation (or orientation 1), is not
    16-bit greyscale and has no pixel that is not fully opaque: the exact bytes, so its
    cache key is what it always was (an opaque RGBA file too). A 16-bit
    greyscale file is sent as what the student sees, its 8-bit levels (:func:`eight_bit`),
    upright, as a PNG; a file with transparency as its pixels on white
    (:func:`~vlmclient.transparency.flatten`, as :func:`load_rgb` shows them), in the same
    way. Otherwise the upright pixels re-encoded
    without EXIF (no orientation left for a provider to apply or to ignore): a JPEG as a
    JPEG at :data:`UPRIGHT_JPEG_QUALITY`, a WebP as a lossless WebP, anything else as a
    PNG; the ICC profile is kept. Bytes PIL cannot open are returned as they are (the
    client's preparation says why they cannot be sent). DataError (naming ``name``) when
    such a file is too large or its pixels cannot be decoded.

    >>> upright_bytes(open("DATA/a/cat/1.jpg", "rb").read(), "image/jpeg")  # doctest: +SKIP
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            im = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError):
            return data, media_type  # sent as before; the client's preparation refuses it
        with im:
            method = upright_transpose(exif_orientation(im))
            sixteen_bit = im.mode in _SIXTEEN_BIT_MODES
            if method is None and not sixteen_bit and not has_alpha(im):
                return data, media_type
            if im.size[0] * im.size[1] > MAX_PIXELS:
                if method is None and not sixteen_bit:
                    return data, media_type  # as before; load_rgb refuses it for the student
                raise DataError(f"image {name!r} is too large ({im.size[0]}x{im.size[1]})")
            fmt, icc = im.format, im.info.get("icc_profile")
            try:
                transparent = is_transparent(im)  # decodes only an image with alpha
                if method is None and not sixteen_bit and not transparent:
                    return data, media_type  # opaque RGBA: its exact bytes, its old key
                upright = eight_bit(im)  # decodes (the first frame of an animation)
                if transparent:
                    upright = flatten(upright)
                if method is not None:
                    upright = upright.transpose(method)
            except (OSError, ValueError, SyntaxError, EOFError) as exc:
                raise DataError(f"{CANNOT_DECODE} {name!r}: {exc}") from exc
    extra: dict[str, object] = {"icc_profile": icc} if icc else {}
    out = io.BytesIO()
    if fmt in ("JPEG", "MPO"):
        upright.save(out, "JPEG", quality=UPRIGHT_JPEG_QUALITY, **extra)
        return out.getvalue(), "image/jpeg"
    if fmt == "WEBP":
        upright.save(out, "WEBP", lossless=True, exact=True, **extra)
        return out.getvalue(), "image/webp"
    upright.save(out, "PNG", compress_level=PNG_LEVEL, **extra)
    return out.getvalue(), "image/png"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 HxWx3 array as PNG with uncompressed (stored) deflate blocks.

    The bytes depend only on the pixels (checksums are fixed algorithms), unlike zlib's
    compressed output, which differs between zlib, zlib-ng and their versions; a view's
    cache key stays valid after a library upgrade. Costs 3 bytes per pixel on the wire.
    """
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    height, width = arr.shape[:2]
    raw = np.zeros((height, 1 + width * 3), dtype=np.uint8)  # filter byte 0 (None) per row
    raw[:, 1:] = arr.reshape(height, width * 3)
    data = raw.tobytes()
    blocks = []
    step = 65535
    for i in range(0, max(len(data), 1), step):
        part = data[i : i + step]
        final = 1 if i + step >= len(data) else 0
        blocks.append(struct.pack("<BHH", final, len(part), len(part) ^ 0xFFFF) + part)
    stream = b"\x78\x01" + b"".join(blocks) + struct.pack(">I", zlib.adler32(data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", stream)
        + _chunk(b"IEND", b"")
    )


def view_bytes(
    path: str | os.PathLike[str], image_id: str, view: int, *, hflip: bool = True
) -> tuple[bytes, str]:
    """The bytes to send to the teacher for view ``view`` of an image file, and their type.

    View 0 is the file exactly as it is on disk, unless it has an EXIF orientation, 16-bit
    grey levels or transparency: then a re-encoding of the student's pixels
    (:func:`upright_bytes`); view k >= 1 is a PNG of
    :func:`view_image` of the decoded (upright) file. DataError when the file cannot be used.

    >>> data, media_type = view_bytes(Path("DATA/a/cat/1.jpg"), "a/cat/1.jpg", 2)  # doctest: +SKIP
    """
    if view < 0:
        raise ValueError(f"view must be >= 0, got {view}")
    if view == 0:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read image {os.fspath(path)!r}: {exc.strerror}") from exc
        media_type = sniff_image(data[:32])
        if media_type is None:
            raise DataError(f"{os.fspath(path)!r} is not a PNG, JPEG, GIF, BMP or WebP image")
        return upright_bytes(data, media_type, os.fspath(path))
    return png_bytes(view_array(load_rgb(path), image_id, view, hflip=hflip)), "image/png"


def view_encoding(media_types: tuple[str, ...] | frozenset[str] | list[str]) -> str:
    """How views are uploaded to a provider accepting ``media_types``: ``"jpeg-q90"``
    where JPEG is accepted, else ``"png-zlib"``."""
    return f"jpeg-q{JPEG_QUALITY}" if "image/jpeg" in media_types else "png-zlib"


def encode_view(arr: np.ndarray, encoding: str) -> tuple[bytes, str]:
    """A view array encoded for upload as :func:`view_encoding` named it: (bytes, type).

    The bytes may differ between Pillow/libjpeg/zlib versions; nothing depends on them
    (the cache key is :func:`view_content_id`, the trainer regenerates the array).
    """
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), mode="RGB")
    out = io.BytesIO()
    if encoding == f"jpeg-q{JPEG_QUALITY}":
        im.save(out, "JPEG", quality=JPEG_QUALITY)
        return out.getvalue(), "image/jpeg"
    if encoding == "png-zlib":
        im.save(out, "PNG", compress_level=PNG_LEVEL)
        return out.getvalue(), "image/png"
    raise ValueError(f"unknown view encoding {encoding!r}")


def view_content_id(
    source_sha256: str, image_id: str, view: int, *, hflip: bool, encoding: str,
    orientation: int = 1, sixteen_bit: bool = False, transparent: bool = False,
) -> str:
    """The name of view ``view`` (>= 1) of an image in cache keys, without computing it.

    Everything its pixels depend on: the source file's sha256 (which fixes the size), the
    seed (the image id and view index), the flip setting, the augmentation parameters and
    :data:`RECIPE_VERSION`; plus the upload encoding, because a lossy encoding changes
    what the teacher sees. ``orientation`` is the source's :func:`exif_orientation`: views
    are made from the upright pixels, so a file with an orientation other than 1 names it
    (its views cached before orientation was applied were sideways); for every other file
    the id is what it always was. ``sixteen_bit`` (a 16-bit greyscale source, see
    :func:`source_decoding`) names it likewise: its views cached before were white; and
    ``transparent`` (a pixel not fully opaque): its views cached before were made on the
    colour hidden under the transparent pixels, they are now made on white.

    >>> view_content_id("ab" * 32, "dom/cat/1.png", 2, hflip=True, encoding="jpeg-q90")[:8]
    'view1:76'
    """
    if view < 1:
        raise ValueError(f"view 0 is the file itself and is keyed by its bytes, got {view}")
    recipe = {
        "recipe": RECIPE_VERSION,
        "source_sha256": source_sha256,
        "seed": image_id,
        "view": view,
        "hflip": hflip,
        "scale": list(SCALE),
        "ratio": [RATIO[0], RATIO[1]],
        "brightness": BRIGHTNESS,
        "contrast": CONTRAST,
        "encoding": encoding,
    }
    if orientation != 1:
        recipe["exif_orientation"] = orientation
    if sixteen_bit:
        recipe["source_bits"] = 16
    if transparent:
        recipe["background"] = "white"
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"view{RECIPE_VERSION}:" + hashlib.sha256(text.encode("ascii")).hexdigest()

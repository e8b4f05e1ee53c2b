"""Compact vector codecs: float16 (default), float8 e4m3 and int8, in plain numpy.

A vector is stored as raw bytes of one of three formats and read back as float32:

* ``"float16"``: IEEE half precision, 2 bytes a dimension. Lossless for cosine targets
  (cosine to the original >= 0.9999 on unit vectors; see docs/vector-formats.md).
* ``"float8_e4m3"``: the OCP "e4m3fn" byte (1 sign, 4 exponent, 3 mantissa bits, bias 7,
  no infinities, max 448), 1 byte a dimension, rounded to nearest (ties to even).
  Unscaled, like casting with ``ml_dtypes``: meant for unit-normalised vectors, where
  components sit well inside its range; values beyond +-448 saturate.
* ``"int8"``: symmetric per-vector scale (``max|x| / 127``) plus one signed byte a
  dimension; the single-vector byte form is a little-endian float32 scale then the codes.

The array helpers (:func:`quantize`, :func:`dequantize`) work along the last axis and
are what :class:`cache.EmbeddingStore` stores; the byte helpers (:func:`encode_vector`,
:func:`decode_vector`) are what :class:`cache.ResponseCache` stores. Nothing here uses
torch or ml_dtypes, so the client side stays light.

>>> import numpy as np
>>> v = np.array([0.6, -0.8], dtype=np.float32)
>>> decode_vector(encode_vector(v, "float16"), "float16", 2).tolist()
[0.60009765625, -0.7998046875]
"""

from __future__ import annotations

from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt

__all__ = [
    "E4M3_MAX",
    "E4M3_VALUES",
    "FORMATS",
    "VectorFormat",
    "as_stored",
    "check_format",
    "decode_vector",
    "dequantize",
    "e4m3_decode",
    "e4m3_encode",
    "encode_vector",
    "encode_vectors",
    "encoded_size",
    "quantize",
    "storage_dtype",
]

VectorFormat = Literal["float16", "float8_e4m3", "int8"]
FORMATS: Final[tuple[VectorFormat, ...]] = get_args(VectorFormat)

E4M3_MAX: Final = 448.0
_INT8_MAX: Final = 127.0
_SCALE_BYTES: Final = 4  # little-endian float32 scale in front of int8 codes


def _e4m3_table() -> npt.NDArray[np.float32]:
    """The float32 value of each of the 256 e4m3fn bytes (0x7F and 0xFF are NaN)."""
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent = (codes >> 3) & 0x0F
    mantissa = codes & 0x07
    # exponent 0 holds the subnormals m/8 * 2^-6; the others (1 + m/8) * 2^(e-7)
    magnitude = np.where(
        exponent == 0,
        mantissa / 8.0 * 2.0**-6,
        (1.0 + mantissa / 8.0) * np.exp2(exponent - 7.0),
    )
    values = (sign * magnitude).astype(np.float32)
    values[(codes & 0x7F) == 0x7F] = np.nan
    values.setflags(write=False)
    return values


E4M3_VALUES: Final = _e4m3_table()
# Codes 0x00..0x7E are the non-negative finite values in increasing order, which is what
# lets rounding be a binary search over magnitudes.
_E4M3_POSITIVE: Final = E4M3_VALUES[:0x7F].astype(np.float64)


def check_format(name: str) -> VectorFormat:
    """``name`` as a :data:`VectorFormat`, or ValueError listing the known formats."""
    if name not in FORMATS:
        raise ValueError(f"unknown vector format {name!r}; use one of {', '.join(FORMATS)}")
    return name


def storage_dtype(fmt: VectorFormat) -> np.dtype[np.generic]:
    """The numpy dtype of the stored codes: float16, uint8 (e4m3 bytes) or int8."""
    return np.dtype({"float16": np.float16, "float8_e4m3": np.uint8, "int8": np.int8}[fmt])


def encoded_size(dim: int, fmt: VectorFormat) -> int:
    """Bytes taken by one ``dim``-dimensional vector in :func:`encode_vector` form."""
    check_format(fmt)
    if fmt == "float16":
        return 2 * dim
    if fmt == "float8_e4m3":
        return dim
    return _SCALE_BYTES + dim


def _as_finite_float32(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    arr = np.asarray(x, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("vector holds NaN or infinity; refusing to encode it")
    return arr


def e4m3_encode(x: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """float values -> e4m3fn bytes, round to nearest (ties to even), saturating at +-448."""
    arr = _as_finite_float32(x)
    magnitude = np.minimum(np.abs(arr).astype(np.float64), E4M3_MAX)
    upper = np.searchsorted(_E4M3_POSITIVE, magnitude, side="left")  # first value >= x
    upper = np.minimum(upper, len(_E4M3_POSITIVE) - 1)
    lower = np.maximum(upper - 1, 0)
    d_low = magnitude - _E4M3_POSITIVE[lower]
    d_up = _E4M3_POSITIVE[upper] - magnitude
    # ties go to the even code (last mantissa bit 0), as IEEE round-to-nearest-even does
    pick_up = (d_up < d_low) | ((d_up == d_low) & (upper % 2 == 0))
    code = np.where(pick_up, upper, lower).astype(np.uint8)
    return np.where(np.signbit(arr), code | np.uint8(0x80), code).astype(np.uint8)


def e4m3_decode(codes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """e4m3fn bytes -> float32 values (a table lookup)."""
    return E4M3_VALUES[np.asarray(codes, dtype=np.uint8)]


def quantize(
    x: npt.ArrayLike, fmt: VectorFormat = "float16"
) -> tuple[np.ndarray, npt.NDArray[np.float32] | None]:
    """Encode an array along its last axis: ``(codes, scales)``.

    ``scales`` has the shape of ``x`` without its last axis for int8, and is None for
    the unscaled formats. Refuses NaN/infinity, and float16 overflow (|x| > 65504).
    """
    check_format(fmt)
    arr = _as_finite_float32(x)
    if fmt == "float16":
        with np.errstate(over="ignore"):  # overflow is detected just below, with a clear error
            half = arr.astype(np.float16)
        if not np.isfinite(half).all():
            raise ValueError("vector exceeds the float16 range (|x| > 65504)")
        return half, None
    if fmt == "float8_e4m3":
        return e4m3_encode(arr), None
    peak = np.abs(arr).max(axis=-1) if arr.shape[-1] else np.zeros(arr.shape[:-1], np.float32)
    scales = (peak / _INT8_MAX).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1.0))[..., None]
    codes = np.clip(np.rint(arr / safe), -_INT8_MAX, _INT8_MAX).astype(np.int8)
    return codes, scales


def dequantize(
    codes: np.ndarray, fmt: VectorFormat, scales: npt.ArrayLike | None = None
) -> npt.NDArray[np.float32]:
    """Inverse of :func:`quantize`: float32 array of the same shape as ``codes``."""
    check_format(fmt)
    if fmt == "float16":
        return np.asarray(codes, dtype=np.float16).astype(np.float32)
    if fmt == "float8_e4m3":
        return e4m3_decode(codes)
    if scales is None:
        raise ValueError("int8 codes need their scales")
    scale = np.asarray(scales, dtype=np.float32)[..., None]
    return np.asarray(codes, dtype=np.int8).astype(np.float32) * scale


def as_stored(x: npt.ArrayLike, fmt: VectorFormat = "float16") -> npt.NDArray[np.float32]:
    """The float32 values a cache in ``fmt`` gives back for ``x`` (rows along the last
    axis): what :func:`decode_vector` returns for :func:`encode_vector`'s bytes, so a fresh
    answer can be handed out exactly as its cache hits will be. Unlike :func:`quantize`
    it does not check the values (what it is given was just encoded, or will be).

    >>> as_stored([1 / 3], "float16").tolist()
    [0.333251953125]
    """
    if fmt == "float16":  # the hot path (a bought vector): two casts, no checks
        with np.errstate(over="ignore"):
            half = np.asarray(x, dtype=np.float32).astype(np.float16)
        return half.astype(np.float32)
    codes, scales = quantize(x, fmt)
    return dequantize(codes, fmt, scales)


def encode_vector(vector: npt.ArrayLike, fmt: VectorFormat = "float16") -> bytes:
    """One 1-D vector -> bytes in ``fmt`` (see :func:`encoded_size`)."""
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {arr.shape}")
    codes, scales = quantize(arr, fmt)
    body = np.ascontiguousarray(codes).astype(codes.dtype.newbyteorder("<")).tobytes()
    if scales is None:
        return body
    return np.asarray(scales, dtype="<f4").reshape(1).tobytes() + body


def encode_vectors(matrix: npt.ArrayLike, fmt: VectorFormat = "float16") -> list[bytes]:
    """:func:`encode_vector` of each row of a 2-D array, quantised in one pass (the same
    bytes as row by row; a bad row fails the whole call with the same ValueError)."""
    arr = np.asarray(matrix, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {arr.shape}")
    codes, scales = quantize(arr, fmt)
    body = np.ascontiguousarray(codes).astype(codes.dtype.newbyteorder("<"))
    if scales is None:
        return [row.tobytes() for row in body]
    prefix = np.asarray(scales, dtype="<f4")
    return [prefix[i : i + 1].tobytes() + row.tobytes() for i, row in enumerate(body)]


def decode_vector(data: bytes, fmt: VectorFormat, dim: int) -> npt.NDArray[np.float32]:
    """Bytes from :func:`encode_vector` -> float32 vector; ValueError if the size is wrong."""
    expected = encoded_size(dim, fmt)
    if len(data) != expected:
        raise ValueError(f"{fmt} vector of dim {dim} needs {expected} bytes, got {len(data)}")
    if fmt == "float16":
        return np.frombuffer(data, dtype="<f2").astype(np.float32)
    if fmt == "float8_e4m3":
        return e4m3_decode(np.frombuffer(data, dtype=np.uint8))
    scale = np.frombuffer(data[:_SCALE_BYTES], dtype="<f4")[0]
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"int8 vector has an invalid scale {scale!r}")
    codes = np.frombuffer(data[_SCALE_BYTES:], dtype=np.int8)
    out: npt.NDArray[np.float32] = codes.astype(np.float32) * np.float32(scale)
    return out

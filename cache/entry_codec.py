"""How a response-cache entry is stored: a :class:`CacheEntry` as checksummed bytes and back.

Value layout (little-endian)::

    b"VDC1" | crc32 of the rest (u32) | header length (u32) | header JSON | vector bytes

The header holds ``meta``, ``text``, the vector format and dimension, and the time the
entry was stored. The CRC catches garbled values: such an entry reads as a miss (logged),
and :meth:`ResponseCache.verify` lists it.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import numpy as np

from .cache_errors import CacheCorruptError
from .codecs import VectorFormat, check_format, decode_vector, encode_vector, encode_vectors
from .protocols import CacheEntry

__all__ = [
    "MAGIC",
    "SECRET_META_KEYS",
    "decode_entry",
    "decode_with_header",
    "encode_entries",
    "encode_entry",
    "teacher_in",
    "teacher_of",
]

MAGIC: Final = b"VDC1"
_PREFIX: Final = struct.Struct("<4sII")  # magic, crc32 of the rest, header length
# Metadata keys that would mean a credential is about to be written to disk.
SECRET_META_KEYS: Final = frozenset(
    {"api_key", "apikey", "api-key", "x-api-key", "authorization", "password", "secret"}
)


def _json_default(obj: object) -> str:
    if isinstance(obj, Decimal):
        return str(obj)  # money stays exact as a decimal string
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _check_meta(meta: Mapping[str, Any]) -> None:
    for name in meta:
        if str(name).lower() in SECRET_META_KEYS:
            raise ValueError(f"refusing to cache metadata key {name!r}: it looks like a secret")


# json.dumps(obj, default=..., allow_nan=False, separators=...) builds an encoder per
# call; one kept here writes the same text.
_ENCODER: Final = json.JSONEncoder(default=_json_default, allow_nan=False, separators=(",", ":"))


def _dumps(obj: Any) -> str:
    return _ENCODER.encode(obj)


def _pack(header_json: str, vec_bytes: bytes) -> bytes:
    header_bytes = header_json.encode()
    rest = struct.pack("<I", len(header_bytes)) + header_bytes + vec_bytes
    return MAGIC + struct.pack("<I", zlib.crc32(rest)) + rest


def encode_entry(
    entry: CacheEntry, fmt: VectorFormat = "float16", *, stored: float | None = None
) -> bytes:
    """A :class:`CacheEntry` as the bytes the cache stores (see the module docstring)."""
    _check_meta(entry.meta)
    vec_bytes = b""
    vec_header: dict[str, Any] | None = None
    if entry.vector is not None:
        vector = np.asarray(entry.vector, dtype=np.float32)
        vec_bytes = encode_vector(vector, fmt)
        vec_header = {"format": fmt, "dim": int(vector.shape[0])}
    header = {
        "meta": dict(entry.meta),
        "text": entry.text,
        "vector": vec_header,
        "stored": time.time() if stored is None else stored,
    }
    return _pack(_dumps(header), vec_bytes)


def encode_entries(
    entries: Sequence[CacheEntry], fmt: VectorFormat = "float16", *, stored: float | None = None
) -> list[bytes]:
    """:func:`encode_entry` of each entry (one ``stored`` time for all): the same bytes,
    several times cheaper for the entries of one response. Their vectors are quantised
    together, and a ``meta`` they share (one object) is checked and encoded once.

    A vector that cannot be encoded fails the whole call with the ValueError
    :func:`encode_entry` raises for it.
    """
    stored = time.time() if stored is None else stored
    arrays: list[np.ndarray | None] = []
    rows_of: dict[int, list[int]] = {}  # vector dimension -> the entries with one
    for i, entry in enumerate(entries):
        array = None if entry.vector is None else np.asarray(entry.vector, dtype=np.float32)
        if array is not None:
            if array.ndim != 1:
                raise ValueError(f"expected a 1-D vector, got shape {array.shape}")
            rows_of.setdefault(int(array.shape[0]), []).append(i)
        arrays.append(array)
    vectors: list[tuple[bytes, str] | None] = [None] * len(entries)
    for dim, rows in rows_of.items():
        described = _dumps({"format": fmt, "dim": dim})
        encoded = encode_vectors(np.stack([arrays[i] for i in rows]), fmt)  # type: ignore[misc]
        for i, data in zip(rows, encoded, strict=True):
            vectors[i] = (data, described)
    stored_json = _dumps(stored)
    metas: dict[int, tuple[Mapping[str, Any], str]] = {}  # id -> (the meta, its JSON)
    out = []
    for entry, vector in zip(entries, vectors, strict=True):
        seen = metas.get(id(entry.meta))
        if seen is None or seen[0] is not entry.meta:
            _check_meta(entry.meta)
            seen = metas[id(entry.meta)] = (entry.meta, _dumps(dict(entry.meta)))
        vec_bytes, vec_json = vector or (b"", "null")
        # exactly what json.dumps writes for encode_entry's header dict, key by key
        header = (
            f'{{"meta":{seen[1]},"text":{_dumps(entry.text)},"vector":{vec_json},'
            f'"stored":{stored_json}}}'
        )
        out.append(_pack(header, vec_bytes))
    return out


def decode_with_header(data: bytes) -> tuple[CacheEntry, dict[str, Any]]:
    """The entry and its whole header (``stored`` among others); see :func:`decode_entry`."""
    if type(data) is not bytes:
        raise CacheCorruptError(f"value is {type(data).__name__}, not bytes")
    if len(data) < _PREFIX.size:
        raise CacheCorruptError(f"value is {len(data)} bytes, shorter than its header")
    magic, crc, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CacheCorruptError(f"bad magic {magic!r}")
    if zlib.crc32(data[8:]) != crc:
        raise CacheCorruptError("checksum mismatch (garbled value)")
    end = _PREFIX.size + header_len
    if end > len(data):
        raise CacheCorruptError("header longer than the value (truncated value)")
    try:
        header = json.loads(data[_PREFIX.size : end])
        meta = header["meta"]
        text = header["text"]
        vec_header = header["vector"]
        vector = None
        if vec_header is not None:
            fmt = check_format(vec_header["format"])
            vector = decode_vector(data[end:], fmt, int(vec_header["dim"]))
        elif end != len(data):
            raise ValueError("trailing bytes after a vector-less entry")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        # RecursionError: a header nested too deep for json (a crafted value)
        raise CacheCorruptError(f"undecodable value: {exc}") from exc
    if not isinstance(meta, dict) or not (text is None or isinstance(text, str)):
        raise CacheCorruptError("header has the wrong types")
    return CacheEntry(vector=vector, text=text, meta=meta), header


def teacher_of(meta: Mapping[str, Any]) -> str | None:
    """``provider:model`` of an entry's metadata, or None when it names none."""
    provider, model = meta.get("provider"), meta.get("model")
    if isinstance(provider, str) and isinstance(model, str):
        return f"{provider}:{model}"
    return None


def teacher_in(data: bytes) -> str | None:
    """:func:`teacher_of` an encoded value's header, read without decoding its vector
    (None for a value that cannot be read: it is stored, and checked, as it is)."""
    try:
        _, _, header_len = _PREFIX.unpack_from(data)
        meta = json.loads(data[_PREFIX.size : _PREFIX.size + header_len])["meta"]
        return teacher_of(meta) if isinstance(meta, dict) else None
    except (struct.error, ValueError, KeyError, TypeError, RecursionError):
        return None


def decode_entry(data: bytes) -> CacheEntry:
    """Inverse of :func:`encode_entry`; :class:`CacheCorruptError` if ``data`` is damaged."""
    return decode_with_header(data)[0]

"""Reading embedding rows from a 2xx body: the right count, one dimension, finite
numbers; as JSON number lists or as base64 of little-endian float32."""

from __future__ import annotations

import base64
import binascii
import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import ResponseValidationError

__all__ = [
    "FLOAT32_LE",
    "base64_vectors",
    "default_dims",
    "dim_param",
    "indexed_vectors",
    "vectors_from",
]


def indexed_vectors(
    data: Any,
    *,
    expected: int,
    request_id: str | None,
    provider: str,
    base64_ok: bool = False,
) -> list[np.ndarray]:
    """OpenAI-style ``data: [{"index": i, "embedding": [...]}, ...]``, in index order.

    ``base64_ok``: an ``embedding`` may also be a base64 string (``encoding_format:
    "base64"``); see :func:`vectors_from`.
    """
    if not isinstance(data, list):
        raise ResponseValidationError("missing data[]", provider=provider, request_id=request_id)
    rows = []
    indices = []
    in_place = True  # the usual answer: row i has index i, so no check and no sort
    for pos, d in enumerate(data):
        # proto3 JSON leaves an index of 0 out (Gemini's OpenAI-compatible endpoint)
        index = d.get("index", 0) if isinstance(d, dict) else None
        if not isinstance(index, int):
            raise ResponseValidationError(
                "missing data[]", provider=provider, request_id=request_id
            )
        if index != pos:
            in_place = False
        indices.append(index)
        rows.append(d.get("embedding"))
    if not in_place and any("index" in d for d in data):  # none numbered: as sent
        # ``index`` is the input's position (pinned OpenAI spec, Embedding.index): rows
        # renumbered per sub-batch by a gateway (0, 1, 0, 1) would put vectors on the
        # wrong inputs, so indices that are not distinct positions are a bad answer
        if len(set(indices)) != len(indices) or not all(0 <= i < expected for i in indices):
            raise ResponseValidationError(
                f"data[] index values {indices[:8]} are not distinct input positions "
                f"0..{expected - 1}: the vectors cannot be matched to their inputs",
                provider=provider,
                request_id=request_id,
            )
        rows = [row for _, row in sorted(zip(indices, rows, strict=True), key=lambda p: p[0])]
    if base64_ok and rows and all(isinstance(r, str) for r in rows):  # as vectors_from
        return base64_vectors(rows, expected=expected, request_id=request_id, provider=provider)
    return vectors_from(
        rows, expected=expected, request_id=request_id, provider=provider, base64_ok=base64_ok
    )


# base64.b64decode(row, validate=True), without its Python wrapper on 3.11+, where it
# only calls this (a2b_base64 takes ASCII text and raises ValueError for any other, as
# b64decode does)
_b64decode: Callable[[str], bytes]
if sys.version_info >= (3, 11):
    _b64decode = functools.partial(binascii.a2b_base64, strict_mode=True)
else:
    _b64decode = functools.partial(base64.b64decode, validate=True)


# What ``encoding_format: "base64"`` carries: the float32 bytes of the vector, little
# endian. openai-python decodes it with np.frombuffer(..., dtype="float32") (and
# array.array("f") without numpy), voyageai-python with np.frombuffer(..., np.float32):
# native order, which is little endian on every platform they run on; naming the order
# keeps the decoding right on a big-endian machine too.
FLOAT32_LE = np.dtype("<f4")


def vectors_from(
    rows: Any,
    *,
    expected: int,
    request_id: str | None,
    provider: str,
    base64_ok: bool = False,
) -> list[np.ndarray]:
    """Validate a list of embedding rows: right count, one dimension, finite numbers.

    With ``base64_ok``, rows that are all strings are read as base64 of little-endian
    float32 (:func:`base64_vectors`); number lists are still accepted, so a server that
    ignores the encoding request and answers floats works too.
    """
    if not isinstance(rows, list) or len(rows) != expected:
        got = len(rows) if isinstance(rows, list) else type(rows).__name__
        raise ResponseValidationError(
            f"expected {expected} embeddings, got {got}", provider=provider, request_id=request_id
        )
    if base64_ok and rows and all(isinstance(r, str) for r in rows):
        return base64_vectors(rows, expected=expected, request_id=request_id, provider=provider)
    try:
        raw = np.asarray(rows)
        if raw.dtype.kind not in "iuf":  # strings, booleans, None, ints beyond 64 bits
            raise TypeError(f"values of type {raw.dtype} are not numbers")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is caught below
            mat = raw.astype(np.float32)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ResponseValidationError(
            f"embeddings are not numeric rows of one length: {exc}",
            provider=provider,
            request_id=request_id,
        ) from exc
    return _checked(mat, request_id=request_id, provider=provider)


def base64_vectors(
    rows: Any, *, expected: int, request_id: str | None, provider: str
) -> list[np.ndarray]:
    """Rows sent as base64 strings of little-endian float32 bytes, decoded with one
    ``np.frombuffer`` over the whole response (no per-number parsing).

    >>> import base64, numpy as np
    >>> row = base64.b64encode(np.array([0.5, -2.0], "<f4").tobytes()).decode()
    >>> [v.tolist() for v in base64_vectors([row], expected=1, request_id=None, provider="x")]
    [[0.5, -2.0]]
    """
    if not isinstance(rows, list) or len(rows) != expected:
        got = len(rows) if isinstance(rows, list) else type(rows).__name__
        raise ResponseValidationError(
            f"expected {expected} embeddings, got {got}", provider=provider, request_id=request_id
        )
    try:
        if not all(isinstance(r, str) for r in rows):
            raise ValueError("not every embedding is a base64 string")
        raw = [_b64decode(r) for r in rows]
    except (binascii.Error, ValueError) as exc:
        raise ResponseValidationError(
            f"embeddings are not base64: {exc}", provider=provider, request_id=request_id
        ) from exc
    size = len(raw[0]) if raw else 0
    if size == 0 or size % FLOAT32_LE.itemsize or any(len(b) != size for b in raw):
        lengths = sorted({len(b) for b in raw})
        raise ResponseValidationError(
            f"base64 embeddings are not whole float32 vectors of one length (bytes: {lengths})",
            provider=provider,
            request_id=request_id,
        )
    # one writable copy of the decoded bytes (rows that hold no view of the body), read
    # in place where float32 is little endian (every usual platform), copied otherwise;
    # no reshape, copy or row split for the usual single row (each numpy call costs more
    # than its warm timing inside a busy client: docs/benchmarks.md, fourth pass)
    flat = np.frombuffer(bytearray().join(raw), FLOAT32_LE)
    if not FLOAT32_LE.isnative:
        flat = flat.astype(np.float32)
    if not np.isfinite(flat).all():
        raise ResponseValidationError(
            "embeddings contain NaN or infinity", provider=provider, request_id=request_id
        )
    if len(raw) == 1:
        return [flat]
    return list(flat.reshape(len(raw), size // FLOAT32_LE.itemsize))


def _checked(mat: np.ndarray, *, request_id: str | None, provider: str) -> list[np.ndarray]:
    if mat.ndim != 2 or mat.shape[1] == 0:
        raise ResponseValidationError(
            f"embeddings have shape {mat.shape}, expected (n, dim)",
            provider=provider,
            request_id=request_id,
        )
    if not np.isfinite(mat).all():
        raise ResponseValidationError(
            "embeddings contain NaN or infinity", provider=provider, request_id=request_id
        )
    return list(mat)


def dim_param(*names: str) -> Callable[[str, str, Mapping[str, Any]], int | None]:
    """The ``Provider.requested_dim`` of an adapter whose params ``names`` (the first one
    set) ask for the vectors' length: a positive int (or its digits), else None.

    >>> dim_param("output_dimension")("embed-v4.0", "image_embedding", {"output_dimension": 256})
    256
    """

    def requested_dim(model: str, kind: str, params: Mapping[str, Any]) -> int | None:
        for name in names:
            value = params.get(name)
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    return requested_dim


def default_dims(table: Mapping[str, int]) -> Callable[[str, str, Mapping[str, Any]], int | None]:
    """The ``Provider.default_dim`` of an adapter whose models answer every kind at the
    length ``table`` gives for their name (None for a model it does not name).

    >>> default_dims({"embed-v4.0": 1536})("embed-v4.0", "text_embedding", {})
    1536
    """

    def default_dim(model: str, kind: str, params: Mapping[str, Any]) -> int | None:
        return table.get(model)

    return default_dim

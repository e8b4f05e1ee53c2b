"""The provider adapter contract: plain functions bundled in a frozen record.

An adapter knows one wire format. It never sends anything: the client builds an
``httpx.Request`` with ``build_request``, sends it, and hands the response to
``parse_response`` (2xx) or ``classify_error`` (anything else).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, overload

import httpx
import numpy as np
from pydantic import SecretStr

from ..errors import (
    APIStatusError,
    ConfigurationError,
    ResponseValidationError,
    status_error_class,
)
from ..models import (
    AnswerRequest,
    Image,
    ImageEmbeddingRequest,
    Kind,
    MixedEmbeddingRequest,
    TextEmbeddingRequest,
    Usage,
)

__all__ = [
    "FLOAT32_LE",
    "CallSpec",
    "Item",
    "Parsed",
    "Provider",
    "RateLimitHints",
    "base64_vectors",
    "data_uri",
    "default_classify_error",
    "header_int",
    "indexed_vectors",
    "json_object",
    "parse_retry_after",
    "reported_usage",
    "text_tokens_upper_bound",
    "usage_count",
    "vectors_from",
]

Item: TypeAlias = (
    ImageEmbeddingRequest | TextEmbeddingRequest | MixedEmbeddingRequest | AnswerRequest
)


@dataclass(frozen=True)
class CallSpec:
    """Everything one HTTP request to a provider depends on."""

    kind: Kind
    model: str
    items: Sequence[Item]
    base_url: str
    api_key: SecretStr = field(repr=False)
    params: Mapping[str, Any] = field(default_factory=dict)
    # Worst-case prompt tokens per image when the price file states one (models whose
    # image billing the adapter cannot bound by name, e.g. OpenAI-compatible servers).
    max_image_tokens: int | None = None


@dataclass(frozen=True)
class Parsed:
    """What a 2xx response yields: one vector or one text per item, plus usage."""

    usage: Usage
    vectors: list[np.ndarray] | None = None
    texts: list[str] | None = None
    request_id: str | None = None
    # The provider's own usage block as it sent it (see reported_usage); None when the
    # response did not say what was billed, so the client charges its reservation.
    reported: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RateLimitHints:
    """What the response headers say about the remaining rate limit (None = not said)."""

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None
    limit_requests: int | None = None
    limit_tokens: int | None = None


def _no_hints(headers: httpx.Headers) -> RateLimitHints:
    return RateLimitHints()


def _same_image(image: Image) -> Image:
    return image


@dataclass(frozen=True)
class Provider:
    """One provider's wire format, limits and metering, as plain functions."""

    name: str
    env_vars: tuple[str, ...]
    default_base_url: str
    api_version: str
    max_batch: Mapping[Kind, int]
    build_request: Callable[[CallSpec], httpx.Request]
    parse_response: Callable[[CallSpec, httpx.Response], Parsed]
    estimate_usage: Callable[[CallSpec], Usage]
    classify_error: Callable[[httpx.Response], APIStatusError] = field(
        default_factory=lambda: default_classify_error
    )
    rate_limit_hints: Callable[[httpx.Headers], RateLimitHints] = _no_hints
    prepare_image: Callable[[Image], Image] = _same_image
    # Per-model batch limit; None means max_batch[kind] for every model.
    batch_limit: Callable[[str, str], int] | None = None
    # Cap on the summed image bytes of one request (None = no cap beyond the count).
    max_request_bytes: int | None = None
    # Cap on the summed tokens of the texts of one request, counted with
    # text_tokens_upper_bound (None = no cap beyond the count): OpenAI 300k, Voyage 320k.
    max_request_tokens: int | None = None
    # Tokens one image counts toward max_request_tokens, at most (Voyage: 3,572 for its
    # 2 M billed-pixel cap at 560 px a token; 0 where images do not count).
    image_request_tokens: int = 0
    # False when responses carry no usage block, so our estimate is the bill (Vertex).
    usage_in_response: bool = True
    # True when the adapter finds its own credentials (Titan: botocore's chain of
    # profiles, SSO, container and instance roles), so no env var is required.
    key_optional: bool = False
    default_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Requests per minute when the caller sets none (Vertex: its lowest documented quota).
    default_rpm: float | None = None
    description: str = ""
    # What one model can do, when the provider's models differ (None: every kind, all models).
    model_kinds: Callable[[str], frozenset[str]] | None = None

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.max_batch)

    def kinds_for(self, model: str) -> frozenset[str]:
        """The kinds ``model`` offers: the provider's kinds, narrowed where a name tells."""
        if self.model_kinds is None:
            return self.kinds
        return self.kinds & self.model_kinds(model)

    def limit_for(self, model: str, kind: Kind) -> int:
        """Most items one request of ``kind`` may carry for ``model``."""
        if kind not in self.max_batch:
            # a KeyError deep in a harvest helped nobody (issue 13, item 13)
            what = kind.replace("_", " ")
            raise ConfigurationError(f"{self.name}:{model} does not offer {what}s")
        if self.batch_limit is not None:
            return self.batch_limit(model, kind)
        return self.max_batch[kind]


def data_uri(image: Image) -> str:
    """``data:<media type>;base64,<bytes>``."""
    return f"data:{image.media_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``Retry-After`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):  # "inf" / "1e400" parse as floats: ignore them
            return max(0.0, value)
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        seconds = float(ra)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    from email.utils import parsedate_to_datetime
    from time import time

    try:
        when = parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time())


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("type")
            if msg:
                return str(msg)[:300]
        if isinstance(err, str):
            return err[:300]
        for k in ("message", "detail"):
            if k in body:
                return str(body[k])[:300]
    return response.text[:300]


def request_id_of(response: httpx.Response) -> str | None:
    for h in ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray"):
        if h in response.headers:
            return response.headers[h]
    return None


def default_classify_error(response: httpx.Response) -> APIStatusError:
    """Map a non-2xx response to the error tree by status code."""
    cls = status_error_class(response.status_code)
    return cls(
        _message(response),
        status_code=response.status_code,
        request_id=request_id_of(response),
        retry_after=parse_retry_after(response.headers),
    )


MAX_REPORTED_FIELDS = 64  # a hostile body must not bloat every ledger line
MAX_REPORTED_DEPTH = 3


def reported_usage(obj: Any) -> dict[str, Any] | None:
    """The provider's usage block, kept for the ledger so a user can reconcile the bill.

    Only numbers (and short numeric strings, such as a dollar figure) survive, in nested
    objects up to three levels; anything else is dropped. None when ``obj`` holds no
    number at all: the response did not say what it billed.

    >>> reported_usage({"prompt_tokens": 12, "total_tokens": 12, "note": "hi"})
    {'prompt_tokens': 12, 'total_tokens': 12}
    >>> reported_usage({}) is None
    True
    """
    budget = [MAX_REPORTED_FIELDS]

    def keep(value: Any, depth: int) -> Any:
        if budget[0] <= 0:
            return None
        if isinstance(value, bool):
            return None
        if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
            budget[0] -= 1
            return value
        if isinstance(value, str) and len(value) <= 32:
            try:
                number = float(value)
            except ValueError:
                return None
            if math.isfinite(number):
                budget[0] -= 1
                return value
            return None
        if isinstance(value, dict) and depth < MAX_REPORTED_DEPTH:
            inner = {str(k)[:64]: keep(v, depth + 1) for k, v in list(value.items())[:64]}
            inner = {k: v for k, v in inner.items() if v is not None}
            return inner or None
        return None

    kept = keep(obj, 0) if isinstance(obj, dict) else None
    return kept if isinstance(kept, dict) else None


@overload
def usage_count(obj: Any, key: str, default: int = 0, *, fractional: bool = False) -> int: ...
@overload
def usage_count(
    obj: Any, key: str, default: None, *, fractional: bool = False
) -> int | None: ...
def usage_count(
    obj: Any, key: str, default: int | None = 0, *, fractional: bool = False
) -> int | None:
    """``obj[key]`` as a count of billed units: a non-negative int, else ``default`` (the
    key missing, a negative or non-numeric value, ``obj`` not a dict). A response's usage
    is untrusted: a bad figure must not price a request below what it cost.

    ``fractional`` also takes finite non-negative floats, truncated (Cohere's
    ``billed_units`` are numbers, not integers).

    >>> usage_count({"prompt_tokens": 12}, "prompt_tokens"), usage_count({}, "prompt_tokens")
    (12, 0)
    >>> usage_count({"total_tokens": -1}, "total_tokens", None) is None
    True
    >>> usage_count({"images": 2.0}, "images", fractional=True)
    2
    """
    v = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(v, int):
        return int(v) if v >= 0 else default
    if fractional and isinstance(v, float) and math.isfinite(v) and v >= 0:
        return int(v)
    return default


def header_int(headers: httpx.Headers, name: str) -> int | None:
    """An integer header (a rate-limit figure), or None when missing or not an integer."""
    v = headers.get(name)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def text_tokens_upper_bound(text: str) -> int:
    """Tokens a text can cost at most, with no tokenizer: its UTF-8 bytes plus one
    (no BPE or WordPiece token is shorter than one byte)."""
    return len(text.encode("utf-8")) + 1


def json_object(
    response: httpx.Response, *, provider: str, request_id: str | None
) -> dict[str, Any]:
    """The body of a 2xx response as a JSON object, or ResponseValidationError."""
    try:
        body = response.json()
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise ResponseValidationError(
            "response is not JSON", provider=provider, request_id=request_id
        ) from exc
    if not isinstance(body, dict):
        raise ResponseValidationError(
            "response is not a JSON object", provider=provider, request_id=request_id
        )
    return body


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
    if not isinstance(data, list) or not all(
        isinstance(d, dict) and isinstance(d.get("index", 0), int) for d in data
    ):
        raise ResponseValidationError("missing data[]", provider=provider, request_id=request_id)
    rows = [d.get("embedding") for d in sorted(data, key=lambda d: d.get("index", 0))]
    return vectors_from(
        rows, expected=expected, request_id=request_id, provider=provider, base64_ok=base64_ok
    )


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
        raw = [base64.b64decode(r, validate=True) for r in rows]
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
    flat = np.frombuffer(b"".join(raw), dtype=FLOAT32_LE)
    # astype copies into native float32: writable rows that own no view of the body
    mat = flat.reshape(len(raw), size // FLOAT32_LE.itemsize).astype(np.float32)
    return _checked(mat, request_id=request_id, provider=provider)


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

"""Helpers the provider adapters share to read and write the wire.

Request bodies (:func:`data_uri`), error statuses (:func:`default_classify_error`,
:func:`parse_retry_after`, :func:`request_id_of`), headers (:func:`header_int`), 2xx bodies
(:func:`json_object`) and the usage they report (:func:`usage_count`,
:func:`reported_usage`), and the token bound of a text used in estimates
(:func:`text_tokens_upper_bound`). Embedding rows are read by :mod:`.vectors`.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, cast, overload

import httpx

from ..errors import APIStatusError, ResponseValidationError, status_error_class
from ..models import Image, TextEmbeddingRequest
from ..redact import clip

__all__ = [
    "MAX_REPORTED_DEPTH",
    "MAX_REPORTED_FIELDS",
    "data_uri",
    "data_uris_literal",
    "default_classify_error",
    "endpoint_url",
    "header_int",
    "header_pairs",
    "header_values",
    "headers_of",
    "json_object",
    "json_post",
    "params_tokens_upper_bound",
    "parse_retry_after",
    "raw_headers",
    "reported_usage",
    "request_id_of",
    "text_tokens_upper_bound",
    "texts_literal",
    "usage_count",
]


@functools.lru_cache(maxsize=256)
def endpoint_url(url: str) -> httpx.URL:
    """``url`` parsed once: httpx parses a str URL again for every request (about 8 us
    of CPU), and a client sends to a handful of URLs. ``httpx.URL`` is immutable.

    >>> endpoint_url("http://127.0.0.1:8089/v2/embed").path
    '/v2/embed'
    """
    return httpx.URL(url)


def data_uri(image: Image) -> str:
    """``data:<media type>;base64,<bytes>``."""
    return f"data:{image.media_type};base64,{base64.b64encode(image.data).decode('ascii')}"


# A media type that needs no JSON escaping (what every real one is: "image/png").
_PLAIN_MEDIA_TYPE = re.compile(r"[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+")


def data_uris_literal(
    images: Sequence[Image], uris: Sequence[str], *, key: str
) -> dict[str, str] | None:
    """``{key: <JSON array of uris>}``, where ``uris[i]`` is :func:`data_uri` of
    ``images[i]``, written without ``json.dumps``'s character-by-character escaping scan:
    base64 text never needs escaping, nor does a plain media type (about 15 us of CPU
    per 12 KB image). None when a media type is not plain; for
    :func:`cache.keys.json_bytes_with_literals`.

    >>> img = Image(data=b"ab", media_type="image/png")
    >>> data_uris_literal([img], [data_uri(img)], key="images")
    {'images': '["data:image/png;base64,YWI="]'}
    """
    if len(images) != len(uris) or not all(
        _PLAIN_MEDIA_TYPE.fullmatch(i.media_type) for i in images
    ):
        return None
    return {key: '["' + '","'.join(uris) + '"]'}


def texts_literal(items: Sequence[object], texts: object) -> dict[str, list[bytes]] | None:
    """``{"input": <JSON of texts>}`` as pieces of bytes, from the items' escaped texts
    (:attr:`TextEmbeddingRequest.json_inner`, shared with their cache keys), when
    ``texts`` is the list of their texts (None otherwise: a parameter replaced it); for
    :func:`cache.keys.json_bytes_with_literals`.

    >>> texts_literal([TextEmbeddingRequest(text="a")], ["a"])  # doctest: +SKIP
    {'input': [b'["', b'a', b'"]']}
    """
    if not isinstance(texts, list) or len(texts) != len(items):
        return None
    pieces = [b'["']
    for item, text in zip(items, texts, strict=True):
        if not isinstance(item, TextEmbeddingRequest) or item.text is not text:
            return None
        pieces.append(item.json_inner)
        pieces.append(b'","')
    pieces[-1] = b'"]'
    return {"input": pieces}


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
    # clip, not [:300]: the settle step scrubs keys later, and a key the cut splits would
    # leave a prefix too short to be known as one
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return clip(response.text, 300) or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("type")
            if msg:
                return clip(str(msg), 300)
        if isinstance(err, str):
            return clip(err, 300)
        for k in ("message", "detail"):
            if k in body:
                return clip(str(body[k]), 300)
    return clip(response.text, 300)


_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray")


def request_id_of(response: httpx.Response) -> str | None:
    """The provider's request id, from the first of its usual headers present."""
    found = header_values(response.headers, _REQUEST_ID_HEADERS)
    for h in _REQUEST_ID_HEADERS:
        if h in found:
            return found[h]
    return None


def header_values(headers: httpx.Headers, names: Collection[str]) -> dict[str, str]:
    """``{name: headers.get(name)}`` for those of ``names`` (lower case) present, read in
    one pass over the headers: each ``headers.get`` scans them all (about 1 us each,
    six per answer for OpenAI's rate-limit headers), and only the headers asked for are
    decoded. A repeated header's values are joined with ", ", as ``headers.get`` joins
    them.

    >>> header_values(httpx.Headers({"X-Request-Id": "r1", "Server": "s"}), {"x-request-id"})
    {'x-request-id': 'r1'}
    """
    try:
        wanted = _encoded_names(cast(Hashable, names))
        entries = headers._list  # (name, lower-case name, value), as bytes
    except (TypeError, AttributeError):  # unhashable names; an httpx without _list
        wanted, entries = None, None
    if wanted is None or entries is None:
        found: dict[str, str] = {}
        for name, value in headers.multi_items():  # names in lower case
            if name in names:
                found[name] = f"{found[name]}, {value}" if name in found else value
        return found
    found = {}
    encoding = ""
    for _, lower, raw in entries:
        wanted_name = wanted.get(lower)
        if wanted_name is None:
            continue
        encoding = encoding or headers.encoding  # as multi_items decodes: all or none ASCII
        value = raw.decode(encoding)
        found[wanted_name] = (
            f"{found[wanted_name]}, {value}" if wanted_name in found else value
        )
    return found


@functools.lru_cache(maxsize=64)
def _encoded_names(hashable_names: Hashable) -> dict[bytes, str] | None:
    """``{name.encode(): name}`` for header names given in lower-case ASCII (the names
    httpx compares); None when one is not, so the caller reads them the plain way."""
    names = cast(Collection[str], hashable_names)
    if not all(isinstance(n, str) and n.isascii() and n == n.lower() for n in names):
        return None
    return {n.encode("ascii"): n for n in names}


def raw_headers(pairs: Iterable[tuple[bytes, bytes]]) -> httpx.Headers:
    """``httpx.Headers(pairs)`` for (name, value) pairs that are bytes already (what a
    transport reads off the wire), built without httpx's per-header type checks and
    encoding (about 2 us per answer).

    >>> raw_headers([(b"Content-Type", b"text/plain")]).multi_items()
    [('content-type', 'text/plain')]
    """
    entries = [(name, name.lower(), value) for name, value in pairs]
    if not all(type(n) is bytes and type(v) is bytes for n, _, v in entries):
        return httpx.Headers(list(pairs))  # not all bytes: httpx checks and encodes them
    return headers_of(entries)


def headers_of(
    entries: list[tuple[bytes, bytes, bytes]], ascii_only: bool = False
) -> httpx.Headers:
    """An ``httpx.Headers`` holding ``entries`` (name, lower-case name, value) as they
    are: what its constructor makes of such byte pairs, without its type checks (an
    ``isinstance(x, Mapping)`` alone costs about 1 us). ``ascii_only``: the entries are
    known to be ASCII, the encoding httpx would find for them by decoding each."""
    headers = httpx.Headers.__new__(httpx.Headers)
    if not _HEADERS_INTERNALS:  # an httpx whose Headers keeps its list otherwise
        return httpx.Headers([(name, value) for name, _, value in entries])
    headers._list = entries
    headers._encoding = "ascii" if ascii_only else None
    return headers


# httpx.Headers keeps (name, lower-case name, value) in _list and its encoding in
# _encoding (httpx 0.23 to 0.28); checked once, else the plain constructor is used.
_HEADERS_INTERNALS = set(vars(httpx.Headers([("a", "b")]))) == {"_list", "_encoding"}


def header_pairs(headers: httpx.Headers) -> list[tuple[str, str]]:
    """``headers.multi_items()`` (lower-case names), with the encoding looked up once
    instead of twice per header.

    >>> header_pairs(httpx.Headers({"Host": "h", "Content-Length": "2"}))
    [('host', 'h'), ('content-length', '2')]
    """
    entries = getattr(headers, "_list", None)
    if entries is None:
        return headers.multi_items()
    encoding = headers.encoding
    return [(lower.decode(encoding), value.decode(encoding)) for _, lower, value in entries]


# Headers json_post sets itself; given by a caller, the plain constructor places them.
_AUTO_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})


def json_post(url: httpx.URL, headers: Mapping[str, str], body: bytes) -> httpx.Request:
    """``httpx.Request("POST", url, headers=headers, content=body)``, the same request
    (headers, their order, body) built without ``httpx.Request``'s content encoding,
    header merging and per-header checks: about 10 us of CPU less per request.

    >>> r = json_post(httpx.URL("http://h:1/v1/x"), {"Content-Type": "application/json"}, b"{}")
    >>> r.headers.raw
    [(b'Host', b'h:1'), (b'Content-Type', b'application/json'), (b'Content-Length', b'2')]
    """
    if not url.host or any(k.lower() in _AUTO_HEADERS for k in headers):
        return httpx.Request("POST", url, headers=headers, content=body)
    # what httpx.Request does: Host first, the caller's headers, then Content-Length
    try:
        entries = [_host_entry(url)]
        for name, value in headers.items():
            raw = name.encode("ascii")
            entries.append((raw, raw.lower(), value.encode("ascii")))
    except (UnicodeEncodeError, AttributeError):  # not ASCII text: httpx says what is wrong
        return httpx.Request("POST", url, headers=headers, content=body)
    entries.append((*_CONTENT_LENGTH, str(len(body)).encode("ascii")))
    headers_made = headers_of(entries, ascii_only=True)  # each one encoded as ASCII
    # What httpx.Request("POST", url, headers=..., stream=...) sets, then read(), but
    # with ``url`` itself (immutable), not a copy of it: a transport can then know an
    # endpoint it has seen by its identity (tests/client/test_hot_path.py checks that
    # every attribute is the one httpx sets).
    request = httpx.Request.__new__(httpx.Request)
    request.method = "POST"
    request.url = url
    request.headers = headers_made
    request.extensions = {}
    request.stream = httpx.ByteStream(body)
    request._content = body  # what read() sets for a bytes body, as content= reads it
    return request


_CONTENT_LENGTH = (b"Content-Length", b"content-length")
_HOSTS: dict[int, tuple[httpx.URL, tuple[bytes, bytes, bytes]]] = {}


def _host_entry(url: httpx.URL) -> tuple[bytes, bytes, bytes]:
    """The Host header of ``url`` as httpx.Headers holds it, built once per URL object
    (a client sends to a handful, see :func:`endpoint_url`; ``url.netloc`` costs about
    1.5 us each time)."""
    found = _HOSTS.get(id(url))
    if found is not None and found[0] is url:
        return found[1]
    entry = (b"Host", b"host", url.netloc)
    if len(_HOSTS) >= 256:
        _HOSTS.clear()
    _HOSTS[id(url)] = (url, entry)  # holds url: its id is not reused while here
    return entry


def _redirect_message(response: httpx.Response) -> str:
    """Where a 3xx points (its Location without credentials, query or fragment: those may
    hold secrets), and what to do: redirects are never followed, so the key stays put.

    >>> r = httpx.Response(301, headers={"Location": "https://user:pw@api.example/v2?key=s"})
    >>> _redirect_message(r)[:60]
    'the server redirects to https://api.example/v2; give that as'
    """
    where = "(no Location given)"
    location = response.headers.get("location", "")
    try:
        url = httpx.URL(location)
        if url.scheme and url.host:
            where = str(url.copy_with(userinfo=b"", query=None, fragment=None))
        elif location:
            where = f"the path {url.path}"
    except httpx.InvalidURL:
        pass
    return (f"the server redirects to {where}; give that as the base URL (redirects are "
            "not followed: the API key must not go to another address)")


def default_classify_error(response: httpx.Response) -> APIStatusError:
    """Map a non-2xx response to the error tree by status code."""
    cls = status_error_class(response.status_code)
    return cls(
        _redirect_message(response) if 300 <= response.status_code < 400
        else _message(response),
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
    if (
        isinstance(obj, dict)
        and len(obj) <= MAX_REPORTED_FIELDS
        and all(type(k) is str and len(k) <= 64 and type(v) is int for k, v in obj.items())
    ):
        return dict(obj) or None  # the usual block, flat counts: all of it is kept
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
            # a name over 64 characters is left out, not cut: the ledger's scrub of the key
            # would not know the few characters of a key such a cut leaves
            inner = {
                str(k): keep(v, depth + 1)
                for k, v in list(value.items())[:64]
                if len(str(k)) <= 64
            }
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
    """``obj[key]`` as a count of billed units, else ``default`` (the key missing, a
    negative, non-finite or non-numeric value, a boolean, ``obj`` not a dict). A
    response's usage is untrusted: a bad figure must not price a request below what it
    cost, and a figure that says more than was reserved must be charged (an overrun).

    A count is a finite non-negative JSON number, fractional ones rounded up (Cohere's
    ``billed_units`` are numbers, not integers: 57.5 billed tokens are charged as 58,
    never below the bill; a gateway may send ``50000.0``), or a string of ASCII digits
    (surrounding whitespace ignored; at most 4300 of them). ``fractional`` is kept for
    callers and changes nothing: every count takes floats.

    >>> usage_count({"prompt_tokens": 12}, "prompt_tokens"), usage_count({}, "prompt_tokens")
    (12, 0)
    >>> usage_count({"total_tokens": -1}, "total_tokens", None) is None
    True
    >>> usage_count({"images": 2.0}, "images"), usage_count({"n": 57.5}, "n")
    (2, 58)
    >>> usage_count({"n": " 50000 "}, "n"), usage_count({"n": "5e4"}, "n", None)
    (50000, None)
    >>> usage_count({"n": True}, "n", None) is None  # a JSON true is not 1
    True
    """
    v = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(v, bool):
        return default
    if isinstance(v, int):
        return int(v) if v >= 0 else default
    if isinstance(v, float) and math.isfinite(v) and v >= 0:
        return math.ceil(v)
    if isinstance(v, str):
        digits = v.strip()
        # int() refuses more than 4300 digits (as json.loads does for a number): none
        if digits.isascii() and digits.isdigit() and len(digits) <= 4300:
            return int(digits)
    return default


def whole_number(value: Any) -> int | None:
    """``value`` as a whole number: an int, an integral float, or a string of one ("3",
    " 2.0 "), as pydantic servers and proto3 JSON read a count; None for anything else (a
    bool, a fraction, nan, "2k").

    >>> whole_number("3"), whole_number(2.0), whole_number(True), whole_number(2.5)
    (3, 2, None, None)
    """
    if isinstance(value, bool):
        return None
    try:
        count = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError):
        return None
    if not count.is_finite() or count != count.to_integral_value():
        return None
    return int(count)


MAX_HEADER_INT = 2**63 - 1  # a rate-limit figure beyond this is no figure (nor a float)


def header_int(headers: Mapping[str, str], name: str) -> int | None:
    """An integer header (a rate-limit figure), or None when missing, not an integer, or
    beyond :data:`MAX_HEADER_INT` either way (a 400-digit limit overflowed the limiter's
    ``float()`` before the billed answer carrying it was settled)."""
    v = headers.get(name)
    try:
        value = int(v) if v is not None else None
    except ValueError:
        return None
    return None if value is None or abs(value) > MAX_HEADER_INT else value


def text_tokens_upper_bound(text: str) -> int:
    """Tokens a text can cost at most, with no tokenizer: its UTF-8 bytes plus one
    (no BPE or WordPiece token is shorter than one byte)."""
    # an ASCII text (known without a scan) is one byte a character: no copy to count
    return (len(text) if text.isascii() else len(text.encode("utf-8"))) + 1


def params_tokens_upper_bound(params: Mapping[str, Any]) -> int:
    """Input tokens a caller's extra request params can add at most: a system prompt,
    tools or a response schema are billed as input, so the bound is every UTF-8 byte of
    their JSON (plus one). Scalar settings (temperature, ...) add a few tokens too many.
    Pass the params as sent (``reasoning``, which is ours, removed).

    >>> params_tokens_upper_bound({})
    0
    >>> params_tokens_upper_bound({"system": "Answer with one digit."})
    36
    """
    if not params:
        return 0
    return text_tokens_upper_bound(
        json.dumps(params, ensure_ascii=False, separators=(",", ":"), default=str)
    )


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

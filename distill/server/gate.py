"""The gate every API request passes, in the order a real provider's stack applies it.

bearer token (401, before the body is read) → body size and time (413/408) →
requests/min (429 + Retry-After) → added latency → seeded fault draw (500/503/529, not
billed) → JSON parse (400) → model name (404) → the wire format's work (400 on bad input)
→ bill → post-work fault (drop, timeout, malformed, wrong dimension; all billed).

A wire format only supplies its ``Work``: parsed JSON body and request id in, an
:class:`Outcome` (200 body, what to bill) out. :func:`gated` wraps it into an endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from .billing import Bill
from .faults import Fault
from .ratelimit import go_duration, retry_after_header
from .state import TeacherState
from .wire import WireError

__all__ = [
    "DROP_KEY",
    "BodyRefused",
    "Outcome",
    "Work",
    "error_body",
    "error_response",
    "gated",
    "new_request_id",
    "parse_json",
    "read_body",
]

log = logging.getLogger("distill.server.app")  # the name operators already filter on

# Set on the scope by a "drop" fault; TeacherApp then aborts the socket (no response).
DROP_KEY = "vlm_distill.drop_connection"
MAX_MESSAGE_CHARS = 300
# On a refusal before the body was read: uvicorn then closes instead of reading on.
_CLOSE = {"Connection": "close"}
# A JSON escape of a UTF-16 surrogate: a cheap test for bodies that may hold a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


# ------------------------------------------------------------ error envelopes


_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    408: ("invalid_request_error", "request_timeout"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}


def error_body(style: str, status: int, message: str, request_id: str, code: str | None) -> Any:
    """The provider's error envelope: Cohere, OpenAI, or Anthropic's for a 529."""
    if status == 529:
        # Anthropic's overload envelope: the status code is what clients act on.
        return {
            "type": "error",
            "error": {"type": "overloaded_error", "message": message},
            "request_id": request_id,
        }
    if style == "cohere":
        return {"id": request_id, "message": message}
    type_, default_code = _OPENAI_TYPES.get(status, ("invalid_request_error", None))
    return {
        "error": {"message": message, "type": type_, "param": None, "code": code or default_code}
    }


def error_response(
    style: str,
    status: int,
    message: str,
    rid: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    if len(message) > MAX_MESSAGE_CHARS:
        # Messages quote what the caller sent (a model name, a media type): never all of it.
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    h = {"x-request-id": rid, **(headers or {})}
    return JSONResponse(error_body(style, status, message, rid, code), status, headers=h)


def new_request_id(style: str) -> str:
    return str(uuid.uuid4()) if style == "cohere" else f"req_{uuid.uuid4().hex}"


# ------------------------------------------------------------------ outcomes


@dataclass
class Outcome:
    """What a finished request produced: its 200 body, its bill and its wrong-dim twin."""

    body: dict[str, Any]
    images: int
    input_tokens: int
    output_tokens: int
    usd: Decimal
    wrong_dim_body: dict[str, Any] | None = None


Work = Callable[[TeacherState, Any, str], Awaitable[Outcome]]


# -------------------------------------------------------------------- bodies


class BodyRefused(Exception):
    """The body is not read (any further): too large, too slow, or the client left."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, read only while it stays within ``limit`` bytes and ``timeout_s`` seconds.

    A declared ``Content-Length`` over the limit is refused before a byte is read, and a
    chunked body is read only up to the limit: draining what a client insists on sending
    is how one caller holds the server's memory and time. The refusal closes the
    connection, so some clients see a reset instead of the 413; that is the trade-off.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyRefused(413, f"request body exceeds {limit} bytes")

    async def read() -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyRefused(413, f"request body exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError as exc:
        raise BodyRefused(408, f"request body not received within {timeout_s:g} s") from exc
    except ClientDisconnect as exc:
        raise BodyRefused(400, "client disconnected while sending the body") from exc


async def _sleep_unless_disconnected(request: Request, seconds: float) -> None:
    """Sleep, but stop early once the client hung up (keeps shutdown quick)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    tasks = {asyncio.ensure_future(asyncio.sleep(seconds)), asyncio.ensure_future(disconnected())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def parse_json(raw: bytes) -> Any:
    """The decoded body, or ``ValueError`` with the message of its 400.

    Besides malformed JSON: thousands of nested arrays (``RecursionError``), a number of
    more than 4300 digits (Python's int limit) and a lone surrogate escape such as
    ``"\\ud800"`` (valid JSON, but no UTF-8 form: the texts and the echoed model name
    could neither be embedded nor rendered, a 500 after the work was billed).
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int digits
        raise ValueError("request body is not valid JSON") from None
    # Rare, so only then pay for a second pass (a UTF-16/32 body, NULs up front, always).
    if b"\x00" in raw[:4] or _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, RecursionError):
            raise ValueError(
                "request body holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)"
            ) from None
    return body


# ---------------------------------------------------------------------- gate


def _rate_headers(state: TeacherState, style: str) -> dict[str, str]:
    if style != "openai" or state.limiter is None:
        return {}
    left, reset = state.limiter.remaining()
    return {
        "x-ratelimit-limit-requests": str(state.limiter.limit),
        "x-ratelimit-remaining-requests": str(max(0, left)),
        "x-ratelimit-reset-requests": go_duration(reset),
    }


async def _admit(state: TeacherState, request: Request, style: str, rid: str) -> Any:
    """The parsed JSON body, or the error response that refuses the request (unbilled)."""
    config = state.config
    if not state.authorised(request):
        # Before the body is read: a caller without the token costs no memory or time.
        # Never echo what was sent: a wrong key is often someone's real key.
        return error_response(style, 401, "invalid or missing bearer token", rid, headers=_CLOSE)
    try:
        raw = await read_body(request, config.max_body_bytes, config.body_timeout_s)
    except BodyRefused as exc:
        # The rest of the body is not wanted: close rather than let the server drain it.
        return error_response(style, exc.status, exc.message, rid, headers=_CLOSE)
    if state.limiter is not None:
        wait = state.limiter.try_acquire()
        if wait is not None:
            return error_response(
                style,
                429,
                f"rate limit of {state.limiter.limit} requests per minute reached",
                rid,
                headers={"Retry-After": retry_after_header(wait), **_rate_headers(state, style)},
            )
    if config.faults.latency_ms:
        await asyncio.sleep(config.faults.latency_ms / 1000)
    return raw


async def _handle(state: TeacherState, request: Request, style: str, work: Work) -> Response:
    config = state.config
    rid = new_request_id(style)
    raw = await _admit(state, request, style, rid)
    if isinstance(raw, Response):
        return raw
    fault = state.plan.draw()
    if fault is Fault.FAIL_500:
        return error_response(style, 500, "injected internal server error", rid)
    if fault is Fault.FAIL_503:
        return error_response(style, 503, "injected: service unavailable", rid)
    if fault is Fault.FAIL_529:
        return error_response(style, 529, "Overloaded", rid)
    try:
        body = parse_json(raw)
    except ValueError as exc:
        return error_response(style, 400, str(exc), rid)
    if config.model_name is not None and isinstance(body, dict):
        model = body.get("model")
        if isinstance(model, str) and model and model != config.model_name:
            return error_response(style, 404, f"model {model!r} not found", rid, "model_not_found")
    try:
        outcome = await work(state, body, rid)
    except WireError as exc:
        return error_response(style, exc.status, exc.message, rid, exc.code)
    except Exception:
        log.exception("teacher backend failed on request %s", rid)
        return error_response(style, 500, "internal error while computing the answer", rid)

    headers = {"x-request-id": rid, **_rate_headers(state, style)}
    try:
        # Rendered before it is billed: an answer with NaN (damaged weights, a custom
        # backend) was billed, then a bare 500 that clients retry, billed again each time.
        response = JSONResponse(outcome.body, headers=headers)
    except ValueError as exc:  # NaN/inf (allow_nan=False), text with no UTF-8 form
        log.error("the answer to request %s is not JSON (%s); not billed", rid, exc)
        return error_response(style, 500, "internal error: the answer could not be encoded", rid)

    # The work is done: bill it before any post-work fault, as a provider would.
    state.billing.record(
        Bill(
            request_id=rid,
            endpoint=request.url.path,
            images=outcome.images,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            usd=outcome.usd,
            body_bytes=len(raw),
        )
    )
    if fault is Fault.DROP:
        request.scope[DROP_KEY] = True
        return Response(status_code=200)
    if fault is Fault.TIMEOUT:
        await _sleep_unless_disconnected(request, config.faults.timeout_sleep_s)
    if fault is Fault.WRONG_DIM and outcome.wrong_dim_body is not None:
        return JSONResponse(outcome.wrong_dim_body, headers=headers)
    if fault is Fault.MALFORMED:
        text = json.dumps(outcome.body)
        return Response(text[: len(text) // 2], media_type="application/json", headers=headers)
    return response


def gated(
    state: TeacherState, style: str, work: Work
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that runs ``work`` behind the gate; ``style`` picks the error envelope."""

    async def endpoint(request: Request) -> Response:
        return await _handle(state, request, style, work)

    return endpoint

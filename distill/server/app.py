"""The local pay-per-query teacher: a Starlette app speaking Cohere v2 and OpenAI v1.

Routes::

    GET  /healthz                 no auth
    POST /v2/embed                Cohere: texts[] | images[] (data URIs) | inputs[].content[]
    POST /v1/embeddings           OpenAI: input (text); "modality": "image" for data URIs
    POST /v1/chat/completions     OpenAI: answers to image_url (data URL) + text prompts
    GET  /admin/billing           the server's own bill (bearer token)
    GET  /admin/info              backend, prices, faults (bearer token)
    POST /admin/reset             clear the bill and the rate-limit window (bearer token)

Every API request goes through the same gate, in the order a real provider's stack
applies it: body size (413) → bearer token (401) → requests/min (429 + Retry-After) →
added latency → seeded fault draw (500/503/529, not billed) → parse (400) → work →
bill → post-work fault (drop, timeout, malformed, wrong dimension; all billed).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .answers import option_prompt, parse_options, pick_option
from .backends import Backend, ImageDecodeError, ImageOut, ImageTask
from .batching import MicroBatcher
from .billing import Bill, Billing, count_tokens, price_embed, price_tokens
from .config import ServerConfig
from .faults import Fault, FaultPlan, SlidingWindowLimiter, go_duration, retry_after_header
from .wire import (
    ChatRequest,
    EmbedInput,
    ImagePart,
    WireError,
    check_pixels,
    parse_chat,
    parse_cohere_embed,
    parse_openai_embed,
)

__all__ = ["TeacherApp", "TeacherState", "create_app"]

log = logging.getLogger(__name__)

_DROP_KEY = "vlm_distill.drop_connection"
# On a refusal before the body was read: uvicorn then closes instead of reading on.
_CLOSE = {"Connection": "close"}
_TOKEN = re.compile(r"\w+|[^\w\s]")
NO_IMAGE_ANSWER = "No image was given."

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


# ----------------------------------------------------------------- app state


class TeacherState:
    """Everything one server instance owns: config, backend, bill, limiter, batchers."""

    def __init__(
        self, config: ServerConfig, backend: Backend, clock: Callable[[], float]
    ) -> None:
        self.config = config
        self.backend = backend
        self.billing = Billing()
        self.plan = FaultPlan(config.faults)
        self.limiter = SlidingWindowLimiter(config.rpm, clock=clock) if config.rpm else None
        self.images: MicroBatcher[ImageTask, ImageOut] = MicroBatcher(
            backend.embed_images, max_batch=backend.max_batch, executor=backend.executor
        )
        self.texts: MicroBatcher[str, np.ndarray] = MicroBatcher(
            backend.embed_texts, max_batch=backend.max_text_batch, executor=backend.executor
        )
        self._token = config.token.get_secret_value().encode("utf-8")

    def authorised(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant-time compare: the token is the only thing between a caller and the bill.
        return hmac.compare_digest(value.strip().encode("utf-8"), self._token)

    async def aclose(self) -> None:
        await self.images.aclose()
        await self.texts.aclose()


# ------------------------------------------------------------ error envelopes


def _openai_error(status: int, message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


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


def _error_body(style: str, status: int, message: str, request_id: str, code: str | None) -> Any:
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
    return _openai_error(status, message, type_, code or default_code)


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


def _new_request_id(style: str) -> str:
    return str(uuid.uuid4()) if style == "cohere" else f"req_{uuid.uuid4().hex}"


class BodyRefused(Exception):
    """The body is not read (any further): too large, too slow, or the client left."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
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


def _truncate_tokens(text: str, max_tokens: int | None) -> tuple[str, bool]:
    if max_tokens is None:
        return text, False
    matches = list(_TOKEN.finditer(text))
    if len(matches) <= max_tokens:
        return text, False
    return text[: matches[max_tokens - 1].end()], True


def _resize(vecs: np.ndarray, dim: int | None, native: int) -> np.ndarray:
    """Matryoshka-style shortening (``dimensions`` / ``output_dimension``), renormalised."""
    if dim is None or dim == native:
        return vecs
    if dim > native:
        raise WireError(400, f"this model's embeddings have {native} dimensions, not {dim}")
    short = vecs[:, :dim]
    return short / np.maximum(np.linalg.norm(short, axis=1, keepdims=True), 1e-12)


def _wrong_dim(vecs: np.ndarray) -> np.ndarray:
    return vecs[:, : max(1, vecs.shape[1] // 2)]


# ------------------------------------------------------------------ the app


class TeacherApp(Starlette):
    """A Starlette app that can also drop a connection without any response.

    The drop needs the server's transport, which only the outermost ASGI callable can
    reach (uvicorn passes a bound ``send`` of its request cycle). A handler marks the
    scope; the first ``http.response.start`` of a marked request aborts the socket.
    """

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:  # type: ignore[override]
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        dropped = False

        async def guarded_send(message: Message) -> None:
            nonlocal dropped
            if dropped:
                return
            if message["type"] == "http.response.start" and scope.get(_DROP_KEY):
                dropped = True
                await _abort_connection(send)
                return
            await send(message)

        await super().__call__(scope, receive, guarded_send)


async def _abort_connection(send: Any) -> None:
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("dropping a connection needs uvicorn (no transport found)")
    transport.abort()
    # Let connection_lost run, so uvicorn sees a disconnect rather than a handler that
    # "returned without starting a response" (which it would answer with a 500).
    for _ in range(3):
        await asyncio.sleep(0)


def create_app(
    config: ServerConfig, backend: Backend, *, clock: Callable[[], float] = time.monotonic
) -> Starlette:
    """The teacher server as an ASGI app; run it with uvicorn or :class:`ServerThread`.

    >>> from pydantic import SecretStr
    >>> from distill.server import HashBackend, ServerConfig
    >>> app = create_app(ServerConfig(token=SecretStr("secret")), HashBackend())
    """
    state = TeacherState(config, backend, clock)

    def error(style: str, status: int, message: str, rid: str, code: str | None = None,
              headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
        h = {"x-request-id": rid, **(headers or {})}
        return JSONResponse(_error_body(style, status, message, rid, code), status, headers=h)

    def rate_headers(style: str) -> dict[str, str]:
        if style != "openai" or state.limiter is None:
            return {}
        left, reset = state.limiter.remaining()
        return {
            "x-ratelimit-limit-requests": str(state.limiter.limit),
            "x-ratelimit-remaining-requests": str(max(0, left)),
            "x-ratelimit-reset-requests": go_duration(reset),
        }

    async def handle(
        request: Request,
        style: str,
        work: Callable[[Any, str], Awaitable[Outcome]],
    ) -> Response:
        rid = _new_request_id(style)
        if not state.authorised(request):
            # Before the body is read: a caller without the token costs no memory or time.
            # Never echo what was sent: a wrong key is often someone's real key.
            return error(style, 401, "invalid or missing bearer token", rid, headers=_CLOSE)
        try:
            raw = await _read_body(request, config.max_body_bytes, config.body_timeout_s)
        except BodyRefused as exc:
            # The rest of the body is not wanted: close rather than let the server drain it.
            return error(style, exc.status, exc.message, rid, headers=_CLOSE)
        if state.limiter is not None:
            wait = state.limiter.try_acquire()
            if wait is not None:
                return error(
                    style,
                    429,
                    f"rate limit of {state.limiter.limit} requests per minute reached",
                    rid,
                    headers={"Retry-After": retry_after_header(wait), **rate_headers(style)},
                )
        if config.faults.latency_ms:
            await asyncio.sleep(config.faults.latency_ms / 1000)
        fault = state.plan.draw()
        if fault is Fault.FAIL_500:
            return error(style, 500, "injected internal server error", rid)
        if fault is Fault.FAIL_503:
            return error(style, 503, "injected: service unavailable", rid)
        if fault is Fault.FAIL_529:
            return error(style, 529, "Overloaded", rid)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            # RecursionError: thousands of nested arrays, a 500 with a traceback otherwise
            return error(style, 400, "request body is not valid JSON", rid)
        if config.model_name is not None and isinstance(body, dict):
            model = body.get("model")
            if isinstance(model, str) and model and model != config.model_name:
                return error(style, 404, f"model {model!r} not found", rid, "model_not_found")
        try:
            outcome = await work(body, rid)
        except WireError as exc:
            return error(style, exc.status, exc.message, rid, exc.code)
        except Exception:
            log.exception("teacher backend failed on request %s", rid)
            return error(style, 500, "internal error while computing the answer", rid)

        # The work is done: bill it before any post-work fault, as a provider would.
        state.billing.record(
            Bill(
                request_id=rid,
                endpoint=request.url.path,
                images=outcome.images,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
                usd=outcome.usd,
            )
        )
        headers = {"x-request-id": rid, **rate_headers(style)}
        if fault is Fault.DROP:
            request.scope[_DROP_KEY] = True
            return Response(status_code=200)
        if fault is Fault.TIMEOUT:
            await _sleep_unless_disconnected(request, config.faults.timeout_sleep_s)
        if fault is Fault.WRONG_DIM and outcome.wrong_dim_body is not None:
            return JSONResponse(outcome.wrong_dim_body, headers=headers)
        if fault is Fault.MALFORMED:
            text = json.dumps(outcome.body)
            return Response(text[: len(text) // 2], media_type="application/json", headers=headers)
        return JSONResponse(outcome.body, headers=headers)

    # ---------------------------------------------------------- shared compute

    def bound_pixels(images: Iterable[ImagePart]) -> None:
        check_pixels(
            images, per_image=config.max_image_pixels, per_request=config.max_request_pixels
        )

    async def embed_inputs(inputs: list[EmbedInput]) -> np.ndarray:
        """One unit vector per input; text+image inputs are the mean of their parts."""
        bound_pixels(img for inp in inputs for img in inp.images)
        texts = [inp.text for inp in inputs if inp.text is not None]
        tasks = [ImageTask(img.data) for inp in inputs for img in inp.images]
        try:
            text_vecs = iter(await state.texts.submit_many(texts) if texts else [])
            image_outs = iter(await state.images.submit_many(tasks) if tasks else [])
        except ImageDecodeError as exc:
            raise WireError(400, str(exc)) from exc
        rows = []
        for inp in inputs:
            parts = [next(text_vecs)] if inp.text is not None else []
            parts += [next(image_outs).vector for _ in inp.images]
            v = np.mean(np.stack(parts), axis=0)
            rows.append(v / max(float(np.linalg.norm(v)), 1e-12))
        return np.stack(rows).astype(np.float32)

    async def answer(chat: ChatRequest) -> str:
        options = parse_options(chat.prompt)
        bound_pixels(chat.images)
        if chat.images:
            try:
                outs = await state.images.submit_many(
                    [ImageTask(img.data, want_label=not options) for img in chat.images]
                )
            except ImageDecodeError as exc:
                raise WireError(400, str(exc)) from exc
            if not options:
                return outs[0].label or "unknown"
            query = np.mean(np.stack([o.vector for o in outs]), axis=0)
        elif options:
            query = (await state.texts.submit_many([chat.prompt]))[0]
        else:
            return NO_IMAGE_ANSWER
        option_vecs = await state.texts.submit_many([option_prompt(o) for o in options])
        return pick_option(query, options, option_vecs)

    # ------------------------------------------------------------- endpoints

    async def cohere_work(body: Any, rid: str) -> Outcome:
        req = parse_cohere_embed(body, max_items=config.max_items)
        vecs = _resize(await embed_inputs(req.inputs), req.output_dimension, backend.dim)
        images = sum(len(inp.images) for inp in req.inputs)
        tokens = sum(count_tokens(inp.text) for inp in req.inputs if inp.text is not None)

        def render(v: np.ndarray) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": rid,
                "embeddings": {t: v.tolist() for t in req.embedding_types},
                "meta": {
                    "api_version": {"version": "2"},
                    "billed_units": {"images": images, "input_tokens": tokens},
                },
                "response_type": "embeddings_by_type",
            }
            if req.field_name == "texts":
                out["texts"] = [inp.text for inp in req.inputs]
            if req.field_name == "images":
                out["images"] = [
                    {
                        "width": i.width,
                        "height": i.height,
                        "format": i.format,
                        "bit_depth": i.bit_depth,
                    }
                    for inp in req.inputs
                    for i in inp.images
                ]
            return out

        usd = price_embed(config.pricing, images=images, input_tokens=tokens)
        return Outcome(render(vecs), images, tokens, 0, usd, render(_wrong_dim(vecs)))

    async def openai_embed_work(body: Any, rid: str) -> Outcome:
        req = parse_openai_embed(body)
        vecs = _resize(await embed_inputs(req.inputs), req.dimensions, backend.dim)
        images = sum(len(inp.images) for inp in req.inputs)
        tokens = images * config.image_tokens + sum(
            count_tokens(inp.text) for inp in req.inputs if inp.text is not None
        )

        def render(v: np.ndarray) -> dict[str, Any]:
            def enc(row: np.ndarray) -> Any:
                if req.encoding_format == "base64":
                    return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
                return row.tolist()

            return {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": enc(row)}
                    for i, row in enumerate(v)
                ],
                "model": req.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }

        usd = price_tokens(config.pricing, input_tokens=tokens, output_tokens=0)
        return Outcome(render(vecs), images, tokens, 0, usd, render(_wrong_dim(vecs)))

    async def chat_work(body: Any, rid: str) -> Outcome:
        chat = parse_chat(body)
        text, cut = _truncate_tokens(await answer(chat), chat.max_tokens)
        prompt_tokens = chat.image_count * config.image_tokens + sum(
            count_tokens(t) for t in chat.prompt_texts
        )
        completion_tokens = count_tokens(text)
        out = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "length" if cut else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        usd = price_tokens(
            config.pricing, input_tokens=prompt_tokens, output_tokens=completion_tokens
        )
        return Outcome(out, chat.image_count, prompt_tokens, completion_tokens, usd)

    async def cohere_embed(request: Request) -> Response:
        return await handle(request, "cohere", cohere_work)

    async def openai_embeddings(request: Request) -> Response:
        return await handle(request, "openai", openai_embed_work)

    async def chat_completions(request: Request) -> Response:
        return await handle(request, "openai", chat_work)

    # ---------------------------------------------------------------- admin

    def admin(fn: Callable[[], dict[str, Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            rid = _new_request_id("openai")
            if not state.authorised(request):
                return error("openai", 401, "invalid or missing bearer token", rid)
            return JSONResponse(fn(), headers={"x-request-id": rid})

        return endpoint

    def info() -> dict[str, Any]:
        return {
            **backend.info(),
            "model_name": config.model_name or backend.name,
            "pricing": {k: str(v) for k, v in config.pricing.model_dump().items()},
            "faults": config.faults.model_dump(),
            "rpm": config.rpm,
            "max_body_bytes": config.max_body_bytes,
            "image_tokens": config.image_tokens,
            "batches": {
                "image_batches": state.images.batches_run,
                "images": state.images.items_run,
                "text_batches": state.texts.batches_run,
                "texts": state.texts.items_run,
            },
        }

    def reset() -> dict[str, Any]:
        state.billing.reset()
        if state.limiter is not None:
            state.limiter.reset()
        return {"reset": True}

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "backend": backend.name})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await state.aclose()

    app = TeacherApp(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/v2/embed", cohere_embed, methods=["POST"]),
            Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/admin/billing", admin(state.billing.snapshot), methods=["GET"]),
            Route("/admin/info", admin(info), methods=["GET"]),
            Route("/admin/reset", admin(reset), methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.teacher = state
    return app

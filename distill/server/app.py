"""The local pay-per-query teacher: a Starlette app speaking Cohere v2 and OpenAI v1.

Routes::

    GET  /healthz                 no auth
    POST /v2/embed                Cohere: texts[] | images[] (data URIs) | inputs[].content[]
    POST /v1/embeddings           OpenAI: input (text); "modality": "image" for data URIs
    POST /v1/chat/completions     OpenAI: answers to image_url (data URL) + text prompts
    GET  /admin/billing           the server's own bill, request body bytes too (bearer token;
                                  exact totals, the last 10,000 request ids)
    GET  /admin/info              backend, prices, faults (bearer token)
    POST /admin/reset             clear the bill and the rate-limit window (bearer token)

Every API request goes through one gate (:mod:`.gate`: token, body limits, rate limit,
faults, parse, bill); each wire format is one small module (:mod:`.route_cohere`,
:mod:`.route_openai_embed`, :mod:`.route_chat`) that only turns a parsed body into an
answer and its bill; the shared compute lives on :class:`.state.TeacherState`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from . import admin
from .backend_base import Backend
from .config import ServerConfig
from .gate import DROP_KEY, gated
from .route_chat import chat_completions
from .route_cohere import cohere_embed
from .route_openai_embed import openai_embed
from .state import TeacherState

__all__ = ["TeacherApp", "TeacherState", "create_app"]


class TeacherApp(Starlette):
    """A Starlette app that can also drop a connection without any response.

    The drop needs the server's transport, which only the outermost ASGI callable can
    reach (uvicorn passes a bound ``send`` of its request cycle). A handler marks the
    scope; the first ``http.response.start`` of a marked request aborts the socket.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        dropped = False

        async def guarded_send(message: Message) -> None:
            nonlocal dropped
            if dropped:
                return
            if message["type"] == "http.response.start" and scope.get(DROP_KEY):
                dropped = True
                await _abort_connection(send)
                return
            await send(message)

        await super().__call__(scope, receive, guarded_send)


async def _abort_connection(send: Send) -> None:
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

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "backend": backend.name})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await state.aclose()

    app = TeacherApp(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/v2/embed", gated(state, "cohere", cohere_embed), methods=["POST"]),
            Route("/v1/embeddings", gated(state, "openai", openai_embed), methods=["POST"]),
            Route(
                "/v1/chat/completions",
                gated(state, "openai", chat_completions),
                methods=["POST"],
            ),
            Route(
                "/admin/billing",
                admin.admin_endpoint(state, state.billing.snapshot),
                methods=["GET"],
            ),
            Route(
                "/admin/info", admin.admin_endpoint(state, lambda: admin.info(state)),
                methods=["GET"],
            ),
            Route(
                "/admin/reset", admin.admin_endpoint(state, lambda: admin.reset(state)),
                methods=["POST"],
            ),
        ],
        lifespan=lifespan,
    )
    app.state.teacher = state
    return app

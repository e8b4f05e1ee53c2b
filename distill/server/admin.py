"""Admin routes: the server's own bill, what it runs, and a reset (all need the token)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .gate import error_response, new_request_id
from .state import TeacherState

__all__ = ["admin_endpoint", "info", "reset"]


def admin_endpoint(
    state: TeacherState, fn: Callable[[], dict[str, Any]]
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint answering ``fn()`` to a caller with the bearer token, 401 otherwise."""

    async def endpoint(request: Request) -> Response:
        rid = new_request_id("openai")
        if not state.authorised(request):
            return error_response("openai", 401, "invalid or missing bearer token", rid)
        return JSONResponse(fn(), headers={"x-request-id": rid})

    return endpoint


def info(state: TeacherState) -> dict[str, Any]:
    """Backend, model name, prices, faults, limits and the micro-batcher's counts."""
    config = state.config
    return {
        **state.backend.info(),
        "model_name": config.model_name or state.backend.name,
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


def reset(state: TeacherState) -> dict[str, Any]:
    """Clear the bill and the rate-limit window."""
    state.billing.reset()
    if state.limiter is not None:
        state.limiter.reset()
    return {"reset": True}

"""Anthropic Messages (``POST {base}/v1/messages``): image answers.

Auth is ``x-api-key`` plus ``anthropic-version: 2023-06-01``. The image goes in a
``{"type": "image", "source": {"type": "base64", ...}}`` block whose ``data`` is bare
base64 (no ``data:`` prefix). Rate limits come back as ``anthropic-ratelimit-*``
headers whose resets are RFC 3339 timestamps.

Images are prepared with :func:`images.fit_image`, the format-and-size preparation shared by the
adapters that accept only some image formats.
"""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from ..errors import APIStatusError, QuotaExceededError, ResponseValidationError
from ..models import AnswerRequest, Image, Usage
from .base import (
    CallSpec,
    Parsed,
    Provider,
    RateLimitHints,
    default_classify_error,
    json_object,
    reported_usage,
    request_id_of,
    text_tokens_upper_bound,
)
from .images import fit_image, image_size

__all__ = [
    "ANTHROPIC",
    "API_VERSION",
    "AnthropicLimits",
    "LimitWindow",
    "image_tokens",
    "parse_ratelimit_headers",
    "parse_rfc3339",
]

NAME = "anthropic"
API_VERSION = "2023-06-01"
MAX_LONG_EDGE = 1568  # px: larger images are downscaled by the API anyway
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # per image (API limit for base64 images)
PIXELS_PER_TOKEN = 750  # tokens ~= width * height / 750
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
FRAMING_TOKENS = 16  # role and block framing of one user turn, rounded up
SPEND_LIMIT_CODE = "enforced_spend_limit_reached"


def prepare_image(image: Image) -> Image:
    """jpeg/png/gif/webp, long edge <= 1568 px (what the API would downscale to), <= 5 MB."""
    return fit_image(
        image, max_side=MAX_LONG_EDGE, max_bytes=MAX_IMAGE_BYTES, media_types=MEDIA_TYPES
    )


def message_body(spec: CallSpec) -> dict[str, Any]:
    (item,) = spec.items
    assert isinstance(item, AnswerRequest)
    image_block = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": item.image.media_type,
            "data": base64.b64encode(item.image.data).decode("ascii"),
        },
    }
    # Extra params (system, temperature, ...) may not override what the estimate rests on.
    return {
        **spec.params,
        "model": spec.model,
        "max_tokens": item.max_output_tokens,
        "messages": [
            {"role": "user", "content": [image_block, {"type": "text", "text": item.prompt}]}
        ],
    }


def build_request(spec: CallSpec) -> httpx.Request:
    if spec.kind != "answer":
        raise ValueError(f"anthropic adapter does not do {spec.kind}")
    return httpx.Request(
        "POST",
        spec.base_url.rstrip("/") + "/v1/messages",
        headers={
            "x-api-key": spec.api_key.get_secret_value(),
            "anthropic-version": API_VERSION,
            "Content-Type": "application/json",
        },
        content=json.dumps(message_body(spec), separators=(",", ":")).encode(),
    )


def _n(obj: Any, key: str) -> int:
    v = obj.get(key) if isinstance(obj, dict) else None
    return int(v) if isinstance(v, int) and v >= 0 else 0


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = json_object(response, provider=NAME, request_id=rid)
    rid = rid or (body["id"] if isinstance(body.get("id"), str) else None)
    u = body.get("usage")
    usage = Usage(
        # Prompt-cache writes and reads are input tokens too (we never ask for caching;
        # counting them at the input price can only over-charge).
        input_tokens=_n(u, "input_tokens")
        + _n(u, "cache_creation_input_tokens")
        + _n(u, "cache_read_input_tokens"),
        output_tokens=_n(u, "output_tokens"),
    )
    content = body.get("content")
    texts = (
        [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]
        if isinstance(content, list)
        else []
    )
    if not texts:
        bad = ResponseValidationError(
            f"no text block in content (stop_reason {body.get('stop_reason')!r})",
            provider=NAME,
            request_id=rid,
        )
        bad.usage, bad.reported = usage, reported_usage(u)
        raise bad
    return Parsed(usage=usage, texts=["".join(texts)], request_id=rid, reported=reported_usage(u))


def image_tokens(width: int, height: int) -> int:
    """Anthropic's documented estimate: ``ceil(width * height / 750)``."""
    return math.ceil(width * height / PIXELS_PER_TOKEN)


def estimate_usage(spec: CallSpec) -> Usage:
    (item,) = spec.items
    assert isinstance(item, AnswerRequest)
    w, h = image_size(item.image)  # the prepared image: long edge <= 1568 px
    prompt = text_tokens_upper_bound(item.prompt)
    return Usage(
        input_tokens=FRAMING_TOKENS + prompt + image_tokens(w, h),
        output_tokens=item.max_output_tokens,
    )


# -- rate-limit headers ----------------------------------------------------------------


def parse_rfc3339(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from ``now`` until an RFC 3339 timestamp (never negative)."""
    if not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class LimitWindow:
    """One ``anthropic-ratelimit-<what>-{limit,remaining,reset}`` triple."""

    limit: int | None = None
    remaining: int | None = None
    reset_s: float | None = None

    @property
    def known(self) -> bool:
        return self.limit is not None or self.remaining is not None


@dataclass(frozen=True)
class AnthropicLimits:
    """All four windows Anthropic reports; input and output are separate limits."""

    requests: LimitWindow
    tokens: LimitWindow
    input_tokens: LimitWindow
    output_tokens: LimitWindow


def _int(headers: httpx.Headers, name: str) -> int | None:
    v = headers.get(name)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _window(headers: httpx.Headers, what: str, now: float | None) -> LimitWindow:
    prefix = f"anthropic-ratelimit-{what}-"
    return LimitWindow(
        limit=_int(headers, prefix + "limit"),
        remaining=_int(headers, prefix + "remaining"),
        reset_s=parse_rfc3339(headers.get(prefix + "reset"), now=now),
    )


def parse_ratelimit_headers(headers: httpx.Headers, *, now: float | None = None) -> AnthropicLimits:
    """Each window read from its own header names (input is never read from output)."""
    return AnthropicLimits(
        requests=_window(headers, "requests", now),
        tokens=_window(headers, "tokens", now),
        input_tokens=_window(headers, "input-tokens", now),
        output_tokens=_window(headers, "output-tokens", now),
    )


def hints_from_limits(limits: AnthropicLimits) -> RateLimitHints:
    """Fold the token windows into one conservative tokens/min figure.

    The limiter counts input + output tokens of a request against one bucket. Using the
    smallest of the token limits keeps every window satisfied; a window at zero pauses
    until its own reset.
    """
    windows = [w for w in (limits.tokens, limits.input_tokens, limits.output_tokens) if w.known]
    limit_tokens = min((w.limit for w in windows if w.limit is not None), default=None)
    remaining = [w for w in windows if w.remaining is not None]
    remaining_tokens: int | None = None
    reset_tokens: float | None = None
    if remaining:
        tightest = min(remaining, key=lambda w: w.remaining or 0)
        remaining_tokens = tightest.remaining
        exhausted = [w.reset_s for w in remaining if (w.remaining or 0) <= 0 and w.reset_s]
        reset_tokens = max(exhausted) if exhausted else tightest.reset_s
    return RateLimitHints(
        limit_requests=limits.requests.limit,
        remaining_requests=limits.requests.remaining,
        reset_requests_s=limits.requests.reset_s,
        limit_tokens=limit_tokens,
        remaining_tokens=remaining_tokens,
        reset_tokens_s=reset_tokens,
    )


def rate_limit_hints(headers: httpx.Headers) -> RateLimitHints:
    return hints_from_limits(parse_ratelimit_headers(headers))


# -- errors ----------------------------------------------------------------------------


def _error_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return {}
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


def classify_error(response: httpx.Response) -> APIStatusError:
    """Status-code classes, plus: a spend-limit 429 and an empty credit balance are quota
    errors that retrying cannot fix. 529 ``overloaded_error`` is an OverloadedError."""
    err = default_classify_error(response)
    obj = _error_object(response)
    etype = obj.get("type")
    message = str(obj.get("message") or "")
    details = obj.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    code = code or obj.get("error_code")
    if response.status_code == 429 and code == SPEND_LIMIT_CODE:
        return QuotaExceededError(
            f"{SPEND_LIMIT_CODE}: the workspace spend limit is reached ({message}); raise it "
            "in the Anthropic console, then run again",
            status_code=429,
            request_id=err.request_id,
        )
    if response.status_code == 400 and "credit balance" in message.lower():
        return QuotaExceededError(
            f"{message} (top up credit, then run again)",
            status_code=400,
            request_id=err.request_id,
        )
    if etype and isinstance(etype, str) and etype not in str(err):
        # keep the error type visible: "rate_limit_error: ...", "overloaded_error: ..."
        err.args = (f"{err.args[0]} [{etype}]",)
    return err


ANTHROPIC = Provider(
    name=NAME,
    env_vars=("ANTHROPIC_API_KEY",),
    default_base_url="https://api.anthropic.com",
    api_version=API_VERSION,
    max_batch={"answer": 1},
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    classify_error=classify_error,
    rate_limit_hints=rate_limit_hints,
    prepare_image=prepare_image,
    description="Anthropic Messages API (image answers)",
)

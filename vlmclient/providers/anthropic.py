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
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from ..errors import (
    APIStatusError,
    ConfigurationError,
    QuotaExceededError,
    ResponseValidationError,
)
from ..models import AnswerRequest, Image, Usage
from .base import SET_BY_ITEMS, SET_BY_TEACHER, CallSpec, Parsed, Provider, RateLimitHints
from .images import ACCEPTED_MEDIA_TYPES, base64_size, fit_image, image_size
from .reasoning import reasoning_level, truncated_answer, without_reasoning
from .wire import (
    default_classify_error,
    header_int,
    json_object,
    params_tokens_upper_bound,
    reported_usage,
    request_id_of,
    text_tokens_upper_bound,
    usage_count,
)

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
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # per image, measured on the base64 text (the API's way)
PIXELS_PER_TOKEN = 750  # tokens ~= width * height / 750
MEDIA_TYPES = ACCEPTED_MEDIA_TYPES[NAME]  # the one table in images.py
FRAMING_TOKENS = 16  # role and block framing of one user turn, rounded up
SPEND_LIMIT_CODE = "enforced_spend_limit_reached"
USAGE_LIMIT_TEXT = "reached your specified api usage limits"


def prepare_image(image: Image) -> Image:
    """jpeg/png/gif/webp, long edge <= 1568 px (what the API would downscale to), and
    <= 5 MB of base64: the limit applies to the encoded payload, so a 4.9 MB file (6.5 MB
    as base64) would be rejected."""
    return fit_image(
        image,
        max_side=MAX_LONG_EDGE,
        max_bytes=MAX_IMAGE_BYTES,
        media_types=MEDIA_TYPES,
        measure=base64_size,
    )


# Extended-thinking budgets for the named levels; the API wants budget_tokens >= 1,024
# and below max_tokens (Anthropic's extended-thinking guide; not re-read for this change).
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
# Models that take a ``thinking`` field: Claude 3.7 Sonnet and every Claude 4.x.
_THINKING_MODEL = re.compile(r"claude-(3-7-sonnet|(opus|sonnet|haiku)-[4-9])")
# Claude 5 and later think adaptively: a thinking budget and ``{"type": "disabled"}`` are
# 400s (platform.claude.com Sonnet 5.5 migration guide, read 2026-11-30: "omit ... thinking
# budgets ... and thinking: {"type": "disabled"}"; Sonnet 5 overview: manual extended
# thinking is a 400). Depth is steered by ``output_config.effort`` (low, medium, high;
# platform.claude.com adaptive-thinking page). ``off`` cannot turn thinking off there, so it
# asks for the least: effort low.
_ADAPTIVE_ONLY_MODEL = re.compile(r"claude-[a-z]+-([5-9]|[1-9][0-9])(-|$)")
ADAPTIVE_EFFORTS = {
    "off": "low",
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
}


def adaptive_only(model: str) -> bool:
    """True for Claude 5 and later, which take adaptive thinking only."""
    return _ADAPTIVE_ONLY_MODEL.match(model) is not None


def effort_param(model: str, level: str) -> dict[str, Any] | None:
    """The ``output_config`` object that steers an adaptive-only model's thinking (None =
    send none: an older model, or ``default``)."""
    if level == "default" or not adaptive_only(model):
        return None
    return {"effort": ADAPTIVE_EFFORTS[level]}


def thinking_param(model: str, level: str, max_tokens: int) -> dict[str, Any] | None:
    """The ``thinking`` object for ``level`` (None = send none).

    ``off`` is ``{"type": "disabled"}`` (Claude 4.x), sent explicitly because newer Claude
    models default to adaptive thinking (anthropic-sdk-python ThinkingConfigParam: enabled,
    disabled, adaptive). Named levels enable thinking with a budget that must fit under
    the answer's ``max_tokens``. Claude 5 and later get ``{"type": "adaptive"}`` at every
    level, with the depth in :func:`effort_param`.
    """
    if level == "default":
        return None
    if adaptive_only(model):
        return {"type": "adaptive"}
    if not _THINKING_MODEL.match(model):
        return None
    if level == "off":
        return {"type": "disabled"}
    budget = THINKING_BUDGETS[level]
    if max_tokens <= budget:
        raise ConfigurationError(
            f"--reasoning {level} on {model} needs max_output_tokens above {budget} "
            f"(thinking budget {budget} must be below max_tokens, which is {max_tokens}); "
            "use --reasoning off for short answers"
        )
    return {"type": "enabled", "budget_tokens": budget}


def message_body(spec: CallSpec) -> dict[str, Any]:
    (item,) = spec.items
    assert isinstance(item, AnswerRequest)
    params = without_reasoning(spec.params)
    thinking = thinking_param(spec.model, reasoning_level(spec.params), item.max_output_tokens)
    if thinking is not None and "thinking" not in params:
        params["thinking"] = thinking
    effort = effort_param(spec.model, reasoning_level(spec.params))
    if effort is not None and "output_config" not in params:
        params["output_config"] = effort
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
        **params,
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


def cache_write_tokens(usage: object) -> int:
    """Prompt-cache writes as input tokens at their premium: 1.25x for the 5-minute cache,
    2x for the 1-hour one (we never ask for caching; a library caller's ``cache_control``
    may). Without the per-TTL breakdown every write is taken at 2x (only over-charges);
    quarters are rounded up.

    >>> cache_write_tokens({"cache_creation_input_tokens": 10, "cache_creation":
    ...     {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 0}})
    13
    >>> cache_write_tokens({"cache_creation_input_tokens": 10})
    20
    """
    total = usage_count(usage, "cache_creation_input_tokens")
    split = usage.get("cache_creation") if isinstance(usage, dict) else None
    short = usage_count(split, "ephemeral_5m_input_tokens")
    long = usage_count(split, "ephemeral_1h_input_tokens")
    rest = max(total - short - long, 0)  # written but not in the breakdown
    return short + -(-short // 4) + 2 * (long + rest)


def cache_write_extra(usage: object) -> int:
    """Of :func:`cache_write_tokens`, the tokens beyond those written (the surcharge).

    >>> cache_write_extra({"cache_creation_input_tokens": 10})
    10
    """
    return cache_write_tokens(usage) - usage_count(usage, "cache_creation_input_tokens")


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = json_object(response, provider=NAME, request_id=rid)
    rid = rid or (body["id"] if isinstance(body.get("id"), str) else None)
    u = body.get("usage")
    usage = Usage(
        input_tokens=usage_count(u, "input_tokens")
        + cache_write_tokens(u)
        # reads are billed at 0.1x: counting them at 1x can only over-charge
        + usage_count(u, "cache_read_input_tokens"),
        output_tokens=usage_count(u, "output_tokens"),
        surcharge_tokens=cache_write_extra(u),
    )
    geo = u.get("inference_geo") if isinstance(u, dict) else None
    if geo is not None and geo != "global":
        # run in one geography (asked, or the workspace's default): the same token
        # counts, billed at 1.1x
        usage = geo_premium(usage)
    content = body.get("content")
    texts = (
        [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]
        if isinstance(content, list)
        else []
    )
    if not "".join(texts).strip() and body.get("stop_reason") == "max_tokens":
        raise truncated_answer(
            spec, provider=NAME, usage=usage, request_id=rid, reported=reported_usage(u)
        )
    if body.get("stop_reason") == "refusal":
        # a refusal arrives as a normal, billed response; any text is not an answer to cache
        bad = ResponseValidationError(
            "the model refused to answer (stop_reason 'refusal')", provider=NAME, request_id=rid
        )
        bad.usage, bad.reported = usage, reported_usage(u)
        raise bad
    if not texts:
        bad = ResponseValidationError(
            f"no text block in content (stop_reason {body.get('stop_reason')!r})",
            provider=NAME,
            request_id=rid,
        )
        bad.usage, bad.reported = usage, reported_usage(u)
        raise bad
    return Parsed(
        usage=usage,
        texts=["".join(texts)],
        request_id=rid,
        reported=reported_usage(u),
        truncated=body.get("stop_reason") == "max_tokens",
    )


PATCH_SIDE = 28  # px: current docs count one token per 28x28 patch


def image_tokens(width: int, height: int) -> int:
    """Worst case of Anthropic's two published rules: the older ``ceil(w * h / 750)``
    and the current ``ceil(w / 28) * ceil(h / 28)`` (one token per 28-px patch, which is
    larger for thin or small images: 1568x29 is 112 tokens, not 61)."""
    per_area = math.ceil(width * height / PIXELS_PER_TOKEN)
    per_patch = math.ceil(width / PATCH_SIDE) * math.ceil(height / PATCH_SIDE)
    return max(per_area, per_patch)


# The dearest prompt-cache write: 2x the input rate for the 1-hour cache (1.25x for 5 min).
CACHE_WRITE_MULTIPLIER = 2


def geo_premium(usage: Usage) -> Usage:
    """``usage`` with its tokens at the US-only inference rate, 1.1x the standard rates
    (Opus 4.6, Sonnet 4.6 and later; support.claude.com, "Enable US-only inference",
    read 2026-12-06: "billed at 1.1x standard API rates"; older models bill the standard
    rate, so this only over-charges them), each count rounded up.

    >>> u = geo_premium(Usage(input_tokens=1000, output_tokens=16))
    >>> u.input_tokens, u.output_tokens
    (1100, 18)
    """
    tokens = -(-usage.input_tokens * 11 // 10)
    return usage.model_copy(
        update={
            "input_tokens": tokens,
            "output_tokens": -(-usage.output_tokens * 11 // 10),
            # the prompt's size is the same: its tier too
            "surcharge_tokens": usage.surcharge_tokens + tokens - usage.input_tokens,
        }
    )


def asks_for_cache(value: object) -> bool:
    """True when ``cache_control`` is set anywhere in a caller's params (top level, on a
    system block, on a tool).

    >>> asks_for_cache({"system": [{"type": "text", "text": "x", "cache_control": {}}]})
    True
    """
    if isinstance(value, dict):
        return "cache_control" in value or any(asks_for_cache(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(asks_for_cache(v) for v in value)
    return False


# Typed tools the model only asks the caller to run (Anthropic's client tools): their
# cost is their own text, counted with the params. Any other typed tool (web_search,
# web_fetch, code_execution, ...) runs on Anthropic's side and bills what it brings back.
CLIENT_TOOL_TYPES = ("custom", "bash_", "text_editor_", "computer_", "memory_")


def refuse_server_tools(params: Mapping[str, Any]) -> None:
    """ConfigurationError for server tools and ``mcp_servers``: what they fetch or run is
    billed as input the request does not hold, so no estimate bounds it.

    >>> refuse_server_tools({"tools": [{"name": "pick", "input_schema": {}}]})
    """
    if params.get("mcp_servers"):
        raise ConfigurationError(
            "anthropic mcp_servers add what the servers return to the prompt, which the "
            "budget cannot bound before sending; leave them out (nothing was sent)"
        )
    tools = params.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and not kind.startswith(CLIENT_TOOL_TYPES):
            raise ConfigurationError(
                f"anthropic server tool {kind} adds what it fetches or runs to the prompt, "
                "which the budget cannot bound before sending; only client tools are "
                "taken (nothing was sent)"
            )


def refuse_stream(params: Mapping[str, Any]) -> None:
    """ConfigurationError for ``stream``: the answer comes back as server-sent events,
    which the client does not read (billed, then recorded as a failure)."""
    if params.get("stream") not in (None, False):
        raise ConfigurationError(
            "anthropic stream sends the answer as server-sent events, which the client "
            "does not read (the answer would be billed and lost); leave it out "
            "(nothing was sent)"
        )


def refuse_thinking_budget(params: Mapping[str, Any], max_tokens: int) -> None:
    """ConfigurationError for a caller's ``thinking`` budget not below the answer's
    ``max_tokens``: Anthropic answers it with a 400, after the request was reserved.

    >>> refuse_thinking_budget({"thinking": {"type": "enabled", "budget_tokens": 1024}}, 2048)
    """
    thinking = params.get("thinking")
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    if isinstance(budget, int) and budget >= max_tokens:
        raise ConfigurationError(
            f"anthropic thinking budget_tokens {budget} must be below the answer's "
            f"max_tokens ({max_tokens}, its max_output_tokens); raise max_output_tokens "
            "or lower the budget (nothing was sent)"
        )


def estimate_usage(spec: CallSpec) -> Usage:
    (item,) = spec.items
    assert isinstance(item, AnswerRequest)
    refuse_server_tools(spec.params)
    refuse_stream(spec.params)
    refuse_thinking_budget(spec.params, item.max_output_tokens)
    w, h = image_size(item.image)  # the prepared image: long edge <= 1568 px
    prompt = text_tokens_upper_bound(item.prompt)
    # a caller's system prompt, tools, ... are billed as input too
    extra = params_tokens_upper_bound(without_reasoning(spec.params))
    tokens = FRAMING_TOKENS + prompt + extra + image_tokens(w, h)
    # a caller's cache_control (top-level: the whole prompt, image included) makes the
    # prompt a cache write, billed at up to 2x the input rate (1-hour TTL); the extra is a
    # surcharge, the prompt's tier its own size's
    extra = tokens * (CACHE_WRITE_MULTIPLIER - 1) if asks_for_cache(spec.params) else 0
    usage = Usage(
        input_tokens=tokens + extra, output_tokens=item.max_output_tokens, surcharge_tokens=extra
    )
    geo = spec.params.get("inference_geo")
    # a workspace whose default is US-only is not known here: an answer near the worst
    # case overruns (the settlement charges the 1.1x its usage shows)
    return usage if geo is None or geo == "global" else geo_premium(usage)


# -- rate-limit headers ----------------------------------------------------------------


_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_rfc3339(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from ``now`` until an RFC 3339 timestamp (never negative)."""
    if not value:
        return None
    m = _RFC3339.fullmatch(value.strip())
    if not m:
        return None  # no offset among them: refuse to guess a zone
    stamp, fraction, offset = m.groups()
    # fromisoformat before 3.11 takes only 3 or 6 fractional digits: keep microseconds
    if fraction:
        stamp += "." + fraction[:6].ljust(6, "0")
    try:
        when = datetime.fromisoformat(stamp + ("+00:00" if offset in ("Z", "z") else offset))
    except ValueError:
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


def _window(headers: httpx.Headers, what: str, now: float | None) -> LimitWindow:
    prefix = f"anthropic-ratelimit-{what}-"
    return LimitWindow(
        limit=header_int(headers, prefix + "limit"),
        remaining=header_int(headers, prefix + "remaining"),
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
    """The input and output token limits, each for its own share of a request.

    Anthropic limits input and output tokens per minute separately (and its
    ``tokens-*`` window repeats the most restrictive limit in effect). With both limits
    known, input tokens are paced against the input limit and output tokens against the
    output one; a ``tokens`` limit below both still paces input + output. With either
    missing, the smallest limit given paces input + output (conservative). A window at
    zero pauses until its own reset.
    """
    windows = [w for w in (limits.tokens, limits.input_tokens, limits.output_tokens) if w.known]
    limit_input = limits.input_tokens.limit
    limit_output = limits.output_tokens.limit
    limit_tokens = min((w.limit for w in windows if w.limit is not None), default=None)
    if limit_input is not None and limit_output is not None:
        if limit_tokens is not None and limit_tokens >= min(limit_input, limit_output):
            limit_tokens = None  # one of the two: paced on its own share
    else:
        limit_input = limit_output = None
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
        limit_input_tokens=limit_input,
        limit_output_tokens=limit_output,
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
    if response.status_code == 400 and USAGE_LIMIT_TEXT in message.lower():
        # "You have reached your specified API usage limits. You will regain access on
        # 2026-04-01 at 00:00 UTC." (seen in anthropics/claude-code#38035, #2127): a
        # workspace/org limit set in the console, not a bad request; no retry clears it.
        return QuotaExceededError(
            f"{message} (the usage limit set for this workspace or organization is reached; "
            "raise it in the Anthropic console or wait until the date given, then run again)",
            status_code=400,
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
    # Part of every answer's cache key: answers bought with thinking on are other answers.
    default_params={"answer": {"reasoning": "off"}},
    # (message_body writes them over the params: a caller's was dropped without a word)
    client_fields={
        "model": SET_BY_TEACHER,
        "messages": SET_BY_ITEMS,
        "max_tokens": "the max_output_tokens of each request",
    },
    description="Anthropic Messages API (image answers)",
)

"""OpenAI and any OpenAI-compatible server: text embeddings and image answers.

``POST {base}/embeddings`` for text, ``POST {base}/chat/completions`` with an
``image_url`` data-URL part for answers. Base URL includes the ``/v1`` prefix.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx

from cache import LiteralJSON, json_bytes_with_literals

from ..errors import (
    APIStatusError,
    ConfigurationError,
    QuotaExceededError,
    ResponseValidationError,
)
from ..models import AnswerRequest, Image, TextEmbeddingRequest, Usage
from ..redact import clip
from .base import SET_BY_ITEMS, SET_BY_TEACHER, CallSpec, Parsed, Provider, RateLimitHints
from .images import (
    ACCEPTED_MEDIA_TYPES,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_SIDE,
    fit_image,
    image_size,
    is_animated,
)
from .reasoning import reasoning_level, truncated_answer, without_reasoning
from .vectors import dim_param, indexed_vectors
from .wire import (
    data_uri,
    default_classify_error,
    endpoint_url,
    header_int,
    header_values,
    json_object,
    json_post,
    params_tokens_upper_bound,
    reported_usage,
    request_id_of,
    text_tokens_upper_bound,
    texts_literal,
    usage_count,
    whole_number,
)

__all__ = ["OPENAI", "image_tokens", "parse_duration", "reasoning_params"]

NAME = "openai"
MAX_EMBEDDING_INPUTS = 2048  # CreateEmbeddingRequest maxItems
# CreateEmbeddingRequest.input: "all embedding models enforce a maximum of 300,000 tokens
# summed across all inputs in a single request" (pinned openai-openapi f85dbe22, read
# 2026-11-30); the client sums text_tokens_upper_bound, an over-count, so it never passes.
MAX_EMBEDDING_REQUEST_TOKENS = 300_000
# Per input: "must not exceed the max input tokens for the model (8192 tokens for all
# embedding models)" (same spec); ada-002's is 8,191 (tiktoken cookbook), so 8,191. There
# is no truncation option: a longer input fails its whole request with a 400 ("This
# model's maximum context length is 8192 tokens, however you requested ...").
MAX_EMBEDDING_INPUT_TOKENS = 8191
MEDIA_TYPES = ACCEPTED_MEDIA_TYPES[NAME]  # the one table in images.py
REFUSAL_QUOTE_CHARS = 120  # how much of a refusal's text an error quotes


def prepare_image(image: Image) -> Image:
    """png/jpeg/webp/gif (a BMP is re-encoded), long edge <= 2048 px, <= 5 MB. An
    animated GIF is sent as its first frame, re-encoded: OpenAI takes "non-animated GIF"
    only (a 400 otherwise)."""
    types = MEDIA_TYPES
    if is_animated(image):
        types = tuple(t for t in MEDIA_TYPES if t != "image/gif")
    return fit_image(image, max_side=MAX_UPLOAD_SIDE, max_bytes=MAX_UPLOAD_BYTES, media_types=types)


def _auth(spec: CallSpec) -> dict[str, str]:
    return {"Authorization": f"Bearer {spec.api_key.get_secret_value()}"}


def _post(
    spec: CallSpec,
    path: str,
    body: dict[str, Any],
    literals: Mapping[str, LiteralJSON] | None = None,
) -> httpx.Request:
    return json_post(
        endpoint_url(spec.base_url.rstrip("/") + path),
        {**_auth(spec), "Content-Type": "application/json"},
        json_bytes_with_literals(body, literals, separators=(",", ":")),
    )


def embedding_body(spec: CallSpec) -> dict[str, Any]:
    texts = []
    for item in spec.items:
        assert isinstance(item, TextEmbeddingRequest)
        texts.append(item.text)
    params = without_reasoning(spec.params)
    # base64 float32 (what openai-python asks for by default) instead of decimal floats:
    # about a quarter of the bytes and no per-number parsing. A caller's encoding_format
    # wins (an OpenAI-compatible server that only answers floats: "float").
    return {"model": spec.model, "input": texts, "encoding_format": "base64", **params}


def reasoning_family(model: str) -> str | None:
    """``"gpt-5"``, ``"gpt-5.x"``, ``"o"`` (o-series), ``"none"`` (gpt-4*, gpt-3.5: no
    reasoning) or None (a name we do not know: an OpenAI-compatible server)."""
    if model == "gpt-5" or model.startswith("gpt-5-"):
        return "gpt-5"
    if model.startswith(("gpt-5.", "gpt-6")):
        return "gpt-5.x"
    if re.match(r"o\d", model):
        return "o"
    if model.startswith(("gpt-4", "gpt-3.5", "chatgpt-4o")):
        return "none"
    return None


# What ``reasoning: off`` sends, per family. gpt-5/-mini/-nano accept ``minimal`` as
# their lowest effort; gpt-5.1 and later accept ``none``; o-series models go no lower
# than ``low``. (ReasoningEffort enum: none, minimal, low, medium, high, xhigh, max in
# openai/openai-openapi openapi.yaml @ f85dbe22, read 2026-11-30.)
OFF_EFFORT = {"gpt-5": "minimal", "gpt-5.x": "none", "o": "low"}


def reasoning_params(model: str, level: str) -> dict[str, Any]:
    """The ``reasoning_effort`` field for ``level`` on ``model`` ({} = send nothing)."""
    family = reasoning_family(model)
    if level == "default":
        return {}
    if family == "none":
        if level == "off":
            return {}
        raise ConfigurationError(
            f"{model} does not reason; drop --reasoning {level} (or use --reasoning off)"
        )
    if level == "off":
        effort = OFF_EFFORT.get(family or "")
        return {"reasoning_effort": effort} if effort else {}
    if family in ("o", "gpt-5.x") and level == "minimal":
        # o-series go no lower than low; gpt-5.1 and later dropped minimal (gpt-5.6-luna's
        # page, read 2026-12-05: "Reasoning.effort supports: none, low, medium (default),
        # high, xhigh, and max"): a 400 on every request. Their lowest thinking level is low.
        level = "low"
    return {"reasoning_effort": level}


def writes_prompt_cache(model: str) -> bool:
    """True for models that cache prompts implicitly, billing the tokens written at 1.25x
    the input rate: gpt-5.6 and later (pinned spec, PromptCacheOptionsParam: "Supported
    for gpt-5.6 and later models ... Defaults to implicit"; gpt-5.6-luna's page: "Cache
    writes are billed at 1.25x the uncached input token rate").

    >>> writes_prompt_cache("gpt-5.6-luna"), writes_prompt_cache("gpt-5.2")
    (True, False)
    """
    found = re.match(r"gpt-(\d+)(?:\.(\d+))?", model)
    return found is not None and (int(found[1]), int(found[2] or 0)) >= (5, 6)


def chat_body(spec: CallSpec) -> dict[str, Any]:
    (item,) = spec.items
    assert isinstance(item, AnswerRequest)
    content = [
        {"type": "text", "text": item.prompt},
        {"type": "image_url", "image_url": {"url": data_uri(item.image), "detail": "low"}},
    ]
    return {
        "model": spec.model,
        "messages": [{"role": "user", "content": content}],
        "max_completion_tokens": item.max_output_tokens,
        **reasoning_params(spec.model, reasoning_level(spec.params)),
        # No implicit cache write: every prompt here carries its own image, so a write
        # would be billed at 1.25x the input rate and never read back, and usage would
        # charge it at 1x. "explicit" without breakpoints turns prompt caching off.
        **(
            {"prompt_cache_options": {"mode": "explicit"}}
            if writes_prompt_cache(spec.model)
            else {}
        ),
        # Caller params win (e.g. reasoning_effort, max_completion_tokens); the estimate
        # reads the same params, so an override is paid for in the reservation.
        **without_reasoning(spec.params),
    }


# Stands in for the texts while the rest of an embedding body is encoded (see
# _embedding_template); a NUL never appears in a model or parameter name.
_TEXTS_SLOT = "\x00vlm-distill texts\x00"
_TEMPLATES: dict[tuple[str, int], tuple[dict[str, Any], tuple[bytes, bytes] | None]] = {}


def _embedding_template(spec: CallSpec) -> tuple[bytes, bytes] | None:
    """:func:`embedding_body`'s JSON before and after its ``input`` list, encoded once
    per model and parameters (a client sends all its texts with the same ones): a body
    is then these two around the texts, each text's JSON made once for its cache key
    too (about 4 us of CPU less per request). None when ``input`` comes from the
    parameters, or the slot cannot be placed unambiguously."""
    key = (spec.model, id(spec.params))
    found = _TEMPLATES.get(key)
    if found is not None and found[0] == spec.params:  # (a params dict changed meanwhile)
        return found[1]
    held = {"model": spec.model, "input": _TEXTS_SLOT, "encoding_format": "base64"}
    held.update(without_reasoning(spec.params))
    template = None
    if held["input"] is _TEXTS_SLOT:
        text = json.dumps(held, separators=(",", ":"))
        mark = json.dumps(_TEXTS_SLOT)
        if text.count(mark) == 1:
            head, tail = text.split(mark)
            template = (head.encode(), tail.encode())
    if len(_TEMPLATES) >= 64:
        _TEMPLATES.clear()
    _TEMPLATES[key] = (copy.deepcopy(dict(spec.params)), template)
    return template


def build_request(spec: CallSpec) -> httpx.Request:
    if spec.kind == "text_embedding":
        template = _embedding_template(spec)
        pieces = texts_literal(spec.items, [getattr(i, "text", None) for i in spec.items])
        if template is not None and pieces is not None:
            return json_post(
                endpoint_url(spec.base_url.rstrip("/") + "/embeddings"),
                {**_auth(spec), "Content-Type": "application/json"},
                b"".join([template[0], *pieces["input"], template[1]]),
            )
        body = embedding_body(spec)
        return _post(spec, "/embeddings", body, texts_literal(spec.items, body.get("input")))
    if spec.kind == "answer":
        return _post(spec, "/chat/completions", chat_body(spec))
    raise ValueError(f"openai adapter does not do {spec.kind}")


def _json(response: httpx.Response, rid: str | None) -> dict[str, Any]:
    return json_object(response, provider=NAME, request_id=rid)


def premium_tier_served(body: Mapping[str, Any]) -> str | None:
    """Why the table cannot price this response, when it says it was served at a tier
    billed above the standard rates (``service_tier`` in the body is the tier actually
    used, pinned spec ServiceTier: ``auto`` is the project's default tier, which may be
    priority); None otherwise."""
    tier = body.get("service_tier")
    if isinstance(tier, str) and tier.strip().lower() in PREMIUM_TIERS:
        return (
            f"service_tier {tier!r} (the response says so: the project's default tier "
            "makes 'auto' mean it), billed at rates the price table does not hold"
        )
    return None


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = _json(response, rid)
    unpriced = premium_tier_served(body)
    try:
        parsed = _parse_body(spec, body, rid)
    except ResponseValidationError as exc:
        exc.unpriced = unpriced
        raise
    return replace(parsed, unpriced=unpriced) if unpriced else parsed


def _parse_body(spec: CallSpec, body: dict[str, Any], rid: str | None) -> Parsed:
    usage_raw = body.get("usage")
    usage_obj: dict[str, Any] = usage_raw if isinstance(usage_raw, dict) else {}
    if spec.kind == "text_embedding":
        usage = Usage(input_tokens=usage_count(usage_obj, "prompt_tokens"))
        try:
            vecs = indexed_vectors(
                body.get("data"),
                expected=len(spec.items),
                request_id=rid,
                provider=NAME,
                base64_ok=True,
            )
        except ResponseValidationError as exc:
            exc.usage = usage  # billed as the body says, when it says
            exc.reported = reported_usage(usage_raw)
            raise
        return Parsed(
            usage=usage,
            vectors=vecs,
            request_id=rid or body.get("id"),
            reported=reported_usage(usage_raw),
        )
    choices = body.get("choices")
    try:
        text = choices[0]["message"]["content"]  # type: ignore[index]
    except (TypeError, KeyError, IndexError) as exc:
        raise ResponseValidationError(
            "missing choices[0].message.content", provider=NAME, request_id=rid
        ) from exc
    details = usage_obj.get("completion_tokens_details")
    # Tokens written to the prompt cache cost 1.25x the input rate (gpt-5.6 and later; we
    # turn the implicit write off, a caller's prompt_cache_options may turn it on): the
    # extra quarter is charged as input tokens, rounded up.
    written = usage_count(usage_obj.get("prompt_tokens_details"), "cache_write_tokens")
    prompt = usage_count(usage_obj, "prompt_tokens")
    # reasoning tokens are already inside completion_tokens at OpenAI; gateways that
    # translate Gemini leave them out of it but count them in total_tokens
    output = max(
        usage_count(usage_obj, "completion_tokens"), usage_count(details, "reasoning_tokens")
    )
    if usage_count(usage_obj, "completion_tokens", None) is not None:
        output = max(output, usage_count(usage_obj, "total_tokens") - prompt)
    extra = -(-written // 4)
    usage = Usage(input_tokens=prompt + extra, output_tokens=output, surcharge_tokens=extra)
    message = choices[0]["message"]  # type: ignore[index]
    refusal = message.get("refusal") if isinstance(message, dict) else None
    if isinstance(refusal, str) and refusal.strip():
        # structured outputs: the model declined (content null); billed, not an answer.
        # The settle step scrubs keys from the message; the quote is bounded here, by
        # clip: a key the cut splits would leave a prefix too short to be known as one.
        quoted = refusal if len(refusal) <= REFUSAL_QUOTE_CHARS else (
            clip(refusal, REFUSAL_QUOTE_CHARS - 3) + "..."
        )
        bad = ResponseValidationError(
            f"the model refused to answer (message.refusal: {quoted!r})",
            provider=NAME,
            request_id=rid,
        )
        bad.usage, bad.reported = usage, reported_usage(usage_raw)
        raise bad
    if text is None:
        text = ""  # a reasoning model that ran out of tokens may send content: null
    if not isinstance(text, str):
        raise ResponseValidationError("answer content is not text", provider=NAME, request_id=rid)
    finish = choices[0].get("finish_reason") if isinstance(choices[0], dict) else None  # type: ignore[index]
    if finish == "content_filter":
        # the text (if any) is what was left after the filter cut the answer: billed, not
        # an answer to cache
        bad = ResponseValidationError(
            "answer withheld by the content filter (finish_reason 'content_filter')",
            provider=NAME,
            request_id=rid,
        )
        bad.usage, bad.reported = usage, reported_usage(usage_raw)
        raise bad
    if not text.strip():
        if finish == "length":
            raise truncated_answer(
                spec, provider=NAME, usage=usage, request_id=rid,
                reported=reported_usage(usage_raw), limit=output_limit(spec),
            )
        bad = ResponseValidationError(
            f"empty answer (finish_reason {finish!r})", provider=NAME, request_id=rid
        )
        bad.usage = usage
        bad.reported = reported_usage(usage_raw)
        raise bad
    return Parsed(
        usage=usage,
        texts=[text],
        request_id=rid or body.get("id"),
        truncated=finish == "length",
        reported=reported_usage(usage_raw),
    )


LOW_DETAIL_TOKENS = 85  # gpt-4o / 4.1 / 4.5 with detail: low
# Tile-priced models: the flat "detail: low" charge (the tile's base tokens).
LOW_DETAIL_BY_MODEL: tuple[tuple[str, int], ...] = (
    ("gpt-4o-mini", 2833),  # billed as 33x gpt-4o's tokens at a lower price
    ("gpt-5", 70),  # gpt-5 itself and its snapshots; gpt-5.x is below
    ("o1", 75),
    ("o3", 75),
    ("gpt-4o", 85),
    ("chatgpt-4o", 85),
    ("gpt-4.1", 85),
    ("gpt-4.5", 85),
)
# Patch-priced models: 32-px patches, at most 1,536, times a per-model multiplier.
PATCH_MULTIPLIER: tuple[tuple[str, float], ...] = (
    ("gpt-4.1-mini", 1.62),
    ("gpt-4.1-nano", 2.46),
    ("gpt-5-mini", 1.62),
    ("gpt-5-nano", 2.46),
    ("o4-mini", 1.72),
)
PATCH_SIDE = 32
MAX_PATCHES = 1536
LARGEST_PATCH_MULTIPLIER = max(m for _, m in PATCH_MULTIPLIER)
# gpt-5.1 and later (and gpt-6) bill images by rules we could not read from a primary
# source; issue reports put GPT-5.2+ at up to ~1,844 tokens per image (secondary). Bound
# them by the larger of that figure and the costliest documented patch rule.
GPT5X_IMAGE_TOKENS_REPORTED = 1844


def _prefix_lookup(model: str, table: tuple[tuple[str, float], ...]) -> float | None:
    # longest matching prefix wins: gpt-4o-mini before gpt-4o
    best = max((p for p, _ in table if model.startswith(p)), key=len, default=None)
    return None if best is None else dict(table)[best]


def _patches(width: int, height: int) -> int:
    return min(math.ceil(width / PATCH_SIDE) * math.ceil(height / PATCH_SIDE), MAX_PATCHES)


def _known_image_tokens(width: int, height: int, model: str) -> int | None:
    """The worst case ``image_tokens`` knows for ``model`` by its name, or None."""
    if model.startswith(("gpt-5.", "gpt-6")):
        worst_patch = math.ceil(_patches(width, height) * LARGEST_PATCH_MULTIPLIER)
        return max(GPT5X_IMAGE_TOKENS_REPORTED, worst_patch)
    mult = _prefix_lookup(model, PATCH_MULTIPLIER)
    if mult is not None:
        return math.ceil(_patches(width, height) * mult)
    low = _prefix_lookup(model, tuple((p, float(t)) for p, t in LOW_DETAIL_BY_MODEL))
    return None if low is None else int(low)


def image_tokens(width: int, height: int, model: str, declared: int | None = None) -> int:
    """Worst-case prompt tokens of one image sent with ``detail: low`` to ``model``.

    Patch-priced models (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini) ignore the
    detail level: ``min(ceil(w/32) * ceil(h/32), 1536) * multiplier``. Tile-priced
    models charge their base tokens (gpt-4o-mini 2,833; gpt-4o 85; gpt-5 70).
    gpt-5.x / gpt-6 names: the largest figure known for the family (see
    ``GPT5X_IMAGE_TOKENS_REPORTED``). Any other name cannot be bounded: it needs
    ``max_image_tokens`` in the price file (``declared``), else ConfigurationError. A
    ``declared`` bound below the model's known one is raised to it: reserved at the lower
    figure, every answer overran its reservation and the first one stopped the run.
    """
    known = _known_image_tokens(width, height, model)
    if known is not None:
        return known if declared is None else max(declared, known)
    if declared is not None:
        return declared
    raise ConfigurationError(
        f"cannot bound the image tokens of OpenAI model {model!r}, so the budget cannot be "
        "enforced; state them in the price file, e.g. "
        f'{{"openai:{model}": {{"usd_per_1m_input_tokens": "...", '
        '"usd_per_1m_output_tokens": "...", "max_image_tokens": 1844}}'
    )


def _whole_param(params: Mapping[str, Any], key: str) -> int | None:
    """``params[key]`` as the whole number a server may read it as, None when absent.

    OpenAI-compatible servers built on pydantic (vLLM, SGLang, LiteLLM) read "2000" and
    2000.0 as 2000, so those count as 2000 here too; anything else is refused (a server
    would answer it with a 400).

    >>> _whole_param({"n": "3"}, "n"), _whole_param({"n": 2.0}, "n"), _whole_param({}, "n")
    (3, 2, None)
    """
    value = params.get(key)
    if value is None:
        return None
    count = whole_number(value)
    if count is None:
        raise ConfigurationError(
            f"openai {key} must be a whole number, not {value!r}; nothing was sent"
        )
    return count


def output_limit(spec: CallSpec) -> int:
    """Output tokens one answer may bill: the item's limit, or a larger one in params."""
    (item,) = spec.items
    assert isinstance(item, AnswerRequest)
    limit = item.max_output_tokens
    asked = {key: _whole_param(spec.params, key) for key in ("max_completion_tokens", "max_tokens")}
    if "max_completion_tokens" in spec.params and all(v is None for v in asked.values()):
        # sent as null, which the API reads as no limit at all (the model's own)
        raise ConfigurationError(
            "openai max_completion_tokens None sends the answer without an output limit, "
            "which the budget cannot bound; leave it out or give a number (nothing was sent)"
        )
    for value in asked.values():
        if value is not None and value > limit:
            limit = value
    return limit


def _choices(spec: CallSpec) -> int:
    n = _whole_param(spec.params, "n")
    return n if n is not None and n > 1 else 1


# service_tier values not billed at the standard rates the price table holds (pinned
# spec, ServiceTier: "fast" and "priority" opt in to Fast mode, at premium rates; "scale"
# draws on prepaid scale-tier units): the usage reports the same token counts, so nothing
# after the call could see the difference.
PREMIUM_TIERS = frozenset({"priority", "fast", "scale"})


def refuse_premium_tier(params: Mapping[str, Any]) -> None:
    """ConfigurationError for a ``service_tier`` not billed at the table's rates."""
    tier = params.get("service_tier")
    if isinstance(tier, str) and tier.strip().lower() in PREMIUM_TIERS:
        raise ConfigurationError(
            f"openai service_tier {tier!r} is not billed at the standard rates the budget "
            "prices (the usage shows the same token counts); use default, auto or flex "
            "(nothing was sent)"
        )


# Chat tools the model only asks the caller to run (pinned spec,
# CreateChatCompletionRequest.tools: ChatCompletionTool, type "function", and
# CustomToolChatCompletions, type "custom"): their cost is their own text, counted with
# the params. Any other type (web_search, file_search, code_interpreter: tools an
# OpenAI-compatible gateway may run for the model) bills what it fetches or runs.
CLIENT_TOOL_TYPES = frozenset({"function", "custom"})


def refuse_unbounded(params: Mapping[str, Any]) -> None:
    """ConfigurationError for params that buy what the token estimate does not hold:
    ``web_search_options`` (a web search for every answer: billed per search beside the
    tokens, and its results added to the prompt), audio output (``modalities`` with
    ``audio``, or an ``audio`` block: audio tokens, billed at rates the price table does
    not hold) and tools other than function and custom ones (``stream`` and
    ``prediction``: :func:`refuse_unread_output`).

    >>> refuse_unbounded({"tools": [{"type": "function", "function": {"name": "pick"}}]})
    """
    if params.get("web_search_options") is not None:
        raise ConfigurationError(
            "openai web_search_options runs a web search for every answer, billed per "
            "search and adding its results to the prompt, which the budget cannot bound "
            "before sending; leave it out (nothing was sent)"
        )
    modalities = params.get("modalities")
    asked = modalities if isinstance(modalities, list) else [modalities]
    if params.get("audio") is not None or any(
        isinstance(m, str) and m.strip().lower() == "audio" for m in asked
    ):
        named = "audio" if params.get("audio") is not None else "modalities"
        raise ConfigurationError(
            f"openai {named} asks for audio output, billed as audio tokens at rates the "
            "price table does not hold; leave it out (nothing was sent)"
        )
    tools = params.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind not in CLIENT_TOOL_TYPES:
            raise ConfigurationError(
                f"openai tool {kind} adds what it fetches or runs to the bill, which the "
                "budget cannot bound before sending; only function and custom tools are "
                "taken (nothing was sent)"
            )
def refuse_unread_output(params: Mapping[str, Any]) -> None:
    """ConfigurationError for ``stream`` (server-sent events, which the client does not
    read: a billed answer recorded as a failure) and ``prediction`` (its rejected tokens
    are billed as output; the pinned spec puts only visible and reasoning tokens under
    max_completion_tokens, so the reservation does not bound them).

    >>> refuse_unread_output({"stream": False})
    """
    if params.get("stream") not in (None, False):
        raise ConfigurationError(
            "openai stream sends the answer as server-sent events, which the client does "
            "not read (the answer would be billed and lost); leave it out (nothing was sent)"
        )
    if params.get("prediction") is not None:
        raise ConfigurationError(
            "openai prediction bills its rejected tokens as output beyond what "
            "max_completion_tokens bounds, which the budget cannot reserve; leave it out "
            "(nothing was sent)"
        )


def estimate_usage(spec: CallSpec) -> Usage:
    refuse_premium_tier(spec.params)
    refuse_unbounded(spec.params)
    refuse_unread_output(spec.params)
    if spec.kind == "text_embedding":
        return Usage(
            input_tokens=sum(
                text_tokens_upper_bound(i.text)
                for i in spec.items
                if isinstance(i, TextEmbeddingRequest)
            )
        )
    (item,) = spec.items
    assert isinstance(item, AnswerRequest)
    w, h = image_size(item.image)
    # message framing (~10 tokens) + prompt + image + the whole output allowance (of
    # every choice when params ask for n > 1), read from params when they raise it
    tokens = (
        16
        + text_tokens_upper_bound(item.prompt)
        + params_tokens_upper_bound(without_reasoning(spec.params))  # tools, schemas, ...
        + image_tokens(w, h, spec.model, spec.max_image_tokens)
    )
    # the caller's own caching (we send "explicit", which writes nothing): the prompt may
    # be written to the cache, each token billed at 1.25x, as usage charges (a surcharge:
    # the prompt's tier is its own size's)
    writes = "prompt_cache_options" in spec.params and writes_prompt_cache(spec.model)
    extra = -(-tokens // 4) if writes else 0
    return Usage(
        input_tokens=tokens + extra,
        output_tokens=output_limit(spec) * _choices(spec),
        surcharge_tokens=extra,
    )


# Go's time.Duration text: "1s", "6m0s", "20ms", "0.5ms", "1.5\u00b5s", "1h2m3.5s".
_DURATION_UNITS = {
    "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6,
    "\u03bcs": 1e-6, "ns": 1e-9,
}
_DURATION_PART = r"(\d+(?:\.\d+)?)(ms|us|\u00b5s|\u03bcs|ns|h|m|s)"  # "ms" before "m"
_DURATION = re.compile(f"(?:{_DURATION_PART})+")


def parse_duration(value: str | None) -> float | None:
    """OpenAI reset durations: ``1s``, ``6m0s``, ``20ms``, ``0.5ms``, ``1h2m3.5s`` ->
    seconds (Go's units h, m, s, ms, us/\u00b5s, ns); a plain number is seconds."""
    if not value:
        return None
    text = value.strip()
    if not _DURATION.fullmatch(text):
        try:
            return float(text)
        except ValueError:
            return None
    return sum(
        float(n) * _DURATION_UNITS[unit] for n, unit in re.findall(_DURATION_PART, text)
    )


_HINT_HEADERS = frozenset(
    f"x-ratelimit-{what}-{unit}"
    for what in ("limit", "remaining", "reset")
    for unit in ("requests", "tokens")
)
_NO_HINTS = RateLimitHints()


def rate_limit_hints(response_headers: httpx.Headers) -> RateLimitHints:
    headers = header_values(response_headers, _HINT_HEADERS)  # one pass over the headers
    if not headers:
        return _NO_HINTS
    return RateLimitHints(
        limit_requests=header_int(headers, "x-ratelimit-limit-requests"),
        limit_tokens=header_int(headers, "x-ratelimit-limit-tokens"),
        remaining_requests=header_int(headers, "x-ratelimit-remaining-requests"),
        remaining_tokens=header_int(headers, "x-ratelimit-remaining-tokens"),
        reset_requests_s=parse_duration(headers.get("x-ratelimit-reset-requests")),
        reset_tokens_s=parse_duration(headers.get("x-ratelimit-reset-tokens")),
    )


def classify_error(response: httpx.Response) -> APIStatusError:
    err = default_classify_error(response)
    if response.status_code == 429:
        try:
            code = (response.json().get("error") or {}).get("code")
        except (ValueError, AttributeError, RecursionError):
            code = None
        if code == "insufficient_quota":
            return QuotaExceededError(
                "insufficient_quota: the account is out of credit; add credit, then run again",
                status_code=429,
                provider=NAME,
                request_id=err.request_id,
            )
    return err


# Name prefixes that say what an OpenAI model is. Any other name (an OpenAI-compatible
# server's own model) may be either, so it is not narrowed.
_CHAT_PREFIXES = ("gpt-", "chatgpt-", "o1", "o3", "o4")


def max_input_tokens(model: str, params: Mapping[str, Any]) -> int | None:
    """Tokens one embedding input may hold (OpenAI never truncates)."""
    return MAX_EMBEDDING_INPUT_TOKENS


def model_kinds(model: str) -> frozenset[str]:
    """Embedding models cannot answer and chat models cannot embed (as far as names say)."""
    if "embed" in model.lower():
        return frozenset({"text_embedding"})
    if model.lower().startswith(_CHAT_PREFIXES):
        return frozenset({"answer"})
    return frozenset({"text_embedding", "answer"})


OPENAI = Provider(
    name=NAME,
    env_vars=("OPENAI_API_KEY",),
    default_base_url="https://api.openai.com/v1",
    api_version="v1",
    max_batch={"text_embedding": MAX_EMBEDDING_INPUTS, "answer": 1},
    max_request_tokens=MAX_EMBEDDING_REQUEST_TOKENS,
    max_input_tokens=max_input_tokens,
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    classify_error=classify_error,
    rate_limit_hints=rate_limit_hints,
    prepare_image=prepare_image,
    model_kinds=model_kinds,
    # Part of every answer's cache key: answers bought with reasoning on are other answers.
    default_params={"answer": {"reasoning": "off"}},
    requested_dim=dim_param("dimensions"),
    # (not max_completion_tokens or encoding_format: a caller's wins, see chat_body)
    client_fields={"model": SET_BY_TEACHER, "input": SET_BY_ITEMS, "messages": SET_BY_ITEMS},
    description="OpenAI or any OpenAI-compatible server (text embeddings, image answers)",
)

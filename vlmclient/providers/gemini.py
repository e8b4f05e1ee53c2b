"""Gemini ``generateContent`` (``POST {base}/models/{model}:generateContent``): image answers.

Auth is ``x-goog-api-key``. The image is an ``inline_data`` part. There are no
rate-limit headers: a 429 ``RESOURCE_EXHAUSTED`` body carries ``RetryInfo.retryDelay``
(``"46s"``) and a ``QuotaFailure`` naming the quota; a per-day quota does not clear by
retrying. Also home of the google.rpc error parsing shared with :mod:`.vertex`.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import (
    APIStatusError,
    AuthenticationError,
    ConfigurationError,
    PermissionDeniedError,
    QuotaExceededError,
    ResponseValidationError,
)
from ..models import AnswerRequest, Image, Usage
from ..redact import clip
from .base import SET_BY_ITEMS, SET_BY_TEACHER, CallSpec, Parsed, Provider
from .images import ACCEPTED_MEDIA_TYPES, fit_image, image_size
from .reasoning import reasoning_level, truncated_answer, without_reasoning
from .wire import (
    default_classify_error,
    json_object,
    params_tokens_upper_bound,
    reported_usage,
    request_id_of,
    usage_count,
    whole_number,
)

__all__ = [
    "GEMINI",
    "google_error",
    "image_tokens",
    "media_resolution",
    "parse_google_duration",
    "per_day_quota",
]

NAME = "gemini"
SMALL_IMAGE_SIDE = 384  # both sides <= 384 px: one flat charge
TOKENS_PER_TILE = 258
TILE_SIDE = 768
GEMINI3_IMAGE_TOKENS = 1120  # Gemini 3 default media_resolution for images
# Gemini 3 image tokens per image for each media resolution: the most the setting lets
# one image cost. Google's page says the setting determines "the maximum number of tokens
# allocated for media inputs" (ai.google.dev/gemini-api/docs/media-resolution, read
# 2026-11-30), but its "Token counts" table is not in our copies, so the numbers are
# SECONDARY: the fastgptplus.com guide "Gemini 3 Pro media_resolution Parameter" and the
# docs.rs rust-genai-types MediaResolution page (both read 2026-11-30): low 280, medium
# 560, high 1120, ultra high 2240 (per part only); unspecified means high for images.
# The generationConfig enum of googleapis/python-genai (types.py MediaResolution,
# @66807187, 2026-08-21) has LOW, MEDIUM and HIGH; ULTRA_HIGH is in PartMediaResolutionLevel
# only. This adapter never sets a per-part resolution, so generationConfig's decides.
GEMINI3_RESOLUTION_TOKENS = {
    "MEDIA_RESOLUTION_LOW": 280,
    "MEDIA_RESOLUTION_MEDIUM": 560,
    "MEDIA_RESOLUTION_HIGH": 1120,
    "MEDIA_RESOLUTION_ULTRA_HIGH": 2240,
}
PART_ONLY_RESOLUTION = "MEDIA_RESOLUTION_ULTRA_HIGH"
RESOLUTIONS = tuple(r for r in GEMINI3_RESOLUTION_TOKENS if r != PART_ONLY_RESOLUTION)
UNSPECIFIED_RESOLUTION = "MEDIA_RESOLUTION_UNSPECIFIED"
RESOLUTION_KEYS = ("mediaResolution", "media_resolution")  # generationConfig, both spellings
MAX_REQUEST_BYTES = 20 * 1024 * 1024  # inline data: whole request <= 20 MB
MAX_SIDE = 3072
MAX_IMAGE_BYTES = 7 * 1024 * 1024  # Vertex's per-inline-file cap, the stricter of the two
MEDIA_TYPES = ACCEPTED_MEDIA_TYPES[NAME]  # the one table in images.py
FRAMING_TOKENS = 16
# GenerateContentRequest fields that sit beside generationConfig, not inside it.
TOP_LEVEL_FIELDS = frozenset(
    {
        "systemInstruction",
        "system_instruction",
        "safetySettings",
        "safety_settings",
        "cachedContent",
        "cached_content",
        "tools",
        "toolConfig",
        "tool_config",
        "labels",
    }
)


# -- google.rpc errors (Gemini and Vertex) ---------------------------------------------

API_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})  # google.rpc.ErrorInfo
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def parse_google_duration(value: Any) -> float | None:
    """A protobuf Duration in JSON: ``"46s"``, ``"0.5s"`` or ``{"seconds": 46, "nanos": 0}``."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        return float(m.group(1)) if m else None
    if isinstance(value, dict):
        try:
            return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
        except (TypeError, ValueError):
            return None
    return None


def _rpc_error(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return {}
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]  # some Google front ends wrap the envelope in a list
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


def _details(err: dict[str, Any], type_suffix: str) -> list[dict[str, Any]]:
    details = err.get("details")
    if not isinstance(details, list):
        return []
    return [
        d
        for d in details
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc." + type_suffix)
    ]


def per_day_quota(err: dict[str, Any]) -> str | None:
    """The violated quota's id when it is a per-day quota (RPD), else None."""
    for failure in _details(err, "QuotaFailure"):
        for v in failure.get("violations") or []:
            if not isinstance(v, dict):
                continue
            names = " ".join(str(v.get(k, "")) for k in ("quotaId", "quotaMetric", "subject"))
            squashed = names.lower().replace("_", "").replace("-", "").replace("/", "")
            if "perday" in squashed or "requestsperday" in squashed:
                return str(v.get("quotaId") or v.get("quotaMetric") or "per-day quota")
    return None


def _refused_account(err: dict[str, Any], status_code: int) -> type[APIStatusError] | None:
    """The error class of a 400 that refuses the key or the account rather than the request.

    Gemini answers a wrong or expired API key with 400 ``INVALID_ARGUMENT`` and an
    ``ErrorInfo`` reason (not 401), and an account it does not serve ("User location is not
    supported for the API use") with 400 ``FAILED_PRECONDITION``: no request can succeed.
    """
    if status_code != 400:
        return None
    if any(str(info.get("reason")) in API_KEY_REASONS for info in _details(err, "ErrorInfo")):
        return AuthenticationError
    if err.get("status") == "FAILED_PRECONDITION":
        return PermissionDeniedError
    return None


def google_error(response: httpx.Response) -> APIStatusError:
    """google.rpc envelope ``{"error": {code, message, status, details}}`` -> our error.

    429 ``RESOURCE_EXHAUSTED`` on a per-day quota is a :class:`QuotaExceededError` (no
    retry clears it today); other 429s are retried after ``RetryInfo.retryDelay``.
    503 ``UNAVAILABLE`` is an overload. A 400 for a wrong or expired key is an
    :class:`AuthenticationError`, a 400 ``FAILED_PRECONDITION`` (the account may not use
    the API) a :class:`PermissionDeniedError`: both stop a run at once.
    """
    base = default_classify_error(response)
    err = _rpc_error(response)
    if not err:
        return base
    status = err.get("status")
    fallback = str(base.args[0]).removeprefix(f"HTTP {response.status_code}: ")
    message = clip(str(err.get("message") or fallback), 300)  # (see wire._message)
    text = f"{status}: {message}" if status else message
    retry_after = base.retry_after
    for info in _details(err, "RetryInfo"):
        delay = parse_google_duration(info.get("retryDelay"))
        if delay is not None:
            retry_after = delay
    if response.status_code == 429:
        quota = per_day_quota(err)
        if quota is not None:
            return QuotaExceededError(
                f"{text} (per-day quota {quota} is used up; it resets daily, retrying now "
                "cannot help)",
                status_code=429,
                request_id=base.request_id,
            )
    return (_refused_account(err, response.status_code) or type(base))(
        text,
        status_code=response.status_code,
        request_id=base.request_id,
        retry_after=retry_after,
    )


# -- generateContent -------------------------------------------------------------------


def prepare_image(image: Image) -> Image:
    """png/jpeg/webp (a GIF or BMP is re-encoded), long edge <= 3072 px, <= 7 MB."""
    return fit_image(image, max_side=MAX_SIDE, max_bytes=MAX_IMAGE_BYTES, media_types=MEDIA_TYPES)


# Thinking budgets (tokens) for the named levels on Gemini 2.5, whose thinkingConfig
# takes a budget: 0 turns thinking off on Flash and Flash-Lite; 2.5 Pro cannot turn it
# off (128-32,768); Flash-Lite takes 0 or 512-24,576, so no level goes below 512.
# Gemini 3 takes thinkingLevel instead, and sending both is a 400. (Secondary, read
# 2026-11-30: ai.google.dev/gemini-api/docs/thinking as quoted in enricoros/big-AGI#893,
# and the gemini_ex ThinkingConfig docs on hexdocs.pm citing ai.google.dev.)
THINKING_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
PRO_MIN_BUDGET = 128


def accepted_thinking_levels(model: str) -> tuple[str, ...] | None:
    """The ``thinkingLevel`` values ``model`` accepts, where we know them (None: send as
    asked). Any other level is a 400 (not billed). Gemini 3 Pro: low, high; 3.1 Pro: low,
    medium, high; Flash (not Flash-Lite) from 3.7 on and ``gemini-flash-latest``: low,
    medium, high. (Secondary, read 2026-12-05: gemini_ex ThinkingLevel docs and
    help.apiyi.com for 3 / 3.1 Pro; docs.oxen.ai's gemini-3.8-flash page, "minimal is not
    supported and returns an error", the adk-model and ferrin-google crate docs, and
    Google Cloud's Vertex AI thinking page, whose level table starts "Gemini 3.8 Flash
    LOW".)

    >>> accepted_thinking_levels("gemini-3.8-flash")
    ('low', 'medium', 'high')
    >>> accepted_thinking_levels("gemini-3.5-flash-lite") is None
    True
    """
    if re.match(r"gemini-3-pro\b", model):
        return ("low", "high")
    if model.startswith("gemini-3.1-pro"):
        return ("low", "medium", "high")
    flash = re.match(r"gemini-(\d+)\.(\d+)-flash(?!-lite)", model)
    if model == "gemini-flash-latest" or (
        flash is not None and (int(flash[1]), int(flash[2])) >= (3, 7)
    ):
        return ("low", "medium", "high")
    return None


def thinking_config(model: str, level: str) -> dict[str, Any] | None:
    """The ``thinkingConfig`` for ``level`` on ``model`` (None = send none).

    Gemini 2.5: ``thinkingBudget`` (0 = off where allowed). Gemini 3 and later take a
    ``thinkingLevel`` and cannot turn thinking off: ``off`` sends the lowest level every
    Gemini 3 model accepts, ``low``, except on Flash-Lite, whose default level is
    ``minimal`` (ai.google.dev whats-new-gemini-3.6, read 2026-11-30: gemini-3.5-flash-lite
    "Default thinking level: minimal"), so ``off`` there is ``minimal``: ``low`` would
    think more than sending nothing. ``minimal`` on a model without it sends its lowest
    level, ``low`` (as OpenAI's o-series); another level the model does not accept
    (``medium`` on 3 Pro) is a ConfigurationError before anything is sent, not a 400
    mid-run. Other models (2.0) do not think.
    """
    if level == "default":
        return None
    if model.startswith("gemini-2.5"):
        if level == "off":
            return {"thinkingBudget": PRO_MIN_BUDGET if "pro" in model else 0}
        return {"thinkingBudget": THINKING_BUDGETS[level]}
    if re.match(r"gemini-([3-9]|\d\d)|gemini-flash-latest", model):
        if level == "off":
            return {"thinkingLevel": "minimal" if "flash-lite" in model else "low"}
        accepted = accepted_thinking_levels(model)
        if accepted is not None and level not in accepted:
            if level != "minimal":
                raise ConfigurationError(
                    f"{model} accepts reasoning {', '.join(accepted)} (or off, default), "
                    f"not {level!r}; nothing was sent"
                )
            level = accepted[0]
        return {"thinkingLevel": level}
    return None


def generate_body(spec: CallSpec) -> dict[str, Any]:
    (item,) = spec.items
    assert isinstance(item, AnswerRequest)
    params = without_reasoning(spec.params)
    top = {k: v for k, v in params.items() if k in TOP_LEVEL_FIELDS}
    config = {k: v for k, v in params.items() if k not in TOP_LEVEL_FIELDS}
    for key in RESOLUTION_KEYS:
        if config.get(key) is not None:
            # the enum name Gemini knows, so what is sent is what the estimate assumed
            config[key] = _resolution_name(key, config[key])
    thinking = thinking_config(spec.model, reasoning_level(spec.params))
    if thinking is not None and "thinkingConfig" not in config and "thinking_config" not in config:
        config["thinkingConfig"] = thinking
    parts = [
        {
            "inline_data": {
                "mime_type": item.image.media_type,
                "data": base64.b64encode(item.image.data).decode("ascii"),
            }
        },
        {"text": item.prompt},
    ]
    return {
        **top,
        "contents": [{"role": "user", "parts": parts}],
        # maxOutputTokens caps thoughts + answer together, so the estimate holds.
        "generationConfig": {**config, "maxOutputTokens": item.max_output_tokens},
    }


def build_request(spec: CallSpec) -> httpx.Request:
    if spec.kind != "answer":
        raise ValueError(f"gemini adapter does not do {spec.kind}")
    return httpx.Request(
        "POST",
        f"{spec.base_url.rstrip('/')}/models/{spec.model}:generateContent",
        headers={
            "x-goog-api-key": spec.api_key.get_secret_value(),
            "Content-Type": "application/json",
        },
        content=json.dumps(generate_body(spec), separators=(",", ":")).encode(),
    )


def usage_of(body: dict[str, Any]) -> Usage:
    """``usageMetadata``: prompt tokens in; answer and thinking tokens out (both billed
    at the output price)."""
    meta = body.get("usageMetadata")
    return Usage(
        input_tokens=usage_count(meta, "promptTokenCount")
        + usage_count(meta, "toolUsePromptTokenCount"),
        output_tokens=usage_count(meta, "candidatesTokenCount")
        + usage_count(meta, "thoughtsTokenCount"),
    )


# Candidate.FinishReason values that say the candidate's text was flagged or cut by a
# filter (googleapis generative_service.proto, read at f8291d2b, 2026-08-22: SAFETY and
# RECITATION "content was flagged", LANGUAGE "unsupported language", BLOCKLIST,
# PROHIBITED_CONTENT and SPII "token generation stopped"): what text there is, is no answer.
FILTERED_FINISH_REASONS = frozenset(
    {"SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"}
)


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = json_object(response, provider=NAME, request_id=rid)
    rid = rid or (body["responseId"] if isinstance(body.get("responseId"), str) else None)
    usage = usage_of(body)
    texts: list[str] = []
    candidates = body.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        content = candidates[0].get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if isinstance(parts, list):
            texts = [
                p["text"]
                for p in parts
                if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
            ]
    finish = (
        candidates[0].get("finishReason")
        if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict)
        else None
    )
    if texts and isinstance(finish, str) and finish in FILTERED_FINISH_REASONS:
        # billed, but the text is what the filter left: not an answer to cache
        bad = ResponseValidationError(
            f"answer withheld by Gemini's filter (finishReason {finish!r})",
            provider=NAME,
            request_id=rid,
        )
        bad.usage, bad.reported = usage, reported_usage(body.get("usageMetadata"))
        raise bad
    if not texts:
        feedback = body.get("promptFeedback")
        reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if finish == "MAX_TOKENS":
            raise truncated_answer(
                spec, provider=NAME, usage=usage, request_id=rid,
                reported=reported_usage(body.get("usageMetadata")),
            )
        bad = ResponseValidationError(
            f"no answer text (blockReason {reason!r}, finishReason {finish!r})",
            provider=NAME,
            request_id=rid,
        )
        bad.usage, bad.reported = usage, reported_usage(body.get("usageMetadata"))
        raise bad
    return Parsed(
        usage=usage,
        texts=["".join(texts)],
        request_id=rid,
        reported=reported_usage(body.get("usageMetadata")),
        truncated=candidates[0].get("finishReason") == "MAX_TOKENS",  # type: ignore[index]
    )


def _resolution_name(key: str, value: Any) -> str:
    """``"low"``, ``"LOW"`` or ``"MEDIA_RESOLUTION_LOW"`` -> ``"MEDIA_RESOLUTION_LOW"``."""
    name = str(value).strip().upper()
    if not name.startswith("MEDIA_RESOLUTION_"):
        name = "MEDIA_RESOLUTION_" + name
    if name == PART_ONLY_RESOLUTION:
        # generationConfig's enum has no ULTRA_HIGH (it is a per-part level, which this
        # adapter never sets): sending it would be refused after the run started
        raise ConfigurationError(
            f"gemini {key} {value!r} is a per-image-part level, not one generationConfig "
            "takes (LOW, MEDIUM, HIGH or UNSPECIFIED); ask for HIGH. Nothing was sent"
        )
    if name not in GEMINI3_RESOLUTION_TOKENS and name != UNSPECIFIED_RESOLUTION:
        known = ", ".join(n.removeprefix("MEDIA_RESOLUTION_") for n in RESOLUTIONS)
        raise ConfigurationError(
            f"gemini {key} {value!r} is not one of {known} (or UNSPECIFIED); nothing was sent"
        )
    return name


def media_resolution(params: Mapping[str, Any]) -> str | None:
    """The ``mediaResolution`` a request asks for, as an enum name (None: not set).

    Either spelling, any case, with or without the ``MEDIA_RESOLUTION_`` prefix; a value
    Gemini would not know is a :class:`ConfigurationError` before anything is sent (we
    could not bound its bill). Both spellings at once: the costlier one counts.

    >>> media_resolution({"mediaResolution": "low"})
    'MEDIA_RESOLUTION_LOW'
    """
    found = [
        _resolution_name(key, params[key])
        for key in RESOLUTION_KEYS
        if params.get(key) is not None
    ]
    found = [n for n in found if n != UNSPECIFIED_RESOLUTION]
    return max(found, key=GEMINI3_RESOLUTION_TOKENS.__getitem__) if found else None


def _is_gemini3_or_later(model: str) -> bool:
    return re.match(r"gemini-[3-9]", model) is not None


def image_tokens(width: int, height: int, model: str = "", resolution: str | None = None) -> int:
    """Prompt tokens one image can cost.

    Gemini 2.x: 258 when both sides <= 384 px, else 258 per 768-px tile (its media
    resolutions, 64 or 256 tokens, stay under that). Gemini 3 and later: the requested
    ``media_resolution``'s maximum (280 / 560 / 1,120 / 2,240); when none is requested,
    the larger of the 1,120 default and the 2.x tile rule, since the default is the
    model's to choose.
    """
    if resolution is not None and _is_gemini3_or_later(model):
        return GEMINI3_RESOLUTION_TOKENS[resolution]
    if width <= SMALL_IMAGE_SIDE and height <= SMALL_IMAGE_SIDE:
        tokens = TOKENS_PER_TILE
    else:
        tokens = math.ceil(width / TILE_SIDE) * math.ceil(height / TILE_SIDE) * TOKENS_PER_TILE
    if _is_gemini3_or_later(model):
        tokens = max(tokens, GEMINI3_IMAGE_TOKENS)
    return tokens


def candidates(params: Mapping[str, Any]) -> int:
    """Answers one request asks for (``candidateCount``, either spelling): each has its
    own ``maxOutputTokens`` and every one is billed. The larger if both are given.

    >>> candidates({"candidate_count": 3}), candidates({}), candidates({"candidateCount": 0})
    (3, 1, 1)
    """
    n = 1
    for key in ("candidateCount", "candidate_count"):
        value = params.get(key)
        if value is None:
            continue
        # Gemini reads its body as proto3 JSON, where an int32 may be a string ("3") or
        # an integral number (3.0): each is that many billed answers
        count = whole_number(value)
        if count is None:
            raise ConfigurationError(
                f"gemini {key} must be a whole number of answers, not {value!r}; nothing was sent"
            )
        n = max(n, count)
    return n


# Tools whose only cost is their own text, counted with the params: the model answers
# with a call and nothing is fetched or run for it.
BOUNDED_TOOL_KEYS = frozenset({"functionDeclarations", "function_declarations"})


def refuse_unbounded(params: Mapping[str, Any]) -> None:
    """ConfigurationError for params that add prompt tokens the request does not hold: a
    context cache (``cachedContent``: its tokens are in every ``promptTokenCount``) and
    the tools that fetch or run something (``google_search``, ``url_context``,
    ``code_execution``, ...: billed as ``toolUsePromptTokenCount``). No estimate can
    bound them before sending.

    >>> refuse_unbounded({"tools": [{"functionDeclarations": []}]})
    """
    for key in ("cachedContent", "cached_content"):
        if params.get(key) is not None:
            raise ConfigurationError(
                f"gemini {key} adds the cache's tokens to every prompt, which the budget "
                "cannot bound before sending; leave it out (nothing was sent)"
            )
    tools = params.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        extra = sorted(set(tool) - BOUNDED_TOOL_KEYS) if isinstance(tool, dict) else []
        if extra:
            raise ConfigurationError(
                f"gemini tool {', '.join(extra)} adds what it fetches or runs to the prompt, "
                "which the budget cannot bound before sending; only functionDeclarations "
                "are taken (nothing was sent)"
            )


# generationConfig fields that buy image or audio output, priced apart from the text rate
# the estimate charges every output token at (secondary, read 2026-12-07: micdrop.dev's
# Gemini TTS page, audio at $6 per million tokens; image output tokens costed at the text
# rate were litellm#17410's wrong spend). Only a text answer is read back anyway.
MODALITY_KEYS = ("responseModalities", "response_modalities")
SPEECH_KEYS = ("speechConfig", "speech_config")
TEXT_MODALITIES = frozenset({"TEXT", "MODALITY_UNSPECIFIED"})


def refuse_other_output(params: Mapping[str, Any]) -> None:
    """ConfigurationError for a nested ``generationConfig`` (the adapter builds that
    object from the params: sent, it sat inside ours, a 400 after every reservation) and
    for params asking for image or audio output, which the estimate does not price.

    >>> refuse_other_output({"responseModalities": ["TEXT"]})
    """
    for key in ("generationConfig", "generation_config"):
        if key in params:
            raise ConfigurationError(
                f"gemini {key} is built by the client from the params; pass its fields "
                "(temperature, topK, ...) as params themselves (nothing was sent)"
            )
    for key in MODALITY_KEYS:
        value = params.get(key)
        asked = value if isinstance(value, list) else [] if value is None else [value]
        other = [m for m in asked if str(m).strip().upper() not in TEXT_MODALITIES]
        if other:
            raise ConfigurationError(
                f"gemini {key} {other!r} bills image or audio output, which the budget "
                "does not price (only text answers are read); leave it out (nothing was sent)"
            )
    for key in SPEECH_KEYS:
        if key in params:
            raise ConfigurationError(
                f"gemini {key} asks for spoken (audio) output, which the budget does not "
                "price (only text answers are read); leave it out (nothing was sent)"
            )


def estimate_usage(spec: CallSpec) -> Usage:
    (item,) = spec.items
    assert isinstance(item, AnswerRequest)
    refuse_unbounded(spec.params)
    refuse_other_output(spec.params)
    w, h = image_size(item.image)
    resolution = media_resolution(spec.params)
    return Usage(
        input_tokens=FRAMING_TOKENS
        + len(item.prompt.encode("utf-8"))
        + 1
        # a caller's systemInstruction, tools, ... are billed as input too
        + params_tokens_upper_bound(without_reasoning(spec.params))
        + image_tokens(w, h, spec.model, resolution),
        output_tokens=item.max_output_tokens * candidates(spec.params),
    )


GEMINI = Provider(
    name=NAME,
    env_vars=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    default_base_url="https://generativelanguage.googleapis.com/v1beta",
    api_version="v1beta",
    max_batch={"answer": 1},
    max_request_bytes=MAX_REQUEST_BYTES,
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    classify_error=google_error,
    prepare_image=prepare_image,
    # Part of every answer's cache key: answers bought with thinking on are other answers.
    default_params={"answer": {"reasoning": "off"}},
    # (a model param would land in generationConfig; an output limit there would be
    # replaced by ours, or, snake-cased, sent beside it)
    client_fields={
        "model": SET_BY_TEACHER,
        "contents": SET_BY_ITEMS,
        "maxOutputTokens": "the max_output_tokens of each request",
        "max_output_tokens": "the max_output_tokens of each request",
    },
    description="Google Gemini API generateContent (image answers)",
)

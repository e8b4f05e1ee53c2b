"""OpenAI and any OpenAI-compatible server: text embeddings and image answers.

``POST {base}/embeddings`` for text, ``POST {base}/chat/completions`` with an
``image_url`` data-URL part for answers. Base URL includes the ``/v1`` prefix.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import httpx

from ..errors import APIStatusError, QuotaExceededError, ResponseValidationError
from ..models import AnswerRequest, Image, TextEmbeddingRequest, Usage
from .base import (
    CallSpec,
    Parsed,
    Provider,
    RateLimitHints,
    data_uri,
    default_classify_error,
    indexed_vectors,
    json_object,
    request_id_of,
    text_tokens_upper_bound,
)
from .images import MAX_UPLOAD_BYTES, MAX_UPLOAD_SIDE, fit_image, image_size

__all__ = ["OPENAI", "image_tokens", "parse_duration"]

NAME = "openai"
MAX_EMBEDDING_INPUTS = 2048  # CreateEmbeddingRequest maxItems
# Worst-case tokens per image (gpt-4o "high" detail: 2048 fit, 768 short side, 512 tiles).
MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")  # chat image inputs


def prepare_image(image: Image) -> Image:
    """png/jpeg/webp/gif (a BMP is re-encoded), long edge <= 2048 px, <= 5 MB."""
    return fit_image(
        image, max_side=MAX_UPLOAD_SIDE, max_bytes=MAX_UPLOAD_BYTES, media_types=MEDIA_TYPES
    )


def _auth(spec: CallSpec) -> dict[str, str]:
    return {"Authorization": f"Bearer {spec.api_key.get_secret_value()}"}


def _post(spec: CallSpec, path: str, body: dict[str, Any]) -> httpx.Request:
    return httpx.Request(
        "POST",
        spec.base_url.rstrip("/") + path,
        headers={**_auth(spec), "Content-Type": "application/json"},
        content=json.dumps(body, separators=(",", ":")).encode(),
    )


def embedding_body(spec: CallSpec) -> dict[str, Any]:
    texts = []
    for item in spec.items:
        assert isinstance(item, TextEmbeddingRequest)
        texts.append(item.text)
    return {"model": spec.model, "input": texts, "encoding_format": "float", **spec.params}


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
        **spec.params,
    }


def build_request(spec: CallSpec) -> httpx.Request:
    if spec.kind == "text_embedding":
        return _post(spec, "/embeddings", embedding_body(spec))
    if spec.kind == "answer":
        return _post(spec, "/chat/completions", chat_body(spec))
    raise ValueError(f"openai adapter does not do {spec.kind}")


def _json(response: httpx.Response, rid: str | None) -> dict[str, Any]:
    return json_object(response, provider=NAME, request_id=rid)


def _int(obj: Any, key: str) -> int:
    v = obj.get(key, 0) if isinstance(obj, dict) else 0
    return int(v) if isinstance(v, int) and v >= 0 else 0


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = _json(response, rid)
    usage_raw = body.get("usage")
    usage_obj: dict[str, Any] = usage_raw if isinstance(usage_raw, dict) else {}
    if spec.kind == "text_embedding":
        usage = Usage(input_tokens=_int(usage_obj, "prompt_tokens"))
        try:
            vecs = indexed_vectors(
                body.get("data"), expected=len(spec.items), request_id=rid, provider=NAME
            )
        except ResponseValidationError as exc:
            exc.usage = usage  # billed as the body says, when it says
            raise
        return Parsed(usage=usage, vectors=vecs, request_id=rid or body.get("id"))
    choices = body.get("choices")
    try:
        text = choices[0]["message"]["content"]  # type: ignore[index]
    except (TypeError, KeyError, IndexError) as exc:
        raise ResponseValidationError(
            "missing choices[0].message.content", provider=NAME, request_id=rid
        ) from exc
    if not isinstance(text, str):
        raise ResponseValidationError("answer content is not text", provider=NAME, request_id=rid)
    details = usage_obj.get("completion_tokens_details")
    usage = Usage(
        input_tokens=_int(usage_obj, "prompt_tokens"),
        # reasoning tokens are already inside completion_tokens at OpenAI
        output_tokens=max(_int(usage_obj, "completion_tokens"), _int(details, "reasoning_tokens")),
    )
    return Parsed(usage=usage, texts=[text], request_id=rid or body.get("id"))


def image_tokens_low_detail(width: int, height: int) -> int:
    """OpenAI ``detail: low`` on gpt-4o-class models: a flat 85 tokens whatever the size."""
    return LOW_DETAIL_TOKENS


LOW_DETAIL_TOKENS = 85  # gpt-4o / 4.1 / 4.5 and unknown OpenAI-compatible models
# Tile-priced models: the flat "detail: low" charge (the tile's base tokens).
LOW_DETAIL_BY_MODEL: tuple[tuple[str, int], ...] = (
    ("gpt-4o-mini", 2833),  # billed as 33x gpt-4o's tokens at a lower price
    ("gpt-5", 70),
    ("o1", 75),
    ("o3", 75),
    ("gpt-4o", 85),
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


def _prefix_lookup(model: str, table: tuple[tuple[str, float], ...]) -> float | None:
    # longest matching prefix wins: gpt-4o-mini before gpt-4o
    best = max((p for p, _ in table if model.startswith(p)), key=len, default=None)
    return None if best is None else dict(table)[best]


def image_tokens(width: int, height: int, model: str) -> int:
    """Worst-case prompt tokens of one image sent with ``detail: low`` to ``model``.

    Patch-priced models (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini) ignore the
    detail level: ``min(ceil(w/32) * ceil(h/32), 1536) * multiplier``. Tile-priced
    models charge their base tokens (gpt-4o-mini 2,833; gpt-4o 85). Unknown models
    (OpenAI-compatible servers) are charged 85, the gpt-4o low-detail figure.
    """
    mult = _prefix_lookup(model, PATCH_MULTIPLIER)
    if mult is not None:
        patches = math.ceil(width / PATCH_SIDE) * math.ceil(height / PATCH_SIDE)
        return math.ceil(min(patches, MAX_PATCHES) * mult)
    low = _prefix_lookup(model, tuple((p, float(t)) for p, t in LOW_DETAIL_BY_MODEL))
    return int(low) if low is not None else LOW_DETAIL_TOKENS


def estimate_usage(spec: CallSpec) -> Usage:
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
    # message framing (~10 tokens) + prompt + image + the whole output allowance
    return Usage(
        input_tokens=16 + text_tokens_upper_bound(item.prompt) + image_tokens(w, h, spec.model),
        output_tokens=item.max_output_tokens,
    )


_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$"
)


def parse_duration(value: str | None) -> float | None:
    """OpenAI reset durations: ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s`` -> seconds."""
    if not value:
        return None
    m = _DURATION.match(value.strip())
    if not m or not any(m.groups()):
        try:
            return float(value)
        except ValueError:
            return None
    h, mnt, s, ms = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mnt * 60 + s + ms / 1000


def _opt_int(headers: httpx.Headers, name: str) -> int | None:
    v = headers.get(name)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def rate_limit_hints(headers: httpx.Headers) -> RateLimitHints:
    return RateLimitHints(
        limit_requests=_opt_int(headers, "x-ratelimit-limit-requests"),
        limit_tokens=_opt_int(headers, "x-ratelimit-limit-tokens"),
        remaining_requests=_opt_int(headers, "x-ratelimit-remaining-requests"),
        remaining_tokens=_opt_int(headers, "x-ratelimit-remaining-tokens"),
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
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    classify_error=classify_error,
    rate_limit_hints=rate_limit_hints,
    prepare_image=prepare_image,
    model_kinds=model_kinds,
    description="OpenAI or any OpenAI-compatible server (text embeddings, image answers)",
)

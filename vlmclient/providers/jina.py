"""Jina embeddings (``POST {base}/v1/embeddings``), e.g. ``jina-clip-v2``.

Inputs are ``{"image": "<raw base64>"}`` or ``{"text": ...}`` objects; the response is
OpenAI-like with ``usage.total_tokens``. Jina bills a prepaid token balance: a 402
means the balance is empty, which no retry fixes.

Jina publishes no per-image token count we could verify. The estimate assumes at
most :data:`IMAGE_TOKENS_PER_TILE` tokens per 512-px tile and sends images at
<= 512 px (the model's native resolution), so one tile each; the response's
``total_tokens`` is what is charged.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import (
    APIStatusError,
    ConfigurationError,
    QuotaExceededError,
    ResponseValidationError,
)
from ..models import Image, ImageEmbeddingRequest, TextEmbeddingRequest, Usage
from .base import SET_BY_ITEMS, SET_BY_TEACHER, CallSpec, Parsed, Provider
from .images import ACCEPTED_MEDIA_TYPES, fit_image, image_size
from .vectors import dim_param, indexed_vectors
from .wire import default_classify_error, json_object, reported_usage, request_id_of, usage_count

__all__ = ["JINA", "embeddings_body"]

NAME = "jina"
NATIVE_SIDE = 512  # jina-clip-v2 input resolution
IMAGE_TOKENS_PER_TILE = 4000  # assumed upper bound per 512x512 tile (not verified)
TEXT_SPECIAL_TOKENS = 2  # <s> and </s>
# Per input: 8,192 tokens (jina-clip-v2's text context; later models take more, which only
# sends a few more texts alone). Jina truncates only when asked (``truncate: true``);
# otherwise a longer text fails its whole request with a 400.
MAX_INPUT_TOKENS = 8192
MAX_TEXTS = 512  # not documented in our sources; conservative
MAX_IMAGES = 64  # not documented in our sources; conservative
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MEDIA_TYPES = ACCEPTED_MEDIA_TYPES[NAME]  # the one table in images.py


def prepare_image(image: Image) -> Image:
    """Long edge <= 512 px: the model sees 512x512, so larger uploads buy nothing."""
    return fit_image(
        image, max_side=NATIVE_SIDE, max_bytes=MAX_IMAGE_BYTES, media_types=MEDIA_TYPES
    )


# dimensions: 64..1024 on jina-clip-v2 (reference notes, /v1/embeddings; Matryoshka);
# other models' ranges are not in our sources, so only a positive integer is asked there.
# A value out of range is a 400 on every request.
DIMENSIONS: dict[str, tuple[int, int | None]] = {"jina-clip-v2": (64, 1024)}


def check_dimensions(model: str, params: Mapping[str, Any]) -> None:
    """ConfigurationError for a ``dimensions`` the model does not take (nothing is sent)."""
    dim = params.get("dimensions")
    if dim is None:
        return
    low, high = DIMENSIONS.get(model, (1, None))
    if isinstance(dim, bool) or not isinstance(dim, int) or not low <= dim <= (high or dim):
        allowed = f"an integer from {low} to {high}" if high else "a positive integer"
        raise ConfigurationError(f"jina dimensions on {model} must be {allowed}, not {dim!r}")


def embeddings_body(spec: CallSpec) -> dict[str, Any]:
    inputs: list[dict[str, str]] = []
    for item in spec.items:
        if isinstance(item, ImageEmbeddingRequest):
            inputs.append({"image": base64.b64encode(item.image.data).decode("ascii")})
        elif isinstance(item, TextEmbeddingRequest):
            inputs.append({"text": item.text})
        else:
            raise ValueError(f"jina adapter does not do {spec.kind}")
    # params: dimensions (64..1024), normalized, task. Not embedding_type: the client
    # reads float lists only ("binary"/"ubinary" packed bits passed as short vectors and
    # were cached; "base64" answers were billed and refused, request after request).
    check_dimensions(spec.model, spec.params)
    given = spec.params.get("embedding_type", "float")
    if given != "float":
        raise ConfigurationError(
            f"jina embedding_type must be 'float' (the vectors the client reads), not {given!r}"
        )
    return {"model": spec.model, "input": inputs, "embedding_type": "float", **spec.params}


def build_request(spec: CallSpec) -> httpx.Request:
    return httpx.Request(
        "POST",
        spec.base_url.rstrip("/") + "/v1/embeddings",
        headers={
            "Authorization": f"Bearer {spec.api_key.get_secret_value()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
        content=json.dumps(embeddings_body(spec), separators=(",", ":")).encode(),
    )


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = json_object(response, provider=NAME, request_id=rid)
    u = body.get("usage")
    tokens = usage_count(u, "total_tokens", None)
    if tokens is None:
        tokens = usage_count(u, "prompt_tokens")
    usage = Usage(input_tokens=tokens)
    try:
        vecs = indexed_vectors(
            body.get("data"), expected=len(spec.items), request_id=rid, provider=NAME
        )
    except ResponseValidationError as exc:
        exc.usage, exc.reported = usage, reported_usage(body.get("usage"))
        raise
    return Parsed(
        usage=usage, vectors=vecs, request_id=rid, reported=reported_usage(body.get("usage"))
    )


def image_tokens(width: int, height: int) -> int:
    tiles = math.ceil(width / NATIVE_SIDE) * math.ceil(height / NATIVE_SIDE)
    return tiles * IMAGE_TOKENS_PER_TILE


def estimate_usage(spec: CallSpec) -> Usage:
    tokens = 0
    for item in spec.items:
        if isinstance(item, ImageEmbeddingRequest):
            tokens += image_tokens(*image_size(item.image))
        elif isinstance(item, TextEmbeddingRequest):
            tokens += len(item.text.encode("utf-8")) + TEXT_SPECIAL_TOKENS
    return Usage(input_tokens=tokens)


def max_input_tokens(model: str, params: Mapping[str, Any]) -> int | None:
    """8,192, unless the caller asks Jina to truncate (``truncate: true``)."""
    return None if params.get("truncate") is True else MAX_INPUT_TOKENS


def classify_error(response: httpx.Response) -> APIStatusError:
    err = default_classify_error(response)
    if response.status_code == 402:
        message = str(err.args[0]).removeprefix("HTTP 402: ")
        return QuotaExceededError(
            f"{message} (the Jina token balance is empty; top it up, then run again)",
            status_code=402,
            request_id=err.request_id,
        )
    return err


JINA = Provider(
    name=NAME,
    env_vars=("JINA_API_KEY",),
    default_base_url="https://api.jina.ai",
    api_version="v1",
    max_batch={"image_embedding": MAX_IMAGES, "text_embedding": MAX_TEXTS},
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    classify_error=classify_error,
    prepare_image=prepare_image,
    max_input_tokens=max_input_tokens,
    requested_dim=dim_param("dimensions"),
    client_fields={"model": SET_BY_TEACHER, "input": SET_BY_ITEMS},
    description="Jina AI embeddings (jina-clip-v2: image and text)",
)

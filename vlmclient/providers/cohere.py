"""Cohere Embed v2 (``POST {base}/v2/embed``): image and text embeddings.

Also the wire format of the local teacher server (``local:`` teachers).
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx

from ..errors import ConfigurationError, ResponseValidationError
from ..models import Image, ImageEmbeddingRequest, TextEmbeddingRequest, Usage
from .base import (
    CallSpec,
    Parsed,
    Provider,
    data_uri,
    json_object,
    reported_usage,
    request_id_of,
    text_tokens_upper_bound,
    usage_count,
    vectors_from,
)
from .images import ACCEPTED_MEDIA_TYPES, fit_image, image_size

__all__ = ["COHERE", "embed_body"]

NAME = "cohere"
MAX_TEXTS = 96  # spec: texts maxItems 96
MAX_IMAGES_V4 = 96
# v4 caps the images of one call at 20 MB without saying whether of files or of the
# base64 data URIs sent; the safe reading is the base64 text, so raw bytes are capped at
# 3/4 of it, less room for the data-URI prefixes.
MAX_REQUEST_IMAGE_BYTES = 20 * 1024 * 1024 * 3 // 4 - 64 * 1024
MAX_SIDE = 2048
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # v3's per-image cap, the stricter of the two models
MEDIA_TYPES = ACCEPTED_MEDIA_TYPES[NAME]  # the one table in images.py
MAX_IMAGE_PIXELS = 2_458_624  # larger images are downsampled by the API
MIN_IMAGE_PIXELS = 3_136
PIXELS_PER_IMAGE_TOKEN = 160  # 512x512 ~ 1,610 tokens, rounded down to over-estimate


def _is_v3(model: str) -> bool:
    return "-v3" in model


def prepare_image(image: Image) -> Image:
    """jpeg/png/webp/gif (a BMP or TIFF is re-encoded), long edge <= 2048 px, <= 5 MB."""
    return fit_image(image, max_side=MAX_SIDE, max_bytes=MAX_IMAGE_BYTES, media_types=MEDIA_TYPES)


def batch_limit(model: str, kind: str) -> int:
    if kind == "image_embedding":
        return 1 if _is_v3(model) else MAX_IMAGES_V4
    return MAX_TEXTS


# embed-v4.0 output_dimension values (pinned cohere-openapi e814c8a1 /v2/embed:
# "Possible values are 256, 512, 1024, and 1536"; v3 models have fixed sizes).
OUTPUT_DIMENSIONS = (256, 512, 1024, 1536)


def _options(spec: CallSpec) -> dict[str, Any]:
    """``output_dimension`` and ``embedding_types`` checked before anything is sent.

    The client reads the ``float`` vectors, so ``float`` is always requested; other
    types a caller asks for (``int8``, ``ubinary`` ...) are requested beside it.
    """
    params = dict(spec.params)
    dim = params.get("output_dimension")
    if dim is not None:
        if _is_v3(spec.model):
            raise ConfigurationError(
                f"{spec.model} has a fixed size; output_dimension is for embed-v4.0"
            )
        if dim not in OUTPUT_DIMENSIONS:
            raise ConfigurationError(
                f"cohere output_dimension must be one of {OUTPUT_DIMENSIONS}, not {dim!r}"
            )
    types = params.pop("embedding_types", None) or []
    if isinstance(types, str):
        types = [types]
    params["embedding_types"] = ["float", *(t for t in types if t != "float")]
    return params


def embed_body(spec: CallSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"model": spec.model, "embedding_types": ["float"]}
    if spec.kind == "image_embedding":
        body["input_type"] = "image" if _is_v3(spec.model) else "search_document"
        body["images"] = [
            data_uri(i.image) for i in spec.items if isinstance(i, ImageEmbeddingRequest)
        ]
    elif spec.kind == "text_embedding":
        body["input_type"] = "search_query"
        body["texts"] = [i.text for i in spec.items if isinstance(i, TextEmbeddingRequest)]
    else:
        raise ValueError(f"cohere adapter does not do {spec.kind}")
    body.update(_options(spec))
    return body


def build_request(spec: CallSpec) -> httpx.Request:
    return httpx.Request(
        "POST",
        spec.base_url.rstrip("/") + "/v2/embed",
        headers={
            "Authorization": f"Bearer {spec.api_key.get_secret_value()}",
            "Content-Type": "application/json",
        },
        content=json.dumps(embed_body(spec), separators=(",", ":")).encode(),
    )


def _billed(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, dict) else None
    return billed if isinstance(billed, dict) else {}


def usage_of(spec: CallSpec, billed: dict[str, Any]) -> Usage:
    """``meta.billed_units`` as usage, never less than what was sent can cost.

    Embed v4 image responses have been seen to bill ``{"images": 1}`` with no
    ``image_tokens``, while v4 is priced per image token: taken literally that settles
    at $0. When images were sent and no image tokens are reported (or texts were sent
    and no input tokens are), the estimate's count is charged instead, the same upper
    bound the reservation was made with.
    """
    usage = Usage(
        images=usage_count(billed, "images", fractional=True),
        image_tokens=usage_count(billed, "image_tokens", fractional=True),
        input_tokens=usage_count(billed, "input_tokens", fractional=True),
    )
    estimate = estimate_usage(spec)
    if estimate.image_tokens and not usage.image_tokens:
        usage = usage.model_copy(update={"image_tokens": estimate.image_tokens})
    if estimate.input_tokens and not usage.input_tokens:
        usage = usage.model_copy(update={"input_tokens": estimate.input_tokens})
    return usage


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = json_object(response, provider=NAME, request_id=rid)
    rid = rid or (body.get("id") if isinstance(body.get("id"), str) else None)
    billed = _billed(body)
    usage = usage_of(spec, billed)
    embeddings = body.get("embeddings")
    rows = embeddings.get("float") if isinstance(embeddings, dict) else embeddings
    try:
        vecs = vectors_from(rows, expected=len(spec.items), request_id=rid, provider=NAME)
    except ResponseValidationError as exc:
        exc.usage, exc.reported = usage, reported_usage(billed)
        raise
    return Parsed(usage=usage, vectors=vecs, request_id=rid, reported=reported_usage(billed))


def _image_tokens(width: int, height: int) -> int:
    px = min(max(width * height, MIN_IMAGE_PIXELS), MAX_IMAGE_PIXELS)
    return math.ceil(px / PIXELS_PER_IMAGE_TOKEN)


def estimate_usage(spec: CallSpec) -> Usage:
    if spec.kind == "image_embedding":
        tokens = 0
        for item in spec.items:
            assert isinstance(item, ImageEmbeddingRequest)
            tokens += _image_tokens(*image_size(item.image))
        return Usage(images=len(spec.items), image_tokens=tokens)
    # no tokenizer here: one token per UTF-8 byte is an upper bound
    return Usage(
        input_tokens=sum(
            text_tokens_upper_bound(i.text)
            for i in spec.items
            if isinstance(i, TextEmbeddingRequest)
        )
    )


COHERE = Provider(
    name=NAME,
    env_vars=("CO_API_KEY", "COHERE_API_KEY"),
    default_base_url="https://api.cohere.com",
    api_version="v2",
    max_batch={"image_embedding": MAX_IMAGES_V4, "text_embedding": MAX_TEXTS},
    batch_limit=batch_limit,
    max_request_bytes=MAX_REQUEST_IMAGE_BYTES,
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    prepare_image=prepare_image,
    description="Cohere Embed v2 (embed-v4.0, embed-english-v3.0 family)",
)

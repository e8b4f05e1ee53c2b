"""Cohere Embed v2 (``POST {base}/v2/embed``): image and text embeddings.

Also the wire format of the local teacher server (``local:`` teachers).
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx

from ..errors import ResponseValidationError
from ..models import ImageEmbeddingRequest, TextEmbeddingRequest, Usage
from .base import (
    CallSpec,
    Parsed,
    Provider,
    data_uri,
    json_object,
    reported_usage,
    request_id_of,
    text_tokens_upper_bound,
    vectors_from,
)
from .images import image_size, prepare_for_upload

__all__ = ["COHERE", "embed_body"]

NAME = "cohere"
MAX_TEXTS = 96  # spec: texts maxItems 96
MAX_IMAGES_V4 = 96
MAX_REQUEST_IMAGE_BYTES = 20 * 1024 * 1024  # v4: combined image bytes per call
MAX_IMAGE_PIXELS = 2_458_624  # larger images are downsampled by the API
MIN_IMAGE_PIXELS = 3_136
PIXELS_PER_IMAGE_TOKEN = 160  # 512x512 ~ 1,610 tokens, rounded down to over-estimate


def _is_v3(model: str) -> bool:
    return "-v3" in model


def batch_limit(model: str, kind: str) -> int:
    if kind == "image_embedding":
        return 1 if _is_v3(model) else MAX_IMAGES_V4
    return MAX_TEXTS


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
    body.update(spec.params)
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


def _n(obj: dict[str, Any], key: str) -> int:
    v = obj.get(key, 0)
    return int(v) if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else 0


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = json_object(response, provider=NAME, request_id=rid)
    rid = rid or (body.get("id") if isinstance(body.get("id"), str) else None)
    billed = _billed(body)
    usage = Usage(
        images=_n(billed, "images"),
        image_tokens=_n(billed, "image_tokens"),
        input_tokens=_n(billed, "input_tokens"),
    )
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
    prepare_image=prepare_for_upload,
    description="Cohere Embed v2 (embed-v4.0, embed-english-v3.0 family)",
)

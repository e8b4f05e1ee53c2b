"""Nomic Atlas embeddings: ``nomic-embed-vision-v1.5`` images with ``nomic-embed-text-v1.5``
texts (one shared 768-d space).

Two endpoints, two encodings:

* images: ``POST {base}/v1/embedding/image`` as ``multipart/form-data`` with a
  ``model`` field and one ``images`` file part per image;
* texts: ``POST {base}/v1/embedding/text`` as JSON ``{texts, model, task_type, ...}``.

The teacher names the vision model (``nomic:nomic-embed-vision-v1.5``); texts go to
the text model of the same version (``vision`` -> ``text`` in the name), or to the
``text_model`` param. The response is ``{embeddings, usage, model}``; ``usage`` token
counters are charged as input tokens and each image as one image. Nomic publishes no
prices we could verify, so there is no built-in price: pass ``--price-file``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import ConfigurationError, ResponseValidationError
from ..models import Image, ImageEmbeddingRequest, TextEmbeddingRequest, Usage
from .base import SET_BY_ITEMS, SET_BY_TEACHER, CallSpec, Parsed, Provider
from .images import ACCEPTED_MEDIA_TYPES, fit_image
from .vectors import dim_param, vectors_from
from .wire import json_object, reported_usage, request_id_of, usage_count

__all__ = ["NOMIC", "text_body", "text_model"]

NAME = "nomic"
# The official client's chunk size for /v1/embedding/text: 10 since 2025-05-30
# (nomic-ai/nomic nomic/embed.py MAX_TEXT_REQUEST_SIZE, commit 8487355 "reduce
# text-embedding api max request batch size to 10"; read at b963f429, 2026-11-30).
MAX_TEXTS = 10
MAX_IMAGES = 512  # the official client's chunk size for /v1/embedding/image
MAX_SIDE = 512  # the official client downsizes to <= 512 px before upload
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MEDIA_TYPES = ACCEPTED_MEDIA_TYPES[NAME]  # the one table in images.py
DEFAULT_TASK_TYPE = "search_query"
TASK_PREFIX_TOKENS = 8  # "search_query: " prefix and special tokens, rounded up
# Assumed bound on what one image may count in usage: a ViT-B/16 at 224 px has 197
# tokens; rounded up. Only matters when a price file sets a per-token price.
IMAGE_TOKENS_BOUND = 256
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def text_model(spec: CallSpec) -> str:
    """The text model paired with the teacher's vision model."""
    return _text_model(spec.model, spec.params)


def _text_model(model: str, params: Mapping[str, Any]) -> str:
    explicit = params.get("text_model")
    if isinstance(explicit, str) and explicit:
        return explicit
    return model.replace("-vision-", "-text-")


def prepare_image(image: Image) -> Image:
    """png/jpeg/webp with the long edge <= 512 px."""
    return fit_image(image, max_side=MAX_SIDE, max_bytes=MAX_IMAGE_BYTES, media_types=MEDIA_TYPES)


IMAGE_DIM = 768  # nomic-embed-vision-v1.5 vectors; the image endpoint has no dimensionality
# The v1.5 pair's shared space: what each answers without a dimensionality.
DEFAULT_DIMS = {"nomic-embed-vision-v1.5": IMAGE_DIM, "nomic-embed-text-v1.5": IMAGE_DIM}


def default_dim(model: str, kind: str, params: Mapping[str, Any]) -> int | None:
    """768 for the v1.5 models: the teacher's vision model for images, the text model
    it pairs with (or ``text_model``) for texts; None for other models."""
    return DEFAULT_DIMS.get(_text_model(model, params) if kind == "text_embedding" else model)


def check_dimensionality(params: Mapping[str, Any]) -> None:
    """Refuse a ``dimensionality`` other than 768: Nomic applies it to texts only
    (nomic-ai/nomic nomic/embed.py: text_api_request sends it, image_api_request has no
    such field; read at b963f429, 2026-11-30), so texts and images of one teacher would
    land in spaces of different sizes and the distillation targets would not compare."""
    dim = params.get("dimensionality")
    if dim is not None and dim != IMAGE_DIM:
        raise ConfigurationError(
            f"nomic dimensionality {dim!r} applies to texts only; image vectors stay "
            f"{IMAGE_DIM}-d, so texts and images would not share a space. Drop it "
            "(or truncate both sides yourself after the harvest). Nothing was sent."
        )


def text_body(spec: CallSpec) -> dict[str, Any]:
    check_dimensionality(spec.params)
    extra = {k: v for k, v in spec.params.items() if k != "text_model"}
    return {
        "model": text_model(spec),
        "texts": [i.text for i in spec.items if isinstance(i, TextEmbeddingRequest)],
        "task_type": DEFAULT_TASK_TYPE,
        **extra,  # task_type, dimensionality, long_text_mode
    }


def _auth(spec: CallSpec) -> dict[str, str]:
    return {"Authorization": f"Bearer {spec.api_key.get_secret_value()}"}


def build_request(spec: CallSpec) -> httpx.Request:
    base = spec.base_url.rstrip("/")
    if spec.kind == "text_embedding":
        return httpx.Request(
            "POST",
            base + "/v1/embedding/text",
            headers={**_auth(spec), "Content-Type": "application/json"},
            content=json.dumps(text_body(spec), separators=(",", ":")).encode(),
        )
    if spec.kind != "image_embedding":
        raise ValueError(f"nomic adapter does not do {spec.kind}")
    check_dimensionality(spec.params)
    files = []
    for n, item in enumerate(spec.items):
        assert isinstance(item, ImageEmbeddingRequest)
        image = item.image
        name = f"image{n}.{_EXTENSIONS.get(image.media_type, 'bin')}"
        files.append(("images", (name, image.data, image.media_type)))
    # httpx writes multipart/form-data (with its boundary) when files are given.
    return httpx.Request(
        "POST",
        base + "/v1/embedding/image",
        headers=_auth(spec),
        data={"model": spec.model},
        files=files,
    )


def usage_of(spec: CallSpec, body: dict[str, Any]) -> Usage:
    u = body.get("usage")
    tokens = usage_count(u, "total_tokens", None)
    if tokens is None:
        tokens = usage_count(u, "prompt_tokens")
    images = sum(1 for i in spec.items if isinstance(i, ImageEmbeddingRequest))
    return Usage(input_tokens=tokens, images=images)


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = json_object(response, provider=NAME, request_id=rid)
    usage = usage_of(spec, body)
    try:
        vecs = vectors_from(
            body.get("embeddings"), expected=len(spec.items), request_id=rid, provider=NAME
        )
    except ResponseValidationError as exc:
        exc.usage, exc.reported = usage, reported_usage(body.get("usage"))
        raise
    return Parsed(
        usage=usage, vectors=vecs, request_id=rid, reported=reported_usage(body.get("usage"))
    )


def estimate_usage(spec: CallSpec) -> Usage:
    images = sum(1 for i in spec.items if isinstance(i, ImageEmbeddingRequest))
    tokens = images * IMAGE_TOKENS_BOUND + sum(
        len(i.text.encode("utf-8")) + TASK_PREFIX_TOKENS
        for i in spec.items
        if isinstance(i, TextEmbeddingRequest)
    )
    return Usage(input_tokens=tokens, images=images)


NOMIC = Provider(
    name=NAME,
    env_vars=("NOMIC_API_KEY",),
    default_base_url="https://api-atlas.nomic.ai",
    api_version="v1",
    max_batch={"image_embedding": MAX_IMAGES, "text_embedding": MAX_TEXTS},
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    prepare_image=prepare_image,
    requested_dim=dim_param("dimensionality"),
    default_dim=default_dim,
    client_fields={"model": f"{SET_BY_TEACHER} (text_model for texts)", "texts": SET_BY_ITEMS},
    description="Nomic Atlas (nomic-embed-vision-v1.5 images + nomic-embed-text-v1.5 texts)",
)

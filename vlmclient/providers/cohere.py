"""Cohere Embed v2 (``POST {base}/v2/embed``): image and text embeddings.

Also the wire format of the local teacher server (``local:`` teachers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import httpx

from cache import LiteralJSON, json_bytes_with_literals

from ..errors import ConfigurationError, ResponseValidationError
from ..models import (
    Image,
    ImageEmbeddingRequest,
    MixedEmbeddingRequest,
    TextEmbeddingRequest,
    Usage,
)
from .base import SET_BY_ITEMS, SET_BY_TEACHER, CallSpec, Parsed, Provider
from .images import ACCEPTED_MEDIA_TYPES, base64_size, fit_image, image_size
from .vectors import default_dims, dim_param, vectors_from
from .wire import (
    data_uri,
    data_uris_literal,
    endpoint_url,
    json_object,
    json_post,
    reported_usage,
    request_id_of,
    text_tokens_upper_bound,
    texts_literal,
    usage_count,
)

__all__ = ["COHERE", "embed_body"]

NAME = "cohere"
MAX_TEXTS = 96  # spec: texts maxItems 96
MAX_IMAGES_V4 = 96
MAX_INPUTS = 96  # spec: "Maximum number of inputs per call is 96" (inputs[], mixed parts)
# v4 caps the images of one call at "20MB" without saying whether of files or of the
# base64 data URIs sent, nor whether in MB or MiB; the safe reading is the base64 text in
# decimal MB, so raw bytes are capped at 3/4 of 20,000,000, less room for the prefixes.
MAX_REQUEST_IMAGE_BYTES = 20_000_000 * 3 // 4 - 64 * 1024
MAX_SIDE = 2048
# Per image "5MB" (spec), read the same safe way: on the data URI sent, in decimal MB
# (a 4.9 MB file is a 6.5 MB data URI); room left for the "data:image/...;base64," prefix.
MAX_IMAGE_BYTES = 5_000_000 - 64
MEDIA_TYPES = ACCEPTED_MEDIA_TYPES[NAME]  # the one table in images.py
MAX_IMAGE_PIXELS = 2_458_624  # larger images are downsampled by the API
MIN_IMAGE_PIXELS = 3_136
PIXELS_PER_IMAGE_TOKEN = 160  # 512x512 ~ 1,610 tokens, rounded down to over-estimate


# Per input: 128k tokens for embed-v4.0, 512 for the v3 models (docs.cohere.com models
# page). Cohere truncates by default (``truncate`` END); with NONE a longer input fails its
# whole request with a 400. ``max_tokens``, when given, is the limit instead.
MAX_INPUT_TOKENS_V4 = 128_000
MAX_INPUT_TOKENS_V3 = 512


def max_input_tokens(model: str, params: Mapping[str, Any]) -> int | None:
    """The per-input limit when ``truncate`` is NONE; None otherwise (Cohere truncates)."""
    if str(params.get("truncate", "END")).upper() != "NONE":
        return None
    limit = MAX_INPUT_TOKENS_V3 if _is_v3(model) else MAX_INPUT_TOKENS_V4
    asked = params.get("max_tokens")
    if isinstance(asked, int) and not isinstance(asked, bool) and 0 < asked < limit:
        return asked
    return limit


def _is_v3(model: str) -> bool:
    return "-v3" in model


def prepare_image(image: Image) -> Image:
    """jpeg/png/webp/gif (a BMP or TIFF is re-encoded), long edge <= 2048 px, <= 5 MB as
    the base64 sent."""
    return fit_image(
        image,
        max_side=MAX_SIDE,
        max_bytes=MAX_IMAGE_BYTES,
        media_types=MEDIA_TYPES,
        measure=base64_size,
    )


def batch_limit(model: str, kind: str) -> int:
    if kind == "image_embedding":
        return 1 if _is_v3(model) else MAX_IMAGES_V4
    if kind == "mixed_embedding":
        return MAX_INPUTS
    return MAX_TEXTS


def model_kinds(model: str) -> frozenset[str]:
    """Mixed text+image inputs are an Embed v4 feature: v3 models embed one image per
    call and never fuse it with text (AWS Bedrock "Cohere Embed v4" page: "interleaved
    text and image content"; OCI release note 2026-05-09: mixed content "supported only
    for Embed 4 models"; both read 2026-11-30)."""
    kinds = {"image_embedding", "text_embedding"}
    if not _is_v3(model):
        kinds.add("mixed_embedding")
    return frozenset(kinds)


# embed-v4.0 output_dimension values (pinned cohere-openapi e814c8a1 /v2/embed:
# "Possible values are 256, 512, 1024, and 1536"; v3 models have fixed sizes).
OUTPUT_DIMENSIONS = (256, 512, 1024, 1536)
# What a model answers without output_dimension (our reference notes on /v2/embed:
# "256/512/1024/1536, default 1536" for embed-v4.0). The v3 models' fixed sizes are not
# in our copy of the docs.
DEFAULT_DIMS = {"embed-v4.0": 1536}


# Cohere's spec offers embedding_types "base64" ("the float embedding bytes" appended
# and base64-encoded) without saying their width or byte order, so the real API is asked
# for "float"; the bundled local server documents little-endian float32 and is asked for
# "base64" (vlmclient.providers.local).
VECTOR_TYPES = ("float", "base64")
# The values the pinned spec allows (cohere-openapi e814c8a1 /v2/embed: ``truncate`` enum,
# ``input_type`` (required) ``EmbedInputType``, ``embedding_types[]`` items
# ``EmbeddingType``); anything else is a 400 on every request.
TRUNCATE = ("NONE", "START", "END")
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")
EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")


def _options(spec: CallSpec, vector_type: str = "float") -> dict[str, Any]:
    """``output_dimension``, ``input_type``, ``max_tokens``, ``truncate`` and
    ``embedding_types`` checked before anything is sent (``truncate`` upper-cased).

    The client reads the ``vector_type`` vectors (``float``, or ``base64`` from the
    local server), so that type is always requested; other types a caller asks for
    (``int8``, ``ubinary`` ...) are requested beside it.
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
    if "input_type" in params and params["input_type"] not in INPUT_TYPES:
        raise ConfigurationError(
            f"cohere input_type must be one of {INPUT_TYPES}, not {params['input_type']!r}"
        )
    asked = params.get("max_tokens")
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 1):
        raise ConfigurationError(f"cohere max_tokens must be a positive integer, not {asked!r}")
    truncate = params.get("truncate")
    if truncate is not None:
        # read in any case (max_input_tokens does), sent as the spec spells it
        if not isinstance(truncate, str) or truncate.upper() not in TRUNCATE:
            raise ConfigurationError(
                f"cohere truncate must be one of {TRUNCATE}, not {truncate!r}"
            )
        params["truncate"] = truncate.upper()
    types = params.pop("embedding_types", None) or []
    if isinstance(types, str):
        types = [types]
    if not isinstance(types, list) or any(t not in EMBEDDING_TYPES for t in types):
        raise ConfigurationError(
            f"cohere embedding_types must be a list of {EMBEDDING_TYPES}, not {types!r}"
        )
    params["embedding_types"] = [vector_type, *(t for t in types if t != vector_type)]
    return params


# What embed_body builds (its texts, images or inputs from the items of each call).
CLIENT_FIELDS = {
    "model": SET_BY_TEACHER,
    "texts": SET_BY_ITEMS,
    "images": SET_BY_ITEMS,
    "inputs": SET_BY_ITEMS,
}


def _images(spec: CallSpec) -> list[Image]:
    return [i.image for i in spec.items if isinstance(i, ImageEmbeddingRequest)]


def embed_body(
    spec: CallSpec, vector_type: str = "float", *, uris: list[str] | None = None
) -> dict[str, Any]:
    """The ``/v2/embed`` body; ``vector_type`` is the embedding type the client reads;
    ``uris``: the images' data URIs when the caller made them already."""
    if vector_type not in VECTOR_TYPES:
        raise ValueError(f"cohere vectors are read as {' or '.join(VECTOR_TYPES)}")
    body: dict[str, Any] = {"model": spec.model, "embedding_types": [vector_type]}
    if spec.kind == "image_embedding":
        body["input_type"] = "image" if _is_v3(spec.model) else "search_document"
        body["images"] = [data_uri(i) for i in _images(spec)] if uris is None else uris
    elif spec.kind == "text_embedding":
        body["input_type"] = "search_query"
        body["texts"] = [i.text for i in spec.items if isinstance(i, TextEmbeddingRequest)]
    elif spec.kind == "mixed_embedding":
        # A photo with its caption is a document to be found, like an image alone.
        body["input_type"] = "search_document"
        body["inputs"] = [
            {"content": [_content(p) for p in i.parts]}
            for i in spec.items
            if isinstance(i, MixedEmbeddingRequest)
        ]
    else:
        raise ValueError(f"cohere adapter does not do {spec.kind}")
    body.update(_options(spec, vector_type))
    if spec.kind == "image_embedding":
        # a caller's input_type is meant for its texts (the same params reach every kind):
        # v3 embeds images with "image" only (any other is a 400), and a v4 image is a
        # document (a "search_query" here bought every image vector as a query, silently)
        body["input_type"] = "image" if _is_v3(spec.model) else "search_document"
    return body


def _content(part: str | Image) -> dict[str, Any]:
    """One ``inputs[].content[]`` part (spec: EmbedText / EmbedImage with EmbedImageUrl)."""
    if isinstance(part, str):
        return {"type": "text", "text": part}
    return {"type": "image_url", "image_url": {"url": data_uri(part)}}


def build_request(spec: CallSpec, vector_type: str = "float") -> httpx.Request:
    literals: Mapping[str, LiteralJSON] | None = None
    if spec.kind == "image_embedding":
        images = _images(spec)
        uris = [data_uri(i) for i in images]
        body = embed_body(spec, vector_type, uris=uris)
        if body.get("images") is uris:  # (not replaced by a parameter)
            literals = data_uris_literal(images, uris, key="images")
    elif spec.kind == "text_embedding":
        body = embed_body(spec, vector_type)
        literal = texts_literal(spec.items, body.get("texts"))
        literals = {"texts": literal["input"]} if literal else None
    else:
        body = embed_body(spec, vector_type)
    return json_post(
        endpoint_url(spec.base_url.rstrip("/") + "/v2/embed"),
        {
            "Authorization": f"Bearer {spec.api_key.get_secret_value()}",
            "Content-Type": "application/json",
        },
        json_bytes_with_literals(body, literals, separators=(",", ":")),
    )


def _billed(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, dict) else None
    return billed if isinstance(billed, dict) else {}


def usage_of(spec: CallSpec, billed: dict[str, Any]) -> Usage:
    """``meta.billed_units`` as usage, as reported.

    Embed v4 image responses have been seen to bill ``{"images": 1}`` with no
    ``image_tokens``, while v4 is priced per image token. Such a count is left at 0: the
    client's settlement sees a unit it charges for, sent and not reported, and charges the
    reservation, marked ``estimated`` in the ledger (filling in our own estimate here
    recorded it as if Cohere had reported it, so the ledger's "compare with the bill"
    flag never showed).
    """
    del spec  # the usage is what Cohere reported; the settlement compares it with the spec
    return Usage(
        images=usage_count(billed, "images", fractional=True),
        image_tokens=usage_count(billed, "image_tokens", fractional=True),
        input_tokens=usage_count(billed, "input_tokens", fractional=True),
    )


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = json_object(response, provider=NAME, request_id=rid)
    rid = rid or (body.get("id") if isinstance(body.get("id"), str) else None)
    billed = _billed(body)
    usage = usage_of(spec, billed)
    embeddings = body.get("embeddings")
    rows = embeddings.get("float") if isinstance(embeddings, dict) else embeddings
    # "float" when present (what the API is asked for), else the local server's "base64"
    encoded = False
    if isinstance(embeddings, dict) and rows is None and "base64" in embeddings:
        rows, encoded = embeddings["base64"], True
    try:
        vecs = vectors_from(
            rows, expected=len(spec.items), request_id=rid, provider=NAME, base64_ok=encoded
        )
    except ResponseValidationError as exc:
        exc.usage, exc.reported = usage, reported_usage(billed)
        raise
    return Parsed(usage=usage, vectors=vecs, request_id=rid, reported=reported_usage(billed))


def _image_tokens(width: int, height: int) -> int:
    px = min(max(width * height, MIN_IMAGE_PIXELS), MAX_IMAGE_PIXELS)
    return math.ceil(px / PIXELS_PER_IMAGE_TOKEN)


def estimate_usage(spec: CallSpec) -> Usage:
    if spec.kind == "mixed_embedding":
        # each part billed by its own rule: image tokens per image, text tokens per text
        mixed = [i for i in spec.items if isinstance(i, MixedEmbeddingRequest)]
        images = [img for i in mixed for img in i.images]
        texts = [t for i in mixed for t in i.texts]
        return Usage(
            images=len(images),
            image_tokens=sum(_image_tokens(*image_size(img)) for img in images),
            input_tokens=sum(text_tokens_upper_bound(t) for t in texts),
        )
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
    max_batch={
        "image_embedding": MAX_IMAGES_V4,
        "text_embedding": MAX_TEXTS,
        "mixed_embedding": MAX_INPUTS,
    },
    batch_limit=batch_limit,
    model_kinds=model_kinds,
    max_request_bytes=MAX_REQUEST_IMAGE_BYTES,
    max_input_tokens=max_input_tokens,
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    prepare_image=prepare_image,
    requested_dim=dim_param("output_dimension"),
    default_dim=default_dims(DEFAULT_DIMS),
    client_fields=CLIENT_FIELDS,
    description="Cohere Embed v2 (embed-v4.0, embed-english-v3.0 family)",
)

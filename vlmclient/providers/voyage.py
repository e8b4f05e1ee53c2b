"""Voyage multimodal embeddings (``POST {base}/multimodalembeddings``).

Every input is ``{"content": [pieces]}``: one ``image_base64`` data URI or one
``text`` for image and text embeddings, the parts in order for a mixed input. Usage
comes back as ``text_tokens``, ``image_pixels`` and ``total_tokens``; Voyage bills
text tokens plus pixels, each image counted as at least 50,000 and at most 2,000,000
pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import ConfigurationError, ResponseValidationError
from ..models import (
    Image,
    ImageEmbeddingRequest,
    MixedEmbeddingRequest,
    TextEmbeddingRequest,
    Usage,
)
from .base import SET_BY_ITEMS, SET_BY_TEACHER, CallSpec, Item, Parsed, Provider
from .images import ACCEPTED_MEDIA_TYPES, fit_image, image_size
from .vectors import dim_param, indexed_vectors
from .wire import (
    data_uri,
    json_object,
    reported_usage,
    request_id_of,
    text_tokens_upper_bound,
    usage_count,
)

__all__ = ["VOYAGE", "billed_pixels", "multimodal_body"]

NAME = "voyage"
MAX_INPUTS = 1000
MAX_REQUEST_TOKENS = 320_000
# Per input: 32k tokens (docs.voyageai.com, voyage-multimodal-3), over which Voyage
# truncates unless ``truncation`` is false: then the request fails with a 400 ("The example
# at index N in your batch has too many tokens and does not fit into the model's context
# window of 32000 tokens").
MAX_INPUT_TOKENS = 32_000
MIN_BILLED_PIXELS = 50_000
MAX_BILLED_PIXELS = 2_000_000
PIXELS_PER_TOKEN = 560  # Voyage's image-to-token rate, for the per-request token cap
# Pixels above 2 M are not billed and buy nothing, so images are sent at <= 1414 px on
# the long edge (1414^2 < 2 M): smaller uploads, and a known per-image token bound.
MAX_SIDE = 1414
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MEDIA_TYPES = ACCEPTED_MEDIA_TYPES[NAME]  # the one table in images.py
IMAGE_TOKENS = math.ceil(MAX_BILLED_PIXELS / PIXELS_PER_TOKEN)  # 3,572: one image at most
MAX_IMAGES = MAX_REQUEST_TOKENS // IMAGE_TOKENS  # 89


def batch_limit(model: str, kind: str) -> int:
    """1,000 inputs, but at most 89 images: 89 x 3,572 tokens stays under 320k tokens.

    Mixed inputs hold any number of images each, so their requests are cut by tokens
    (texts + 3,572 per image) in the client, up to 1,000 inputs.
    """
    return MAX_IMAGES if kind == "image_embedding" else MAX_INPUTS


def max_input_tokens(model: str, params: Mapping[str, Any]) -> int | None:
    """32,000 with ``truncation: false``; None by default (Voyage truncates)."""
    return MAX_INPUT_TOKENS if params.get("truncation") is False else None


def billed_pixels(width: int, height: int) -> int:
    """Pixels Voyage bills for one image: clamped to [50,000, 2,000,000]."""
    return min(max(width * height, MIN_BILLED_PIXELS), MAX_BILLED_PIXELS)


def prepare_image(image: Image) -> Image:
    """png/jpeg/webp/gif with the long edge <= 1414 px."""
    return fit_image(image, max_side=MAX_SIDE, max_bytes=MAX_IMAGE_BYTES, media_types=MEDIA_TYPES)


def _piece(part: str | Image) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    return {"type": "image_base64", "image_base64": data_uri(part)}


def _parts(item: Item) -> list[str | Image]:
    """The texts and images of one input, in order."""
    if isinstance(item, ImageEmbeddingRequest):
        return [item.image]
    if isinstance(item, TextEmbeddingRequest):
        return [item.text]
    if isinstance(item, MixedEmbeddingRequest):
        return list(item.parts)
    raise ValueError(f"voyage adapter does not do {type(item).__name__}")


# Params with a fixed set of values: input_type and encoding_format (pinned spec enums;
# null is each one's default) and output_dimension (reference notes: voyage-multimodal-3.5
# takes 256/512/1024/2048; voyage-multimodal-3 has one size). Anything else is a 400 on
# every request, or vectors of the model's own length, billed and refused.
CHOICES = {"input_type": (None, "query", "document"), "encoding_format": (None, "base64")}
OUTPUT_DIMENSIONS = {"voyage-multimodal-3": (), "voyage-multimodal-3.5": (256, 512, 1024, 2048)}


def check_params(model: str, params: Mapping[str, Any]) -> None:
    """ConfigurationError for a param value Voyage does not take (nothing is sent)."""
    for name, allowed in CHOICES.items():
        if params.get(name) not in allowed:
            raise ConfigurationError(
                f"voyage {name} must be one of {allowed}, not {params[name]!r}"
            )
    dims = OUTPUT_DIMENSIONS.get(model)
    dim = params.get("output_dimension")
    if dim is not None and dims is not None and (isinstance(dim, bool) or dim not in dims):
        raise ConfigurationError(
            f"{model} output_dimension must be one of {dims}, not {dim!r}"
            if dims
            else f"{model} has one size; output_dimension is for voyage-multimodal-3.5"
        )


def multimodal_body(spec: CallSpec) -> dict[str, Any]:
    check_params(spec.model, spec.params)
    inputs = [{"content": [_piece(p) for p in _parts(item)]} for item in spec.items]
    # params: input_type ("query"/"document"), truncation, output_dimension (3.5).
    # encoding_format "base64" (the spec's only value; voyageai-python sends it by
    # default and reads float32 bytes): a quarter of the response bytes, no float parsing.
    return {"model": spec.model, "inputs": inputs, "encoding_format": "base64", **spec.params}


# Keys created through MongoDB Atlas start with "al-" and only work at MongoDB's
# endpoint; the official SDK picks the base URL from the key the same way
# (voyage-ai/voyageai-python voyageai/util.py get_default_base_url @ 452bbac0, read
# 2026-11-30). An explicit --base-url other than the default is left alone.
DEFAULT_BASE_URL = "https://api.voyageai.com/v1"
ATLAS_BASE_URL = "https://ai.mongodb.com/v1"
ATLAS_KEY_PREFIX = "al-"


def base_url_for(spec: CallSpec) -> str:
    """The base URL a call goes to: MongoDB Atlas's for ``al-`` keys on the default URL."""
    base = spec.base_url.rstrip("/")
    if base == DEFAULT_BASE_URL and spec.api_key.get_secret_value().startswith(ATLAS_KEY_PREFIX):
        return ATLAS_BASE_URL
    return base


def build_request(spec: CallSpec) -> httpx.Request:
    return httpx.Request(
        "POST",
        base_url_for(spec) + "/multimodalembeddings",
        headers={
            "Authorization": f"Bearer {spec.api_key.get_secret_value()}",
            "Content-Type": "application/json",
        },
        content=json.dumps(multimodal_body(spec), separators=(",", ":")).encode(),
    )


def usage_of(spec: CallSpec, body: dict[str, Any]) -> Usage:
    """Text tokens and image pixels as reported.

    Reported pixels are raised to the price list's floor (50k px per image), so a raw
    pixel count can never under-bill a tiny image; a report above the 2 M px per-image
    cap is charged as reported (it is what the provider says it billed: an overrun of
    its full size, not one clamped down to the cap).

    The pinned spec's response schema lists only ``total_tokens``. With texts alone that
    is the text tokens; beside images it mixes both, so a missing ``text_tokens`` or
    ``image_pixels`` is left at 0: the client's settlement sees a unit sent and not
    reported and charges the reservation, marked ``estimated`` (filling in our own
    estimate here recorded it as if Voyage had reported it).
    """
    u = body.get("usage")
    n_images = sum(isinstance(p, Image) for item in spec.items for p in _parts(item))
    text_tokens = usage_count(u, "text_tokens", None)
    if text_tokens is None and n_images == 0:
        # the public spec lists only total_tokens
        text_tokens = usage_count(u, "total_tokens", None)
    pixels = usage_count(u, "image_pixels", None)
    if pixels is not None:
        pixels = max(pixels, n_images * MIN_BILLED_PIXELS)
    return Usage(input_tokens=text_tokens or 0, image_pixels=pixels or 0)


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = json_object(response, provider=NAME, request_id=rid)
    usage = usage_of(spec, body)
    try:
        vecs = indexed_vectors(
            body.get("data"),
            expected=len(spec.items),
            request_id=rid,
            provider=NAME,
            base64_ok=True,
        )
    except ResponseValidationError as exc:
        exc.usage, exc.reported = usage, reported_usage(body.get("usage"))
        raise
    return Parsed(
        usage=usage, vectors=vecs, request_id=rid, reported=reported_usage(body.get("usage"))
    )


def estimate_usage(spec: CallSpec) -> Usage:
    pixels = 0
    tokens = 0
    for item in spec.items:
        for part in _parts(item):
            if isinstance(part, Image):
                pixels += billed_pixels(*image_size(part))
            else:
                tokens += text_tokens_upper_bound(part)
    return Usage(input_tokens=tokens, image_pixels=pixels)


VOYAGE = Provider(
    name=NAME,
    env_vars=("VOYAGE_API_KEY",),
    default_base_url=DEFAULT_BASE_URL,
    max_request_tokens=MAX_REQUEST_TOKENS,
    image_request_tokens=IMAGE_TOKENS,
    max_input_tokens=max_input_tokens,
    api_version="v1",
    max_batch={
        "image_embedding": MAX_IMAGES,
        "text_embedding": MAX_INPUTS,
        "mixed_embedding": MAX_INPUTS,
    },
    batch_limit=batch_limit,
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    prepare_image=prepare_image,
    requested_dim=dim_param("output_dimension"),
    client_fields={"model": SET_BY_TEACHER, "inputs": SET_BY_ITEMS},
    description="Voyage AI multimodal embeddings (voyage-multimodal-3, -3.5)",
)

"""``local:``: the bundled teacher server (``vlm-distill serve-teacher``).

Embeddings speak Cohere's wire format at ``{base}/v2/embed``; answers speak OpenAI's
chat format at ``{base}/v1/chat/completions``. Default base URL is loopback.
"""

from __future__ import annotations

import dataclasses

import httpx

from ..models import Usage
from . import cohere, openai
from .base import SET_BY_ITEMS, CallSpec, Parsed, Provider
from .images import prepare_for_upload
from .vectors import dim_param

__all__ = ["DEFAULT_LOCAL_URL", "LOCAL", "TOKEN_ENV"]

DEFAULT_LOCAL_URL = "http://127.0.0.1:8089"
TOKEN_ENV = "VLM_DISTILL_TEACHER_TOKEN"


def _openai_spec(spec: CallSpec) -> CallSpec:
    return dataclasses.replace(spec, base_url=spec.base_url.rstrip("/") + "/v1")


# The local server bills each image as ServerConfig.image_tokens prompt tokens (85 by
# default); a price file may state another bound with max_image_tokens.
LOCAL_IMAGE_TOKENS = 85
# The server refuses (400) a call with more images than ServerConfig.max_images (500 by
# default, distill.server.config.MAX_IMAGES_PER_CALL): 96 mixed inputs of 6 images are 576.
MAX_REQUEST_IMAGES = 500
# The server refuses (400) an embedding call whose texts hold more than 300,000 characters
# (distill.server.config.MAX_EMBED_TEXT_CHARS); a text's token bound (its UTF-8 bytes + 1)
# is never below its characters, so requests cut at this many tokens stay under it.
MAX_REQUEST_TEXT_CHARS = 300_000


def estimate_usage(spec: CallSpec) -> Usage:
    if spec.kind == "answer":
        bound = spec.max_image_tokens or LOCAL_IMAGE_TOKENS
        return openai.estimate_usage(dataclasses.replace(spec, max_image_tokens=bound))
    return cohere.estimate_usage(spec)


def build_request(spec: CallSpec) -> httpx.Request:
    if spec.kind == "answer":
        return openai.build_request(_openai_spec(spec))
    # The bundled server answers embedding_types "base64" with little-endian float32
    # bytes: a quarter of the JSON, decoded by one np.frombuffer (issue 17, item 3).
    return cohere.build_request(spec, vector_type="base64")


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    if spec.kind == "answer":
        return openai.parse_response(spec, response)
    return cohere.parse_response(spec, response)


LOCAL = Provider(
    name="local",
    env_vars=(TOKEN_ENV,),
    default_base_url=DEFAULT_LOCAL_URL,
    api_version="v2",
    max_batch={
        "image_embedding": cohere.MAX_IMAGES_V4,
        "text_embedding": cohere.MAX_TEXTS,
        "mixed_embedding": cohere.MAX_INPUTS,
        "answer": 1,
    },
    max_request_bytes=cohere.MAX_REQUEST_IMAGE_BYTES,
    max_request_images=MAX_REQUEST_IMAGES,
    max_request_tokens=MAX_REQUEST_TEXT_CHARS,
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    classify_error=openai.classify_error,
    rate_limit_hints=openai.rate_limit_hints,
    prepare_image=prepare_for_upload,
    requested_dim=dim_param("output_dimension"),
    client_fields={**cohere.CLIENT_FIELDS, "messages": SET_BY_ITEMS},
    description="the bundled local teacher (vlm-distill serve-teacher), Cohere + OpenAI formats",
)

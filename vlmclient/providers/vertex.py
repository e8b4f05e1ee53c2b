"""Vertex AI ``multimodalembedding@001``: image and text embeddings, one instance per call.

``POST https://{LOCATION}-aiplatform.googleapis.com/v1/projects/{PROJECT}/locations/
{LOCATION}/publishers/google/models/{model}:predict`` with an OAuth2 access token as
``Authorization: Bearer`` (e.g. ``export VERTEX_ACCESS_TOKEN=$(gcloud auth
print-access-token)``; tokens expire after about an hour).

Project and location come from the ``project`` / ``location`` params or the
``VERTEX_PROJECT`` (or ``GOOGLE_CLOUD_PROJECT``) and ``VERTEX_LOCATION`` (or
``GOOGLE_CLOUD_LOCATION``) environment variables; without them nothing is sent.
A custom base URL (a proxy) replaces ``https://{location}-aiplatform.googleapis.com/v1``
(``https://aiplatform.googleapis.com/v1`` for location ``global``)
and may itself contain ``{location}``.

The response carries no usage, so the client meters it: one image, or the text's
characters, priced from the price table.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import ConfigurationError, ResponseValidationError
from ..models import Image, ImageEmbeddingRequest, TextEmbeddingRequest, Usage
from .base import CallSpec, Parsed, Provider
from .gemini import google_error
from .images import ACCEPTED_MEDIA_TYPES, fit_image
from .vectors import default_dims, dim_param, vectors_from
from .wire import request_id_of

__all__ = ["LOCATION_ENV", "PROJECT_ENV", "VERTEX", "endpoint_url", "predict_body"]

log = logging.getLogger("vlmclient")
NAME = "vertex"
DEFAULT_BASE_URL = "https://{location}-aiplatform.googleapis.com/v1"
PROJECT_ENV = ("VERTEX_PROJECT", "GOOGLE_CLOUD_PROJECT")
LOCATION_ENV = ("VERTEX_LOCATION", "GOOGLE_CLOUD_LOCATION")
URL_PARAMS = frozenset({"project", "location"})  # go into the URL, never the body
MAX_IMAGE_BYTES = 20 * 1024 * 1024
# multimodalembedding@001 embeds images at 512 px (secondary: issue 15 report; Google's
# reference in our copy gives no size), so larger uploads only cost bandwidth.
MAX_SIDE = 512
MEDIA_TYPES = ACCEPTED_MEDIA_TYPES[NAME]  # the one table in images.py


# What each setting may hold: it goes into the URL's host (the location) and path. A
# location is lowercase words joined by dashes (us-central1, europe-west4, global); a
# project an id (my-proj-123), a number, or a domain-scoped id (example.com:my-proj).
# Whitespace is refused, not stripped, as for keys.
_FORMS = {
    "location": (re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*"), "us-central1 or global"),
    "project": (re.compile(r"[a-z0-9][a-z0-9.:-]{0,99}"), "my-project-123"),
}


def _lookup(
    params: Mapping[str, Any], key: str, names: tuple[str, ...], env: Mapping[str, str]
) -> tuple[str | None, str]:
    """The setting (None when unset) and where it came from, checked."""
    value = params.get(key)
    if isinstance(value, str) and value:
        source = f"the '{key}' param"
    else:
        value, source = None, ""
        for name in names:
            if env.get(name):
                value, source = env[name], name
                break
    form, example = _FORMS[key]
    if value is not None and not form.fullmatch(value):
        # "ev.il:1" ended in an httpx.InvalidURL traceback, "us-central1 " in a host that
        # does not resolve, retried as a connection error
        # (quoted whole, last: the client redacts it, then cuts; cut first, a secret in
        # it could keep too few characters to be known)
        raise ConfigurationError(
            f"vertex: {source} is not a Google Cloud {key} (e.g. {example}: lowercase "
            f"letters, digits and dashes, no spaces) (nothing was sent): {value!r}"
        )
    return value, source


def _setting(spec: CallSpec, key: str, names: tuple[str, ...], env: Mapping[str, str]) -> str:
    value, _ = _lookup(spec.params, key, names, env)
    if value is None:
        raise ConfigurationError(
            f"vertex needs a {key}: set {' or '.join(names)}, or pass the '{key}' param "
            "(nothing was sent)"
        )
    return value


def check_setup(params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
    """ConfigurationError for a project or location no URL can hold, or a dimension the
    model does not offer, before anything is reserved (a project or location missing is
    said at the first request, as before)."""
    env = os.environ if env is None else env
    _lookup(params, "project", PROJECT_ENV, env)
    _lookup(params, "location", LOCATION_ENV, env)
    _dimension(params)


# parameters.dimension of multimodalembedding@001: 128, 256, 512 or 1408 (reference
# notes, the model reference page); any other value is a 400 on every request.
DIMENSIONS = (128, 256, 512, 1408)


def _dimension(params: Mapping[str, Any]) -> int | None:
    """The ``dimension`` param as a number, checked (None when not given)."""
    value = params.get("dimension")
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or value not in DIMENSIONS:
        raise ConfigurationError(
            f"vertex dimension must be one of {DIMENSIONS}, not {value!r} (nothing was sent)"
        )
    return int(value)


def endpoint_url(spec: CallSpec, env: Mapping[str, str] | None = None) -> str:
    """The ``:predict`` URL for this call's project, location and model."""
    env = os.environ if env is None else env
    project = _setting(spec, "project", PROJECT_ENV, env)
    location = _setting(spec, "location", LOCATION_ENV, env)
    base = spec.base_url.rstrip("/")
    if location == "global":
        # the global endpoint has no location prefix (as google-genai and the Vertex SDK
        # build it): "global-aiplatform.googleapis.com" does not resolve
        base = base.replace("{location}-", "")
    base = base.replace("{location}", location)
    return (
        f"{base}/projects/{project}/locations/{location}/publishers/google/models/"
        f"{spec.model}:predict"
    )


# multimodalembedding@001 reads at most 32 text tokens and drops the rest silently
# (Google's multimodal-embeddings reference: "text ... up to 32 tokens"; secondary in our
# copy). No tokenizer here, so warn when a text may be longer: over 32 words or 128 bytes.
TEXT_TOKEN_LIMIT = 32
MAX_SAFE_TEXT_BYTES = 128
# Requests per minute by default: the lowest of the documented 120-600 RPM quotas
# (secondary: issue 15 report), so a fresh project is not met with a wall of 429s.
DEFAULT_RPM = 120.0


def warn_if_truncated(text: str, spec: CallSpec) -> None:
    if len(text.split()) > TEXT_TOKEN_LIMIT or len(text.encode("utf-8")) > MAX_SAFE_TEXT_BYTES:
        # its start is quoted through the client's redactor, then cut: a prompt may hold
        # a key pasted into it
        log.warning(
            "vertex: %r may be longer than the %d tokens multimodalembedding@001 reads; "
            "the rest is cut off silently. Shorten the prompt template or class names.",
            spec.redactor().text(text, 63),
            TEXT_TOKEN_LIMIT,
        )


def predict_body(spec: CallSpec) -> dict[str, Any]:
    """``{"instances": [one instance], "parameters": {...}}``; params such as ``dimension``
    (128/256/512/1408) go into ``parameters``."""
    (item,) = spec.items
    instance: dict[str, Any]
    if isinstance(item, ImageEmbeddingRequest):
        instance = {
            "image": {
                "bytesBase64Encoded": base64.b64encode(item.image.data).decode("ascii"),
                "mimeType": item.image.media_type,
            }
        }
    elif isinstance(item, TextEmbeddingRequest):
        warn_if_truncated(item.text, spec)
        instance = {"text": item.text}
    else:
        raise ValueError(f"vertex adapter does not do {spec.kind}")
    body: dict[str, Any] = {"instances": [instance]}
    parameters = {k: v for k, v in spec.params.items() if k not in URL_PARAMS}
    if "dimension" in parameters:
        parameters["dimension"] = _dimension(parameters)
    if parameters:
        body["parameters"] = parameters
    return body


def build_request(spec: CallSpec) -> httpx.Request:
    url = endpoint_url(spec)  # ConfigurationError here, before anything is sent
    return httpx.Request(
        "POST",
        url,
        headers={
            "Authorization": f"Bearer {spec.api_key.get_secret_value()}",
            "Content-Type": "application/json",
        },
        content=json.dumps(predict_body(spec), separators=(",", ":")).encode(),
    )


def estimate_usage(spec: CallSpec) -> Usage:
    """What Vertex bills: a flat fee per image, or per 1,000 characters of text.

    This is also the bill: the response has no usage block (``usage_in_response=False``).
    """
    images = sum(1 for i in spec.items if isinstance(i, ImageEmbeddingRequest))
    chars = sum(len(i.text) for i in spec.items if isinstance(i, TextEmbeddingRequest))
    return Usage(images=images, characters=chars)


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    usage = estimate_usage(spec)
    try:
        body = response.json()
    except (ValueError, RecursionError) as exc:
        raise ResponseValidationError(
            "response is not JSON", provider=NAME, request_id=rid
        ) from exc
    predictions = body.get("predictions") if isinstance(body, dict) else None
    field = "imageEmbedding" if spec.kind == "image_embedding" else "textEmbedding"
    rows = (
        [p.get(field) if isinstance(p, dict) else None for p in predictions]
        if isinstance(predictions, list)
        else predictions
    )
    try:
        if isinstance(rows, list) and any(r is None for r in rows):
            raise ResponseValidationError(
                f"a prediction has no {field}", provider=NAME, request_id=rid
            )
        vecs = vectors_from(rows, expected=len(spec.items), request_id=rid, provider=NAME)
    except ResponseValidationError as exc:
        exc.usage = usage
        raise
    return Parsed(usage=usage, vectors=vecs, request_id=rid)


def prepare_image(image: Image) -> Image:
    """JPEG or PNG (anything else is re-encoded), long edge <= 512 px, <= 20 MB."""
    return fit_image(image, max_side=MAX_SIDE, max_bytes=MAX_IMAGE_BYTES, media_types=MEDIA_TYPES)


VERTEX = Provider(
    name=NAME,
    env_vars=("VERTEX_ACCESS_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN"),
    default_base_url=DEFAULT_BASE_URL,
    api_version="v1",
    # One instance per call: the official SDK sends one, and the docs' batch limit
    # for this model is not stated.
    max_batch={"image_embedding": 1, "text_embedding": 1},
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    classify_error=google_error,
    prepare_image=prepare_image,
    default_rpm=DEFAULT_RPM,
    usage_in_response=False,
    check_setup=check_setup,
    requested_dim=dim_param("dimension"),
    # "dimension applies to text+image; default 1408" (the model reference page)
    default_dim=default_dims({"multimodalembedding@001": 1408}),
    description="Google Vertex AI multimodalembedding@001 (image and text embeddings)",
)

"""Amazon Bedrock Titan Multimodal Embeddings G1 (``amazon.titan-embed-image-v1``).

``POST https://bedrock-runtime.{region}.amazonaws.com/model/{model}/invoke`` with body
``{"inputImage": "<raw base64>"}`` or ``{"inputText": ...}``, signed with AWS SigV4 by
botocore's own signer (never hand-rolled). botocore is an optional extra:
``pip install vlm-distill[aws]``.

Credentials: ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``)
from the environment, else botocore's usual chain (``AWS_PROFILE``, config files).
Region: the ``region`` param, else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``.
One text or one image per call. Titan bills a flat fee per image and input text
tokens (``inputTextTokenCount`` in the response).
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import httpx

from ..errors import APIStatusError, ConfigurationError, NotFoundError, ResponseValidationError
from ..models import Image, ImageEmbeddingRequest, TextEmbeddingRequest, Usage
from .base import SIGNED_WITH, CallSpec, Parsed, Provider
from .images import ACCEPTED_MEDIA_TYPES, fit_image
from .vectors import dim_param, vectors_from
from .wire import (
    default_classify_error,
    json_object,
    reported_usage,
    request_id_of,
    text_tokens_upper_bound,
)

__all__ = ["INSTALL_HINT", "TITAN", "invoke_body", "signed_request"]

NAME = "titan"
SERVICE = "bedrock"
DEFAULT_BASE_URL = "https://bedrock-runtime.{region}.amazonaws.com"
REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")
INSTALL_HINT = "pip install 'vlm-distill[aws]'"
MAX_SIDE = 2048  # Titan: image <= 2048 x 2048
MAX_IMAGE_BYTES = 25 * 1024 * 1024
MEDIA_TYPES = ACCEPTED_MEDIA_TYPES[NAME]  # the one table in images.py
# Bedrock's 400 ValidationException for a model id it cannot run here: an id that does not
# exist, a model the region does not host ("The provided model identifier is invalid."),
# or one that needs an inference profile ("Invocation of model ID ... with on-demand
# throughput isn't supported"). No other item can succeed after it.
UNKNOWN_MODEL = re.compile(r"model identifier is invalid|on-demand throughput", re.IGNORECASE)
# The region a SigV4 signature was made for: its credential scope (key/date/region/service).
_SIGNED_REGION = re.compile(r"Credential=[^/,]+/\d{8}/([a-z0-9-]+)/" + SERVICE + "/")


def _botocore() -> tuple[Any, Any, Any]:
    """(SigV4Auth, AWSRequest, Credentials), or a ConfigurationError naming the extra."""
    try:
        auth = importlib.import_module("botocore.auth")
        awsrequest = importlib.import_module("botocore.awsrequest")
        credentials = importlib.import_module("botocore.credentials")
    except ImportError as exc:
        raise ConfigurationError(
            f"the titan provider signs requests with botocore, which is not installed: "
            f"{INSTALL_HINT} (nothing was sent)"
        ) from exc
    # botocore's signer logs each canonical request at DEBUG, the session token among its
    # headers: with -vv it reached stderr (and any log file)
    signer_log = logging.getLogger("botocore.auth")
    signer_log.setLevel(max(signer_log.level, logging.INFO))
    return auth.SigV4Auth, awsrequest.AWSRequest, credentials.Credentials


# An AWS region (us-east-1, us-gov-west-1): it goes into the URL's host and the
# signature. Whitespace is refused, not stripped, as for the credentials.
_REGION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def _lookup_region(params: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """The region (None when unset), checked."""
    value = params.get("region")
    source = "the 'region' param"
    if not (isinstance(value, str) and value):
        value = None
        for name in REGION_ENV:
            if env.get(name):
                value, source = env[name], name
                break
    if value is not None and not _REGION.fullmatch(value):
        # "us-east-1 " built a host that does not resolve (retried as a connection error)
        # (quoted whole, last: the client redacts it, then cuts; cut first, a secret in
        # it could keep too few characters to be known)
        raise ConfigurationError(
            f"titan: {source} is not an AWS region (e.g. us-east-1: lowercase letters, "
            f"digits and dashes, no spaces) (nothing was sent): {value!r}"
        )
    return value


def _region(spec: CallSpec, env: Mapping[str, str]) -> str:
    value = _lookup_region(spec.params, env)
    if value is None:
        raise ConfigurationError(
            "titan needs an AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or pass the "
            "'region' param (nothing was sent)"
        )
    return value


def check_setup(params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
    """ConfigurationError for a region no host can hold, or an output length Titan does
    not offer, before anything is reserved (a region missing is said at the first
    request, as before)."""
    _lookup_region(params, os.environ if env is None else env)
    output_length(params)


def _credentials(env: Mapping[str, str]) -> Any:
    _, _, credentials_cls = _botocore()
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            _check_env_secret(name, env.get(name) or "")
        return credentials_cls(key, secret, env.get("AWS_SESSION_TOKEN") or None)
    session = importlib.import_module("botocore.session").get_session()
    creds = session.get_credentials()
    if creds is None:
        raise ConfigurationError(
            "no AWS credentials found by botocore's chain (AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials and config, SSO, "
            "container or instance role): configure one, e.g. `aws configure` or "
            "`aws sso login` (nothing was sent)"
        )
    return creds.get_frozen_credentials()


def _check_env_secret(name: str, value: str) -> None:
    """ConfigurationError for a credential with a control character (a key file's newline,
    a CRLF .env file's CR) or spaces around it: the session token goes in a header, which
    every HTTP stack refuses only after the budget was reserved, and a secret key with a
    space signs every request wrongly. The API key gets this check in ``credentials``."""
    if not value.isascii() or value != value.strip() or not value.isprintable():
        raise ConfigurationError(
            f"{name} holds a newline, spaces around it or another character no AWS "
            "credential has; set it again without them (nothing was sent)"
        )


def invoke_body(spec: CallSpec) -> dict[str, Any]:
    (item,) = spec.items
    body: dict[str, Any]
    if isinstance(item, ImageEmbeddingRequest):
        body = {"inputImage": base64.b64encode(item.image.data).decode("ascii")}
    elif isinstance(item, TextEmbeddingRequest):
        body = {"inputText": item.text}
    else:
        raise ValueError(f"titan adapter does not do {spec.kind}")
    dim = output_length(spec.params)
    if dim is not None:
        body["embeddingConfig"] = {"outputEmbeddingLength": dim}
    return body


# embeddingConfig.outputEmbeddingLength: 256, 384 or 1024 (reference notes, Titan
# Multimodal Embeddings G1); any other value is a 400 on every request.
OUTPUT_LENGTHS = (256, 384, 1024)


def output_length(params: Mapping[str, Any]) -> int | None:
    """The ``outputEmbeddingLength`` (or ``dimension``) param as a number, checked."""
    name = "outputEmbeddingLength" if "outputEmbeddingLength" in params else "dimension"
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or value not in OUTPUT_LENGTHS:
        raise ConfigurationError(
            f"titan {name} must be one of {OUTPUT_LENGTHS}, not {value!r} (nothing was sent)"
        )
    return int(value)


def signed_request(spec: CallSpec, env: Mapping[str, str] | None = None) -> httpx.Request:
    """The InvokeModel request, signed by botocore's SigV4Auth."""
    env = os.environ if env is None else env
    sigv4, aws_request, _ = _botocore()
    region = _region(spec, env)
    # One path segment, percent-encoded as botocore's serializer does: a provisioned
    # model's ARN holds ':' and '/', and a versioned id (``...-v1:0``) a ':'.
    model = quote(spec.model, safe="-_.~")
    url = spec.base_url.rstrip("/").replace("{region}", region) + f"/model/{model}/invoke"
    content = json.dumps(invoke_body(spec), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    request = aws_request(method="POST", url=url, data=content, headers=headers)
    credentials = _credentials(env)
    sigv4(credentials, SERVICE, region).add_auth(request)
    signed = {k: v for k, v in request.headers.items()}
    out = httpx.Request("POST", url, headers=signed, content=content)
    # from a profile, SSO or a role they are in no environment variable the client knew
    out.extensions[SIGNED_WITH] = (credentials.secret_key or "", credentials.token or "")
    return out


def build_request(spec: CallSpec) -> httpx.Request:
    return signed_request(spec)


def parse_response(spec: CallSpec, response: httpx.Response) -> Parsed:
    rid = request_id_of(response)
    body = json_object(response, provider=NAME, request_id=rid)
    count = body.get("inputTextTokenCount")
    images = 1 if spec.kind == "image_embedding" else 0
    usage = Usage(images=images, input_tokens=count if isinstance(count, int) and count > 0 else 0)
    # Titan's only figure is the text token count (an image is billed per image).
    reported = reported_usage({"inputTextTokenCount": count})
    try:
        vecs = vectors_from(
            [body.get("embedding")], expected=len(spec.items), request_id=rid, provider=NAME
        )
    except ResponseValidationError as exc:
        exc.usage, exc.reported = usage, reported
        raise
    return Parsed(usage=usage, vectors=vecs, request_id=rid, reported=reported)


def estimate_usage(spec: CallSpec) -> Usage:
    _botocore()  # fail before any reservation when the extra is missing
    images = sum(1 for i in spec.items if isinstance(i, ImageEmbeddingRequest))
    tokens = sum(
        text_tokens_upper_bound(i.text) for i in spec.items if isinstance(i, TextEmbeddingRequest)
    )
    return Usage(images=images, input_tokens=tokens)


def _model_and_region(response: httpx.Response) -> tuple[str, str]:
    """The model id and region the request was made for (its path and its signature)."""
    try:
        request = response.request
    except RuntimeError:  # a response built without its request
        return "the model", "the region"
    parts = request.url.path.split("/")
    model = unquote(parts[2]) if len(parts) == 4 and parts[1] == "model" else "the model"
    found = _SIGNED_REGION.search(request.headers.get("authorization", ""))
    return model, f"region {found.group(1)}" if found else "the region"


def classify_error(response: httpx.Response) -> APIStatusError:
    """Bedrock names the error in ``x-amzn-ErrorType`` (``ThrottlingException:...``);
    429 Throttling/ModelNotReady and 503 ServiceUnavailable are retried by status.

    A 400 ``ValidationException`` saying the model identifier is invalid (or needs an
    inference profile) is a :class:`NotFoundError`: every request of the run would get
    it, so a harvest stops at once. Any other ValidationException stays a per-item
    :class:`BadRequestError`."""
    err = default_classify_error(response)
    etype = response.headers.get("x-amzn-errortype", "").split(":", 1)[0]
    text = str(err.args[0])
    if (
        response.status_code == 400
        and etype in ("", "ValidationException")
        and UNKNOWN_MODEL.search(text)
    ):
        model, region = _model_and_region(response)
        said = text.removeprefix("HTTP 400: ").removesuffix(f" (request id {err.request_id})")
        err = NotFoundError(
            f"{said} [{etype or 'ValidationException'}]: "
            f"{model} cannot be called in {region}: the id is wrong, the region does not "
            "host it, or it needs an inference profile id (e.g. 'us.' + the id); check "
            "--teacher and AWS_REGION (nothing was billed)",
            status_code=400,
            request_id=err.request_id,
        )
    elif etype:
        err.args = (f"{text} [{etype}]",)
    return err


def prepare_image(image: Image) -> Image:
    """png/jpeg (others re-encoded), long edge <= 2048 px, <= 25 MB."""
    return fit_image(image, max_side=MAX_SIDE, max_bytes=MAX_IMAGE_BYTES, media_types=MEDIA_TYPES)


TITAN = Provider(
    name=NAME,
    # Shown as the usual ways to give credentials; none is required: the signer asks
    # botocore's whole chain (env, profiles, ~/.aws/config, SSO, ECS/EC2 roles).
    env_vars=("AWS_ACCESS_KEY_ID", "AWS_PROFILE"),
    key_optional=True,
    default_base_url=DEFAULT_BASE_URL,
    api_version="bedrock-2023-09-30",
    max_batch={"image_embedding": 1, "text_embedding": 1},
    build_request=build_request,
    parse_response=parse_response,
    estimate_usage=estimate_usage,
    classify_error=classify_error,
    prepare_image=prepare_image,
    check_setup=check_setup,
    requested_dim=dim_param("outputEmbeddingLength", "dimension"),
    description=f"Amazon Bedrock Titan Multimodal Embeddings G1 (needs {INSTALL_HINT})",
)

"""The provider adapter contract: plain functions bundled in a frozen record.

An adapter knows one wire format. It never sends anything: the client builds an
``httpx.Request`` with ``build_request``, sends it, and hands the response to
``parse_response`` (2xx) or ``classify_error`` (anything else). The helpers adapters
share to read and write the wire are in :mod:`.wire` and :mod:`.vectors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import httpx
import numpy as np
from pydantic import SecretStr

from ..errors import APIStatusError, ConfigurationError
from ..models import (
    AnswerRequest,
    Image,
    ImageEmbeddingRequest,
    Kind,
    MixedEmbeddingRequest,
    TextEmbeddingRequest,
    Usage,
)
from ..redact import Redactor
from .wire import default_classify_error

__all__ = [
    "SET_BY_ITEMS",
    "SET_BY_TEACHER",
    "SIGNED_WITH",
    "CallSpec",
    "Item",
    "Parsed",
    "Provider",
    "RateLimitHints",
    "refuse_client_fields",
]

# The ``request.extensions`` key under which an adapter that finds its own credentials
# (Titan: botocore's chain) hands the sender the secrets it signed with; the sender takes
# them out before sending and has the client's redactor replace them from then on.
SIGNED_WITH = "vlmclient.signed_with"

Item: TypeAlias = (
    ImageEmbeddingRequest | TextEmbeddingRequest | MixedEmbeddingRequest | AnswerRequest
)


@dataclass(frozen=True)
class CallSpec:
    """Everything one HTTP request to a provider depends on."""

    kind: Kind
    model: str
    items: Sequence[Item]
    base_url: str
    api_key: SecretStr = field(repr=False)
    params: Mapping[str, Any] = field(default_factory=dict)
    # Worst-case prompt tokens per image when the price file states one (models whose
    # image billing the adapter cannot bound by name, e.g. OpenAI-compatible servers).
    max_image_tokens: int | None = None
    # The client's redactor: what an adapter logs of the request goes through it (None:
    # one that knows ``api_key`` only).
    redact: Redactor | None = field(default=None, repr=False, compare=False)

    def redactor(self) -> Redactor:
        return self.redact or Redactor([self.api_key.get_secret_value()])


@dataclass(frozen=True)
class Parsed:
    """What a 2xx response yields: one vector or one text per item, plus usage."""

    usage: Usage
    vectors: list[np.ndarray] | None = None
    texts: list[str] | None = None
    request_id: str | None = None
    # The provider's own usage block as it sent it (see reported_usage); None when the
    # response did not say what was billed, so the client charges its reservation.
    reported: Mapping[str, Any] | None = None
    # An answer the provider cut at the output-token limit (its last word may be cut too).
    truncated: bool = False
    # Why our price table cannot price this bill, when the response says it was billed at
    # other rates (an OpenAI premium service tier): charged at the reservation, and the
    # client sends no new requests.
    unpriced: str | None = None


@dataclass(frozen=True)
class RateLimitHints:
    """What the response headers say about the remaining rate limit (None = not said)."""

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None
    limit_requests: int | None = None
    limit_tokens: int | None = None  # input + output tokens of a request, one limit
    # Separate input- and output-token limits (Anthropic's): each paces its own share
    limit_input_tokens: int | None = None
    limit_output_tokens: int | None = None


def _no_hints(headers: httpx.Headers) -> RateLimitHints:
    return RateLimitHints()


def _same_image(image: Image) -> Image:
    return image


@dataclass(frozen=True)
class Provider:
    """One provider's wire format, limits and metering, as plain functions."""

    name: str
    env_vars: tuple[str, ...]
    default_base_url: str
    api_version: str
    max_batch: Mapping[Kind, int]
    build_request: Callable[[CallSpec], httpx.Request]
    parse_response: Callable[[CallSpec, httpx.Response], Parsed]
    estimate_usage: Callable[[CallSpec], Usage]
    classify_error: Callable[[httpx.Response], APIStatusError] = field(
        default_factory=lambda: default_classify_error
    )
    rate_limit_hints: Callable[[httpx.Headers], RateLimitHints] = _no_hints
    prepare_image: Callable[[Image], Image] = _same_image
    # Per-model batch limit; None means max_batch[kind] for every model.
    batch_limit: Callable[[str, str], int] | None = None
    # Cap on the summed image bytes of one request (None = no cap beyond the count).
    max_request_bytes: int | None = None
    # Cap on the summed tokens of the texts of one request, counted with
    # text_tokens_upper_bound (None = no cap beyond the count): OpenAI 300k, Voyage 320k.
    max_request_tokens: int | None = None
    # The most tokens one input may hold before the provider refuses the whole request
    # (400), for the model and the request's params; None when it truncates instead (or
    # no limit is known). An input whose token bound is above it is sent alone, so the 400
    # fails only that input (see Batcher.iter_chunks).
    max_input_tokens: Callable[[str, Mapping[str, Any]], int | None] | None = None
    # Cap on the images of one request, wherever they are (a mixed input holds any
    # number): the local server's 500 a call; None where only bytes or tokens cap them
    # (Cohere v4 has no count limit, Voyage's 320k tokens allow 89 images).
    max_request_images: int | None = None
    # Tokens one image counts toward max_request_tokens, at most (Voyage: 3,572 for its
    # 2 M billed-pixel cap at 560 px a token; 0 where images do not count).
    image_request_tokens: int = 0
    # False when responses carry no usage block, so our estimate is the bill (Vertex).
    usage_in_response: bool = True
    # True when the adapter finds its own credentials (Titan: botocore's chain of
    # profiles, SSO, container and instance roles), so no env var is required.
    key_optional: bool = False
    default_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Requests per minute when the caller sets none (Vertex: its lowest documented quota).
    default_rpm: float | None = None
    description: str = ""
    # What one model can do, when the provider's models differ (None: every kind, all models).
    model_kinds: Callable[[str], frozenset[str]] | None = None
    # Checks the client's params (and the settings the adapter reads from the environment)
    # when the client is made, before anything is reserved: ConfigurationError for one no
    # request could carry (Vertex's location and project, Titan's region).
    check_setup: Callable[[Mapping[str, Any]], None] | None = None
    # The vector length a (model, kind, params) call answers with, as the params ask for
    # it (``output_dimension``, ``dimensions`` ...); None when they ask for none. The
    # client expects it from the first answer on, so a wrong first answer is rejected,
    # not made the rule.
    requested_dim: Callable[[str, str, Mapping[str, Any]], int | None] | None = None
    # The vector length a (model, kind, params) call answers with when the params ask for
    # none, where the provider documents the model's default (embed-v4.0: 1536); None
    # otherwise. Expected from the first answer on, as requested_dim is.
    default_dim: Callable[[str, str, Mapping[str, Any]], int | None] | None = None
    # Body fields the client builds from the teacher name and the items, each with what
    # sets it: a param of that name would replace them (the request sent would not be
    # the one its cache key and estimate describe), so the client refuses it.
    client_fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.max_batch)

    def kinds_for(self, model: str) -> frozenset[str]:
        """The kinds ``model`` offers: the provider's kinds, narrowed where a name tells."""
        if self.model_kinds is None:
            return self.kinds
        return self.kinds & self.model_kinds(model)

    def limit_for(self, model: str, kind: Kind) -> int:
        """Most items one request of ``kind`` may carry for ``model``."""
        if kind not in self.max_batch:
            # a KeyError deep in a harvest helped nobody (issue 13, item 13)
            what = kind.replace("_", " ")
            raise ConfigurationError(f"{self.name}:{model} does not offer {what}s")
        if self.batch_limit is not None:
            return self.batch_limit(model, kind)
        return self.max_batch[kind]


# What sets the usual client-built fields (Provider.client_fields).
SET_BY_TEACHER = "the teacher name (provider:model)"
SET_BY_ITEMS = "the requests you pass to each call"


def refuse_client_fields(provider: Provider, params: Mapping[str, Any]) -> None:
    """ConfigurationError for a param naming a body field the client builds (the model,
    the inputs): sent, it would replace what the cache key and the estimate stand for."""
    for name, source in provider.client_fields.items():
        if name in params:
            raise ConfigurationError(
                f"{provider.name} param {name!r} is set by the client from {source}; "
                "drop it from the params (nothing was sent)"
            )

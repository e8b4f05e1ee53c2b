"""vlmclient: an async, budgeted, cached, rate-limited client for vision-language teachers.

Never imports torch. Typical use::

    from vlmclient import Budget, TeacherClient, ImageEmbeddingRequest, Image

    async with TeacherClient("cohere:embed-v4.0", budget=Budget("5.00"), cache=cache) as teacher:
        results = await teacher.embed_images([ImageEmbeddingRequest(image=Image.from_path(p))])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .budget import MAX_BUDGET_USD, MIN_BUDGET_USD, Budget, Reservation
    from .claims import Claims
    from .client import DEFAULT_CONCURRENCY, TeacherClient
    from .errors import (
        APIConnectionError,
        APIError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        BudgetExceededError,
        BudgetOverrunError,
        CacheStoreError,
        ConfigurationError,
        InputError,
        InputTooLongError,
        InternalServerError,
        MalformedResponsesError,
        NotFoundError,
        OverloadedError,
        PermissionDeniedError,
        QuotaExceededError,
        RateLimitError,
        RedirectError,
        RequestTimeoutError,
        RequestTooLargeError,
        ResponseValidationError,
        SpendRecordError,
        TruncatedAnswerError,
        VLMError,
    )
    from .http11 import Http11Transport
    from .keys import (
        content_cache_key,
        endpoint_id,
        item_cache_key,
        prepare_item,
        teacher_fingerprint,
    )
    from .media import media_type_of
    from .models import (
        AnswerRequest,
        AnswerResult,
        EmbeddingResult,
        Image,
        ImageEmbeddingRequest,
        Kind,
        MixedEmbeddingRequest,
        Price,
        TextEmbeddingRequest,
        Usage,
    )
    from .price_check import MIN_PRICE_USD, free_units, refuse_free
    from .prices import PriceTable, has_prices, load_prices
    from .protocol import Embedder, Teacher
    from .providers import PROVIDERS, Provider, get_provider, parse_teacher
    from .providers.images import ACCEPTED_MEDIA_TYPES
    from .providers.reasoning import REASONING_LEVELS
    from .ratelimit import MIN_RATE, RateLimiter
    from .retry import RetryPolicy
    from .shared_budget import SharedBudget, SharedReservation
    from .stats import ClientStats
    from .timing import Timings
    from .transparency import flatten, has_alpha, is_transparent
    from .transport import ReadingAiohttpTransport

__all__ = [
    "ACCEPTED_MEDIA_TYPES",
    "DEFAULT_CONCURRENCY",
    "MAX_BUDGET_USD",
    "MIN_BUDGET_USD",
    "MIN_PRICE_USD",
    "MIN_RATE",
    "PROVIDERS",
    "REASONING_LEVELS",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AnswerRequest",
    "AnswerResult",
    "AuthenticationError",
    "BadRequestError",
    "Budget",
    "BudgetExceededError",
    "BudgetOverrunError",
    "CacheStoreError",
    "Claims",
    "ClientStats",
    "ConfigurationError",
    "Embedder",
    "EmbeddingResult",
    "Http11Transport",
    "Image",
    "ImageEmbeddingRequest",
    "InputError",
    "InputTooLongError",
    "InternalServerError",
    "Kind",
    "MalformedResponsesError",
    "MixedEmbeddingRequest",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "Price",
    "PriceTable",
    "Provider",
    "QuotaExceededError",
    "RateLimitError",
    "RateLimiter",
    "ReadingAiohttpTransport",
    "RedirectError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "Reservation",
    "ResponseValidationError",
    "RetryPolicy",
    "SharedBudget",
    "SharedReservation",
    "SpendRecordError",
    "Teacher",
    "TeacherClient",
    "TextEmbeddingRequest",
    "Timings",
    "TruncatedAnswerError",
    "Usage",
    "VLMError",
    "content_cache_key",
    "endpoint_id",
    "flatten",
    "free_units",
    "get_provider",
    "has_alpha",
    "has_prices",
    "is_transparent",
    "item_cache_key",
    "load_prices",
    "media_type_of",
    "parse_teacher",
    "prepare_item",
    "refuse_free",
    "teacher_fingerprint",
]

# Where each public name lives, imported on first use (PEP 562): ``import vlmclient.errors``
# or a name from it must not load every dependency of the package. The imports under
# TYPE_CHECKING say the same to type checkers; tests/test_layout.py checks they agree.
_SOURCES: dict[str, str] = {
    "MAX_BUDGET_USD": "budget",
    "MIN_BUDGET_USD": "budget",
    "Budget": "budget",
    "Reservation": "budget",
    "Claims": "claims",
    "DEFAULT_CONCURRENCY": "client",
    "TeacherClient": "client",
    "APIConnectionError": "errors",
    "APIError": "errors",
    "APIStatusError": "errors",
    "APITimeoutError": "errors",
    "AuthenticationError": "errors",
    "BadRequestError": "errors",
    "BudgetExceededError": "errors",
    "BudgetOverrunError": "errors",
    "CacheStoreError": "errors",
    "ConfigurationError": "errors",
    "InputError": "errors",
    "InputTooLongError": "errors",
    "InternalServerError": "errors",
    "MalformedResponsesError": "errors",
    "NotFoundError": "errors",
    "OverloadedError": "errors",
    "PermissionDeniedError": "errors",
    "QuotaExceededError": "errors",
    "RateLimitError": "errors",
    "RedirectError": "errors",
    "RequestTimeoutError": "errors",
    "RequestTooLargeError": "errors",
    "ResponseValidationError": "errors",
    "SpendRecordError": "errors",
    "TruncatedAnswerError": "errors",
    "VLMError": "errors",
    "content_cache_key": "keys",
    "endpoint_id": "keys",
    "item_cache_key": "keys",
    "prepare_item": "keys",
    "teacher_fingerprint": "keys",
    "Http11Transport": "http11",
    "media_type_of": "media",
    "AnswerRequest": "models",
    "AnswerResult": "models",
    "EmbeddingResult": "models",
    "Image": "models",
    "ImageEmbeddingRequest": "models",
    "Kind": "models",
    "MixedEmbeddingRequest": "models",
    "Price": "models",
    "TextEmbeddingRequest": "models",
    "Usage": "models",
    "MIN_PRICE_USD": "price_check",
    "free_units": "price_check",
    "refuse_free": "price_check",
    "PriceTable": "prices",
    "has_prices": "prices",
    "load_prices": "prices",
    "Embedder": "protocol",
    "Teacher": "protocol",
    "PROVIDERS": "providers",
    "Provider": "providers",
    "get_provider": "providers",
    "parse_teacher": "providers",
    "REASONING_LEVELS": "providers.reasoning",
    "ACCEPTED_MEDIA_TYPES": "providers.images",
    "MIN_RATE": "ratelimit",
    "RateLimiter": "ratelimit",
    "RetryPolicy": "retry",
    "SharedBudget": "shared_budget",
    "SharedReservation": "shared_budget",
    "ClientStats": "stats",
    "Timings": "timing",
    "flatten": "transparency",
    "has_alpha": "transparency",
    "is_transparent": "transparency",
    "ReadingAiohttpTransport": "transport",
}


def __getattr__(name: str) -> Any:
    try:
        module = _SOURCES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups find it without coming back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

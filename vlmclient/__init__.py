"""vlmclient: an async, budgeted, cached, rate-limited client for vision-language teachers.

Never imports torch. Typical use::

    from vlmclient import Budget, TeacherClient, ImageEmbeddingRequest, Image

    async with TeacherClient("cohere:embed-v4.0", budget=Budget("5.00"), cache=cache) as teacher:
        results = await teacher.embed_images([ImageEmbeddingRequest(image=Image.from_path(p))])
"""

from .budget import Budget, Reservation
from .claims import Claims
from .client import DEFAULT_CONCURRENCY, ClientStats, TeacherClient
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
    InternalServerError,
    MalformedResponsesError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ResponseValidationError,
    SpendRecordError,
    TruncatedAnswerError,
    VLMError,
)
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
from .prices import PriceTable, load_prices
from .protocol import Teacher
from .providers import PROVIDERS, Provider, get_provider, parse_teacher
from .ratelimit import RateLimiter
from .retry import RetryPolicy
from .shared_budget import SharedBudget, SharedReservation

__all__ = [
    "DEFAULT_CONCURRENCY",
    "PROVIDERS",
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
    "EmbeddingResult",
    "Image",
    "ImageEmbeddingRequest",
    "InputError",
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
    "TruncatedAnswerError",
    "Usage",
    "VLMError",
    "get_provider",
    "load_prices",
    "parse_teacher",
]

"""The one error tree of vlm-distill.

Every failure a user can meet derives from :class:`VLMError`. Foreign exceptions
(httpx, aiohttp, json, pydantic) are translated at the boundary with ``raise ... from exc``
so callers only ever need ``except VLMError`` (a transport's, which may quote what the
server sent unscrubbed, ``from None``: the error's own message says it, scrubbed).

::

    VLMError
    ├── ConfigurationError          bad flags, missing key, unknown provider (nothing was sent)
    ├── BudgetExceededError         a request would pass a cap (nothing was sent)
    │   └── BudgetOverrunError      the provider billed more than we reserved (sending stops)
    ├── InputError                  an image or text we cannot send (nothing was sent)
    ├── SpendRecordError            the spend ledger cannot be written (spending stops)
    │   └── CacheStoreError         the response cache cannot store or read paid results
    └── APIError                    something went wrong talking to the provider
        ├── APIConnectionError      no HTTP response (``sent`` says if it may have been billed)
        │   └── APITimeoutError
        ├── ResponseValidationError a 200 whose body we could not use (billed, never cached)
        │   └── TruncatedAnswerError an empty answer cut at the token limit (not retried)
        ├── MalformedResponsesError too many such 200s: the circuit breaker stopped the run
        └── APIStatusError          a non-2xx answer
            ├── BadRequestError (400/422), AuthenticationError (401), PermissionDeniedError (403)
            │   └── InputTooLongError  400 for inputs over the model's per-input limit (named)
            ├── NotFoundError (404), RequestTooLargeError (413)
            ├── RateLimitError (429, retryable)
            ├── QuotaExceededError (429/402 that retrying cannot fix)
            ├── OverloadedError (503/529)
            └── InternalServerError (other 5xx)
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "BudgetOverrunError",
    "CacheStoreError",
    "ConfigurationError",
    "InputError",
    "InputTooLongError",
    "InternalServerError",
    "MalformedResponsesError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RedirectError",
    "RequestTooLargeError",
    "ResponseValidationError",
    "SpendRecordError",
    "TruncatedAnswerError",
    "VLMError",
    "status_error_class",
]


class VLMError(Exception):
    """Root of every error raised by vlm-distill."""


class ConfigurationError(VLMError):
    """The configuration cannot work (missing API key, unknown provider, bad price file)."""


class SpendRecordError(VLMError):
    """The spend ledger cannot be written: no further money is spent until it can."""


class CacheStoreError(SpendRecordError):
    """The response cache cannot store (or read back) paid results: no further money is
    spent, since whatever is bought next could not be kept either."""


class InputError(VLMError):
    """An input item cannot be sent (unreadable image, empty text)."""


def _plain(amount: Decimal) -> str:
    """Dollars for people: at least cents, more digits only when they matter.

    ``Decimal('0E-8')`` -> ``'0.00'``; ``Decimal('1')`` -> ``'1.00'``;
    ``Decimal('0.00051224')`` -> ``'0.00051224'``.
    """
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -2:
        return f"{amount.quantize(Decimal('0.01')):f}"
    return f"{amount.normalize():f}"


class BudgetExceededError(VLMError):
    """Sending the request could pass a cap; nothing was sent.

    ``kind`` names the cap: ``"usd"``, ``"requests"`` or ``"items"``.
    """

    def __init__(
        self,
        *,
        kind: str,
        cap: Decimal,
        spent: Decimal,
        reserved: Decimal,
        estimate: Decimal,
    ) -> None:
        self.kind = kind
        self.cap = cap
        self.spent = spent
        self.reserved = reserved
        self.estimate = estimate
        if kind == "usd":
            what = (
                f"budget of ${_plain(cap)} would be exceeded: spent ${_plain(spent)}, "
                f"reserved ${_plain(reserved)} by requests in flight, and the next request "
                f"may cost up to ${_plain(estimate)}"
            )
        else:
            what = (
                f"cap of {cap} {kind} would be exceeded: {spent} used, {reserved} in flight, "
                f"next request needs {estimate}"
            )
        super().__init__(
            f"{what}. Nothing was sent; raise the cap to continue (cached work is kept)."
        )


class BudgetOverrunError(BudgetExceededError):
    """The provider billed more than the worst case we reserved for a request.

    The price table or our usage estimate is wrong, so the cap can no longer be
    trusted: no further request is sent by this client. The message says what was
    billed, what was reserved and which price entry looks wrong.
    """

    def __init__(self, message: str, *, billed: Decimal, reserved: Decimal) -> None:
        self.kind = "overrun"
        self.cap = Decimal(0)
        self.spent = billed
        self.reserved = reserved
        self.estimate = reserved
        VLMError.__init__(self, message)


class APIError(VLMError):
    """A call to a provider failed."""

    def __init__(self, message: str, *, provider: str = "", request_id: str | None = None) -> None:
        self.provider = provider
        self.request_id = request_id
        suffix = f" (request id {request_id})" if request_id else ""
        super().__init__(f"{provider + ': ' if provider else ''}{message}{suffix}")


class APIConnectionError(APIError):
    """No HTTP response arrived.

    ``sent`` is False only when the request provably never left (connection refused),
    in which case the provider cannot have billed it.
    """

    def __init__(self, message: str, *, provider: str = "", sent: bool = True) -> None:
        self.sent = sent
        super().__init__(message, provider=provider)


class APITimeoutError(APIConnectionError):
    """The provider did not answer in time; the request may have been billed."""


class ResponseValidationError(APIError):
    """A 2xx response whose body is unusable (missing field, wrong dimension, NaN).

    The provider billed it; the result is never cached. ``usage`` is what the body
    said was billed, when it said so (otherwise the client charges its reservation);
    ``reported`` is the provider's own usage block (None when there was none);
    ``unpriced`` says why the body's bill is at rates we do not hold (as
    ``Parsed.unpriced``). Never retried: the same request would most likely be
    answered, and billed, the same way.
    """

    usage: object | None = None
    reported: object | None = None
    unpriced: str | None = None


class MalformedResponsesError(APIError):
    """The circuit breaker: so many billed 200s were unusable that the run stopped.

    Each one was recorded (charged) in the ledger as ``malformed``; none was retried.
    """


class TruncatedAnswerError(ResponseValidationError):
    """A billed answer with no text because the model stopped at its output-token limit.

    Reasoning ("thinking") tokens count against the same limit, so a short limit can be
    used up before any answer is written. Sending it again would fail the same way and
    be billed again, so it is never retried and never cached; the message names the fix
    (``--reasoning off`` or a larger output limit).
    """


class APIStatusError(APIError):
    """The provider answered with a non-2xx status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        provider: str = "",
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.retry_after = retry_after
        super().__init__(f"HTTP {status_code}: {message}", provider=provider, request_id=request_id)


class RedirectError(APIStatusError):
    """3xx: the server sends the client elsewhere. Never followed (the API key would go
    to another address): point the base URL at where it redirects."""


class BadRequestError(APIStatusError):
    """400/422: the provider rejected the request body; fix the input or the model name."""


class InputTooLongError(BadRequestError):
    """The provider refused an input that may be longer than the model takes (its
    per-input token limit), named by its ``index`` in the call, with the ``limit`` in
    tokens.

    Such an input is sent in a request of its own, so the 400 fails no other input of the
    call: those are bought and cached. The refusal is not billed; shorten the input.

    A call raises it when its only failures are such refusals: ``errors`` holds one per
    refused input, in call order (the first is this one's ``index``; the message names
    every one), and ``results`` the call's results with None at each refused input, so
    a caller keeps the others without asking again. (A call with another failure too, a
    budget stop say, raises that one instead.)

    Example::

        try:
            vecs = await teacher.embed_texts(reqs)
        except InputTooLongError as exc:
            print([e.index for e in exc.errors])  # shorten these, keep exc.results
    """

    index: int = -1
    limit: int = 0
    errors: tuple[InputTooLongError, ...] = ()
    results: list[Any] | None = None  # EmbeddingResult | AnswerResult | None, by index


class AuthenticationError(APIStatusError):
    """401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not use this model or endpoint."""


class NotFoundError(APIStatusError):
    """404, or 501 (not implemented: no retry can change it): unknown model or endpoint;
    check the model name and base URL."""


class RequestTooLargeError(APIStatusError):
    """413: the request body is too large; use smaller batches or images."""


class RateLimitError(APIStatusError):
    """429 that clears with time; retried after ``retry_after`` seconds when given."""


class QuotaExceededError(APIStatusError):
    """A quota or balance is exhausted (OpenAI insufficient_quota, Jina 402, ...): not retried."""


class OverloadedError(APIStatusError):
    """503/529: the provider is overloaded; retried with backoff."""


class InternalServerError(APIStatusError):
    """Other 5xx; retried with backoff."""


class RequestTimeoutError(APIStatusError):
    """408: a timeout at the server, or at a gateway waiting for the provider behind it
    (LiteLLM's proxy answers 408 when its upstream timeout fires after it forwarded the
    request; Amazon Bedrock's ModelTimeoutException); retried with backoff, and charged
    the reservation, since the provider may have billed."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: QuotaExceededError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    413: RequestTooLargeError,
    422: BadRequestError,
    429: RateLimitError,
    501: NotFoundError,  # Cohere's spec lists it; a 5xx that time does not fix
    503: OverloadedError,
    529: OverloadedError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The error class for an HTTP status (providers refine quota 429s themselves)."""
    if status_code in _STATUS_CLASSES:
        return _STATUS_CLASSES[status_code]
    if 300 <= status_code < 400:
        return RedirectError
    if status_code >= 500:
        return InternalServerError
    return APIStatusError

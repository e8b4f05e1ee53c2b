"""Rate-limit headers and error bodies, per provider, as each documents them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from vlmclient import (
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
)
from vlmclient.providers import PROVIDERS, anthropic, gemini, jina, openai, titan, vertex, voyage
from vlmclient.retry import is_retryable

NOW = 1_800_000_000.0


def rfc3339(seconds_from_now: float) -> str:
    when = datetime.fromtimestamp(NOW + seconds_from_now, tz=timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- OpenAI x-ratelimit-* -------------------------------------------------------------


def test_openai_headers() -> None:
    headers = httpx.Headers(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-remaining-tokens": "150000",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    hints = openai.rate_limit_hints(headers)
    assert (hints.limit_requests, hints.limit_tokens) == (500, 200000)
    assert (hints.remaining_requests, hints.remaining_tokens) == (499, 150000)
    assert hints.reset_requests_s == pytest.approx(0.12)
    assert hints.reset_tokens_s == pytest.approx(360.0)


def test_openai_insufficient_quota_is_not_retried_but_rate_limit_is() -> None:
    quota = httpx.Response(
        429, json={"error": {"code": "insufficient_quota", "message": "You exceeded your quota"}}
    )
    err = openai.classify_error(quota)
    assert isinstance(err, QuotaExceededError) and not is_retryable(err)
    limited = httpx.Response(
        429,
        json={"error": {"code": "rate_limit_exceeded", "message": "slow down"}},
        headers={"retry-after-ms": "1500"},
    )
    err = openai.classify_error(limited)
    assert isinstance(err, RateLimitError) and is_retryable(err)
    assert err.retry_after == pytest.approx(1.5)


# -- Anthropic anthropic-ratelimit-* --------------------------------------------------


def anthropic_headers() -> httpx.Headers:
    # Distinct numbers everywhere, so a swapped read cannot pass by accident.
    return httpx.Headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": rfc3339(1.0),
            "anthropic-ratelimit-input-tokens-limit": "400000",
            "anthropic-ratelimit-input-tokens-remaining": "399000",
            "anthropic-ratelimit-input-tokens-reset": rfc3339(2.0),
            "anthropic-ratelimit-output-tokens-limit": "80000",
            "anthropic-ratelimit-output-tokens-remaining": "79900",
            "anthropic-ratelimit-output-tokens-reset": rfc3339(3.0),
            "anthropic-ratelimit-tokens-limit": "480000",
            "anthropic-ratelimit-tokens-remaining": "478900",
            "anthropic-ratelimit-tokens-reset": rfc3339(4.0),
            "request-id": "req_018",
        }
    )


def test_anthropic_input_and_output_limits_are_not_swapped() -> None:
    limits = anthropic.parse_ratelimit_headers(anthropic_headers(), now=NOW)
    assert limits.input_tokens == anthropic.LimitWindow(400000, 399000, 2.0)
    assert limits.output_tokens == anthropic.LimitWindow(80000, 79900, 3.0)
    assert limits.requests == anthropic.LimitWindow(50, 49, 1.0)
    assert limits.tokens == anthropic.LimitWindow(480000, 478900, 4.0)


def test_anthropic_hints_take_the_tightest_token_window() -> None:
    limits = anthropic.parse_ratelimit_headers(anthropic_headers(), now=NOW)
    hints = anthropic.hints_from_limits(limits)
    assert hints.limit_requests == 50 and hints.remaining_requests == 49
    assert hints.reset_requests_s == pytest.approx(1.0)
    # input and output each pace their own share; no combined limit on top
    assert (hints.limit_input_tokens, hints.limit_output_tokens) == (400000, 80000)
    assert hints.limit_tokens is None
    assert hints.remaining_tokens == 79900
    assert hints.reset_tokens_s == pytest.approx(3.0)


def test_anthropic_exhausted_input_window_pauses_until_its_reset() -> None:
    headers = anthropic_headers()
    headers["anthropic-ratelimit-input-tokens-remaining"] = "0"
    hints = anthropic.hints_from_limits(anthropic.parse_ratelimit_headers(headers, now=NOW))
    assert hints.remaining_tokens == 0
    assert hints.reset_tokens_s == pytest.approx(2.0)  # the input window's reset, not output's


def test_anthropic_only_some_headers() -> None:
    headers = httpx.Headers({"anthropic-ratelimit-requests-remaining": "3"})
    hints = anthropic.rate_limit_hints(headers)
    assert hints.remaining_requests == 3
    assert hints.limit_tokens is None and hints.remaining_tokens is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-01T00:00:10Z", 10.0),
        ("2030-01-01T01:00:10+01:00", 10.0),
        ("2030-01-01T00:00:10.500000Z", 10.5),
        ("2029-12-31T23:59:00Z", 0.0),  # in the past: no wait
        ("not a date", None),
        ("2030-01-01T00:00:10", None),  # no offset: refuse to guess a zone
    ],
)
def test_rfc3339_resets(value: str, expected: float | None) -> None:
    now = datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()
    got = anthropic.parse_rfc3339(value, now=now)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("0.5ms", 0.0005),  # Go's Duration.String below a second: fractional ms
        ("1.5ms", 0.0015),
        ("1m30.5s", 90.5),
        ("1h0m0s", 3600.0),
        ("1.5\u00b5s", 1.5e-6),  # micro sign, as Go writes it
        ("2\u03bcs", 2e-6),  # Greek mu, which Go also reads
        ("500us", 5e-4),
        ("250ns", 2.5e-7),
        ("0s", 0.0),
        ("7.5", 7.5),  # plain seconds
        ("soon", None),
        ("1x", None),
    ],
)
def test_openai_reset_durations(value: str, expected: float | None) -> None:
    got = openai.parse_duration(value)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-01T00:00:10.123456789Z", 10.123456),  # nanoseconds: cut to micro
        ("2030-01-01T00:00:10.1234567+00:00", 10.123456),
        ("2030-01-01T00:00:10.5Z", 10.5),  # one digit (3.10 took only 3 or 6)
        ("2030-01-01T00:00:10.12Z", 10.12),
        ("2030-01-01t00:00:10z", 10.0),
        ("2030-01-01T00:00:10.Z", None),  # a point with no digits is no RFC 3339
    ],
)
def test_rfc3339_fractions_of_any_length(value: str, expected: float | None) -> None:
    """Python 3.10's ``fromisoformat`` refuses fractions of other than 3 or 6 digits;
    the parser must not depend on the interpreter."""
    now = datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()
    got = anthropic.parse_rfc3339(value, now=now)
    assert got == (None if expected is None else pytest.approx(expected, abs=1e-6))


def anthropic_error(status: int, etype: str, message: str, **extra: object) -> httpx.Response:
    error = {"type": etype, "message": message, **extra}
    return httpx.Response(
        status,
        json={"type": "error", "error": error, "request_id": "req_1"},
        headers={"request-id": "req_1", "retry-after": "7"},
    )


def test_anthropic_529_is_overloaded_and_retried() -> None:
    err = anthropic.classify_error(anthropic_error(529, "overloaded_error", "Overloaded"))
    assert isinstance(err, OverloadedError) and is_retryable(err)
    assert "overloaded_error" in str(err) and err.request_id == "req_1"


def test_anthropic_rate_limit_429_is_retried_after_retry_after() -> None:
    err = anthropic.classify_error(anthropic_error(429, "rate_limit_error", "Too many"))
    assert isinstance(err, RateLimitError) and err.retry_after == 7.0


def test_anthropic_spend_limit_429_is_a_quota_error() -> None:
    response = anthropic_error(
        429,
        "rate_limit_error",
        "You have reached your specified workspace API usage limits.",
        details={"error_code": "enforced_spend_limit_reached"},
    )
    err = anthropic.classify_error(response)
    assert isinstance(err, QuotaExceededError) and not is_retryable(err)
    assert "spend limit" in str(err)


def test_anthropic_empty_credit_balance_is_a_quota_error() -> None:
    response = anthropic_error(
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API.",
    )
    assert isinstance(anthropic.classify_error(response), QuotaExceededError)


def test_anthropic_other_errors_by_status() -> None:
    assert isinstance(
        anthropic.classify_error(anthropic_error(401, "authentication_error", "bad key")),
        AuthenticationError,
    )
    assert isinstance(
        anthropic.classify_error(anthropic_error(413, "request_too_large", "too big")),
        RequestTooLargeError,
    )
    assert isinstance(
        anthropic.classify_error(anthropic_error(500, "api_error", "oops")), InternalServerError
    )


# -- Google (Gemini and Vertex) google.rpc envelopes ----------------------------------


def google_429(quota_id: str, delay: object = "46s") -> httpx.Response:
    return httpx.Response(
        429,
        json={
            "error": {
                "code": 429,
                "message": "You exceeded your current quota.",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [
                            {
                                "quotaMetric": "generativelanguage.googleapis.com/"
                                "generate_content_free_tier_requests",
                                "quotaId": quota_id,
                                "quotaDimensions": {"model": "gemini-2.5-flash"},
                                "quotaValue": "10",
                            }
                        ],
                    },
                    {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
                ],
            }
        },
    )


@pytest.mark.parametrize("classify", [gemini.google_error, vertex.VERTEX.classify_error])
def test_google_per_minute_429_retried_after_retry_delay(classify) -> None:  # type: ignore[no-untyped-def]
    err = classify(google_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"))
    assert isinstance(err, RateLimitError) and is_retryable(err)
    assert err.retry_after == 46.0
    assert "RESOURCE_EXHAUSTED" in str(err)


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [("0.5s", 0.5), ("1.234567s", 1.234567), ({"seconds": 3, "nanos": 5e8}, 3.5)],
)
def test_google_retry_delay_forms(delay: object, seconds: float) -> None:
    err = gemini.google_error(google_429("PerMinute", delay))
    assert err.retry_after == pytest.approx(seconds)


@pytest.mark.parametrize(
    "quota_id",
    ["GenerateRequestsPerDayPerProjectPerModel-FreeTier", "generate_requests_per_day"],
)
def test_google_per_day_429_is_a_quota_error(quota_id: str) -> None:
    err = gemini.google_error(google_429(quota_id))
    assert isinstance(err, QuotaExceededError) and not is_retryable(err)
    assert "per-day" in str(err)


def test_google_503_unavailable_is_overloaded() -> None:
    response = httpx.Response(
        503,
        json={
            "error": {
                "code": 503,
                "message": "The model is overloaded. Please try again later.",
                "status": "UNAVAILABLE",
            }
        },
    )
    err = gemini.google_error(response)
    assert isinstance(err, OverloadedError) and "UNAVAILABLE" in str(err)


def test_google_400_invalid_argument_is_a_bad_request() -> None:
    response = httpx.Response(
        400,
        json={"error": {"code": 400, "message": "Bad image", "status": "INVALID_ARGUMENT"}},
    )
    err = vertex.VERTEX.classify_error(response)
    assert isinstance(err, BadRequestError) and not is_retryable(err)


def google_400(status: str, message: str, reason: str | None = None) -> httpx.Response:
    error: dict[str, object] = {"code": 400, "message": message, "status": status}
    if reason is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
    return httpx.Response(400, json={"error": error})


@pytest.mark.parametrize("reason", ["API_KEY_INVALID", "API_KEY_EXPIRED"])
def test_google_400_api_key_invalid_is_an_authentication_error(reason: str) -> None:
    """Gemini answers a wrong or expired key with 400, not 401 (until 2026-12-06: a
    BadRequestError, which a run took for a refusal of that one item)."""
    response = google_400(
        "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", reason
    )
    for classify in (gemini.GEMINI.classify_error, vertex.VERTEX.classify_error):
        err = classify(response)
        assert isinstance(err, AuthenticationError) and not is_retryable(err)
        assert "API key not valid" in str(err) and err.status_code == 400


def test_google_400_failed_precondition_is_permission_denied() -> None:
    response = google_400("FAILED_PRECONDITION", "User location is not supported for the API use.")
    err = gemini.GEMINI.classify_error(response)
    assert isinstance(err, PermissionDeniedError) and not is_retryable(err)
    assert "User location is not supported" in str(err)


def test_google_400_with_another_error_info_reason_stays_a_bad_request() -> None:
    err = gemini.google_error(google_400("INVALID_ARGUMENT", "Bad image", "BAD_IMAGE"))
    assert isinstance(err, BadRequestError) and not isinstance(err, AuthenticationError)


def test_google_error_without_envelope_falls_back_to_status() -> None:
    err = gemini.google_error(httpx.Response(502, text="<html>Bad Gateway</html>"))
    assert isinstance(err, InternalServerError)


# -- Jina, Voyage, Titan --------------------------------------------------------------


def test_jina_402_is_a_quota_error_and_429_a_rate_limit() -> None:
    err = jina.classify_error(httpx.Response(402, json={"detail": "Insufficient balance"}))
    assert isinstance(err, QuotaExceededError) and not is_retryable(err)
    assert "balance" in str(err) and str(err).count("HTTP 402") == 1
    err = jina.classify_error(httpx.Response(429, json={"detail": "Too many requests"}))
    assert isinstance(err, RateLimitError)


def test_voyage_errors_read_detail() -> None:
    err = voyage.VOYAGE.classify_error(
        httpx.Response(
            429, json={"detail": "You have exceeded the rate limit"}, headers={"retry-after": "2"}
        )
    )
    assert isinstance(err, RateLimitError) and err.retry_after == 2.0
    assert "exceeded the rate limit" in str(err)
    err = voyage.VOYAGE.classify_error(httpx.Response(400, json={"detail": "bad input"}))
    assert isinstance(err, BadRequestError) and "bad input" in str(err)


INVALID_MODEL_ID = "The provided model identifier is invalid."
ON_DEMAND = (
    "Invocation of model ID amazon.nova-2-lite-v1:0 with on-demand throughput isn’t "
    "supported. Retry your request with the ID or ARN of an inference profile that contains "
    "this model."
)


@pytest.mark.parametrize(
    ("status", "etype", "message", "cls"),
    [
        (429, "ThrottlingException", "Rate exceeded", RateLimitError),
        (429, "ModelNotReadyException", "Model is not ready", RateLimitError),
        (503, "ServiceUnavailableException", "Service unavailable", OverloadedError),
        (400, "ValidationException", "Malformed input request: #: extraneous key", BadRequestError),
        # Until 2026-12-06 a model id the region does not host was a BadRequestError too:
        # a per-item refusal, so a harvest sent every item and said "run again".
        (400, "ValidationException", INVALID_MODEL_ID, NotFoundError),
        (400, "ValidationException", ON_DEMAND, NotFoundError),
    ],
)
def test_titan_errors_name_the_bedrock_exception(
    status: int, etype: str, message: str, cls: type
) -> None:
    response = httpx.Response(
        status,
        json={"message": message},
        headers={
            "x-amzn-ErrorType": f"{etype}:http://internal.amazon.com/coral/",
            "x-amzn-RequestId": "r-9",
        },
    )
    err = titan.classify_error(response)
    assert isinstance(err, cls) and etype in str(err) and err.request_id == "r-9"
    assert message in str(err)


def test_titan_unknown_model_names_the_model_and_the_region() -> None:
    request = httpx.Request(
        "POST",
        "https://bedrock-runtime.eu-west-3.amazonaws.com/model/amazon.titan-embed-image-v1/invoke",
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261206/eu-west-3/"
            "bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
        },
    )
    response = httpx.Response(
        400,
        json={"message": INVALID_MODEL_ID},
        headers={"x-amzn-ErrorType": "ValidationException"},
        request=request,
    )
    err = titan.classify_error(response)
    assert isinstance(err, NotFoundError) and not is_retryable(err)
    said = str(err)
    assert "amazon.titan-embed-image-v1" in said and "region eu-west-3" in said
    assert "AKIDEXAMPLE" not in said
    assert "inference profile" in said and "nothing was billed" in said


def test_nomic_errors_by_status() -> None:
    nomic = PROVIDERS["nomic"]
    err = nomic.classify_error(
        httpx.Response(429, json={"detail": "rate limited"}, headers={"retry-after": "3"})
    )
    assert isinstance(err, RateLimitError) and err.retry_after == 3.0
    assert isinstance(nomic.classify_error(httpx.Response(503, text="busy")), OverloadedError)
    err = nomic.classify_error(httpx.Response(401, json={"detail": "Invalid API key"}))
    assert isinstance(err, AuthenticationError) and "Invalid API key" in str(err)


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_no_provider_reads_hints_from_an_empty_response(name: str) -> None:
    hints = PROVIDERS[name].rate_limit_hints(httpx.Headers())
    assert hints.limit_tokens is None and hints.remaining_requests is None


def test_rfc3339_future_reset_uses_wall_clock() -> None:
    soon = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat()
    got = anthropic.parse_rfc3339(soon)
    assert got is not None and 25.0 < got <= 30.0

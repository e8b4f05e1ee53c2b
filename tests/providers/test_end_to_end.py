"""Each provider through TeacherClient on httpx.MockTransport: the fake handler checks the
request and answers with the documented response; cost = price x usage, exactly."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import httpx
import jsonschema
import pytest

from tests.conftest import FakeClock, ListLedger
from tests.providers.conftest import (
    client_for,
    image,
    nosleep,
    validator_for,
    vector,
    voyage_doc,
)
from vlmclient import (
    AnswerRequest,
    Budget,
    ConfigurationError,
    Image,
    ImageEmbeddingRequest,
    Price,
    QuotaExceededError,
    RateLimiter,
    ResponseValidationError,
    RetryPolicy,
    TeacherClient,
    TextEmbeddingRequest,
    Usage,
)
from vlmclient.prices import PriceTable


def default_price(provider: str, model: str) -> Price:
    return PriceTable.default().lookup(provider, model)


class Recorder:
    """Collects requests; answers with ``reply(request, n)``; sleeps are recorded."""

    def __init__(self, reply) -> None:  # type: ignore[no-untyped-def]
        self.reply = reply
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply(request, len(self.requests))

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def images(n: int, size: tuple[int, int] = (64, 48)) -> list[ImageEmbeddingRequest]:
    return [ImageEmbeddingRequest(image=image(size, seed=i)) for i in range(n)]


def fake_limiter() -> RateLimiter:
    clock = FakeClock()
    return RateLimiter(clock=clock, sleep=clock.sleep)


# -- Voyage ---------------------------------------------------------------------------


async def test_voyage_images_cost_is_pixels_times_price() -> None:
    validator = validator_for(voyage_doc(), "#/request")
    reqs = images(3, (300, 200))

    def reply(request: httpx.Request, n: int) -> httpx.Response:
        body = json.loads(request.content)
        validator.validate(body)
        assert request.headers["authorization"] == "Bearer secret-key-123"
        k = len(body["inputs"])
        data = [{"object": "embedding", "embedding": vector(i), "index": i} for i in range(k)]
        usage = {"text_tokens": 0, "image_pixels": 3 * 60_000, "total_tokens": 3 * 108}
        payload = {"object": "list", "data": data[::-1], "model": body["model"], "usage": usage}
        return httpx.Response(200, json=payload)

    fake = Recorder(reply)
    price = default_price("voyage", "voyage-multimodal-3")
    async with client_for("voyage:voyage-multimodal-3", fake, price=price, budget=Budget("1")) as c:
        out = await c.embed_images(reqs)
    assert len(fake.requests) == 1
    assert [o.vector.tolist() for o in out] == [pytest.approx(vector(i)) for i in range(3)]
    expected = Decimal("0.60") * 180_000 / Decimal(10**9)
    assert c.budget.spent == expected == price.cost(Usage(image_pixels=180_000))
    assert sum(o.cost_usd for o in out) == expected


async def test_voyage_texts_cost_is_tokens_times_price() -> None:
    def reply(request: httpx.Request, n: int) -> httpx.Response:
        body = json.loads(request.content)
        k = len(body["inputs"])
        data = [{"object": "embedding", "embedding": vector(i), "index": i} for i in range(k)]
        usage = {"text_tokens": 17, "image_pixels": 0, "total_tokens": 17}
        return httpx.Response(200, json={"object": "list", "data": data, "usage": usage})

    price = default_price("voyage", "voyage-multimodal-3.5")
    texts = [TextEmbeddingRequest(text=f"a photo of a {c}") for c in ("cat", "dog")]
    async with client_for("voyage:voyage-multimodal-3.5", Recorder(reply), price=price) as c:
        await c.embed_texts(texts)
    assert c.budget.spent == Decimal("0.12") * 17 / Decimal(10**6)


# -- Jina -----------------------------------------------------------------------------


async def test_jina_images_cost_from_total_tokens_with_a_price_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    price_file = tmp_path / "prices.json"
    price_file.write_text(
        json.dumps({"jina:jina-clip-v2": {"usd_per_1m_input_tokens": "0.05", "verified_on": "x"}})
    )

    def reply(request: httpx.Request, n: int) -> httpx.Response:
        body = json.loads(request.content)
        assert all(set(i) == {"image"} for i in body["input"])
        data = [{"object": "embedding", "index": i, "embedding": vector(i)} for i in range(2)]
        return httpx.Response(
            200,
            json={"model": "jina-clip-v2", "object": "list", "data": data,
                  "usage": {"total_tokens": 8000, "prompt_tokens": 8000}},
        )

    table = PriceTable.default().with_file(price_file)
    async with client_for("jina:jina-clip-v2", Recorder(reply), prices=table) as c:
        await c.embed_images(images(2))
    assert c.budget.spent == Decimal("0.05") * 8000 / Decimal(10**6) == Decimal("0.0004")


async def test_jina_without_a_price_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="price-file"):
        client_for("jina:jina-clip-v2", Recorder(lambda r, n: httpx.Response(500)))


async def test_jina_402_stops_without_retrying() -> None:
    fake = Recorder(lambda r, n: httpx.Response(402, json={"detail": "Insufficient balance"}))
    price = Price(usd_per_1m_input_tokens=Decimal("0.05"))
    async with client_for("jina:jina-clip-v2", fake, price=price) as c:
        with pytest.raises(QuotaExceededError, match="balance"):
            await c.embed_texts([TextEmbeddingRequest(text="x")])
    assert len(fake.requests) == 1 and c.budget.spent == 0


# -- Vertex ---------------------------------------------------------------------------

VERTEX = "vertex:multimodalembedding@001"
VERTEX_PARAMS = {"project": "p-1", "location": "us-central1"}


def vertex_reply(request: httpx.Request, n: int) -> httpx.Response:
    (instance,) = json.loads(request.content)["instances"]
    key = "imageEmbedding" if "image" in instance else "textEmbedding"
    # multimodalembedding@001's default length, which the client expects of it
    return httpx.Response(
        200, json={"predictions": [{key: vector(n, 1408)}], "deployedModelId": "1"}
    )


async def test_vertex_meters_one_image_per_call() -> None:
    fake = Recorder(vertex_reply)
    price = default_price("vertex", "multimodalembedding@001")
    # rpm: not Vertex's default 120 (four calls would wait 1.5 s; the default is tested in
    # test_expected_options.py), this test is about the bill
    async with client_for(VERTEX, fake, price=price, params=VERTEX_PARAMS, rpm=60_000) as c:
        out = await c.embed_images(images(3))
        await c.embed_texts([TextEmbeddingRequest(text="a photo of a dog")])  # 16 characters
    assert len(fake.requests) == 4 and len(out) == 3
    assert all(r.url.host == "us-central1-aiplatform.googleapis.com" for r in fake.requests)
    expected = Decimal("0.0001") * 3 + Decimal("0.0002") * 16 / Decimal(1000)
    assert c.budget.spent == expected


async def test_vertex_without_project_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VERTEX_PROJECT", "GOOGLE_CLOUD_PROJECT", "VERTEX_LOCATION"):
        monkeypatch.delenv(name, raising=False)
    fake = Recorder(vertex_reply)
    async with client_for(VERTEX, fake, price=Price(usd_per_image=Decimal("1"))) as c:
        with pytest.raises(ConfigurationError, match="VERTEX_PROJECT"):
            await c.embed_images(images(1))
    assert fake.requests == [] and c.budget.spent == 0 and c.budget.reserved == 0


async def test_vertex_project_and_location_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERTEX_PROJECT", "env-proj")
    monkeypatch.setenv("VERTEX_LOCATION", "asia-northeast1")
    fake = Recorder(vertex_reply)
    async with client_for(VERTEX, fake, price=Price(usd_per_image=Decimal("1"))) as c:
        await c.embed_images(images(1))
    (request,) = fake.requests
    assert str(request.url).startswith(
        "https://asia-northeast1-aiplatform.googleapis.com/v1/projects/env-proj/locations/"
        "asia-northeast1/publishers/google/models/multimodalembedding@001:predict"
    )
    assert "parameters" not in json.loads(request.content)


async def test_vertex_429_waits_retry_delay_then_succeeds() -> None:
    def reply(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            return httpx.Response(
                429,
                json={"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
                                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                             "retryDelay": "46s"}]}},
            )
        return vertex_reply(request, n)

    fake = Recorder(reply)
    async with client_for(
        VERTEX, fake, price=Price(usd_per_image=Decimal("0.0001")), params=VERTEX_PARAMS,
        retry=RetryPolicy(sleep=fake.sleep), limiter=fake_limiter(),
    ) as c:
        await c.embed_images(images(1))
    assert fake.sleeps == [46.0] and len(fake.requests) == 2
    assert c.budget.spent == Decimal("0.0001")  # the 429 was not billed


# -- Nomic ----------------------------------------------------------------------------


async def test_nomic_images_and_texts_priced_from_a_price_file() -> None:
    def reply(request: httpx.Request, n: int) -> httpx.Response:
        if request.url.path == "/v1/embedding/image":
            k = request.read().count(b'name="images"')
            return httpx.Response(200, json={"embeddings": [vector(i, 768) for i in range(k)],
                                             "usage": {}, "model": "nomic-embed-vision-v1.5"})
        body = json.loads(request.content)
        return httpx.Response(200, json={"embeddings": [vector(9, 768)] * len(body["texts"]),
                                         "usage": {"prompt_tokens": 9, "total_tokens": 9},
                                         "model": body["model"]})

    price = Price(usd_per_image=Decimal("0.00002"), usd_per_1m_input_tokens=Decimal("0.1"))
    fake = Recorder(reply)
    async with client_for("nomic:nomic-embed-vision-v1.5", fake, price=price) as c:
        out = await c.embed_images(images(4))
        await c.embed_texts([TextEmbeddingRequest(text=t) for t in ("a cat", "a dog")])
    assert out[0].dim == 768
    assert [r.url.path for r in fake.requests] == ["/v1/embedding/image", "/v1/embedding/text"]
    # The image answer's usage is empty, so it is charged at its reservation: 4 images
    # plus the assumed 256 tokens each (issue 13: never settle an unreported bill lower).
    for_images = Decimal("0.00002") * 4 + Decimal("0.1") * 4 * 256 / Decimal(10**6)
    assert c.budget.spent == for_images + Decimal("0.1") * 9 / Decimal(10**6)


# -- Titan (botocore) -----------------------------------------------------------------


async def test_titan_signed_calls_and_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("botocore")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_REGION", "us-east-1")

    def reply(request: httpx.Request, n: int) -> httpx.Response:
        assert request.url.host == "bedrock-runtime.us-east-1.amazonaws.com"
        assert request.url.path == "/model/amazon.titan-embed-image-v1/invoke"
        auth = request.headers["authorization"]
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        assert "/us-east-1/bedrock/aws4_request" in auth
        body = json.loads(request.content)
        count = 3 if "inputText" in body else 0
        return httpx.Response(
            200, json={"embedding": vector(n, 1024), "inputTextTokenCount": count, "message": None}
        )

    fake = Recorder(reply)
    price = default_price("titan", "amazon.titan-embed-image-v1")
    async with client_for("titan:amazon.titan-embed-image-v1", fake, price=price) as c:
        await c.embed_images(images(2))
        await c.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert len(fake.requests) == 3
    assert c.budget.spent == Decimal("0.00006") * 2 + Decimal("0.80") * 3 / Decimal(10**6)


# -- Anthropic ------------------------------------------------------------------------


def anthropic_ok(request: httpx.Request, n: int) -> httpx.Response:
    body = json.loads(request.content)
    assert body["max_tokens"] == 5
    return httpx.Response(
        200,
        json={
            "id": f"msg_{n}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": "seven"}], "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 1234, "output_tokens": 5,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        },
        headers={
            "request-id": f"req_{n}",
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-input-tokens-limit": "400000",
            "anthropic-ratelimit-input-tokens-remaining": "390000",
            "anthropic-ratelimit-output-tokens-limit": "80000",
            "anthropic-ratelimit-output-tokens-remaining": "79990",
        },
    )


def ask() -> list[AnswerRequest]:
    return [AnswerRequest(image=image((200, 100)), prompt="Which digit?", max_output_tokens=5)]


async def test_anthropic_answer_cost_and_rate_limits() -> None:
    limiter = fake_limiter()
    price = default_price("anthropic", "claude-haiku-4-5")
    async with client_for(
        "anthropic:claude-haiku-4-5", Recorder(anthropic_ok), price=price, limiter=limiter
    ) as c:
        [answer] = await c.answer(ask())
    assert answer.text == "seven" and answer.request_id == "req_1"
    assert answer.usage == Usage(input_tokens=1234, output_tokens=5)
    assert c.budget.spent == Decimal("1.00") * 1234 / 10**6 + Decimal("5.00") * 5 / 10**6
    # slowed by the headers: input and output tokens each at their own limit
    assert (limiter.rpm, limiter.tpm) == (50, None)
    assert (limiter.input_tpm, limiter.output_tpm) == (400000, 80000)


async def test_anthropic_529_is_retried_spend_limit_is_not() -> None:
    def overloaded_then_ok(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            return httpx.Response(
                529,
                json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
            )
        return anthropic_ok(request, n)

    fake = Recorder(overloaded_then_ok)
    price = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))
    async with client_for("anthropic:claude-haiku-4-5", fake, price=price,
                          retry=RetryPolicy(sleep=fake.sleep)) as c:
        await c.answer(ask())
    assert len(fake.requests) == 2 and len(fake.sleeps) == 1

    spend = Recorder(lambda r, n: httpx.Response(429, json={
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "limit",
                  "details": {"error_code": "enforced_spend_limit_reached"}}}))
    async with client_for("anthropic:claude-haiku-4-5", spend, price=price) as c:
        with pytest.raises(QuotaExceededError):
            await c.answer(ask())
    assert len(spend.requests) == 1 and c.budget.spent == 0


async def test_anthropic_missing_key_names_the_env_var() -> None:
    from vlmclient import TeacherClient

    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        TeacherClient("anthropic:claude-haiku-4-5", env={})


# -- Gemini ---------------------------------------------------------------------------


def gemini_ok(request: httpx.Request, n: int) -> httpx.Response:
    body = json.loads(request.content)
    inline = body["contents"][0]["parts"][0]["inline_data"]
    assert Image.from_bytes(base64.b64decode(inline["data"])).media_type == inline["mime_type"]
    return httpx.Response(
        200,
        json={
            "candidates": [{"content": {"role": "model", "parts": [{"text": "7"}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 271, "candidatesTokenCount": 2,
                              "thoughtsTokenCount": 40, "totalTokenCount": 313},
            "responseId": f"r{n}",
        },
    )


async def test_gemini_answer_cost_counts_thoughts_as_output() -> None:
    price = default_price("gemini", "gemini-2.5-flash-lite")
    async with client_for("gemini:gemini-2.5-flash-lite", Recorder(gemini_ok), price=price) as c:
        [answer] = await c.answer(ask())
    assert answer.text == "7"
    assert c.budget.spent == Decimal("0.10") * 271 / 10**6 + Decimal("0.40") * 42 / 10**6


def gemini_429(quota_id: str) -> httpx.Response:
    return httpx.Response(429, json={"error": {
        "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaId": quota_id}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "46s"},
        ]}})


async def test_gemini_per_minute_429_retried_after_46s_per_day_429_stops() -> None:
    fake = Recorder(
        lambda r, n: gemini_429("GenerateRequestsPerMinutePerProjectPerModel") if n == 1
        else gemini_ok(r, n)
    )
    price = Price(usd_per_1m_input_tokens=Decimal("0.3"), usd_per_1m_output_tokens=Decimal("2.5"))
    async with client_for("gemini:gemini-2.5-flash-lite", fake, price=price,
                          retry=RetryPolicy(sleep=fake.sleep), limiter=fake_limiter()) as c:
        await c.answer(ask())
    assert fake.sleeps == [46.0]

    daily = Recorder(lambda r, n: gemini_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier"))
    async with client_for("gemini:gemini-2.5-flash-lite", daily, price=price) as c:
        with pytest.raises(QuotaExceededError, match="per-day"):
            await c.answer(ask())
    assert len(daily.requests) == 1


@pytest.mark.parametrize("output", [{}, {"candidatesTokenCount": 0}])
async def test_gemini_blocked_answer_is_charged_not_retried(output: dict[str, int]) -> None:
    """A blocked prompt is billed and never retried. Its usage states no output tokens
    (none, or 0), which we cannot tell from a usage block that leaves out the output
    count of an answer that had some: charged at the reservation, marked estimated."""
    blocked = Recorder(lambda r, n: httpx.Response(200, json={
        "promptFeedback": {"blockReason": "OTHER"},
        "usageMetadata": {"promptTokenCount": 270, "totalTokenCount": 270, **output}}))
    price = Price(usd_per_1m_input_tokens=Decimal("0.3"), usd_per_1m_output_tokens=Decimal("2.5"))
    records = ListLedger()
    async with client_for("gemini:gemini-2.5-flash-lite", blocked, price=price, ledger=records,
                          retry=RetryPolicy(max_attempts=3, sleep=nosleep)) as c:
        with pytest.raises(ResponseValidationError, match="OTHER"):
            await c.answer(ask())
    [rec] = records.records
    assert len(blocked.requests) == 1 and rec.outcome == "malformed" and rec.estimated
    assert c.budget.spent == Decimal(rec.reserved_usd) > Decimal("0.3") * 270 / 10**6


async def test_gemini_key_in_header_never_in_url() -> None:
    fake = Recorder(gemini_ok)
    price = Price(usd_per_1m_input_tokens=Decimal("0.3"), usd_per_1m_output_tokens=Decimal("2.5"))
    async with client_for("gemini:gemini-2.5-flash-lite", fake, price=price) as c:
        await c.answer(ask())
    (request,) = fake.requests
    assert "secret-key-123" not in str(request.url)
    assert request.headers["x-goog-api-key"] == "secret-key-123"


# -- the estimate never undercuts a realistic bill ------------------------------------


async def test_reservation_covers_a_realistic_anthropic_bill() -> None:
    """A 200x100 image is ~27 tokens by Anthropic's formula, plus a short prompt: the
    worst case reserved before sending must cover that bill with no overrun."""

    def realistic(request: httpx.Request, n: int) -> httpx.Response:
        response = anthropic_ok(request, n)
        body = response.json()
        body["usage"] = {"input_tokens": 27 + 12, "output_tokens": 5}
        return httpx.Response(200, json=body)

    budget = Budget("10")
    price = default_price("anthropic", "claude-haiku-4-5")
    async with client_for("anthropic:claude-haiku-4-5", Recorder(realistic), price=price,
                          budget=budget) as c:
        n, worst = c.plan("answer", ask())
        await c.answer(ask())
    assert n == 1 and worst >= budget.spent > 0 and budget.overruns == 0


def test_schema_validator_is_live() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validator_for(voyage_doc(), "#/request").validate({"inputs": []})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VERTEX_LOCATION", "ev.il:1"),  # was an httpx.InvalidURL traceback
        ("VERTEX_LOCATION", "us-central1 "),  # was a host that does not resolve, retried
        ("VERTEX_LOCATION", "us-central1/../x"),
        ("VERTEX_PROJECT", "my-proj "),
        ("VERTEX_PROJECT", "p/../../other"),
    ],
)
async def test_vertex_location_or_project_that_cannot_go_in_a_url_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    from tests.providers.loopback import loopback

    monkeypatch.setenv("VERTEX_PROJECT", "p-1")
    monkeypatch.setenv("VERTEX_LOCATION", "us-central1")
    monkeypatch.setenv(name, value)
    budget = Budget("1")
    with loopback(lambda path, body: (200, {"predictions": [{"textEmbedding": vector(1)}]})) \
            as server:
        with pytest.raises(ConfigurationError, match=f"{name} is not a Google Cloud"):
            TeacherClient(  # refused when the client is made: nothing reserved
                VERTEX, api_key="tok", base_url=server.url + "/v1",
                price=default_price("vertex", "multimodalembedding@001"), budget=budget,
                retry=RetryPolicy(max_attempts=3, sleep=nosleep),
            )
        # and at the request too, should the environment change in between
        monkeypatch.setenv(name, "p-1" if name == "VERTEX_PROJECT" else "us-central1")
        async with TeacherClient(
            VERTEX, api_key="tok", base_url=server.url + "/v1",
            price=default_price("vertex", "multimodalembedding@001"), budget=budget,
            retry=RetryPolicy(max_attempts=3, sleep=nosleep),
        ) as c:
            monkeypatch.setenv(name, value)
            with pytest.raises(ConfigurationError, match=f"{name} is not a Google Cloud"):
                await c.embed_texts([TextEmbeddingRequest(text="a cat")])
        assert server.requests == []
    assert budget.spent == 0 and budget.reserved == 0 and c.stats.retries == 0


async def test_vertex_settings_in_every_valid_form_are_sent() -> None:
    fake = Recorder(vertex_reply)
    for params in ({"project": "example.com:my-proj", "location": "global"},
                   {"project": "123456789", "location": "europe-west4"}):
        async with client_for(VERTEX, fake, price=Price(usd_per_image=Decimal("1")),
                              params=params, rpm=60_000) as c:
            await c.embed_images(images(1))
    assert [r.url.path.split("/")[3] for r in fake.requests] == ["example.com:my-proj",
                                                                 "123456789"]


@pytest.mark.parametrize(
    ("teacher", "name", "ok"),
    [("vertex", "VERTEX_PROJECT", "p-1"), ("vertex", "VERTEX_LOCATION", "us-central1"),
     ("titan", "AWS_REGION", "us-east-1")],
)
async def test_a_setting_holding_a_secret_is_quoted_with_it_masked(
    monkeypatch: pytest.MonkeyPatch, teacher: str, name: str, ok: str
) -> None:
    """Before: a Vertex project or location, or a Titan region, the client refused was
    quoted by its first 40 characters, never redacted: a token pasted into the wrong
    variable was printed, when the client was made and at the request (here from its 30th
    character: cut before it is redacted, too few of its characters would be left for the
    redactor to know them)."""
    from tests.providers.loopback import loopback
    from vlmclient.redact import Redactor

    pytest.importorskip("botocore")
    token = "ya29.a0AfB_SECRETaccessTOKEN0123456789abcdefXYZ"
    for var, value in (("VERTEX_PROJECT", "p-1"), ("VERTEX_LOCATION", "us-central1"),
                       ("AWS_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE0000"),
                       ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")):
        monkeypatch.setenv(var, value)
    if teacher == "titan":
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    model = "amazon.titan-embed-image-v1" if teacher == "titan" else "multimodalembedding@001"
    holds = Redactor([token]).holds
    bad = f"{ok[:-1]} " + "x" * (29 - len(ok)) + f" {token}"  # the token from the 30th on
    with loopback(lambda path, body: (500, {})) as server:
        def make() -> TeacherClient:
            return TeacherClient(
                f"{teacher}:{model}", api_key=token if teacher == "vertex" else None,
                base_url=server.url + "/v1", price=default_price(teacher, model),
                budget=Budget("1"), retry=RetryPolicy(max_attempts=1, sleep=nosleep),
            )

        monkeypatch.setenv(name, bad)
        with pytest.raises(ConfigurationError, match=f"{name} is not") as made:
            make()
        monkeypatch.setenv(name, ok)
        async with make() as c:
            monkeypatch.setenv(name, bad)
            with pytest.raises(ConfigurationError, match=f"{name} is not") as sent:
                await c.embed_texts([TextEmbeddingRequest(text="a cat")])
        assert server.requests == []
    for got in (made.value, sent.value):
        assert "***" in str(got) and not holds(str(got)), str(got)
        assert "nothing was sent" in str(got)

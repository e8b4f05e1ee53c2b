"""The client's Cohere (local:) and OpenAI-compatible adapters against the real server."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import SecretStr

from cache import MemoryCache
from distill.server import HashBackend, ServerConfig, ServerThread, create_app
from distill.server.config import Faults
from tests.conftest import make_image_requests
from tests.e2e.conftest import TOKEN, LocalTeacher
from vlmclient import (
    AnswerRequest,
    AuthenticationError,
    InternalServerError,
    Price,
    PriceTable,
    RateLimitError,
    ResponseValidationError,
    RetryPolicy,
    TeacherClient,
    TextEmbeddingRequest,
)

# An OpenAI-compatible server's model name says nothing about its image billing, so the
# price states the bound: the local teacher bills each image as 85 prompt tokens.
OPENAI_PRICE = Price(
    usd_per_1m_input_tokens=Decimal("0.12"),
    usd_per_1m_output_tokens=Decimal("0.60"),
    max_image_tokens=85,
)


def server(**config: object) -> ServerThread:
    return ServerThread(
        create_app(ServerConfig(token=SecretStr(TOKEN), **config), HashBackend(dim=32))
    )


def billing(s: ServerThread) -> dict:
    return LocalTeacher(s).billing()


async def test_openai_compatible_embeddings_and_answers(hash_teacher: LocalTeacher) -> None:
    async with TeacherClient(
        "openai:hash", api_key=TOKEN, base_url=hash_teacher.url + "/v1", price=OPENAI_PRICE
    ) as client:
        texts = await client.embed_texts(
            [TextEmbeddingRequest(text=f"a photo of a {c}") for c in "abc"]
        )
        img = make_image_requests(1)[0].image
        [answer] = await client.answer(
            [
                AnswerRequest(
                    image=img, prompt="Which is it? Options: cat, dog, car", max_output_tokens=5
                )
            ]
        )
    assert len(texts) == 3 and texts[0].dim == 64
    assert answer.text in {"cat", "dog", "car"}
    assert client.budget.spent == Decimal(hash_teacher.billing()["usd"])


async def test_local_teacher_answers_through_its_openai_route(hash_teacher: LocalTeacher) -> None:
    async with TeacherClient(
        "local:hash", base_url=hash_teacher.url, cache=MemoryCache()
    ) as client:
        img = make_image_requests(1)[0].image
        req = AnswerRequest(image=img, prompt="Options: zero, one, two", max_output_tokens=3)
        [a] = await client.answer([req])
        [b] = await client.answer([req])
    assert a.text == b.text and b.cached
    assert client.budget.spent == Decimal(hash_teacher.billing()["usd"])
    # the worst-case estimate covered the bill
    assert client.budget.overruns == 0


async def test_401_is_clear_and_not_retried(hash_teacher: LocalTeacher) -> None:
    async with TeacherClient("local:hash", api_key="wrong", base_url=hash_teacher.url) as client:
        with pytest.raises(AuthenticationError, match="401"):
            await client.embed_images(make_image_requests(1))
    assert hash_teacher.billing()["requests"] == 0


async def test_429_retry_after_from_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with server(rpm=1) as s:
        async with TeacherClient(
            "local:hash", api_key=TOKEN, base_url=s.base_url, retry=RetryPolicy(max_attempts=1)
        ) as client:
            await client.embed_texts([TextEmbeddingRequest(text="one")])
            with pytest.raises(RateLimitError) as info:
                await client.embed_texts([TextEmbeddingRequest(text="two")])
        assert info.value.retry_after is not None and info.value.retry_after > 0
        assert billing(s)["requests"] == 1


async def test_5xx_are_retried_and_not_billed() -> None:
    with server(faults=Faults(fail_500=1.0)) as s:
        async with TeacherClient(
            "local:hash",
            api_key=TOKEN,
            base_url=s.base_url,
            retry=RetryPolicy(max_attempts=2, initial_delay=0.01),
        ) as client:
            with pytest.raises(InternalServerError):
                await client.embed_images(make_image_requests(2))
        assert client.budget.spent == 0 and billing(s)["requests"] == 0
        assert client.stats.retries == 1


async def test_malformed_200_is_billed_and_matches_the_servers_bill() -> None:
    with server(faults=Faults(malformed=1.0)) as s:
        cache = MemoryCache()
        async with TeacherClient(
            "local:hash",
            api_key=TOKEN,
            base_url=s.base_url,
            cache=cache,
            retry=RetryPolicy(max_attempts=2, initial_delay=0.01),
        ) as client:
            with pytest.raises(ResponseValidationError) as info:
                await client.embed_images(make_image_requests(2))
        bill = billing(s)
        assert len(cache) == 0
        assert bill["requests"] == 1  # billed once: a billed 200 is never retried
        assert info.value.request_id in bill["billed_request_ids"]
        # body unreadable: charged at the worst-case estimate, which covers the bill
        assert client.budget.spent >= Decimal(bill["usd"])


def test_price_table_knows_the_local_servers_defaults() -> None:
    from distill.server.config import Pricing

    local = PriceTable.default().lookup("local", "pseudo-clip")
    server_default = Pricing()
    assert local.usd_per_image == server_default.usd_per_image
    assert local.usd_per_1m_input_tokens == server_default.usd_per_1m_input_tokens
    assert local.usd_per_1m_output_tokens == server_default.usd_per_1m_output_tokens


async def test_a_requested_dimension_rejects_a_wrong_first_answer() -> None:
    """``output_dimension`` says the vector length before any answer: a fresh cache's first
    answer at half of it is rejected (billed, not cached), and the right ones are taken."""
    cache = MemoryCache()
    params = {"output_dimension": 256}

    def teacher(faults: Faults) -> ServerThread:
        config = ServerConfig(token=SecretStr(TOKEN), faults=faults)
        return ServerThread(create_app(config, HashBackend(dim=512)))

    with teacher(Faults(wrong_dim=1.0)) as s:
        async with TeacherClient(
            "local:hash",
            api_key=TOKEN,
            base_url=s.base_url,
            cache=cache,
            params=params,
            retry=RetryPolicy(max_attempts=1),
        ) as client:
            with pytest.raises(ResponseValidationError, match="128 differs from the 256"):
                await client.embed_images(make_image_requests(2))
        assert billing(s)["requests"] == 1 and len(cache) == 0
    with teacher(Faults()) as s:
        async with TeacherClient(
            "local:hash", api_key=TOKEN, base_url=s.base_url, cache=cache, params=params
        ) as client:
            got = await client.embed_images(make_image_requests(2))
    assert [r.dim for r in got] == [256, 256] and len(cache) == 2

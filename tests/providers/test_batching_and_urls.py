"""Batch limits and base URLs read from the providers' own SDKs and specs (issue 15 items
4, 5 and 7): Voyage ``al-`` keys go to MongoDB Atlas's endpoint, Nomic text batches are
at most 10, OpenAI embedding requests stay under 300,000 tokens as well as 2,048 inputs."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from tests.providers.conftest import nosleep, vector
from vlmclient import Price, TeacherClient, TextEmbeddingRequest
from vlmclient.providers import nomic, openai, voyage
from vlmclient.retry import RetryPolicy

PRICE = Price(usd_per_1m_input_tokens=Decimal("0.02"))


def _client(teacher: str, handler, *, api_key: str = "sk-test", **kw) -> TeacherClient:  # type: ignore[no-untyped-def]
    return TeacherClient(
        teacher,
        api_key=api_key,
        transport=httpx.MockTransport(handler),
        price=PRICE,
        retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        **kw,
    )


def _voyage_ok(seen: list[httpx.Request]):  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        n = len(json.loads(request.content)["inputs"])
        return httpx.Response(
            200,
            json={
                "data": [{"index": i, "embedding": vector(i)} for i in range(n)],
                "usage": {"text_tokens": 3 * n, "total_tokens": 3 * n},
            },
        )

    return handler


@pytest.mark.parametrize(
    ("key", "base_url", "host"),
    [
        ("al-atlas-key", None, "ai.mongodb.com"),
        ("pa-voyage-key", None, "api.voyageai.com"),
        ("al-atlas-key", "http://127.0.0.1:9999/v1", "127.0.0.1"),  # explicit URL wins
    ],
)
async def test_voyage_base_url_follows_the_key_prefix(
    key: str, base_url: str | None, host: str
) -> None:
    seen: list[httpx.Request] = []
    async with _client(
        "voyage:voyage-multimodal-3", _voyage_ok(seen), api_key=key, base_url=base_url
    ) as client:
        await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert seen[0].url.host == host
    assert seen[0].url.path.endswith("/v1/multimodalembeddings")


def test_voyage_atlas_url_matches_the_sdk_rule() -> None:
    assert voyage.ATLAS_BASE_URL == "https://ai.mongodb.com/v1"
    assert voyage.ATLAS_KEY_PREFIX == "al-"


async def test_nomic_sends_texts_in_batches_of_ten() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        texts = json.loads(request.content)["texts"]
        sizes.append(len(texts))
        return httpx.Response(
            200,
            json={
                "embeddings": [vector(i, 768) for i in range(len(texts))],
                "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
                "model": "nomic-embed-text-v1.5",
            },
        )

    texts = [TextEmbeddingRequest(text=f"a photo of class {i}") for i in range(25)]
    async with _client("nomic:nomic-embed-vision-v1.5", handler) as client:
        await client.embed_texts(texts)
    assert sorted(sizes) == [5, 10, 10]
    assert nomic.NOMIC.limit_for("nomic-embed-vision-v1.5", "text_embedding") == 10


async def test_openai_embedding_requests_stay_under_300k_tokens() -> None:
    """Before: 40 texts of 10 kB went in one request (400k tokens worst case, a 400)."""
    requests: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["input"]
        requests.append(inputs)
        tokens = sum(len(t.encode()) for t in inputs)  # worst case: a token per byte
        if tokens > openai.MAX_EMBEDDING_REQUEST_TOKENS:
            return httpx.Response(400, json={"error": {"message": "too many tokens"}})
        return httpx.Response(
            200,
            json={
                "data": [{"index": i, "embedding": vector(i)} for i in range(len(inputs))],
                "usage": {"prompt_tokens": tokens // 4, "total_tokens": tokens // 4},
            },
        )

    texts = [TextEmbeddingRequest(text=f"{i:05d}" + "x" * 9_995) for i in range(40)]
    async with _client("openai:text-embedding-3-small", handler) as client:
        results = await client.embed_texts(texts)
    assert len(results) == 40 and len(requests) == 2
    assert all(sum(len(t) + 1 for t in r) <= 300_000 for r in requests)


async def test_openai_short_texts_still_go_2048_per_request() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        n = len(json.loads(request.content)["input"])
        sizes.append(n)
        return httpx.Response(
            200,
            json={
                "data": [{"index": i, "embedding": vector(i % 7)} for i in range(n)],
                "usage": {"prompt_tokens": n, "total_tokens": n},
            },
        )

    texts = [TextEmbeddingRequest(text=f"class {i}") for i in range(2100)]
    async with _client("openai:text-embedding-3-small", handler) as client:
        await client.embed_texts(texts)
    assert sorted(sizes) == [52, 2048]

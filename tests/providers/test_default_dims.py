"""A model whose default vector length the provider documents (embed-v4.0: 1536,
multimodalembedding@001: 1408, the Nomic v1.5 pair: 768) is held to it from a fresh
cache's first answer on, without any dimension param (every CLI run): a wrong-length
first answer used to become the rule, and every right answer after it was rejected."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from cache import MemoryCache
from tests.providers.conftest import image, vector
from tests.providers.loopback import Loopback, loopback
from vlmclient import (
    ImageEmbeddingRequest,
    Price,
    ResponseValidationError,
    TeacherClient,
    TextEmbeddingRequest,
)

PRICE = Price(
    usd_per_image=Decimal("0.001"),
    usd_per_1m_input_tokens=Decimal("0.1"),
    usd_per_1m_image_tokens=Decimal("0.47"),
)


def fresh_client(teacher: str, server: Loopback, **kw: Any) -> TeacherClient:
    """The real client on a fresh in-memory cache, sending to the loopback ``server``."""
    return TeacherClient(
        teacher, api_key="k", base_url=server.url, price=PRICE, cache=MemoryCache(), **kw
    )


def cohere(rows: list[list[float]]) -> dict[str, Any]:
    return {"id": "r", "embeddings": {"float": rows}, "meta": {"billed_units": {"images": 1}}}


def vertex(rows: list[list[float]]) -> dict[str, Any]:
    return {"predictions": [{"imageEmbedding": row} for row in rows]}


def nomic(rows: list[list[float]]) -> dict[str, Any]:
    return {"embeddings": rows, "usage": {"total_tokens": 1}}


CASES = [
    ("cohere:embed-v4.0", 1536, cohere, "", {}),
    (
        "vertex:multimodalembedding@001",
        1408,
        vertex,
        "/v1",
        {"project": "p-1", "location": "us-central1"},
    ),
    ("nomic:nomic-embed-vision-v1.5", 768, nomic, "", {}),
]


@pytest.mark.parametrize(("teacher", "default", "reply", "suffix", "params"), CASES)
async def test_a_wrong_length_first_answer_is_rejected_without_a_dimension_param(
    teacher: str, default: int, reply: Any, suffix: str, params: dict[str, Any]
) -> None:
    cache = MemoryCache()
    dims = [default // 2, default]  # the first answer is half the model's length

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, reply([vector(len(dims), dims.pop(0))])

    with loopback(respond) as server:
        async with TeacherClient(
            teacher,
            api_key="k",
            base_url=server.url + suffix,
            price=PRICE,
            cache=cache,
            params=params,
            rpm=60_000,
        ) as client:
            request = [ImageEmbeddingRequest(image=image(seed=1))]
            with pytest.raises(
                ResponseValidationError,
                match=f"dimension {default // 2} differs from the {default} {teacher} "
                "answers with by default",
            ):
                await client.embed_images(request)
            assert len(cache) == 0 and client.billed_malformed == 1
            assert client.budget.spent > 0  # the wrong answer was billed, and recorded
            [got] = await client.embed_images(request)  # the right one is taken
        assert got.dim == default and len(cache) == 1 and len(server.requests) == 2


async def test_a_dimension_param_still_wins_over_the_default() -> None:
    """output_dimension=256 asks for 256: that length is taken, 1536 is refused."""
    dims = [1536, 256]

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, cohere([vector(len(dims), dims.pop(0))])

    with loopback(respond) as server:
        params = {"output_dimension": 256}
        async with fresh_client("cohere:embed-v4.0", server, params=params) as client:
            with pytest.raises(ResponseValidationError, match="the 256 the request's params"):
                await client.embed_texts([TextEmbeddingRequest(text="a cat")])
            [got] = await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert got.dim == 256


async def test_a_model_without_a_documented_default_still_learns_from_its_answers() -> None:
    """embed-english-v3.0's length is not in our reference: its first answer sets it."""

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, cohere([vector(0, 12)])

    with loopback(respond) as server:
        async with fresh_client("cohere:embed-english-v3.0", server) as client:
            [got] = await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert got.dim == 12


async def test_nomic_texts_expect_768_from_the_paired_text_model_only() -> None:
    """Texts go to nomic-embed-text-v1.5 (768-d); a ``text_model`` we know no length of
    is not held to one."""
    answers = [[vector(0, 384)], [vector(1, 384)]]

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, nomic(answers.pop(0))

    text = [TextEmbeddingRequest(text="a cat")]
    with loopback(respond) as server:
        async with fresh_client("nomic:nomic-embed-vision-v1.5", server) as client:
            with pytest.raises(ResponseValidationError, match="384 differs from the 768"):
                await client.embed_texts(text)
        own_text_model = {"text_model": "my-small-text-model"}
        async with fresh_client(
            "nomic:nomic-embed-vision-v1.5", server, params=own_text_model
        ) as client:
            [got] = await client.embed_texts(text)
    assert got.dim == 384

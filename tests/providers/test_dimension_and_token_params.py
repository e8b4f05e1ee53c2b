"""Jina's ``dimensions`` (64..1024 for jina-clip-v2, reference notes /v1/embeddings) and
Cohere's ``max_tokens`` (/v2/embed: the tokens embedded per input, a positive integer)
are checked before anything is sent.

Until 2026-12-07 any value was sent: ``dimensions: 32`` or ``2048`` on jina-clip-v2, or
``max_tokens: 0`` on Cohere, was a 400 from the provider on every request, after its
cost had been reserved. Now such a value is a ConfigurationError naming the param, and
nothing is reserved or sent; values in range are sent as given.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import vector
from tests.providers.loopback import loopback
from vlmclient import ConfigurationError, Price, TeacherClient, TextEmbeddingRequest

PRICE = Price(usd_per_1m_input_tokens=Decimal("0.05"))


def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Jina and Cohere as they answer: a 400 for a value out of range, else vectors."""
    if path.endswith("/v2/embed"):
        asked = body.get("max_tokens", 1)
        if not isinstance(asked, int) or isinstance(asked, bool) or asked < 1:
            return 400, {"message": "invalid request: max_tokens must be positive"}
        rows = [vector(i, 1536) for i in range(len(body["texts"]))]
        return 200, {"id": "e", "embeddings": {"float": rows},
                     "meta": {"billed_units": {"input_tokens": 5}}}
    dim = body.get("dimensions", 1024)
    if not isinstance(dim, int) or isinstance(dim, bool) or not 64 <= dim <= 1024:
        return 400, {"detail": "dimensions must be between 64 and 1024"}
    data = [{"object": "embedding", "index": i, "embedding": vector(i, dim)}
            for i in range(len(body["input"]))]
    return 200, {"object": "list", "data": data, "model": body["model"],
                 "usage": {"total_tokens": 5, "prompt_tokens": 5}}


def _client(url: str, teacher: str, params: dict[str, Any]) -> TeacherClient:
    return TeacherClient(
        teacher, api_key="test-key-123", base_url=url, price=PRICE, params=params, rpm=60_000
    )


BAD = [
    ("jina:jina-clip-v2", {"dimensions": 32}, "dimensions"),
    ("jina:jina-clip-v2", {"dimensions": 2048}, "dimensions"),
    ("jina:jina-clip-v2", {"dimensions": 256.0}, "dimensions"),
    ("jina:jina-clip-v2", {"dimensions": True}, "dimensions"),
    ("cohere:embed-v4.0", {"max_tokens": 0}, "max_tokens"),
    ("cohere:embed-v4.0", {"max_tokens": -5}, "max_tokens"),
    ("cohere:embed-v4.0", {"max_tokens": "512"}, "max_tokens"),
    ("cohere:embed-v4.0", {"max_tokens": True}, "max_tokens"),
]


@pytest.mark.parametrize(("teacher", "params", "named"), BAD)
async def test_a_value_out_of_range_sends_nothing(
    teacher: str, params: dict[str, Any], named: str
) -> None:
    with loopback(respond) as server:
        async with _client(server.url, teacher, params) as client:
            with pytest.raises(ConfigurationError, match=named):
                await client.embed_texts([TextEmbeddingRequest(text="a cat")])
        assert client.budget.spent == 0 and client.budget.reserved == 0
    assert server.requests == []


async def test_values_in_range_are_sent_as_given() -> None:
    good = [
        ("jina:jina-clip-v2", {"dimensions": 64}, "dimensions", 64),
        ("jina:jina-clip-v2", {"dimensions": 1024}, "dimensions", 1024),
        ("cohere:embed-v4.0", {"max_tokens": 1}, "max_tokens", 1536),
        ("cohere:embed-v4.0", {"max_tokens": 2048}, "max_tokens", 1536),
    ]
    with loopback(respond) as server:
        for teacher, params, name, dim in good:
            async with _client(server.url, teacher, params) as client:
                [got] = await client.embed_texts([TextEmbeddingRequest(text="a cat")])
            assert got.dim == dim
            assert server.bodies[-1][name] == params[name]

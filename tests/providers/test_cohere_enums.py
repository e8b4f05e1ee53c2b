"""Cohere ``/v2/embed`` params with a fixed set of values (pinned cohere-openapi e814c8a1:
``truncate`` enum ``NONE|START|END``; ``embedding_types[]`` items ``EmbeddingType``:
float, int8, uint8, binary, ubinary, base64).

Until 2026-12-07 the adapter read ``truncate`` in any case (``"none"`` set the per-input
limit of ``NONE``) but sent it as written, which the spec refuses, and sent any
``embedding_types`` entry: every request of the run came back a 400, item after item.
Now ``truncate`` goes in the spec's spelling and a value outside either set is refused
before anything is sent or reserved, as a wrong ``output_dimension`` is.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import vector
from tests.providers.loopback import loopback
from vlmclient import ConfigurationError, Price, TeacherClient, TextEmbeddingRequest

TRUNCATE = ("NONE", "START", "END")
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")
EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")
PRICE = Price(usd_per_1m_input_tokens=Decimal("0.12"), usd_per_1m_image_tokens=Decimal("0.47"))


def embed(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Answers as the spec says: 400 ``{message, id}`` for a value outside its enums."""
    if (
        body.get("truncate", "END") not in TRUNCATE
        or body.get("input_type") not in INPUT_TYPES
        or any(t not in EMBEDDING_TYPES for t in body.get("embedding_types", []))
    ):
        return 400, {"id": "e-1", "message": "invalid request: bad enum value"}
    n = len(body["texts"])
    return 200, {
        "id": "r-1",
        "embeddings": {"float": [vector(i, 1536) for i in range(n)]},
        "texts": body["texts"],
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 3 * n}},
        "response_type": "embeddings_by_type",
    }


def _client(url: str, params: dict[str, Any]) -> TeacherClient:
    return TeacherClient(
        "cohere:embed-v4.0", api_key="k", base_url=url, price=PRICE, params=params, rpm=60_000
    )


async def test_truncate_in_any_case_is_sent_as_the_spec_spells_it() -> None:
    with loopback(embed) as server:
        for given in ("none", "Start", "END"):
            async with _client(server.url, {"truncate": given}) as client:
                [got] = await client.embed_texts([TextEmbeddingRequest(text=f"cat {given}")])
            assert got.vector.tolist() == pytest.approx(vector(0, 1536))
    assert [b["truncate"] for b in server.bodies] == ["NONE", "START", "END"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"truncate": "middle"}, "truncate"),
        ({"truncate": 0}, "truncate"),
        ({"embedding_types": ["float32"]}, "embedding_types"),
        ({"embedding_types": "int4"}, "embedding_types"),
        ({"input_type": "query"}, "input_type"),
        ({"input_type": None}, "input_type"),
    ],
)
async def test_a_value_outside_the_spec_sends_nothing(params: dict[str, Any], named: str) -> None:
    with loopback(embed) as server:
        async with _client(server.url, params) as client:
            with pytest.raises(ConfigurationError, match=named):
                await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert server.requests == []
    assert client.budget.spent == 0 and client.budget.reserved == 0

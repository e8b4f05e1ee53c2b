"""Embedding rows are placed by their ``index``, which the pinned OpenAI spec defines as
the position of the input (``Embedding.index``: "The index of the embedding in the list
of embeddings"); Voyage and Jina answer the same shape.

A gateway or OpenAI-compatible server that splits a batch and joins the answers without
renumbering them sends ``index`` 0, 1, 0, 1 for four inputs. The parser sorted by index
and kept them: the second input got the third input's vector, cached for good, with
nothing said. Indices that are not each a distinct input position are now a billed,
never cached, malformed answer. As before, rows without any ``index`` keep their order,
and a row without one among rows with one is index 0 (proto3 JSON leaves zeros out:
Gemini's OpenAI-compatible endpoint answers ``[{...}, {"index": 1, ...}]``).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cache import ResponseCache, SpendLedger
from tests.providers.conftest import loopback_client, vector
from tests.providers.loopback import loopback
from vlmclient import Price, ResponseValidationError, TextEmbeddingRequest, Usage

PRICE = Price(usd_per_1m_input_tokens=Decimal("0.02"))
TEXTS = ["a cat", "a dog", "a bird", "a fish"]


def answering(indices: list[int | None]):  # type: ignore[no-untyped-def]
    """An ``/embeddings`` answer whose row ``i`` (the vector of input ``i``) has
    ``indices[i]`` as its ``index`` (None: no index field)."""

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        rows = []
        for i, index in enumerate(indices):
            row: dict[str, Any] = {"object": "embedding", "embedding": vector(i)}
            if index is not None:
                row["index"] = index
            rows.append(row)
        return 200, {
            "object": "list",
            "data": rows,
            "model": body["model"],
            "usage": {"prompt_tokens": 12, "total_tokens": 12},
        }

    return respond


@pytest.mark.parametrize(
    "indices",
    [[0, 1, 0, 1], [1, 1, 2, 3], [0, 1, 2, 4], [-1, 0, 1, 2]],
    ids=["two-sub-batches", "repeated", "past-the-end", "negative"],
)
async def test_indices_that_are_not_input_positions_are_refused(
    tmp_path: Path, indices: list[int]
) -> None:
    items = [TextEmbeddingRequest(text=t) for t in TEXTS]
    with (
        loopback(answering(indices)) as server,
        ResponseCache(tmp_path / "cache") as cache,
        SpendLedger(tmp_path / "ledger.jsonl") as ledger,
    ):
        client = loopback_client(
            "openai:text-embedding-3-small",
            server,
            "sk-test-indices",
            price=PRICE,
            cache=cache,
            ledger=ledger,
        )
        async with client:
            with pytest.raises(ResponseValidationError, match="index"):
                await client.embed_texts(items)
        assert len(server.requests) == 1
        assert len(cache) == 0  # nothing misplaced is kept: a rerun asks again
        assert client.budget.spent == PRICE.cost(Usage(input_tokens=12))  # billed as said
    [record] = SpendLedger.read(tmp_path / "ledger.jsonl")
    assert record.outcome == "malformed"


@pytest.mark.parametrize(
    ("indices", "order"),
    [
        ([0, 1, 2, 3], [0, 1, 2, 3]),
        ([2, 0, 3, 1], [1, 3, 0, 2]),  # out of order: placed by index
        ([None, None, None, None], [0, 1, 2, 3]),  # no index: in the order sent
        # proto3 JSON leaves a 0 out (Gemini's OpenAI-compatible endpoint does)
        ([None, 1, 2, 3], [0, 1, 2, 3]),
        ([2, None, 3, 1], [1, 3, 0, 2]),
    ],
    ids=["in-order", "shuffled", "no-index", "zero-left-out", "zero-left-out-shuffled"],
)
async def test_rows_are_placed_by_their_index(indices: list[int | None], order: list[int]) -> None:
    items = [TextEmbeddingRequest(text=t) for t in TEXTS]
    with loopback(answering(indices)) as server:
        async with loopback_client(
            "openai:text-embedding-3-small", server, "sk-test-indices", price=PRICE
        ) as client:
            results = await client.embed_texts(items)
    for result, row in zip(results, order, strict=True):
        assert result.vector.tolist() == pytest.approx(vector(row))

"""A Voyage answer whose ``usage`` is what the pinned spec's response schema lists: only
``total_tokens`` (the API itself also sends ``text_tokens`` and ``image_pixels``, as the
spec's example shows, but a gateway or a stand-in that follows the schema may not).

For a request holding images such an answer does not say the pixels it billed. The
adapter used to fill them in from our own estimate and record the charge as if Voyage had
reported it, so the ledger's "compare with the bill" flag never showed (the same as the
Cohere ``{"images": 1}`` answer, docs/reliability.md §19). Now the unreported units are
left unreported: the request is charged its reservation, marked ``estimated``.

A loopback server answers like ``/v1/multimodalembeddings`` and refuses (400, as Voyage
does) any body the spec's request schema rejects.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import jsonschema
import pytest

from tests.conftest import ListLedger
from tests.providers.conftest import image, nosleep, validator_for, voyage_doc
from tests.providers.loopback import loopback
from vlmclient import (
    Budget,
    ImageEmbeddingRequest,
    MixedEmbeddingRequest,
    TeacherClient,
    TextEmbeddingRequest,
)
from vlmclient.retry import RetryPolicy

REQUEST = validator_for(voyage_doc(), "#/request")


def total_only(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    try:
        REQUEST.validate(body)
    except jsonschema.ValidationError as exc:
        return 400, {"detail": exc.message}
    if not path.endswith("/multimodalembeddings"):
        return 404, {"detail": "Not Found"}
    n = len(body["inputs"])
    return 200, {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": [0.5] * 8} for i in range(n)],
        "model": body["model"],
        "usage": {"total_tokens": 3576 * n},
    }


def _client(url: str, ledger: ListLedger) -> TeacherClient:
    return TeacherClient(
        "voyage:voyage-multimodal-3",
        api_key="pa-test-total-only",
        base_url=url,
        budget=Budget("1.00"),
        ledger=ledger,
        retry=RetryPolicy(max_attempts=1, sleep=nosleep),
    )


@pytest.mark.parametrize("kind", ["image", "mixed"])
async def test_images_without_reported_pixels_are_charged_the_reservation(kind: str) -> None:
    ledger = ListLedger()
    with loopback(total_only) as server:
        async with _client(server.url, ledger) as client:
            if kind == "image":
                await client.embed_images([ImageEmbeddingRequest(image=image((640, 480)))])
            else:
                parts = ("a cat", image((640, 480)))
                await client.embed_mixed([MixedEmbeddingRequest(parts=parts)])
    assert len(server.requests) == 1
    [rec] = ledger.records
    assert rec.estimated is True
    assert Decimal(rec.cost_usd) == Decimal(rec.reserved_usd) == client.budget.spent
    assert client.stats.estimated == 1 and client.overrun is None


async def test_texts_are_charged_their_total_tokens() -> None:
    """Texts alone: ``total_tokens`` is the text tokens, what Voyage billed."""
    ledger = ListLedger()
    with loopback(total_only) as server:
        async with _client(server.url, ledger) as client:
            await client.embed_texts([TextEmbeddingRequest(text="a photo of a cat")])
    [rec] = ledger.records
    assert rec.estimated is False
    assert Decimal(rec.cost_usd) == 3576 * Decimal("0.12") / 1_000_000

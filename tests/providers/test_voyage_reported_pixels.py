"""Voyage reports the image pixels it billed (``usage.image_pixels``). Our estimate bounds
each image at 2 M pixels (the price list's cap; we send images at most 1414 px on the long
edge), but a report above that is what the provider says it billed: it is charged as
reported and shows as an overrun of its full size. Before 2026-12-05 the report was
clamped down to 2 M pixels per image, so a request reported at 10 M pixels ($0.006) was
recorded at $0.0012 and its overrun shown as 1.00x. A loopback server answers like
Voyage's ``/v1/multimodalembeddings``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import ListLedger
from tests.providers.conftest import image, nosleep
from tests.providers.loopback import loopback
from vlmclient import Budget, ImageEmbeddingRequest, TeacherClient
from vlmclient.prices import PriceTable
from vlmclient.retry import RetryPolicy

PRICE = PriceTable.default().lookup("voyage", "voyage-multimodal-3")


def reporting(pixels: int) -> Any:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        n = len(body["inputs"])
        return 200, {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.5] * 8} for i in range(n)
            ],
            "model": body["model"],
            "usage": {"text_tokens": 0, "image_pixels": pixels, "total_tokens": pixels // 560},
        }

    return respond


@pytest.mark.parametrize("reported", [10_000_000, 60_000])
async def test_reported_pixels_are_charged_as_reported(reported: int) -> None:
    records = ListLedger()
    with loopback(reporting(reported)) as server:
        client = TeacherClient(
            "voyage:voyage-multimodal-3",
            api_key="pa-test-pixels",
            base_url=server.url,
            budget=Budget("1.00"),
            ledger=records,
            retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        )
        async with client:
            [vec] = await client.embed_images([ImageEmbeddingRequest(image=image((640, 480)))])
    assert len(vec.vector) == 8
    billed = reported * PRICE.usd_per_1b_pixels / Decimal(10**9)
    [rec] = records.records
    assert Decimal(rec.cost_usd) == billed == client.budget.spent
    if reported > 640 * 480:  # above what we reserved: an overrun of its full size
        assert client.overrun is not None
        assert client.overrun.spent == billed
        assert client.budget.overrun_usd == billed - client.overrun.reserved
    else:
        assert client.overrun is None

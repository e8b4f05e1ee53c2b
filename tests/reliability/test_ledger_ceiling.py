"""A usage block that prices one request above what any call costs ($1,000,000, the
ledger's ceiling) is an overrun, and what the ledger says of it must be what every reader
of the ledger counts. Before 2026-12-05 the amount was written as reported, and every
reader skipped the line as damage: the ledger total, `report` and a shared budget rebuilt
from the ledger showed $0 for it, so a later run saw the money as unspent."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from cache import Coordinator, SpendLedger
from cache.ledger import MAX_RECORD_USD, read_ledger, totals
from tests.providers.loopback import loopback
from vlmclient import Budget, Image, ImageEmbeddingRequest, RetryPolicy, TeacherClient

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)


def huge_bill(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    # 2e10 images at the local teacher's $0.0001: $2,000,000 for one request
    return 200, {"id": "huge", "embeddings": {"float": [[0.5] * 8]},
                 "meta": {"billed_units": {"images": 20_000_000_000}}}  # fmt: skip


async def test_a_bill_above_the_ledger_ceiling_is_counted_by_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with loopback(huge_bill) as server, SpendLedger(path) as ledger:
        async with TeacherClient(
            "local:hash", api_key="sk-ceiling-test-123", base_url=server.url, ledger=ledger,
            budget=Budget("1"), retry=RetryPolicy(max_attempts=1),
        ) as client:  # fmt: skip
            await client.embed_images(
                [ImageEmbeddingRequest(image=Image(data=PNG, media_type="image/png"))]
            )
    assert client.overrun is not None  # shown, and the run stops
    contents = read_ledger(path)
    assert contents.problems == []
    assert totals(contents.records).spent_usd == MAX_RECORD_USD == client.budget.spent
    with Coordinator(tmp_path / "coordination.db", ledger_path=path) as coord:
        assert coord.spend("local:hash").settled == MAX_RECORD_USD

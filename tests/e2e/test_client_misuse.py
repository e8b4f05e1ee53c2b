"""The library API used carelessly, against the real local teacher on 127.0.0.1: a client
closed while calls wait, items of the wrong type, parameters JSON cannot carry."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from cache import SpendLedger, totals
from tests.e2e.conftest import TOKEN, local_teacher
from vlmclient import Budget, TeacherClient, TextEmbeddingRequest


async def test_closing_a_client_while_calls_wait_for_a_slot_charges_only_what_was_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """aclose() while one request is on the wire and four wait for a slot: the four were
    never sent, so they are refused (released), not charged as possibly billed."""
    with (
        local_teacher(monkeypatch, latency_ms=300) as teacher,
        SpendLedger(tmp_path / "ledger.jsonl") as ledger,
    ):
        client = TeacherClient(
            "local:hash", api_key=TOKEN, base_url=teacher.url, budget=Budget("1.00"),
            ledger=ledger, concurrency=1, batch_size=1,
        )  # fmt: skip
        calls = [
            asyncio.ensure_future(client.embed_texts([TextEmbeddingRequest(text=f"t{i}")]))
            for i in range(5)
        ]
        while client.stats.requests_sent == 0:
            await asyncio.sleep(0.01)
        await client.aclose()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        billed = teacher.billing()["requests"]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert billed == 1 and len(refused) == 4
    assert all(isinstance(o, RuntimeError) and "closed" in str(o) for o in refused)
    recorded = totals(SpendLedger.read(tmp_path / "ledger.jsonl"))
    assert recorded.requests == billed and "cancelled" not in recorded.failures
    assert client.budget.reserved == 0 and client.stats.charged_no_answer == 0
    assert client.budget.spent == recorded.spent_usd > Decimal(0)

"""A failing ``on_progress`` given to the labelling calls by a library caller (or any
error in one of their workers) stops the others before the call raises: nothing is sent,
or billed unrecorded, after it returned."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from cache import ResponseCache, SpendLedger
from distill.data import scan
from distill.labelfree.pseudolabel import answer_labels, embedding_labels
from tests.e2e.conftest import local_teacher
from tests.e2e.test_harvest_streaming import ledger_spent
from vlmclient import Budget, TeacherClient


class Broken(Exception):
    pass


def _progress(done: int) -> None:
    if done >= 20:
        raise Broken("stdout is gone")


@pytest.mark.parametrize("call", ["answer", "embed"])
def test_a_failing_progress_callback_leaves_no_request_running_unrecorded(
    monkeypatch: pytest.MonkeyPatch, digits_data: Path, tmp_path: Path, call: str
) -> None:
    """``answer_labels`` gathered its workers: one raising (here its progress callback)
    made the call raise while the others went on sending; the caller then closed its
    ledger under them: "SPEND NOT RECORDED". Now the others are cancelled and waited for
    (each request in flight recorded at its reservation) before the call raises."""
    ds = scan(digits_data)
    with local_teacher(monkeypatch, latency_ms=100) as teacher:

        async def go() -> None:
            with (
                ResponseCache(tmp_path / "responses") as rc,
                SpendLedger(tmp_path / "ledger.jsonl") as ledger,
            ):
                async with TeacherClient(
                    "local:hash", base_url=teacher.url, cache=rc, ledger=ledger,
                    budget=Budget("1"), concurrency=8, batch_size=2,
                ) as client:  # fmt: skip
                    if call == "answer":
                        await answer_labels(ds, client, ds.class_names, on_progress=_progress)
                    else:
                        await embedding_labels(ds, client, ds.class_names, on_progress=_progress)

        with pytest.raises(Broken):
            asyncio.run(go())
        bill = teacher.billing()
    billed = Decimal(bill["usd"])
    assert billed > 0
    assert ledger_spent(tmp_path) >= billed  # every billed request is in the ledger
    assert bill["requests"] < len(ds.samples) // 2  # nothing more was bought after it

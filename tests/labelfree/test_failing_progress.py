"""A failing ``on_progress`` given to the labelling calls by a library caller (or any
error in one of their workers) stops the others before the call raises: nothing is sent,
or billed unrecorded, after it returned."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from distill.data import scan
from distill.labelfree.pseudolabel import answer_labels, embedding_labels
from tests.e2e.conftest import ledger_spent
from tests.e2e.test_harvest_streaming import raising_run
from vlmclient import TeacherClient


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

    async def work(client: TeacherClient) -> None:
        if call == "answer":
            await answer_labels(ds, client, ds.class_names, on_progress=_progress)
        else:
            await embedding_labels(ds, client, ds.class_names, on_progress=_progress)

    bill = raising_run(Broken, monkeypatch, tmp_path, work)
    billed = Decimal(bill["usd"])
    assert billed > 0
    assert ledger_spent(tmp_path) >= billed  # every billed request is in the ledger
    assert bill["requests"] < len(ds.samples) // 2  # nothing more was bought after it

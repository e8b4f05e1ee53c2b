"""SharedBudget: the run cap and the shared (ledger) cap, and failing closed on money."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cache import LedgerRecord, SpendLedger
from cache.coordination import Coordinator
from vlmclient import BudgetExceededError, SharedBudget, SpendRecordError

TEACHER = "local:hash"


def coordinator(tmp_path: Path) -> Coordinator:
    return Coordinator(tmp_path / "coordination.db", ledger_path=tmp_path / "ledger.jsonl")


def test_the_cap_counts_what_the_ledger_already_records(tmp_path: Path) -> None:
    with SpendLedger(tmp_path / "ledger.jsonl") as ledger:
        ledger.record(LedgerRecord("local", "hash", "image_embedding", 8, "0.70"))
    with coordinator(tmp_path) as c:
        budget = SharedBudget(c, TEACHER, total=Decimal("1"))
        assert budget.remaining == Decimal("0.30")
        with pytest.raises(BudgetExceededError, match=r"ledger records \$0\.70"):
            budget.reserve(Decimal("0.31"))
        budget.settle(budget.reserve(Decimal("0.30")), Decimal("0.25"))
        assert (budget.spent, budget.ledger_spent) == (Decimal("0.25"), Decimal("0.95"))


def test_the_run_cap_applies_on_top_of_the_shared_cap(tmp_path: Path) -> None:
    with coordinator(tmp_path) as c:
        budget = SharedBudget(c, TEACHER, total=Decimal("10"), usd=Decimal("0.5"))
        budget.settle(budget.reserve(Decimal("0.4")), Decimal("0.4"))
        assert budget.remaining == Decimal("0.1")
        with pytest.raises(BudgetExceededError, match="--run-budget"):
            budget.reserve(Decimal("0.2"))
        # a refused reservation holds nothing, here or in the shared total
        assert budget.view().reserved == 0 and budget.requests == 1


def test_no_reservation_without_the_shared_total(tmp_path: Path) -> None:
    c = coordinator(tmp_path)
    budget = SharedBudget(c, TEACHER, total=Decimal("1"))
    c.close()
    with pytest.raises(SpendRecordError, match="shared budget"):
        budget.reserve(Decimal("0.1"))
    assert budget.reserved == 0 and budget.requests == 0
    assert c.claim(["k"]) == {"k"}  # leases fail open: at worst a duplicate, never a stall

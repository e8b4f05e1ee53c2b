"""kill -9 at random moments (seeded), each followed by a resume, via the benchmark's runner.

tests/e2e/test_kill9.py kills twice at fixed ledger counts; this kills three times at
random moments once buying has started, and checks the claims of docs/reliability.md:
per kill, at most ``concurrency`` billed requests are missing from the ledger; items paid
twice are at most the items in flight at the kills; the ledger (which charges a killed run's
open reservations at their worst case, outcome ``orphaned``) is never below the server's
bill, and without those charges, plus the missing requests, is the bill to the cent; the
last run completes.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from benchmarks.crash_resume import run


@pytest.mark.slow
def test_three_random_kills_lose_and_double_pay_only_what_was_in_flight(tmp_path: Path) -> None:
    # 480 images: at 40 ms a request, 4 of 2 images in flight, a run buys at most 200
    # images a second, so the three kills (at most 0.8 s in) always land mid-harvest
    r = run(kills=3, seed=11, per_class=12, concurrency=4, batch_size=2, workdir=tmp_path)
    assert len(r.kills) == 3 and r.final_exit == 0
    for kill in r.kills:
        assert 0 <= kill.missing_from_ledger <= r.concurrency, kill
    assert r.missing_from_ledger == sum(k.missing_from_ledger for k in r.kills)
    assert 0 <= r.paid_twice_items <= len(r.kills) * r.concurrency * r.batch_size
    assert 0 <= r.rebought_after_ok <= r.paid_twice_items
    ledger, orphaned = Decimal(r.ledger_usd), Decimal(r.orphaned_usd)
    assert ledger - orphaned + Decimal(r.missing_usd) == Decimal(r.server_usd)
    assert ledger >= Decimal(r.server_usd)  # the ledger is never below the bill
    assert orphaned >= Decimal(r.missing_usd)

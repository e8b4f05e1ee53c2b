"""The demo's plots come after all its training: a damaged ledger line must not end the
demo in a traceback there (the ledger is read as every other reader reads it)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from cache import LedgerRecord, SpendLedger
from cache.layout import LEDGER_FILE
from distill.demo import _plots
from distill.plots import plots_available

pytestmark = pytest.mark.skipif(not plots_available(), reason="matplotlib is not installed")


def test_a_torn_or_damaged_ledger_line_leaves_the_spend_plot_of_the_rest(tmp_path: Path) -> None:
    ledger = tmp_path / LEDGER_FILE
    with SpendLedger(ledger) as spend:
        for i in range(3):
            spend.record(LedgerRecord("local", "m", "image", 4, "0.0004", time=100.0 + i))
    with ledger.open("ab") as f:  # a line damaged in the middle, then a torn last one
        f.write(b"{not json\n" + json.dumps({"provider": "local"}).encode()[:9])
    made = _plots(tmp_path, {}, {}, Decimal("0.01"))
    assert made == [tmp_path / "spend.png"]
    assert (tmp_path / "spend.png").stat().st_size > 0

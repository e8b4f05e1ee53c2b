"""The demo's plots come after all its training: a damaged ledger line must not end the
demo in a traceback there (the ledger is read as every other reader reads it)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cache import LedgerRecord, SpendLedger
from cache.layout import LEDGER_FILE
from distill.demo import _plots
from distill.plots import plot_losses, plots_available

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


def _drawn_lines(monkeypatch: pytest.MonkeyPatch, logs: dict[str, Path], out: Path) -> list[Any]:
    """The loss lines ``plot_losses`` draws (the figure kept from ``plt.close``)."""
    import matplotlib.pyplot as plt

    figures: list[Any] = []
    real_close = plt.close

    def keep(fig: Any = None) -> None:
        figures.append(fig)
        real_close(fig)

    monkeypatch.setattr(plt, "close", keep)
    assert plot_losses(logs, out) == out and out.stat().st_size > 0
    return [line for fig in figures for ax in fig.axes for line in ax.get_lines()]


def test_a_loss_logged_at_one_step_is_drawn_with_a_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage of one logged step was a line through one point: nothing on the plot."""
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"stage": "erm", "step": 1, "ce": 2.3, "lr": 0.1}) + "\n")
    [line] = _drawn_lines(monkeypatch, {"erm": log}, tmp_path / "losses.png")
    assert len(line.get_xdata()) == 1 and line.get_marker() not in (None, "", "None", " ")


def test_log_rows_with_other_keys_or_no_stage_are_plotted_not_a_keyerror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loss term missing from some rows, or a row without `stage` (or `step`), raised
    KeyError and ended the plots."""
    log = tmp_path / "log.jsonl"
    rows = [
        {"stage": "align", "step": 1, "cos": 0.5},
        {"stage": "align", "step": 2, "cos": 0.4, "kd": 1.0},
        {"stage": "align", "step": 3, "kd": 0.9},
        {"step": 4, "cos": 0.3},  # no stage
        {"stage": "align", "cos": 0.2},  # no step
        ["not", "a", "row"],
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = {line.get_label(): line for line in _drawn_lines(
        monkeypatch, {"adip": log}, tmp_path / "losses.png")}  # fmt: skip
    assert list(lines["cos"].get_xdata()) == [1, 2]
    assert list(lines["kd"].get_xdata()) == [2, 3]

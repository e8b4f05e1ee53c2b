"""Plain progress lines (not a terminal): throttled, with done/total and an ETA."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from distill.cli.progress import PLAIN_EVERY_S, LiveProgress, TrainProgress
from distill.train.trainer import Progress


def test_plain_lines_are_throttled_and_carry_an_eta(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]
    out = Console(file=io.StringIO(), force_terminal=False)
    with LiveProgress("harvest", 100, out=out, clock=lambda: now[0]) as bar:
        for done in range(1, 51):
            now[0] += 0.5
            bar.update(done, f"hits {done}")
    lines = capsys.readouterr().out.splitlines()
    # updates every 0.5 s for 25 s: lines at 0.5, 5.5, 10.5, 15.5, 20.5 s, and one at the end
    assert PLAIN_EVERY_S == 5.0
    assert len(lines) == 6
    assert lines[0].startswith("harvest: 1/100 hits 1 · ETA ")
    assert lines[-1].startswith("harvest: 50/100 hits 50 · ETA 25s")


def _events(stage: str, total: int) -> list[Progress]:
    out = [Progress("start", stage, 0, total)]
    for step in range(1, total + 1):
        out.append(Progress("step", stage, step, total, {"loss": 1.0 / step}))
    out.append(Progress("eval", stage, total, total, {"loss": 0.5}, 0.812, 0.64))
    out.append(Progress("stage_end", stage, total, total, {}, 0.812, 0.64))
    return out


def test_train_progress_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    out = Console(file=io.StringIO(), force_terminal=False)
    with TrainProgress(out=out, clock=lambda: 0.0) as hook:
        for p in [*_events("align", 40), *_events("distill", 10)]:
            hook(p)
        hook(Progress("done", "final", 0, 0, {}, 0.8, 0.6))
    lines = capsys.readouterr().out.splitlines()
    # within 5 s: each stage's first update, then its last state when the stage ends
    assert lines == [
        "align: 0/40",
        "align: 40/40  · ID 0.81 OOD 0.64",
        "distill: 0/10",
        "distill: 10/10  · ID 0.81 OOD 0.64",
    ]


def test_train_progress_bars_on_a_terminal_name_method_and_stage() -> None:
    buf = io.StringIO()
    out = Console(file=buf, force_terminal=True, width=120)
    hook = TrainProgress("adip", out=out)
    for p in [*_events("align", 3), *_events("distill", 3)]:
        hook(p)
    hook.close()
    text = buf.getvalue()
    assert "adip/align" in text and "adip/distill" in text and "3/3" in text
    assert "ID 0.81 OOD 0.64" in text


def test_train_progress_says_a_stage_stopped_early(capsys: pytest.CaptureFixture[str]) -> None:
    """Align stopping at step 10 of 400: the bar said 400/400 (an audit saw 5001/5001 for
    198 steps run)."""
    out = Console(file=io.StringIO(), force_terminal=False)
    with TrainProgress(out=out, clock=lambda: 0.0) as hook:
        hook(Progress("start", "align", 0, 400))
        for step in range(1, 11):
            hook(Progress("step", "align", step, 400, {"loss": 1.0 / step}))
        hook(Progress("stage_end", "align", 10, 400, {}, 0.8, 0.6))
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("align: 10/400") and "stopped at step 10: its loss settled" in last

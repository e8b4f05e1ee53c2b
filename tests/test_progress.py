"""Plain progress lines (not a terminal): throttled, with done/total and an ETA."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from distill.cli.progress import PLAIN_EVERY_S, LiveProgress


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

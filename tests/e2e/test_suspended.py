"""A harvest suspended for longer than its --timeout (Ctrl-Z, a paused VM) and resumed keeps
the answers that arrived while it was stopped: nothing is bought twice."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache import SpendLedger
from distill.data import scan
from tests.e2e.conftest import LocalTeacher, local_teacher
from tests.e2e.test_kill9 import ROOT, harvest_cmd


@pytest.fixture
def slow_teacher(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalTeacher]:
    with local_teacher(monkeypatch, latency_ms=300) as teacher:
        yield teacher


@pytest.mark.slow
def test_a_harvest_stopped_longer_than_its_timeout_pays_nothing_twice(
    slow_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    """Before: on SIGCONT the timeout watchdog ran before the loop read the answers waiting
    in the sockets, failed the requests in flight as timeouts (charged), and the retries
    bought the same images again (6 runs of 8 in the audit)."""
    cache = tmp_path / "cache"
    n_images = len(scan(digits_data).samples)
    argv = harvest_cmd(slow_teacher, digits_data, cache)
    proc = subprocess.Popen(
        [*argv[:-1], argv[-1].replace("'--batch-size'", "'--timeout', '2', '--batch-size'")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    while slow_teacher.billing()["requests"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # requests are in flight (300 ms each)
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(4.0)  # twice the timeout: every answer is back, unread
    os.kill(proc.pid, signal.SIGCONT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    bill = slow_teacher.billing()
    assert bill["images"] == n_images, out  # every image bought once
    records = SpendLedger.read(cache / "ledger.jsonl")
    assert not [r for r in records if r.outcome == "timeout"]

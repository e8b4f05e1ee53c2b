"""kill -9 of a harvesting process: the ledger holds every request the client saw billed,
and a resumed run finishes paying only for what was missing (or in flight at the kill)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from cache import SpendLedger
from distill.data import scan
from tests.e2e.conftest import LocalTeacher, local_teacher

ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY = 4
BATCH = 2


@pytest.fixture
def slow_teacher(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalTeacher]:
    with local_teacher(monkeypatch, latency_ms=40) as teacher:
        yield teacher


def harvest_args(teacher: LocalTeacher, data: Path, cache: Path) -> list[str]:
    return [
        "harvest",
        str(data),
        "--teacher",
        "local:hash",
        "--base-url",
        teacher.url,
        "--cache",
        str(cache),
        "--budget",
        "5",
        "--concurrency",
        str(CONCURRENCY),
        "--batch-size",
        str(BATCH),
    ]


def harvest_cmd(teacher: LocalTeacher, data: Path, cache: Path) -> list[str]:
    args = harvest_args(teacher, data, cache)
    return [
        sys.executable,
        "-c",
        f"import sys; from distill.cli import main; sys.exit(main({args!r}))",
    ]


def ok_records(ledger: Path) -> int:
    try:
        return sum(
            1
            for line in ledger.read_text().splitlines()
            if '"outcome": "ok"' in line or '"outcome":"ok"' in line
        )
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_kill_9_loses_no_billed_record(
    slow_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    n_images = len(scan(digits_data).samples)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kills = 0
    for target in (8, 20):  # kill twice at different moments, then let it finish
        proc = subprocess.Popen(
            harvest_cmd(slow_teacher, digits_data, cache),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while (
            ok_records(cache / "ledger.jsonl") < target
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        billed = set(slow_teacher.billing()["billed_request_ids"])
        ledger_ids = {
            r.request_id for r in SpendLedger.read(cache / "ledger.jsonl") if r.outcome == "ok"
        }
        # everything the ledger says was bought, the server billed...
        assert ledger_ids <= billed
        # ...and the server billed nothing beyond what was in flight at the kills
        assert len(billed - ledger_ids) <= kills * CONCURRENCY
    assert kills >= 1
    done = subprocess.run(
        harvest_cmd(slow_teacher, digits_data, cache),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    bill = slow_teacher.billing()
    # paid twice at most for the requests in flight at each kill
    assert n_images <= bill["images"] <= n_images + kills * CONCURRENCY * BATCH
    report = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from distill.cli import main; main(['report', {str(cache)!r}, '--json'])",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(report.stdout)["items_cached"] == n_images + len(
        scan(digits_data).class_names
    )


RUN_CLI = """
from distill.cli import main
sys.exit(main(sys.argv[1:]))
"""  # after a script's patch: the harvest, with the arguments given to the script


def killed_by(script: str, teacher: LocalTeacher, data: Path, cache: Path) -> None:
    """A harvest of ``data`` into ``cache`` run under ``script`` (which patches the code to
    exit 137 at some point, as kill -9 there would): it must have died there."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = harvest_args(teacher, data, cache)
    died = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert died.returncode == 137, died.stdout + died.stderr


def harvest_again(
    teacher: LocalTeacher, data: Path, cache: Path
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(harvest_cmd(teacher, data, cache), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


DIE_AFTER_SETTLE = """
import os, sys
from cache.coordination import Coordinator
real, calls = Coordinator.settle, []

def settle_then_die(self, *args, **kwargs):
    out = real(self, *args, **kwargs)
    calls.append(1)
    if len(calls) == 5:  # killed right after the 5th bill was settled in the shared total
        os._exit(137)
    return out

Coordinator.settle = settle_then_die
""" + RUN_CLI


@pytest.mark.slow
def test_killed_between_the_shared_settle_and_the_ledger_line_the_ledger_stays_above_the_bill(
    slow_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    """A kill after a bill was settled in coordination.db and before its ledger line was
    written: the reservation was closed (so never charged as orphaned) and the line never
    written, and the ledger ended below the provider's bill. Seen in a random-kill run
    (tests/reliability/test_crash_resume.py) on a loaded machine."""
    cache = tmp_path / "cache"
    killed_by(DIE_AFTER_SETTLE, slow_teacher, digits_data, cache)
    done = harvest_again(slow_teacher, digits_data, cache)
    assert done.returncode == 0, done.stdout + done.stderr
    ledger = sum(Decimal(r.cost_usd) for r in SpendLedger.read(cache / "ledger.jsonl"))
    assert ledger >= Decimal(slow_teacher.billing()["usd"])  # never below the bill


DIE_AFTER_FIRST_LEDGER_LINE = """
import os, sys
from cache import SpendLedger
real = SpendLedger.record

def record_then_die(self, rec):
    real(self, rec)
    if rec.outcome == "ok":  # killed after the first paid line, before its answers are cached
        os._exit(137)

SpendLedger.record = record_then_die
""" + RUN_CLI


@pytest.mark.slow
def test_killed_before_its_first_answer_was_cached_the_next_run_resumes(
    slow_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    """A harvest killed between its first ledger line and its first cache write left a
    ledger that records paid items and an empty cache. The next harvest refused it as a
    lost database ("restore it, or pass --allow-rebuy") although nothing was lost but that
    one request's answers: a crashed run did not resume. It now resumes, says what it buys
    again, and pays again for no more than the items of that one line (and what was in
    flight at the kill)."""
    from cache import ResponseCache

    cache = tmp_path / "cache"
    killed_by(DIE_AFTER_FIRST_LEDGER_LINE, slow_teacher, digits_data, cache)
    lost = sum(r.items for r in SpendLedger.read(cache / "ledger.jsonl") if r.outcome == "ok")
    assert lost >= 1
    with ResponseCache(cache / "responses") as c:
        assert len(c) == 0  # the window: paid for, not cached
    done = harvest_again(slow_teacher, digits_data, cache)
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert f"{lost} items of local:hash" in said and "bought again" in said, said
    n_items = len(scan(digits_data).samples) + len(scan(digits_data).class_names)
    with ResponseCache(cache / "responses") as c:
        assert len(c) == n_items
    billed = slow_teacher.billing()
    assert billed["images"] + billed.get("texts", 0) <= n_items + CONCURRENCY * BATCH


def test_a_database_lost_after_such_a_kill_is_still_refused(
    slow_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    """The resume above is only for the database the killed run bought into: the same
    ledger beside a new, empty database (the old one lost or replaced) is refused as
    before, and nothing is sent."""
    import shutil

    cache = tmp_path / "cache"
    killed_by(DIE_AFTER_FIRST_LEDGER_LINE, slow_teacher, digits_data, cache)
    shutil.rmtree(cache / "responses")
    slow_teacher.reset()
    again = harvest_again(slow_teacher, digits_data, cache)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "its database was lost or replaced" in " ".join(again.stderr.split())
    assert slow_teacher.billing()["images"] == 0

"""Harvests of one cache folder running at the same time cooperate (issue 13, item 6).

Each test drives the real CLI (``python -m distill harvest`` in subprocesses) against the
project's local teacher server on 127.0.0.1, which reports what it billed. Two harvests
at once must buy each item once (leases on cache keys), share one ``--budget`` (open
reservations of every process are checked together), and a harvest whose partner is
killed with SIGKILL must finish the partner's leased items, with the ledger charging the
killed process's in-flight requests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from cache import ResponseCache, SpendLedger, totals, verify_cache
from distill.data import scan
from tests.e2e.conftest import TOKEN, LocalTeacher, local_teacher

ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY = 2
BATCH = 2
IN_FLIGHT_ITEMS = CONCURRENCY * BATCH  # what one process can have on the wire at once


@pytest.fixture
def slow_teacher(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalTeacher]:
    """Every request takes 60 ms, so two harvests started together overlap throughout."""
    with local_teacher(monkeypatch, latency_ms=60) as teacher:
        yield teacher


def harvest(teacher: LocalTeacher, data: Path, cache: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable, "-m", "distill", "harvest", str(data),
        "--teacher", "local:hash", "--base-url", teacher.url, "--cache", str(cache),
        "--batch-size", str(BATCH), "--concurrency", str(CONCURRENCY), *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def reset(teacher: LocalTeacher) -> None:
    httpx.post(
        teacher.url + "/admin/reset", headers={"Authorization": f"Bearer {TOKEN}"}
    ).raise_for_status()


def full_cost(teacher: LocalTeacher, data: Path, tmp_path: Path) -> Decimal:
    """What buying everything once costs (a harvest into a scratch cache), bill reset after."""
    proc = harvest(teacher, data, tmp_path / "scratch", "--budget", "10")
    out = proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, out
    usd = Decimal(teacher.billing()["usd"])
    reset(teacher)
    return usd


def ledger_usd(cache: Path) -> Decimal:
    return totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd


@pytest.mark.slow
def test_two_harvests_at_once_buy_each_item_once(
    slow_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    ds = scan(digits_data)
    procs = [harvest(slow_teacher, digits_data, cache, "--budget", "1") for _ in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    bill = slow_teacher.billing()
    # every image bought once: nothing died, so nothing may be paid twice
    assert bill["images"] == len(ds.samples), (bill["images"], outs)
    records = SpendLedger.read(cache / "ledger.jsonl")
    bought_texts = sum(r.items for r in records if r.kind == "text_embedding" and r.outcome == "ok")
    assert bought_texts == len(ds.class_names)
    assert totals(records).spent_usd == Decimal(bill["usd"])
    assert verify_cache(cache / "responses") == []
    with ResponseCache(cache / "responses") as rc:
        assert len(rc) == len(ds.samples) + len(ds.class_names)
    assert (cache / "stores").exists()


@pytest.mark.slow
def test_two_harvests_at_once_share_one_budget(
    slow_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    cap = (full_cost(slow_teacher, digits_data, tmp_path) / 2).quantize(Decimal("0.000001"))
    cache = tmp_path / "cache"
    procs = [harvest(slow_teacher, digits_data, cache, "--budget", str(cap)) for _ in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    # half the cost for both together: neither can finish
    assert [p.returncode for p in procs] == [3, 3], outs
    billed = Decimal(slow_teacher.billing()["usd"])
    assert billed <= cap, (billed, cap)
    assert ledger_usd(cache) == billed
    for out in outs:
        assert "spent in ledger" in out and "spent this run" in out, out


@pytest.mark.slow
def test_a_killed_partner_s_leases_end_and_the_other_harvest_finishes(
    slow_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    ds = scan(digits_data)
    victim = harvest(slow_teacher, digits_data, cache, "--budget", "1")
    survivor = harvest(slow_teacher, digits_data, cache, "--budget", "1")
    deadline = time.monotonic() + 120
    # both are buying (leases taken, requests on the wire) before the kill
    while slow_teacher.billing()["requests"] < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert victim.poll() is None, "the first harvest ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=60)
    out = survivor.communicate(timeout=180)[0]
    assert survivor.returncode == 0, out
    bill = slow_teacher.billing()
    # paid twice at most for what the killed process had on the wire
    assert len(ds.samples) <= bill["images"] <= len(ds.samples) + IN_FLIGHT_ITEMS, bill["images"]
    # the killed process's in-flight requests are charged in the ledger at their reservation
    assert ledger_usd(cache) >= Decimal(bill["usd"])
    with ResponseCache(cache / "responses") as rc:
        assert len(rc) == len(ds.samples) + len(ds.class_names)
    assert (cache / "stores").exists()

"""``--budget`` is the cap on what the cache's ledger records for the teacher, across runs;
``--run-budget`` caps one run (issue 13, item 14).

Drives ``python -m distill harvest`` against the local teacher server on 127.0.0.1 and
holds every claim against the server's own bill.
"""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from cache import SpendLedger, totals
from tests.e2e.conftest import TOKEN, LocalTeacher

ROOT = Path(__file__).resolve().parents[2]

# Each test runs several harvests, each in its own Python process.
pytestmark = pytest.mark.slow


def harvest(teacher: LocalTeacher, data: Path, cache: Path, *extra: str) -> tuple[int, str]:
    cmd = [
        sys.executable, "-m", "distill", "harvest", str(data),
        "--teacher", "local:hash", "--base-url", teacher.url, "--cache", str(cache),
        "--batch-size", "4", "--concurrency", "2", *extra,
    ]  # fmt: skip
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    return proc.returncode, proc.stdout + proc.stderr


def harvest_here(
    capsys: pytest.CaptureFixture[str], teacher: LocalTeacher, data: Path, cache: Path,
    *extra: str,
) -> tuple[int, str]:  # fmt: skip
    """:func:`harvest` in this process (the runs before it had processes of their own)."""
    from distill.cli import main

    argv = [
        "harvest", str(data), "--teacher", "local:hash", "--base-url", teacher.url,
        "--cache", str(cache), "--batch-size", "4", "--concurrency", "2", *extra,
    ]  # fmt: skip
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out + err


def billed(teacher: LocalTeacher) -> Decimal:
    return Decimal(teacher.billing()["usd"])


def full_cost(teacher: LocalTeacher, data: Path, tmp_path: Path) -> Decimal:
    """What buying everything once costs (a harvest into a scratch cache); bill reset after."""
    code, out = harvest(teacher, data, tmp_path / "scratch", "--budget", "10")
    assert code == 0, out
    usd = billed(teacher)
    httpx.post(
        teacher.url + "/admin/reset", headers={"Authorization": f"Bearer {TOKEN}"}
    ).raise_for_status()
    return usd


def test_reruns_after_budget_stops_never_spend_the_cap_again(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    cap = (full_cost(hash_teacher, digits_data, tmp_path) / 3).quantize(Decimal("0.000001"))
    cache = tmp_path / "cache"
    codes = []
    for _ in range(4):
        code, out = harvest(hash_teacher, digits_data, cache, "--budget", str(cap))
        codes.append(code)
        # the provider's bill for all runs together stays under the one cap
        assert billed(hash_teacher) <= cap, (billed(hash_teacher), cap, out)
    assert codes == [3, 3, 3, 3]
    assert totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd == billed(hash_teacher)
    # both numbers are printed, and the stop names the ledger's total
    assert "spent in ledger" in out and "spent this run" in out, out
    assert "ledger records" in out, out
    assert "Everything was already cached" not in out, out  # items remain unbought


def test_run_budget_caps_each_run_and_reruns_finish(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    full = full_cost(hash_teacher, digits_data, tmp_path)
    run_cap = (full / 3).quantize(Decimal("0.000001"))
    cache = tmp_path / "cache"
    codes = []
    before = Decimal(0)
    for _ in range(6):
        code, out = harvest(
            hash_teacher, digits_data, cache, "--budget", "1", "--run-budget", str(run_cap)
        )
        codes.append(code)
        now = billed(hash_teacher)
        assert now - before <= run_cap, (now - before, run_cap, out)
        before = now
        if code == 0:
            break
    assert codes[-1] == 0 and all(c == 3 for c in codes[:-1]), codes
    assert len(codes) >= 3  # a third of the cost per run cannot finish in fewer
    assert billed(hash_teacher) == full  # nothing bought twice across the reruns
    assert f"of --run-budget ${run_cap}" in out, out


def test_a_rerun_with_the_cap_already_spent_sends_nothing(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    code, out = harvest(hash_teacher, digits_data, cache, "--budget", "0.002")
    assert code == 3, out
    first = hash_teacher.billing()["requests"]
    code, out = harvest(hash_teacher, digits_data, cache, "--budget", "0.002")
    assert code == 3, out
    assert hash_teacher.billing()["requests"] == first  # nothing sent: the cap is spent


def test_select_counts_what_a_plain_harvest_already_spent(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """``harvest --select`` and plain ``harvest`` share the one cap of the ledger. The
    select run is in this process (no torch import in a process of its own), after the
    plain one in another."""
    monkeypatch.setenv("COLUMNS", "200")
    full = full_cost(hash_teacher, digits_data, tmp_path)
    cap = (full / 2).quantize(Decimal("0.000001"))
    cache = tmp_path / "cache"
    code, out = harvest(hash_teacher, digits_data, cache, "--budget", str(cap / 2))
    assert code == 3, out
    # one round: a random pick, no student to train
    code, out = harvest_here(
        capsys, hash_teacher, digits_data, cache, "--budget", str(cap), "--select", "random",
        "--rounds", "1",
    )  # fmt: skip
    assert code in (0, 3), out
    assert billed(hash_teacher) <= cap, (billed(hash_teacher), cap, out)
    assert "spent in ledger" in out and "spent this run" in out, out

"""Two processes harvesting into one cache directory at the same time do not corrupt it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cache import ResponseCache, SpendLedger, totals, verify_cache
from distill.data import scan
from tests.e2e.conftest import LocalTeacher

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_harvests_share_one_cache(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    args = [
        "harvest",
        str(digits_data),
        "--teacher",
        "local:hash",
        "--base-url",
        hash_teacher.url,
        "--cache",
        str(cache),
        "--budget",
        "1",
        "--batch-size",
        "4",
        "--concurrency",
        "2",
    ]
    code = f"import sys; from distill.cli import main; sys.exit(main({args!r}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert verify_cache(cache / "responses") == []
    ds = scan(digits_data)
    with ResponseCache(cache / "responses") as rc:
        assert len(rc) == len(ds.samples) + len(ds.class_names)
    # both ledgers' appends are whole lines, and they add up to the server's bill
    records = SpendLedger.read(cache / "ledger.jsonl")
    from decimal import Decimal

    assert totals(records).spent_usd == Decimal(hash_teacher.billing()["usd"])
    assert (cache / "stores").exists()

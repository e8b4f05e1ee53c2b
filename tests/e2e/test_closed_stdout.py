"""`vlm-distill harvest ... | head -1`: the reader of stdout goes away, the harvest does not.

Through the real CLI in a subprocess whose stdout is a pipe closed before anything is
read, against the local teacher on 127.0.0.1. Until 2026-12-07 the first line printed
after the reader left (the scan line, a progress line) raised BrokenPipeError: the harvest
stopped with exit 1, cancelling the requests in flight (billed, their answers lost), and
wrote no store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from cache import EmbeddingStore, ResponseCache, SpendLedger, totals
from distill.data import scan
from tests.e2e.conftest import LocalTeacher

ROOT = Path(__file__).resolve().parents[2]


def test_harvest_into_a_closed_pipe_still_buys_caches_and_stores_everything(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cmd = [
        sys.executable, "-m", "distill", "harvest", str(digits_data), "--teacher", "local:hash",
        "--base-url", hash_teacher.url, "--cache", str(cache), "--budget", "1",
        "--batch-size", "4", "--concurrency", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line
    _, err = proc.communicate(timeout=120)
    assert err.decode() == ""  # no traceback, no "Exception ignored"
    assert proc.returncode == 0  # the harvest's own code: it finished
    ds = scan(digits_data)
    bill = hash_teacher.billing()
    assert bill["images"] == len(ds.samples)  # everything bought, once
    assert totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd == Decimal(bill["usd"])
    with ResponseCache(cache / "responses") as responses:
        assert len(responses) == len(ds.samples) + len(ds.class_names)  # every answer kept
    [store] = (cache / "stores").iterdir()
    assert EmbeddingStore.open(store).image_ids == [s.id for s in ds.samples]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_harvest_whose_stdout_is_on_a_full_disk_still_stores_everything(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    """`harvest ... > run.log` on a full disk (here /dev/full): the first line printed
    stopped the harvest ("error: harvest failed: No space left on device", exit 1, no
    store). The output is dropped with one warning; the paid work goes on."""
    cache = tmp_path / "cache"
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "distill", "harvest", str(digits_data), "--teacher",
             "local:hash", "--base-url", hash_teacher.url, "--cache", str(cache),
             "--budget", "1"],
            cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("No space left on device") == 1  # said once, on stderr
    [store] = (cache / "stores").iterdir()
    assert len(EmbeddingStore.open(store)) == len(scan(digits_data).samples)

"""The examples a user copies actually run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_client_api_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "client_api.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "cached the second time: True" in out
    assert "refused before sending" in out


def test_harvest_example_budget_caps_every_run_of_the_cache_together(tmp_path: Path) -> None:
    """Before: the example gave its client a per-run Budget, so a rerun with the same
    --budget spent it again ($0.0099 then $0.0021 more of a $0.01 budget)."""
    from decimal import Decimal

    from cache import SpendLedger, totals
    from distill.data.digits import make_digits
    from tests.reliability.conftest import TOKEN, teacher

    data = make_digits(tmp_path / "digits", size=16, per_class=4, seed=0)
    cache = tmp_path / "cache"
    env = {"PYTHONPATH": str(ROOT), "VLM_DISTILL_TEACHER_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    with teacher() as t:
        def run() -> str:
            done = subprocess.run(
                [sys.executable, str(ROOT / "examples" / "harvest_cohere.py"), str(data),
                 "--cache", str(cache), "--budget", "0.002", "--teacher", "local:hash",
                 "--base-url", t.url],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        assert "stopped by the budget" in run()  # 40 images at $0.0001: over $0.002
        run()
        billed = Decimal(t.billing()["usd"])
    assert 0 < billed <= Decimal("0.002")
    assert totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd <= Decimal("0.002")

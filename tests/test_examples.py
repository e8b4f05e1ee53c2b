"""The examples a user copies actually run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("script", ["client_api.py", "harvest_cohere.py", "train_from_cache.py"])
def test_every_example_answers_help_with_its_usage(script: str) -> None:
    """Before: client_api.py took no arguments and ignored them, so ``--help`` started a
    teacher server and ran the whole example instead of saying how to run it."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:"), done.stdout[:200]
    assert "cached the second time" not in done.stdout


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


@pytest.mark.slow
def test_train_from_cache_example_runs_without_test_domains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: without --test-domains mean_ood is None and its print raised TypeError
    after the zero-shot run, so ERM and ADiP never ran."""
    from distill.cli import main
    from distill.data.digits import make_digits
    from tests.reliability.conftest import TOKEN, teacher

    data = make_digits(tmp_path / "digits", size=16, per_class=2, seed=0)
    with teacher() as t:
        env_key = {"VLM_DISTILL_TEACHER_TOKEN": TOKEN}
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env_key.items():
                mp.setenv(k, v)
            assert main(["harvest", str(data), "--teacher", "local:hash", "--base-url", t.url,
                         "--cache", str(tmp_path / "vlm-cache"), "--budget", "1"]) == 0
    # the example run in this process, as `python examples/train_from_cache.py ...` runs it
    # from the data's parent folder (a child process would import torch and timm again)
    import runpy

    import torch

    script = ROOT / "examples" / "train_from_cache.py"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        mp.setattr(sys, "argv", [str(script), str(data), "--teacher", "local:hash",
                                 "--steps", "3", "--out", str(tmp_path / "runs")])
        torch.set_num_threads(1)  # as OMP_NUM_THREADS=1: a shared machine's cores are busy
        try:
            with pytest.raises(SystemExit) as done:
                runpy.run_path(str(script), run_name="__main__")
        finally:
            torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert done.value.code == 0, out + err
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines[-3:]] == ["zeroshot", "erm", "adip"]
    assert lines[-1].endswith("mean OOD -")


@pytest.mark.parametrize("budget", ["2,00", "nan", "-1"])
def test_harvest_example_refuses_a_bad_budget_in_one_line(tmp_path: Path, budget: str) -> None:
    """Before: ``--budget 2,00`` was a ``decimal.InvalidOperation`` traceback (argparse
    only turns ValueError and TypeError into a usage error), ``nan`` and ``-1`` a
    ``ValueError`` traceback after the data was scanned."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "harvest_cohere.py"), str(tmp_path),
         f"--budget={budget}", "--cache", str(tmp_path / "c")],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "--budget" in done.stderr
    assert not (tmp_path / "c").exists()


def test_harvest_example_says_when_the_teacher_refused_or_items_failed(tmp_path: Path) -> None:
    """Before: a wrong key (the teacher's 401 stops the harvest) printed "bought 0, cache
    hits 0, spent $0" and exited 0, as did a run whose items all failed: the error the
    harvest returned was never shown."""
    from distill.data.digits import make_digits
    from tests.reliability.conftest import teacher

    data = make_digits(tmp_path / "digits", size=16, per_class=1, domains=("upright",))
    env = {"PYTHONPATH": str(ROOT), "VLM_DISTILL_TEACHER_TOKEN": "not-the-servers-token",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    with teacher() as t:
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "harvest_cohere.py"), str(data),
             "--cache", str(tmp_path / "c"), "--budget", "0.01", "--teacher", "local:hash",
             "--base-url", t.url],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "401" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "-3"], "--steps: must be a whole number >= 1"),
        (["--out", "DATA/runs"], "invalid training options"),  # a run folder inside the data
        ([], "no cached teacher embeddings"),  # no harvest into ./vlm-cache yet
    ],
    ids=["negative-steps", "out-in-data", "no-cache"],
)
def test_train_from_cache_example_bad_arguments_are_one_line_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """Before: ``--steps -3`` was a pydantic ValidationError traceback, and a missing
    cache, data folder or domain a ConfigurationError traceback (exit 1)."""
    from distill.data.digits import make_digits

    data = make_digits(tmp_path / "digits", size=16, per_class=1, seed=0)
    args = [a.replace("DATA", str(data)) for a in args]
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_from_cache.py"), str(data), *args],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                           "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    errors = [ln for ln in done.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert not (tmp_path / "runs").exists()

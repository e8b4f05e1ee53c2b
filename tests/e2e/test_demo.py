"""`vlm-distill demo --quick` end to end (hash teacher for speed), twice: the second run is free."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main


@pytest.mark.slow
def test_demo_runs_twice_and_the_second_run_spends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "demo"
    argv = ["demo", "--quick", "--backend", "hash", "--workdir", str(work)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "stopped" not in first and "ADiP" in first and "teacher zero-shot" in first
    [run] = (work / "runs").iterdir()
    for name in (
        "config.json",
        "ledger.jsonl",
        "metrics.json",
        "losses.png",
        "accuracy.png",
        "spend.png",
    ):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"zeroshot", "erm", "kd", "adip"}
    for m in metrics["methods"].values():
        assert 0.0 <= m["mean_ood"] <= 1.0
    assert json.loads((run / "config.json").read_text())["cache"] == str(work / "cache")

    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "Everything was already cached: this run spent $0." in second

"""benchmarks/feature_probe.py on tiny trained runs: its head accuracy is the trainer's own
OOD accuracy, and only ADiP runs get the embedding cosines."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from distill.cli import main

from .conftest import TEACHER

ROOT = Path(__file__).resolve().parents[2]


def test_probe_reads_each_run_as_the_trainer_scored_it(
    tiny_data: Path, tiny_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = []
    for method in ("erm", "adip"):
        out = tmp_path / f"{method}-s0"
        rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
                   "--student", "mobilenetv3_small_050", "--no-pretrained", "--method", method,
                   "--out", str(out), "--test-domains", "dom3", "--steps", "2",
                   "--steps-align", "2", "--steps-distill", "2", "--image-size", "32",
                   "--batch-per-domain", "4", "--threads", "1"])
        assert rc == 0
        runs.append(out)
    store = tiny_cache / "stores" / "s1"
    # the script run in this process, as `python benchmarks/feature_probe.py ...` runs it
    # (a child process would import torch and timm again: seconds)
    script = ROOT / "benchmarks" / "feature_probe.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(tiny_data), *map(str, runs),
                                      "--store", str(store), "--threads", "1"])
    monkeypatch.setattr(sys, "path", [*sys.path])  # the script puts the repo first on it
    capsys.readouterr()
    runpy.run_path(str(script), run_name="__main__")
    stdout = capsys.readouterr().out
    rows = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])
            for line in stdout.splitlines() if line.startswith(("erm-s0", "adip-s0"))}
    for run in runs:
        row = rows[run.name]
        metrics = json.loads((run / "metrics.json").read_text())
        assert row["head"] == round(metrics["mean_ood"], 4)
        for key in ("probe", "probe10", "centroid"):
            assert 0.0 <= row[key] <= 1.0
    assert {"cos(z,T_y)", "cos(z,I)"} <= set(rows["adip-s0"])
    assert "cos(z,I)" not in rows["erm-s0"]
    assert "| adip | 1 |" in stdout and "| erm | 1 |" in stdout

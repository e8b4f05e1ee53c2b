"""`vlm-distill demo --quick` end to end, twice: the second run is free and refits nothing.

The default teacher (mini-clip) is fitted for a few steps only, so this covers fit -> serve
-> harvest (with views) -> train -> report in the suite's time budget; its accuracy is not
the point here (benchmarks/adip_table.py and the demo itself measure that).
"""

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
    argv = ["demo", "--quick", "--teacher-steps", "3", "--views", "2", "--workdir", str(work)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    [teacher] = (work / "teacher").glob("digits-*.safetensors")
    fitted = teacher.stat().st_mtime_ns
    assert "fitting it once" in first
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
    assert "loaded from" in second and teacher.stat().st_mtime_ns == fitted
    # two views per image were bought once, on the first run only
    ledger = [json.loads(x) for x in (work / "cache" / "ledger.jsonl").read_text().splitlines()]
    bought = [r for r in ledger if r.get("kind") == "image_embedding" and r["outcome"] == "ok"]
    assert sum(r["items"] for r in bought) == (
        2 * len([p for p in (work / "data" / "digits").rglob("*.png")])
    )

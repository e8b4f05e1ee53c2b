"""The issue-12 goal lines of benchmarks/budget_curve.py and benchmarks/parity_filter.py are
computed from the numbers: these check the computation, not the benchmarks (which train)."""

from __future__ import annotations

from typing import Any

from benchmarks.budget_curve import goal, summarise
from benchmarks.parity_filter import filter_stats, goals


def _rows(accs: dict[tuple[str, str, float], list[float]]) -> list[dict[str, Any]]:
    return [
        {"labels": lb, "strategy": st, "fraction": fr, "ood_acc": a, "spent_usd": "0.001",
         "images": 10}
        for (lb, st, fr), xs in accs.items() for a in xs
    ]  # fmt: skip


def test_budget_goal_needs_a_selection_at_half_reaching_all_in_both_label_settings() -> None:
    accs = {
        ("label-free", "all", 1.0): [0.80, 0.82],
        ("label-free", "random", 0.5): [0.70, 0.72],
        ("label-free", "coreset", 0.5): [0.81, 0.83],  # mean 0.82 >= 0.81
        ("labelled", "all", 1.0): [0.90, 0.90],
        ("labelled", "uncertainty", 0.5): [0.88, 0.91],  # mean 0.895 < 0.90
    }
    g = goal(summarise(_rows(accs)))
    assert g["label-free"]["reached_by"] == ["coreset"]
    assert g["labelled"]["reached_by"] == []
    assert g["labelled"]["best_at_half"] == "uncertainty"
    assert g["met"] is False
    accs[("labelled", "random", 0.5)] = [0.90, 0.90]  # equal to buying everything: reaches
    assert goal(summarise(_rows(accs)))["met"] is True


def test_budget_goal_is_not_measured_without_the_half_budget() -> None:
    accs = {("label-free", "all", 1.0): [0.8], ("label-free", "random", 0.25): [0.9],
            ("labelled", "all", 1.0): [0.8], ("labelled", "random", 0.5): [0.9]}
    g = goal(summarise(_rows(accs)))
    assert g["label-free"] is None and g["met"] is None


def test_filter_stats_counts_agreement_and_accuracy_of_kept() -> None:
    answers = [0, 1, 2, None, 1]
    second = [0, 2, 2, None, 1]
    truth = [0, 1, 1, 3, 1]
    kept = [True, False, True, False, True]
    s = filter_stats(answers, second, kept, truth)
    assert (s["answered"], s["kept"]) == (4, 3)
    assert s["agreement"] == 3 / 4
    assert s["acc_answered"] == 3 / 4 and s["acc_kept"] == 2 / 3
    assert s["trivial"] is False


def _filter(acc_all: float, acc_kept: float, trivial: bool) -> dict[str, Any]:
    return {"acc_answered": acc_all, "acc_kept": acc_kept, "trivial": trivial}


def test_parity_goal_per_filter() -> None:
    filters = {
        "none": _filter(0.9, 0.9, True),
        "zeroshot": _filter(0.9, 0.9, True),  # keeps everything: not more accurate
        "views": _filter(0.9, 0.95, False),
        "worse": _filter(0.9, 0.95, False),
    }
    students = {
        "all-pseudo": [0.60, 0.62], "all-true": [0.61, 0.61],
        "views/kept-pseudo": [0.55, 0.57], "views/kept-true": [0.60, 0.62],  # 5 points below
        "worse/kept-pseudo": [0.50, 0.52], "worse/kept-true": [0.60, 0.62],  # 10 below
    }  # fmt: skip
    g = goals(filters, students)
    z = g["checks"]["zeroshot"]
    assert z["kept_more_accurate"] is False and z["student_within"] is True
    assert abs(z["student_gap_to_true"] - 0.0) < 1e-9 and z["met"] is False
    assert g["checks"]["views"]["met"] is True
    assert g["checks"]["worse"]["student_within"] is False
    assert g["met_by"] == ["views"] and g["met"] is True
    del students["views/kept-pseudo"]
    g = goals(filters, students)
    assert g["checks"]["views"]["student_gap_to_true"] is None and g["met"] is False


def test_command_flags_name_every_setting_a_run_changed() -> None:
    from benchmarks.budget_curve import command_flags, settings

    cfg = settings(False)
    assert command_flags({"settings": cfg, "seeds": 3, "threads": 2}) == ""
    cfg = {**cfg, "fractions": [0.5, 1.0], "self_train": True, "average": 0.0}
    assert command_flags({"settings": cfg, "seeds": 5, "threads": 1}) == (
        " --self-train --fractions 0.5,1 --threads 1 --seeds 5")
    cfg = {**cfg, "average": 0.5}
    assert command_flags({"settings": cfg, "seeds": 3, "threads": 2}) == (
        " --self-train --average 0.5 --fractions 0.5,1")
    assert command_flags({"settings": cfg, "seeds": 2, "threads": 2, "first_seed": 3}) == (
        " --self-train --average 0.5 --fractions 0.5,1 --first-seed 3 --seeds 2")
    cfg = {**cfg, "final_steps": 400, "strategies": ["random", "coreset"]}
    assert command_flags({"settings": cfg, "seeds": 3, "threads": 2}) == (
        " --self-train --average 0.5 --final-steps 400 --strategies random,coreset"
        " --fractions 0.5,1")


def test_self_label_lines_count_right_labels_per_selection() -> None:
    from benchmarks.budget_curve import self_label_lines

    rows = [
        {"strategy": "coreset+self-train", "self_labelled": 10, "self_labels_right": 9},
        {"strategy": "coreset+self-train", "self_labelled": 30, "self_labels_right": 29},
        {"strategy": "random+self-train", "self_labelled": 0, "self_labels_right": 0},
        {"strategy": "random", "ood_acc": 0.5},  # not self-trained: not counted
    ]
    assert self_label_lines(rows) == [
        "Self-given labels that are right (true labels, never used in training): "
        "coreset+self-train 38 of 40 (95.0%, 2 runs); random+self-train none given (1 runs)."
    ]
    assert self_label_lines([{"strategy": "random", "ood_acc": 0.5}]) == []


def test_tiny_budget_curve_with_self_training_runs_end_to_end(tmp_path) -> None:
    """The script itself (teacher fit, served on loopback, rounds, final and self-trained
    students) in its --tiny mode: the numbers mean nothing, the rows' shape does. Its
    temporary digits folder is gone when it exits."""
    import json
    import os
    import subprocess
    import sys
    from decimal import Decimal
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(root / "benchmarks" / "budget_curve.py"), "--tiny",
                    "--self-train", "--average", "0.5", "--seeds", "1", "--first-seed", "2",
                    "--no-docs",
                    "--threads", "1", "--out", str(out)],
                   check=True, capture_output=True, timeout=600,
                   env={**os.environ, "TMPDIR": str(scratch)})  # fmt: skip
    assert list(scratch.glob("budget-curve-*")) == []
    result = json.loads((out / "results.json").read_text())
    assert result["settings"]["average"] == 0.5
    assert {r["seed"] for r in result["rows"]} == {2}
    rows = result["rows"]
    kinds = {(r["labels"], r["strategy"], r["fraction"]) for r in rows}
    for strategy in ("random", "uncertainty", "coreset"):
        assert ("label-free", f"{strategy}+self-train", 0.5) in kinds
        assert ("labelled", strategy, 0.5) in kinds
    assert ("label-free", "all", 1.0) in kinds
    assert not any("self-train" in r["strategy"] for r in rows if r["fraction"] == 1.0)
    for r in rows:
        assert Decimal(r["spent_usd"]) <= Decimal(r["cap_usd"])
        assert ("self_labelled" in r) == r["strategy"].endswith("+self-train")
        if "self_labelled" in r:
            assert 0 <= r["self_labels_right"] <= r["self_labelled"]


def test_an_unknown_strategy_is_refused_before_any_work(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "budget_curve.py"), "--tiny",
                          "--strategies", "random,greedy", "--no-docs", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode != 0
    assert "unknown strategies ['greedy']" in out.stderr
    assert not (tmp_path / "teacher").exists()  # nothing fitted

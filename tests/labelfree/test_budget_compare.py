"""benchmarks/budget_compare.py: two sets of budget-curve runs paired by seed."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.budget_compare import compare, merge

SETTINGS = {"per_class": 30, "fractions": [0.5, 1.0], "self_train": True}


def _run(accs: dict[int, tuple[float, float]], **settings: Any) -> dict[str, Any]:
    """Rows of one run: seed -> (coreset at half, all) label-free accuracies."""
    rows = []
    for seed, (half, full) in accs.items():
        rows.append({"seed": seed, "labels": "label-free", "strategy": "coreset",
                     "fraction": 0.5, "ood_acc": half, "spent_usd": "0.03", "images": 300})
        rows.append({"seed": seed, "labels": "label-free", "strategy": "all",
                     "fraction": 1.0, "ood_acc": full, "spent_usd": "0.06", "images": 600})
    return {"settings": {**SETTINGS, **settings}, "rows": rows}


def test_pairs_by_seed_across_merged_runs() -> None:
    """Side A is two runs (seeds 0-1 from one recorded before ``average`` existed, seed 2
    from a --first-seed run); B is one run of seeds 0-2: B - A over the three seeds."""
    a = [_run({0: (0.5, 0.6), 1: (0.4, 0.6)}), _run({2: (0.6, 0.6)}, average=0.0)]
    b = [_run({0: (0.6, 0.6), 1: (0.5, 0.5), 2: (0.5, 0.7)}, average=0.5)]
    table = compare(a, b, ("last", "avg"))
    assert table.startswith("Settings that differ: average 0.0 (last) vs 0.5 (avg).")
    coreset = next(line for line in table.splitlines() if "| coreset |" in line)
    assert "0.500 ± 0.100 (3)" in coreset and "0.533 ± 0.058 (3)" in coreset
    assert "+0.033 ± 0.115" in coreset and "| 2 of 3 |" in coreset
    # no labelled rows, so the goal is not measured; its label-free half is computed
    assert ("Goal on last: not measured (label-free all 0.600 ± 0.000, best at half "
            "coreset 0.500 ± 0.100)") in table
    assert "Goal on avg: not measured (label-free all 0.600 ± 0.100" in table


def test_runs_of_other_settings_are_not_paired() -> None:
    with pytest.raises(ValueError, match="differ in \\['per_class'\\]"):
        compare([_run({0: (0.5, 0.6)})], [_run({0: (0.5, 0.6)}, per_class=10)], ("a", "b"))
    with pytest.raises(ValueError, match="one side differ"):
        merge([_run({0: (0.5, 0.6)}), _run({1: (0.5, 0.6)}, average=0.5)])


def test_one_side_may_gather_selections_and_fractions_from_several_runs() -> None:
    random_run = _run({0: (0.5, 0.6)}, strategies=["random"])
    coreset_run = {**_run({0: (0.7, 0.6)}, strategies=["coreset"], fractions=[0.5])}
    coreset_run["rows"] = [r for r in coreset_run["rows"] if r["fraction"] == 0.5]
    for r in random_run["rows"]:
        r["strategy"] = "random" if r["fraction"] == 0.5 else "all"
    settings, rows = merge([random_run, coreset_run])
    assert settings["strategies"] == ["random", "coreset"]  # in STRATEGIES' order
    assert settings["fractions"] == [0.5, 1.0]
    assert sorted(r["strategy"] for r in rows) == ["all", "coreset", "random"]


def test_a_seed_twice_on_one_side_is_refused() -> None:
    with pytest.raises(ValueError, match="seed 0 twice"):
        merge([_run({0: (0.5, 0.6)}), _run({0: (0.4, 0.6)})])

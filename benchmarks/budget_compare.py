"""Two sets of budget-curve runs side by side, paired by seed (for docs/results.md).

    python benchmarks/budget_compare.py --a runs/x/results.json runs/y/results.json \
        --b runs/z/results.json --names "last step" "averaged"

Each side is one or more ``benchmarks/budget_curve.py`` results (say, one run and a run of
more seeds with ``--first-seed``); their rows are merged, a seed found twice on one side is
an error. Every setting but the ones the sides are meant to differ in must agree. Prints a
markdown table: per (labels, selection, fraction) both sides' mean ± std over their seeds,
and over the seeds both have, B - A with how many seeds B is higher on; then the
issue-12 goal computed on each side (``budget_curve.goal``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_curve import STRATEGIES, goal, summarise

# Settings two sides may differ in (what the comparison is about; the table names them).
MAY_DIFFER = {"average", "self_train", "final_steps", "strategies", "fractions"}
# Settings added to budget_curve after some runs were recorded: their value before.
DEFAULTS = {"average": 0.0, "self_train": False, "strategies": list(STRATEGIES)}

__all__ = ["compare", "merge"]

Key = tuple[str, str, float]


def merge(results: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One side's settings and rows; refuses runs of other settings or a repeated seed.

    The runs of one side may cover different selections and budget fractions (say, random
    in one run, uncertainty and coreset in another): the side's ``strategies`` and
    ``fractions`` are their union; every other setting must agree.
    """
    union = ("strategies", "fractions")
    first = {**DEFAULTS, **results[0]["settings"]}
    settings = {k: v for k, v in first.items() if k not in union}
    strategies: set[str] = set()
    fractions: set[float] = set()
    rows: list[dict[str, Any]] = []
    for r in results:
        this = {**DEFAULTS, **r["settings"]}
        if {k: v for k, v in this.items() if k not in union} != settings:
            raise ValueError(f"runs of one side differ in settings: {r['settings']} vs {first}")
        strategies.update(this["strategies"])
        fractions.update(this["fractions"])
        rows += r["rows"]
    settings["strategies"] = [s for s in STRATEGIES if s in strategies]
    settings["fractions"] = sorted(fractions)
    seen: dict[Key, set[int]] = {}
    for row in rows:
        seeds = seen.setdefault((row["labels"], row["strategy"], row["fraction"]), set())
        if row["seed"] in seeds:
            raise ValueError(f"seed {row['seed']} twice for {row['labels']} {row['strategy']}")
        seeds.add(row["seed"])
    return settings, rows


def _by_seed(rows: list[dict[str, Any]]) -> dict[Key, dict[int, float]]:
    out: dict[Key, dict[int, float]] = {}
    for r in rows:
        out.setdefault((r["labels"], r["strategy"], r["fraction"]), {})[r["seed"]] = r["ood_acc"]
    return out


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]], names: tuple[str, str]) -> str:
    """The markdown table and the goal lines (see the module's docstring)."""
    sa, ra = merge(a)
    sb, rb = merge(b)
    changed = {k for k in sa.keys() | sb.keys() if sa.get(k) != sb.get(k)}
    if changed - MAY_DIFFER:
        raise ValueError(f"the sides differ in {sorted(changed - MAY_DIFFER)}: "
                         "not a paired comparison")
    xa, xb = summarise(ra), summarise(rb)
    pa, pb = _by_seed(ra), _by_seed(rb)
    lines = [
        "Settings that differ: " + (", ".join(
            f"{k} {sa.get(k)} ({names[0]}) vs {sb.get(k)} ({names[1]})" for k in sorted(changed)
        ) or "none") + ".",
        "",
        f"| labels | selection | budget fraction | {names[0]} | {names[1]} | "
        f"{names[1]} - {names[0]} (paired) | {names[1]} higher |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in sorted(xa.keys() | xb.keys(), key=lambda k: (k[0], k[2], k[1])):
        cells = []
        for x in (xa, xb):
            v = x.get(key)
            cells.append(f"{v['mean']:.3f} ± {v['std']:.3f} ({v['n']:.0f})" if v else "-")
        common = sorted(pa.get(key, {}).keys() & pb.get(key, {}).keys())
        diffs = [pb[key][s] - pa[key][s] for s in common]
        if len(diffs) > 1:
            paired = f"{statistics.mean(diffs):+.3f} ± {statistics.stdev(diffs):.3f}"
        else:
            paired = f"{diffs[0]:+.3f}" if diffs else "-"
        wins = f"{sum(d > 0 for d in diffs)} of {len(diffs)}" if diffs else "-"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]:g} | {cells[0]} | {cells[1]} | "
                     f"{paired} | {wins} |")  # fmt: skip
    lines.append("")
    for name, x in zip(names, (xa, xb), strict=True):
        g = goal(x)
        verdict = {True: "met", False: "not met", None: "not measured"}[g["met"]]
        parts = []
        for labels in ("label-free", "labelled"):
            gl = g[labels]
            if gl:
                parts.append(
                    f"{labels} all {gl['all']:.3f} ± {gl['all_std']:.3f}, best at half "
                    f"{gl['best_at_half']} {gl['best_at_half_acc']:.3f} ± "
                    f"{gl['best_at_half_std']:.3f}"
                )
        lines.append(f"Goal on {name}: {verdict} ({'; '.join(parts)}).")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", type=Path, nargs="+", required=True, help="results.json of side A")
    p.add_argument("--b", type=Path, nargs="+", required=True, help="results.json of side B")
    p.add_argument("--names", nargs=2, default=("A", "B"), help="the sides' column names")
    args = p.parse_args()

    def load(paths: list[Path]) -> list[dict[str, Any]]:
        return [json.loads(f.read_text("utf-8")) for f in paths]

    try:
        print(compare(load(args.a), load(args.b), tuple(args.names)), end="")
    except ValueError as e:
        print(f"budget_compare: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PNG plots of a run: loss curves per stage, per-domain accuracy, spend over time.

matplotlib is an optional extra (``vlm-distill[plots]``); without it, plotting is skipped
with a message and nothing else changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cache import LedgerRecord

__all__ = ["bar_heights", "plot_accuracy", "plot_losses", "plot_spend", "plots_available"]

_SKIP = {"stage", "step", "lr", "time", "step_s", "data_s"}


def plots_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_losses(logs: Mapping[str, Path], out: Path) -> Path | None:
    """One panel per (method, stage): every loss term against the step.

    A row without a ``stage`` or a numeric ``step`` is passed over; a term is drawn at
    the steps whose rows have it, with markers when that is a single point (a line
    through one point draws nothing)."""
    panels: list[tuple[str, list[dict[str, Any]]]] = []
    for method, log in logs.items():
        if not log.exists():
            continue
        rows = [
            r for r in _read_jsonl(log)
            if isinstance(r, dict) and isinstance(r.get("stage"), str) and _number(r.get("step"))
        ]  # fmt: skip
        for stage in dict.fromkeys(r["stage"] for r in rows):
            panels.append((f"{method}: {stage}", [r for r in rows if r["stage"] == stage]))
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels, strict=True):
        terms = dict.fromkeys(k for r in rows for k in r if k not in _SKIP and _number(r[k]))
        for term in terms:
            points = [(r["step"], r[term]) for r in rows if _number(r.get(term))]
            ax.plot(
                [x for x, _ in points], [y for _, y in points], label=term, linewidth=1.2,
                marker="o" if len(points) == 1 else None,
            )  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("training losses")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def bar_heights(metrics: Mapping[str, Any], columns: list[str]) -> list[float]:
    """Accuracy in % of each ``"domain (ID)"`` / ``"domain (OOD)"`` column; NaN (no bar)
    where ``metrics`` has no score for it (it was drawn as a bar at 0 %).

    >>> bar_heights({"id": {"a": {"acc": 0.5}}, "ood": {}}, ["a (ID)", "b (OOD)"])
    [50.0, nan]
    """
    heights = []
    for label in columns:
        domain, split = label.rsplit(" (", 1)
        entry = metrics.get(split.rstrip(")").lower(), {}).get(domain)
        heights.append(100 * entry["acc"] if entry else float("nan"))
    return heights


def plot_accuracy(results: Mapping[str, Mapping[str, Any]], out: Path) -> Path | None:
    """Grouped bars: accuracy per domain (ID held-out and OOD target) for each method.

    ``results[method]`` is a metrics dict with ``id`` and ``ood``: {domain: {"acc": ...}}.
    """
    columns: list[str] = []
    for m in results.values():
        for split in ("id", "ood"):
            for d in m.get(split, {}):
                label = f"{d} ({split.upper()})"
                if label not in columns:
                    columns.append(label)
    if not columns:
        return None
    plt = _pyplot()
    import numpy as np

    methods = list(results)
    width = 0.8 / len(methods)
    x = np.arange(len(columns))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(columns) + 2), 3.8))
    for i, method in enumerate(methods):
        m = results[method]
        vals = bar_heights(m, columns)
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=method)
        texts = ["" if v != v else f"{v:.0f}" for v in vals]
        ax.bar_label(bars, labels=texts, fontsize=7, padding=1)
    ax.set_xticks(x, columns, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("per-domain accuracy")
    ax.legend(fontsize=8, ncol=len(methods))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_spend(
    records: Sequence[LedgerRecord], budget: Decimal | None, out: Path
) -> Path | None:
    """Cumulative dollars spent over time (seconds since the first call) against the budget,
    from a ledger's records (:func:`cache.read_ledger`, which passes over damaged lines)."""
    billed = sorted(
        (r.time, Decimal(r.cost_usd))
        for r in records
        if r.outcome != "cache_hit" and Decimal(r.cost_usd) > 0
    )
    if not billed:
        return None
    plt = _pyplot()
    t0 = billed[0][0]
    xs, ys, total = [0.0], [0.0], Decimal(0)
    for t, cost in billed:
        total += cost
        xs.append(t - t0)
        ys.append(float(total))
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    ax.step(xs, ys, where="post", label=f"spent (${total:.4f})")
    if budget is not None:
        ax.axhline(float(budget), color="tab:red", linestyle="--", label=f"budget (${budget})")
    ax.set_xlabel("seconds since the first paid request")
    ax.set_ylabel("USD")
    ax.set_title("cumulative teacher spend")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

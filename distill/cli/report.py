"""``vlm-distill report``: spend and cache report of a cache directory or a run folder."""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.table import Table

from vlmclient import ConfigurationError

from . import EXIT_OK
from .progress import console


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", type=Path, help="cache directory or run folder")
    p.add_argument("--cache", type=Path, help="cache directory (same as PATH)")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object (docs/report-schema.md)"
    )


def run(args: argparse.Namespace) -> int:
    from distill.report import build_report

    path = args.path or args.cache
    if path is None:
        raise ConfigurationError("give a cache directory or run folder: vlm-distill report DIR")
    try:
        report = build_report(path)
    except FileNotFoundError as exc:
        raise ConfigurationError(str(exc)) from exc
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    show(report)
    return EXIT_OK


KIND_NAMES = {
    "image_embedding": "image emb.",
    "text_embedding": "text emb.",
    "mixed_embedding": "mixed emb.",
    "answer": "answers",
}


def _usd(text: str) -> str:
    """A ledger amount as it is: six places, more when it has more (never through float,
    which showed $0.00000048 as 0.000000 and $123456789012.3456789 as ...345673).

    >>> _usd("0.1"), _usd("0.00000048"), _usd("123456789012.3456789")
    ('0.100000', '0.00000048', '123456789012.3456789')
    """
    amount = Decimal(text)
    six = f"{amount:.6f}"
    return six if Decimal(six) == amount else format(amount, "f")


def show(report: dict[str, Any]) -> None:
    out = console()
    t = Table(title=f"spend report: {report['cache_dir']}")
    t.add_column("teacher · kind", no_wrap=True)
    for col in ("requests", "items", "hits", "spent $", "saved $", "failed"):
        t.add_column(col, justify="right")
    for g in report["by_kind"]:
        failures = sum(g["failures"].values())
        t.add_row(
            f"{g['provider']}:{g['model']} · {KIND_NAMES.get(g['kind'], g['kind'])}",
            str(g["requests"]),
            str(g["items"]),
            str(g["cache_hits"]),
            _usd(g["spent_usd"]),
            _usd(g["saved_usd"]),
            str(failures),
        )
    t.add_row(
        "[bold]total",
        str(report["requests_sent"]),
        str(report["items_bought"]),
        str(report["cache_hits"]),
        f"[bold]{_usd(report['spent_usd'])}",
        _usd(report["saved_usd"]),
        str(report["failed_attempts"]),
    )
    out.print(t)
    failure_totals: dict[str, int] = {}
    for g in report["by_kind"]:
        for k, v in g["failures"].items():
            failure_totals[k] = failure_totals.get(k, 0) + v
    if failure_totals:
        out.print(
            "failed attempts: "
            + ", ".join(f"{k} {v}" for k, v in sorted(failure_totals.items()))
        )
    if report["items_cached"] is None:
        out.print(f"items in the response cache: unknown ({report['cache_problem']})")
    else:
        out.print(f"items in the response cache: {report['items_cached']}")
    if report["estimated_requests"]:
        out.print(
            f"{report['estimated_requests']} billed requests did not say what they cost and "
            "are charged at our worst-case estimate (ledger records marked estimated)"
        )
    for o in report["overruns"]:
        out.print(
            f"[red]overrun[/]: {o['provider']}:{o['model']} billed ${o['cost_usd']} for "
            f"{o['items']} {KIND_NAMES.get(o['kind'], o['kind'])} where ${o['reserved_usd']} "
            f"was reserved (request id {o['request_id']}); provider's usage {o['provider_usage']}"
        )
    if report["overruns"]:
        out.print(
            f"[red]{len(report['overruns'])} overruns, ${report['overrun_usd']} billed beyond "
            "the reservations[/]: a price entry or a usage estimate is wrong"
        )
    if report.get("last_run"):
        r = report["last_run"]
        out.print(
            f"last harvest ({r['teacher']}): this cache's ledger records "
            f"${r.get('teacher_spent_usd', r['spent_usd'])} for it of --budget "
            f"${r['budget_usd']}, budget left ${r['budget_left_usd']} "
            f"(the last run spent ${r['spent_usd']})"
        )
    for problem in report["ledger_problems"]:
        out.print(f"[yellow]ledger: {problem}[/]")

"""``vlm-distill report``: spend and cache report of a cache directory or a run folder."""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vlmclient import ConfigurationError

from . import EXIT_OK
from ._common import saved_text, usd_text
from .progress import console
from .validate import path_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", type=path_arg, help="cache directory or run folder")
    p.add_argument("--cache", type=path_arg, help="cache directory (same as PATH)")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object (docs/report-schema.md)"
    )


def run(args: argparse.Namespace) -> int:
    from distill.report import build_report

    path = args.path or args.cache
    if args.path is not None and args.cache is not None and _cache_flag_given(args.cache) \
            and args.path.resolve() != args.cache.resolve():
        # before 2026-12-07 PATH won without a word: the other cache's spend unreported
        raise ConfigurationError(
            f"two caches given: {args.path} and --cache {args.cache}; report one at a "
            "time (vlm-distill report DIR)"
        )
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


def _cache_flag_given(cache: Path) -> bool:
    """Whether ``--cache`` came from the command line rather than a config file's
    ``cache`` (a default, which PATH overrides)."""
    from . import SUBPARSERS

    default = SUBPARSERS["report"].get_default("cache")
    return default is None or path_arg(str(default)) != cache


KIND_NAMES = {
    "image_embedding": "image emb.",
    "text_embedding": "text emb.",
    "mixed_embedding": "mixed emb.",
    "answer": "answers",
}


COLUMNS = ("requests", "items", "hits", "spent $", "saved $", "failed")
NAME_MIN_WIDTH = 12  # the teacher · kind column folds, but not to a sliver


def _table(report: dict[str, Any], width: int) -> Table:
    """The spend table: one row per teacher and kind, then the total.

    The numbers never wrap nor get cut to ``0.012…`` (each numeric column is as wide as
    its longest value); the teacher · kind column folds instead. A console too narrow
    for all seven columns gets one block of label/value rows per teacher and kind."""
    rows: list[tuple[Text, list[Text]]] = []
    for g in report["by_kind"]:
        label = f"{g['provider']}:{g['model']} · {KIND_NAMES.get(g['kind'], g['kind'])}"
        numbers = [str(g["requests"]), str(g["items"]), str(g["cache_hits"]),
                  usd_text(g["spent_usd"]), saved_text(g["saved_usd"]),
                  str(sum(g["failures"].values()))]  # fmt: skip
        rows.append((Text(label), [Text(n) for n in numbers]))
    total = [Text(str(report["requests_sent"])), Text(str(report["items_bought"])),
             Text(str(report["cache_hits"])), Text(usd_text(report["spent_usd"]), "bold"),
             Text(saved_text(report["saved_usd"])),
             Text(str(report["failed_attempts"]))]  # fmt: skip
    rows.append((Text("total", "bold"), total))
    title = f"spend report: {escape(report['cache_dir'])}"
    widths = [
        max(cell_len(col), *(values[i].cell_len for _, values in rows))
        for i, col in enumerate(COLUMNS)
    ]
    # a cell is padded by one space each side; the borders take one more per column
    needed = 1 + NAME_MIN_WIDTH + 3 + sum(w + 3 for w in widths)
    if width >= needed:
        t = Table(title=title)
        t.add_column("teacher · kind", overflow="fold")
        for col, w in zip(COLUMNS, widths, strict=True):
            t.add_column(col, justify="right", no_wrap=True, min_width=w)
        for name, values in rows:
            t.add_row(name, *values)
        return t
    t = Table(title=title, show_header=False)
    t.add_column("teacher · kind", overflow="fold")
    t.add_column("value", justify="right", no_wrap=True, min_width=max(widths))
    for name, values in rows:
        t.add_row(Text(name.plain, "bold"), "")
        for col, value in zip(COLUMNS, values, strict=True):
            t.add_row(f"  {col}", value)
        t.rows[-1].end_section = True
    return t


def show(report: dict[str, Any]) -> None:
    out = console()
    out.print(_table(report, out.width))
    failure_totals: dict[str, int] = {}
    for g in report["by_kind"]:
        for k, v in g["failures"].items():
            failure_totals[k] = failure_totals.get(k, 0) + v
    if failure_totals:
        out.print(
            "failed attempts: "
            + ", ".join(f"{k} {v}" for k, v in sorted(failure_totals.items()))
        )
    # where a teacher was bought from at more than one URL (a URL that only served cache
    # hits, such as a rerun's local teacher on a new port, bought nothing)
    bought = [e for e in report["by_endpoint"] if e["requests"]]
    teachers = [f"{e['provider']}:{e['model']}" for e in bought]
    for e in bought:
        name = f"{e['provider']}:{e['model']}"
        if teachers.count(name) > 1:
            at = e["endpoint"] or "its default endpoint (or not recorded)"
            out.print(escape(f"{name} at {at}: ${e['spent_usd']} spent, {e['requests']} "
                             f"requests, {e['items']} items"))  # fmt: skip
    if report["items_cached"] is None:
        out.print(f"items in the response cache: unknown ({escape(report['cache_problem'])})")
    else:
        out.print(f"items in the response cache: {report['items_cached']}")
    if report["estimated_requests"]:
        out.print(
            f"{report['estimated_requests']} requests are charged at our worst-case estimate: "
            "the provider did not say what it billed, or gave no answer, or a killed run left "
            "them open (ledger records marked estimated)"
        )
    for o in report["overruns"]:
        # the provider's own strings (request id, usage keys) are not markup: "[/x]" in
        # one was a MarkupError traceback
        out.print(
            "[red]overrun[/]: "
            + escape(
                f"{o['provider']}:{o['model']} billed ${o['cost_usd']} for {o['items']} "
                f"{KIND_NAMES.get(o['kind'], o['kind'])} where ${o['reserved_usd']} was "
                f"reserved (request id {o['request_id']}); provider's usage "
                f"{o['provider_usage']}"
            )
        )
    if report["overruns"]:
        out.print(
            f"[red]{len(report['overruns'])} overruns, ${report['overrun_usd']} billed beyond "
            "the reservations[/]: a price entry or a usage estimate is wrong"
        )
    if Decimal(report["reserved_usd"]):
        out.print(
            f"[yellow]${report['reserved_usd']} is reserved[/] by requests on the wire, or "
            "left open by a run that was killed: not in the spend above, though the provider "
            "may have billed them (the next run of this cache charges a killed run's to the "
            "ledger as orphaned)"
        )
    if report.get("last_run"):
        r = report["last_run"]
        held = Decimal(r["teacher_reserved_usd"])
        out.print(
            f"last harvest ({escape(str(r['teacher']))}): this cache's ledger records "
            f"${r['teacher_spent_usd']} for it of --budget ${r['budget_usd']}"
            + (f", ${r['teacher_reserved_usd']} reserved" if held else "")
            + f", budget left ${r['budget_left_usd']} (the last run"
            + (f", stopped by {escape(str(r['stopped']))}," if r.get("stopped") else "")
            + f" spent ${r['spent_usd']})"
        )
    for problem in report["ledger_problems"]:
        out.print(f"[yellow]ledger: {escape(problem)}[/]")

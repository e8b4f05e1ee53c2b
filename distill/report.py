"""Spend reports from a cache directory or a run folder: one dict with a stable schema.

Schema ``vlm-distill.report/1`` (docs/report-schema.md): money is a decimal string.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from cache import (
    CacheError,
    LedgerRecord,
    ResponseCache,
    iter_ledger,
    open_reservations,
    refuse_foreign_ledger,
    totals,
)
from cache.layout import LEDGER_FILE, RESPONSES_DIR, CacheDir
from cache.ledger import GroupTotals, by_model, is_overrun, plain

__all__ = ["SCHEMA", "append_run", "build_report", "find_cache_dir"]

SCHEMA = "vlm-distill.report/1"
RUNS_FILE = "runs.jsonl"


def _is_cache_dir(path: Path) -> bool:
    return (path / LEDGER_FILE).exists() or (path / RESPONSES_DIR).exists()


def _cache_of(run: Path, named: Path) -> Path | None:
    """The cache directory ``named`` (as a run's config.json gives it) is, looked up as
    :func:`find_cache_dir` says, or None."""
    if named.is_absolute():
        tries = [named]
    else:
        here = run.resolve()
        tries = [*(folder / named for folder in (here, *here.parents)), named]
    return next((found for found in tries if _is_cache_dir(found)), None)


def find_cache_dir(path: Path) -> Path:
    """A cache directory itself, or the one a run folder names in its config.json.

    A relative cache path there is relative to where ``train`` ran: tried from the run
    folder and each folder above it, then from the current folder (before 2026-12-06 the
    current folder came first, so `report ../proj1/runs/x` from proj2 reported proj2's
    cache of the same name); a name that is none of these is an error, never an empty
    report."""
    if _is_cache_dir(path):
        return path
    config = path / "config.json"
    if config.exists():
        try:
            settings = json.loads(config.read_text())
        except (ValueError, OSError) as exc:
            raise FileNotFoundError(
                f"{config} cannot be read ({exc}): give the cache instead: "
                "vlm-distill report CACHE"
            ) from exc
        cache = settings.get("cache") if isinstance(settings, dict) else None
        if not isinstance(cache, str):
            cache = None
        store = settings.get("store") if isinstance(settings, dict) else None
        if not cache and isinstance(store, str) and store:
            # trained with --store alone: the store's cache, where it lives in one
            # (CACHE/stores/NAME), else say which store it was
            found = _cache_of(path, Path(store).parent.parent)
            if found is not None:
                return found
            raise FileNotFoundError(
                f"{path} is a run folder trained from the store {store!r}, which is not in "
                "a cache directory from here: give the cache: vlm-distill report CACHE"
            )
        if cache:
            found = _cache_of(path, Path(cache))
            if found is not None:
                return found
            raise FileNotFoundError(
                f"{path} is a run folder whose config.json names the cache {cache!r}, which "
                "is not a cache directory from here: run from the folder it was trained "
                "in, or give the cache: vlm-distill report CACHE"
            )
    raise FileNotFoundError(
        f"{path} is neither a cache directory (ledger.jsonl, responses/) nor a run folder "
        "(config.json naming its cache)"
    )


def append_run(cache_dir: Path, entry: dict[str, Any]) -> None:
    """One line per harvest run: its budget and what it spent (for 'budget left')."""
    entry = {"time": time.time(), **entry}
    with open(cache_dir / RUNS_FILE, "a+b") as f:
        f.seek(0, os.SEEK_END)
        torn = False
        if f.tell() > 0:  # a line cut short (kill -9, a full disk) must not swallow ours
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        f.write((b"\n" if torn else b"") + (json.dumps(entry, default=str) + "\n").encode())


def _money(value: Any) -> Decimal | None:
    """``value`` as a finite, non-negative Decimal, or None."""
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def _last_run(cache_dir: Path) -> dict[str, Any] | None:
    """The last readable line of ``runs.jsonl`` whose budget parses (a hand-edited or
    damaged line is passed over, not a traceback)."""
    try:
        lines = (cache_dir / RUNS_FILE).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            run = json.loads(line)
        except ValueError:
            continue
        if isinstance(run, dict) and run.get("budget_usd") is not None \
                and _money(run["budget_usd"]) is not None \
                and _money(run.get("spent_usd", "0")) is not None:
            return run
    return None


def build_report(path: Path) -> dict[str, Any]:
    cdir = CacheDir(find_cache_dir(path))
    # a user's own ledger.jsonl in the folder: one line, as the commands that write refuse
    # it (each of its lines listed as "unreadable line" and exit 0 before)
    refuse_foreign_ledger(cdir.ledger, "nothing to report")
    # one pass over the ledger, one line at a time: a large one is never held whole
    unread = _Unread()
    overruns: list[LedgerRecord] = []
    endpoints = _Endpoints()

    def watched() -> Iterator[LedgerRecord]:
        for rec in iter_ledger(cdir.ledger, unread):
            if is_overrun(rec):
                overruns.append(rec)
            endpoints.add(rec)
            yield rec

    tot = totals(watched())
    items_cached: int | None = 0
    cache_problem = None
    if cdir.responses.exists():
        try:
            with ResponseCache(cdir.responses) as cache:
                items_cached = len(cache)
        except CacheError as exc:
            items_cached, cache_problem = None, str(exc)
    failed_attempts = sum(tot.failures.values())
    problems = [f"line {n}: {why}" for n, why in unread]
    if unread.more:
        problems.append(
            f"{unread.more} more lines that do not read (lines {unread.first_more} to "
            f"{unread.last_more})"
        )
    held = _open_reservations(cdir, problems)
    groups = [g.as_dict() for _, g in sorted(tot.groups.items())]
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "cache_dir": str(cdir.root.absolute()),  # which one it is, wherever report ran
        "spent_usd": plain(tot.spent_usd),
        "reserved_usd": plain(sum(held.values(), Decimal(0))),
        "saved_usd": plain(tot.saved_usd),
        "requests_sent": tot.requests,
        "items_bought": tot.items,
        "failed_attempts": failed_attempts,
        "cache_hits": tot.cache_hits,
        "items_cached": items_cached,
        "cache_problem": cache_problem,
        "by_model": by_model(tot.groups),
        "by_kind": groups,
        "by_endpoint": endpoints.as_list(),
        "ledger_problems": problems,
        "estimated_requests": tot.estimated,
        "overrun_usd": plain(tot.overrun_usd),
        "overruns": [
            {
                "time": r.time,
                "provider": r.provider,
                "model": r.model,
                "kind": r.kind,
                "items": r.items,
                "reserved_usd": r.reserved_usd,
                "cost_usd": r.cost_usd,
                "request_id": r.request_id,
                "provider_usage": dict(r.provider_usage),
            }
            for r in overruns
        ],
    }
    run = _last_run(cdir.root)
    if run:
        budget = _money(run["budget_usd"]) or Decimal(0)
        spent = _money(run.get("spent_usd", "0")) or Decimal(0)
        # --budget caps what the ledger records for the teacher over every run, so what is
        # left is the cap minus the ledger's total for that teacher, not minus one run.
        teacher = _teacher_key(str(run.get("teacher", "")))
        teacher_spent = _teacher_spent(tot, teacher)
        # and minus the reservations still open: the next run charges a killed run's
        # (the provider may have billed them), a running one's are held until settled
        reserved = held.get(teacher, Decimal(0)) if teacher else Decimal(0)
        seen = _money(run.get("teacher_spent_usd"))
        if seen is not None and seen > teacher_spent:
            # the run saw more than the ledger now holds (a line lost or cut since): the
            # budget (which keeps its own total) goes by the larger, and so does "left"
            report["ledger_problems"].append(
                f"the last run saw ${plain(seen)} spent on {run.get('teacher')}, the ledger "
                f"now holds ${plain(teacher_spent)} (a line lost or damaged?): budget left "
                "is computed from the larger")
            teacher_spent = seen
        run_budget = _money(run.get("run_budget_usd"))
        report["last_run"] = {
            "teacher": run.get("teacher"),
            "budget_usd": plain(budget),
            "spent_usd": plain(spent),
            "teacher_spent_usd": plain(teacher_spent),
            "teacher_reserved_usd": plain(reserved),
            "budget_left_usd": plain(max(Decimal(0), budget - teacher_spent - reserved)),
            "run_budget_usd": None if run_budget is None else plain(run_budget),
            "exit_code": run.get("exit_code"),
            "stopped": run["stopped"] if isinstance(run.get("stopped"), str) else None,
        }
    else:
        report["last_run"] = None
    return report


LISTED_PROBLEMS = 100  # unreadable ledger lines listed one by one; the rest are counted


class _Unread(list[tuple[int, str]]):
    """The first :data:`LISTED_PROBLEMS` unreadable lines (number, reason), and how many
    more (before 2026-12-07 all were listed: a ledger another version wrote in a format
    this one cannot read was a line of report per line of ledger)."""

    def __init__(self) -> None:
        super().__init__()
        self.more = self.first_more = self.last_more = 0

    def append(self, problem: tuple[int, str]) -> None:
        if len(self) < LISTED_PROBLEMS:
            super().append(problem)
            return
        self.more += 1
        self.first_more = self.first_more or problem[0]
        self.last_more = problem[0]


class _Endpoints:
    """Totals per ``provider:model`` and base URL its records were sent to (``endpoint``,
    null: the provider's default, or not recorded), as ``by_model``'s."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str, str], tuple[str | None, GroupTotals]] = {}

    def add(self, rec: LedgerRecord) -> None:
        key = (rec.provider, rec.model, rec.endpoint or "")  # null sorts first
        if key not in self.groups:
            self.groups[key] = (rec.endpoint, GroupTotals(rec.provider, rec.model, "*"))
        self.groups[key][1].add(rec)

    def as_list(self) -> list[dict[str, Any]]:
        return [{**group.as_dict(), "endpoint": endpoint}
                for endpoint, group in (self.groups[k] for k in sorted(self.groups))]  # fmt: skip


def _open_reservations(cdir: CacheDir, problems: list[str]) -> dict[str, Decimal]:
    """The open reservations of the cache's coordination database, per teacher; {} and a
    line in ``problems`` when it cannot be read."""
    try:
        return open_reservations(cdir.coordination)
    except (sqlite3.Error, ArithmeticError) as exc:
        problems.append(
            f"coordination database {cdir.coordination} cannot be read ({exc}): requests "
            "in flight, or left open by a killed run, are not counted in budget left"
        )
        return {}


def _teacher_key(teacher: str) -> str | None:
    """``provider:model`` with the provider's canonical name (how the ledger and the
    shared budget name a teacher), ``teacher`` itself for a provider this version does
    not know, or None when it is not ``provider:model``."""
    from vlmclient.errors import VLMError
    from vlmclient.providers import parse_teacher

    try:
        provider, model = parse_teacher(teacher)
    except (VLMError, ValueError):
        # a provider this version does not know (a newer version's run): the ledger names
        # it as the run did (before 2026-12-07: no teacher, the whole budget left)
        name, sep, model = teacher.partition(":")
        return teacher if sep and name and model else None
    return f"{provider.name}:{model}"


def _teacher_spent(tot: Any, teacher: str | None) -> Decimal:
    """The ledger's total for the teacher ``provider:model`` (:func:`_teacher_key`)."""
    if teacher is None:
        return Decimal(0)
    provider, _, model = teacher.partition(":")
    return sum(
        (g.spent_usd for (p, m, _), g in tot.groups.items() if (p, m) == (provider, model)),
        Decimal(0),
    )

"""Harvest image and class-prompt embeddings from Cohere under a hard budget.

    export CO_API_KEY=...
    python examples/harvest_cohere.py DATA --budget 2.00

Run it twice: the second run is served from the cache and spends $0. Stop it at any
time (Ctrl-C, budget, crash): the next run resumes with what is missing. ``--budget`` caps
everything the cache folder's ledger records for the teacher, as the CLI's does: a rerun
with the same budget never spends it again, and two runs at once share it (and do not buy
the same items: leases in the folder's coordination database).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from decimal import Decimal
from pathlib import Path

from cache import CacheDir, Coordinator, ResponseCache, SpendLedger
from distill.cli.validate import money
from distill.data import scan
from distill.harvest import harvest
from vlmclient import SharedBudget, TeacherClient, VLMError


async def main(data: Path, cache_dir: Path, budget: Decimal, teacher: str,
               base_url: str | None) -> int:
    dataset = scan(data)
    cdir = CacheDir(cache_dir)
    # the ledger first: a foreign ledger.jsonl is refused before responses/ is made
    with SpendLedger(cdir.ledger) as ledger, ResponseCache(cdir.responses) as cache, \
            Coordinator(cdir.coordination, ledger_path=cdir.ledger) as coord:
        # the cap on the ledger's total for this teacher, every run included (a plain
        # Budget(budget) would cap this run only: each rerun could spend it again)
        shared = SharedBudget(coord, teacher, total=budget)
        async with TeacherClient(
            teacher, budget=shared, claims=coord, cache=cache, ledger=ledger,
            base_url=base_url,
        ) as client:
            result = await harvest(dataset, client, cache_dir=cdir.root)
    print(f"bought {result.bought}, cache hits {result.cache_hits}, spent ${result.spent_usd}")
    if result.stopped_by_budget:
        print(
            f"stopped by the budget: {result.remaining_items} items remain, "
            f"at most ${result.remaining_cost_usd:.4f} to finish"
        )
    if result.store_path:
        print(f"embedding store for training: {result.store_path}")
    # what stopped the harvest (a wrong key's 401, no credit) and items that failed
    # come back in the result, not as an exception: say them, and exit non-zero
    if result.fatal:
        print(f"error: {result.fatal}", file=sys.stderr)
        return 2 if result.fatal_is_usage else 1
    if result.failed:
        item, why = result.failed[0]
        print(f"{len(result.failed)} items failed (first: {item}: {why}); run again to "
              "retry them", file=sys.stderr)
        return 1
    if result.store_error:
        print(f"error: the embedding store was not written: {result.store_error}",
              file=sys.stderr)
        return 1
    return 0  # a budget stop included: run again with a larger --budget to finish


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("vlm-cache"))
    # the CLI's check: a finite amount >= 0, or a one-line usage error (exit 2)
    ap.add_argument("--budget", type=money, default=Decimal("2.00"))
    ap.add_argument("--teacher", default="cohere:embed-v4.0")
    ap.add_argument("--base-url", default=None, help="a gateway or compatible server")
    a = ap.parse_args()
    try:
        sys.exit(asyncio.run(main(a.data, a.cache, a.budget, a.teacher, a.base_url)))
    except VLMError as exc:  # no key, a bad price, a refused request...: one line, exit 1
        raise SystemExit(f"error: {exc}") from None

"""Harvest image and class-prompt embeddings from Cohere under a hard budget.

    export CO_API_KEY=...
    python examples/harvest_cohere.py DATA --budget 2.00

Run it twice: the second run is served from the cache and spends $0. Stop it at any
time (Ctrl-C, budget, crash): the next run resumes with what is missing.
"""

from __future__ import annotations

import argparse
import asyncio
from decimal import Decimal
from pathlib import Path

from cache import CacheDir, ResponseCache, SpendLedger
from distill.data import scan
from distill.harvest import harvest
from vlmclient import Budget, TeacherClient, VLMError


async def main(data: Path, cache_dir: Path, budget: Decimal, teacher: str) -> None:
    dataset = scan(data)
    cdir = CacheDir(cache_dir)
    with ResponseCache(cdir.responses) as cache, SpendLedger(cdir.ledger) as ledger:
        async with TeacherClient(
            teacher, budget=Budget(budget), cache=cache, ledger=ledger
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


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("vlm-cache"))
    ap.add_argument("--budget", type=Decimal, default=Decimal("2.00"))
    ap.add_argument("--teacher", default="cohere:embed-v4.0")
    a = ap.parse_args()
    try:
        asyncio.run(main(a.data, a.cache, a.budget, a.teacher))
    except VLMError as exc:  # no key, a bad price, a refused request...: one line, exit 1
        raise SystemExit(f"error: {exc}") from None

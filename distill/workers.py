"""Running the workers of one call together, so that none outlives the call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable

__all__ = ["all_or_none"]


async def all_or_none(coros: Iterable[Awaitable[object]]) -> None:
    """Run ``coros`` together; when one raises (or this is cancelled), cancel the others
    and wait for them before raising. ``asyncio.gather`` left them running: their
    requests went on being sent after the call (``harvest()``, ``answer_labels()``) had
    raised, and were billed unrecorded once the caller closed its ledger."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

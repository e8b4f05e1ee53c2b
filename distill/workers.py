"""Running the workers of one call together, so that none outlives the call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

__all__ = ["all_or_none", "off_loop"]

R = TypeVar("R")


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


class _Stop(Exception):
    """Raised in :func:`off_loop`'s thread by ``check()`` once the caller was cancelled."""


async def off_loop(work: Callable[[Callable[[], None]], R], stopped: str) -> R:
    """``work(check)`` in a thread, so that the event loop (and with it a stop signal)
    runs while a long synchronous step does: hashing every image file, pricing every
    item left. ``work`` calls ``check()`` between files; once this is cancelled, ``check``
    raises in the thread, and when the thread has ended (nothing it touches is used after
    it) this raises ``CancelledError(stopped)``: ``stopped`` says what the stop lost.
    On the loop itself a stop signal waited, unseen, until the step ended (minutes on a
    large data set) and then changed nothing."""
    stop = threading.Event()

    def check() -> None:
        if stop.is_set():
            raise _Stop

    job = asyncio.ensure_future(asyncio.to_thread(work, check))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait([job])
        if not job.cancelled():
            job.exception()  # retrieved: the stop is what is said, not how the work ended
        raise asyncio.CancelledError(stopped) from None

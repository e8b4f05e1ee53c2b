"""Micro-batching: gather concurrent requests' items into one model call off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Generic, TypeVar

__all__ = ["MicroBatcher"]

T = TypeVar("T")
R = TypeVar("R")

# How long the worker waits for more items after the first one arrived. Short: on
# 2 cores a model call costs tens of ms, so a 2 ms wait is cheap and lets requests
# that arrive together share one forward pass.
DEFAULT_MAX_WAIT_S = 0.002


class MicroBatcher(Generic[T, R]):
    """Queue items from many requests; run ``fn`` on up to ``max_batch`` of them at a time.

    ``fn`` runs in ``executor`` (a single thread keeps the model's threads to itself) or,
    when ``executor`` is None, inline on the loop (for cheap backends). It returns one
    result per item; an ``Exception`` in that list fails only its own item.

    >>> async def demo():
    ...     b = MicroBatcher(lambda xs: [x * 2 for x in xs], max_batch=8, executor=None)
    ...     out = await b.submit_many([1, 2, 3])
    ...     await b.aclose()
    ...     return out
    >>> asyncio.run(demo())
    [2, 4, 6]
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R | Exception]],
        *,
        max_batch: int,
        executor: Executor | None,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        self._fn = fn
        self._max_batch = max_batch
        self._executor = executor
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0
        self.items_run = 0

    def _ensure_worker(self) -> asyncio.Queue[tuple[T, asyncio.Future[R]]]:
        # Created lazily so the queue and task belong to the loop that serves requests.
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return self._queue

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Results in item order; raises the first item's exception if any item failed."""
        loop = asyncio.get_running_loop()
        queue = self._ensure_worker()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            fut: asyncio.Future[R] = loop.create_future()
            futures.append(fut)
            queue.put_nowait((item, fut))
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            self._drain(queue, batch)
            if len(batch) < self._max_batch and self._max_wait_s > 0:
                await asyncio.sleep(self._max_wait_s)
                self._drain(queue, batch)
            live = [(item, fut) for item, fut in batch if not fut.done()]
            if not live:
                continue
            items = [item for item, _ in live]
            try:
                if self._executor is None:
                    results: Sequence[Any] = self._fn(items)
                else:
                    results = await loop.run_in_executor(self._executor, self._fn, items)
                if len(results) != len(items):
                    raise RuntimeError(f"batch fn returned {len(results)} for {len(items)} items")
            except Exception as exc:  # one failure fails the whole batch, loudly
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches_run += 1
            self.items_run += len(items)
            for (_, fut), res in zip(live, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, Exception):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _drain(self, queue: asyncio.Queue[tuple[T, asyncio.Future[R]]], batch: list[Any]) -> None:
        while len(batch) < self._max_batch:
            try:
                batch.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

"""The item-level pipeline behind :class:`~vlmclient.TeacherClient`'s calls.

Each item is looked up in flight (identical items in flight at the same time share one
future and one payment: single-flight) and in the cache; the misses are claimed (when
processes share a cache, see :mod:`vlmclient.claims`), cut into requests, bought, and
their results handed to the waiting futures and cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

from cache.protocols import CacheEntry

from .batching import Batcher
from .claims import CLAIM_POLL_S, RECLAIM_AFTER_S, Claims, LeasesLapsed
from .errors import BadRequestError, BudgetExceededError, BudgetOverrunError
from .models import AnswerResult, EmbeddingResult, Kind, Price, Usage
from .providers import Parsed, Provider
from .providers.base import Item
from .send import Sender
from .stats import ClientStats, EventHook, emit
from .storage import Storage, result_from_entry
from .timing import Timings

__all__ = ["Pipeline", "results_of"]

_now = time.monotonic  # the lease guard's clock (runs on while the process is stopped)


def results_of(
    kind: Kind, parsed: Parsed, cost: Decimal, n: int
) -> list[EmbeddingResult] | list[AnswerResult]:
    """The ``n`` results of one paid request, each carrying an equal share of its cost."""
    share = cost / n
    if kind == "answer":
        assert parsed.texts is not None
        return [
            AnswerResult(
                text=t,
                cost_usd=share,
                request_id=parsed.request_id,
                usage=parsed.usage,
                truncated=parsed.truncated,
            )
            for t in parsed.texts
        ]
    assert parsed.vectors is not None
    return [
        EmbeddingResult(vector=v, cost_usd=share, request_id=parsed.request_id)
        for v in parsed.vectors
    ]


class Pipeline:
    """Serves one teacher's items from flight and cache, and buys the rest."""

    def __init__(
        self,
        provider: Provider,
        *,
        price: Price,
        batcher: Batcher,
        sender: Sender,
        storage: Storage,
        claims: Claims | None,
        stats: ClientStats,
        timings: Timings,
        on_event: EventHook | None,
        dims: dict[str, int],
    ) -> None:
        self.provider = provider
        self.price = price
        self.stats = stats
        self.timings = timings
        self.inflight: dict[str, asyncio.Future[Any]] = {}  # cache key -> its single flight
        self._batcher = batcher
        self._sender = sender
        self._storage = storage
        self._claims = claims  # leases shared with other processes buying into the same cache
        self._on_event = on_event
        self._dims = dims  # shared with the client: the dimension each kind was seen with

    def lookup(
        self,
        kind: Kind,
        prepared: Sequence[Item],
        keys: Sequence[str],
        shared: dict[str, asyncio.Future[Any]] | None = None,
    ) -> tuple[list[asyncio.Future[Any]], list[tuple[str, Item]]]:
        """(one future per item, the (key, item) pairs to buy).

        A cache hit's future is done; an item identical to one in flight shares its
        future; the others are put in flight, and :meth:`buy` resolves them. ``shared``
        (a call looked up in windows): the futures of the call's items in flight in its
        earlier windows, shared as if still in flight; this window's are added to it.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        to_buy: list[tuple[str, Item]] = []
        hits = 0
        saved = Decimal(0)
        # the cache is read once for all keys not in flight (nothing changes it meanwhile:
        # this loop does not await)
        earlier = {} if shared is None else shared
        ask = [
            key for key in dict.fromkeys(keys) if key not in self.inflight and key not in earlier
        ]
        cached = dict(zip(ask, self._storage.get_many(ask), strict=True))
        for item, key in zip(prepared, keys, strict=True):
            fut = self.inflight.get(key) or earlier.get(key)
            if fut is not None:
                self.stats.shared_in_flight += 1
                if shared is not None:
                    shared[key] = fut
            else:
                fut = loop.create_future()
                entry = cached[key]
                if entry is not None and (kind == "answer" or entry.vector is not None):
                    if entry.vector is not None:
                        # what was bought before is the dimension every new answer must have
                        self._dims.setdefault(kind, int(entry.vector.shape[0]))
                    fut.set_result(result_from_entry(kind, entry))
                    hits += 1
                    saved += Decimal(str(entry.meta.get("cost_usd", "0")))
                else:
                    self.inflight[key] = fut
                    to_buy.append((key, item))
                    if shared is not None:
                        shared[key] = fut
            futures.append(fut)
        if hits:
            try:
                self.count_hits(kind, hits, saved)
            except BaseException:
                # the caller's on_event hook raised: the items put in flight above will not
                # be bought, so nothing may wait on them (no one else holds them: no await)
                for key, _ in to_buy:
                    self.inflight.pop(key).cancel()
                raise
        return futures, to_buy

    def count_hits(self, kind: Kind, hits: int, saved: Decimal) -> None:
        """Count ``hits`` cache hits that saved ``saved`` dollars (stats, event, ledger)."""
        self.stats.cache_hits += hits
        self.stats.saved_usd += saved
        # the ledger line first, as for a bought answer: a hook that raises loses no line
        self._storage.record(kind, hits, Decimal(0), Usage(), outcome="cache_hit", saved=saved)
        emit(self._on_event, "hit", hits)

    def buy(self, kind: Kind, to_buy: list[tuple[str, Item]]) -> Awaitable[Any]:
        """Buy the items :meth:`lookup` put in flight (or wait for those another process
        is buying), resolving their futures: await what this returns, at once."""
        to_buy, theirs = self._claim(kind, to_buy)
        chunks = self._batcher.chunks(kind, to_buy)
        if len(chunks) == 1 and not theirs:
            # one request: the caller awaits it (a task per call, or a coroutine around
            # this one, costs CPU a small call notices)
            return self._buy_chunk(kind, chunks[0])
        return asyncio.gather(
            *(self._buy_chunk(kind, chunk) for chunk in chunks),
            *([self._await_claimed(kind, theirs)] if theirs else []),
        )

    def _claim(
        self, kind: Kind, pairs: list[tuple[str, Item]]
    ) -> tuple[list[tuple[str, Item]], list[tuple[str, Item]]]:
        """(items leased to us to buy, items another process is buying).

        A key leased to us may have been bought and released by another process since our
        first cache look (it caches, then releases): look again before paying for it.
        """
        if self._claims is None:
            return pairs, []
        started = time.perf_counter()
        mine = self._claims.claim([key for key, _ in pairs])
        self.timings.add("cache", started)
        to_buy, theirs, found = [], [], []
        ours = [key for key, _ in pairs if key in mine]
        cached = dict(zip(ours, self._storage.get_many(ours), strict=True))
        for key, item in pairs:
            if key not in mine:
                theirs.append((key, item))
                continue
            entry = cached[key]
            if entry is not None and (kind == "answer" or entry.vector is not None):
                found.append((key, entry))
            else:
                to_buy.append((key, item))
        if found:
            started = time.perf_counter()
            self._claims.release([key for key, _ in found])
            self.timings.add("cache", started)
            try:
                self._serve_cached(kind, found)
            except BaseException:
                # the caller's on_event hook raised (as in lookup): the other items will
                # not be bought here, so none is left leased to us, nor in flight
                self._claims.release([key for key, _ in to_buy])
                for key, _ in [*to_buy, *theirs]:
                    self.inflight.pop(key).cancel()
                raise
        return to_buy, theirs

    def _serve_cached(self, kind: Kind, found: list[tuple[str, CacheEntry]]) -> None:
        """Resolve waiting items with entries another process just cached (cache hits)."""
        saved = Decimal(0)
        for key, entry in found:
            fut = self.inflight.pop(key)
            if not fut.done():
                fut.set_result(result_from_entry(kind, entry))
            saved += Decimal(str(entry.meta.get("cost_usd", "0")))
        self.count_hits(kind, len(found), saved)

    async def _await_claimed(self, kind: Kind, pairs: list[tuple[str, Item]]) -> None:
        """Wait for items another live process is buying; buy those it leaves (it stopped
        or died before caching them)."""
        assert self._claims is not None
        pending = dict(pairs)
        try:
            while pending:
                await asyncio.sleep(CLAIM_POLL_S)  # polling: the other process is remote
                found = []
                waiting = list(pending)
                for key, entry in zip(waiting, self._storage.get_many(waiting), strict=True):
                    if entry is not None and (kind == "answer" or entry.vector is not None):
                        found.append((key, entry))
                if found:
                    for key, _ in found:
                        del pending[key]
                    self._serve_cached(kind, found)
                started = time.perf_counter()
                held = self._claims.held_elsewhere(list(pending))
                self.timings.add("cache", started)
                free = [(k, i) for k, i in pending.items() if k not in held]
                if free:
                    mine, theirs = self._claim(kind, free)
                    still_theirs = {key for key, _ in theirs}  # grabbed by another meanwhile
                    for key, _ in free:
                        if key not in still_theirs:
                            del pending[key]
                    await asyncio.gather(
                        *(self._buy_chunk(kind, c) for c in self._batcher.chunks(kind, mine))
                    )
        except BaseException as exc:
            for key in pending:
                fut = self.inflight.pop(key, None)
                if fut is not None and not fut.done():
                    if isinstance(exc, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(exc)
            raise

    def _lease_guard(
        self, chunk: list[tuple[str, Item]], claimed_at: float
    ) -> Callable[[], None] | None:
        """What runs right before the chunk's request is sent: when its keys were claimed
        RECLAIM_AFTER_S ago or more (the process may have been stopped past its lease
        time: another process may hold or have bought them), claim them again and look in
        the cache; LeasesLapsed when any is another's or cached."""
        claims = self._claims
        if claims is None:
            return None
        keys = [key for key, _ in chunk]

        def guard() -> None:
            if _now() - claimed_at < RECLAIM_AFTER_S:
                return
            mine = claims.claim(keys)
            if len(mine) < len(keys) or any(e is not None for e in self._storage.get_many(keys)):
                raise LeasesLapsed

        return guard

    async def _without_long_inputs(
        self,
        kind: Kind,
        chunk: list[tuple[str, Item]],
        futs: list[asyncio.Future[Any]],
        exc: BadRequestError,
        claimed_at: float,
    ) -> bool:
        """After the 400 ``exc`` for ``chunk``: when some of its inputs may be over the
        model's per-input limit, buy the others in one request and, if that is answered,
        each of those alone (a refusal then names its input); True when done so. Raises
        an :class:`InputTooLongError` for a chunk of one such input, and what stopped the
        others (a budget stop, an account out of credit...) when not a 400: the long
        inputs are not sent then, and fail with it."""
        long = self._batcher.over_limit(kind, chunk)
        if not long:
            return False
        if len(chunk) == 1:
            raise self._batcher.too_long(kind, exc, chunk[0][1]) from exc
        rest = [pair for pair in chunk if pair[0] not in long]
        if rest:
            await self._buy_chunk(kind, rest, claimed_at)
            rest_futs = [f for (key, _), f in zip(chunk, futs, strict=True) if key not in long]
            if any(f.cancelled() for f in rest_futs):
                return False
            failures = [e for e in (f.exception() for f in rest_futs) if e is not None]
            for failure in failures:
                if not isinstance(failure, BadRequestError):
                    raise failure
            if failures:
                return False  # refused without them too: not (only) a length problem
        await asyncio.gather(
            *(self._buy_chunk(kind, [p], claimed_at) for p in chunk if p[0] in long)
        )
        return True

    async def _buy_chunk(
        self, kind: Kind, chunk: list[tuple[str, Item]], claimed_at: float | None = None
    ) -> None:
        """Buy ``chunk`` (its keys claimed at ``claimed_at``, now when None: a request
        split from another keeps that one's claim time for its lease guard)."""
        spec = self._batcher.spec(kind, [item for _, item in chunk])
        futs = [self.inflight[key] for key, _ in chunk]
        claimed_at = _now() if claimed_at is None else claimed_at
        guard = self._lease_guard(chunk, claimed_at)
        lapsed = False
        try:
            started = time.perf_counter()
            estimate_usage = self.provider.estimate_usage(spec)
            self.timings.add("prepare", started)
            estimate = self.price.cost(estimate_usage)
            tokens = (
                estimate_usage.input_tokens
                + estimate_usage.output_tokens
                + estimate_usage.image_tokens
            )
            try:
                parsed, cost = await self._sender.send_with_retries(
                    spec, estimate, tokens, guard, estimate_usage.output_tokens
                )
            except BudgetExceededError as exc:
                if len(chunk) == 1 or isinstance(exc, BudgetOverrunError):
                    raise
                # A whole batch does not fit what is left: buy what does fit, in halves.
                mid = len(chunk) // 2
                await asyncio.gather(
                    self._buy_chunk(kind, chunk[:mid], claimed_at),
                    self._buy_chunk(kind, chunk[mid:], claimed_at),
                )
                return
            except BadRequestError as exc:
                # maybe an input over the model's per-input limit (a 400 fails the whole
                # request, unbilled): buy the others, then send each such input alone
                if not await self._without_long_inputs(kind, chunk, futs, exc, claimed_at):
                    raise
                return
            results = results_of(kind, parsed, cost, len(chunk))
            # as the cache holds them: a rerun from the cache gets these very values
            handed = self._storage.put(kind, chunk, results, parsed, cost)
            self.stats.items_bought += len(chunk)
            emit(self._on_event, "bought", len(chunk))
            for fut, result in zip(futs, handed, strict=True):
                if not fut.done():
                    fut.set_result(result)
        except LeasesLapsed:
            lapsed = True  # nothing was sent: the items go through the claims again, below
        except asyncio.CancelledError:
            for fut in futs:
                fut.cancel()
            raise
        except BaseException as exc:
            for fut in futs:
                if not fut.done():
                    fut.set_exception(exc)
        finally:
            if not lapsed:
                for key, _ in chunk:
                    self.inflight.pop(key, None)
                if self._claims is not None:
                    started = time.perf_counter()
                    self._claims.release([key for key, _ in chunk])  # after caching them
                    self.timings.add("cache", started)
        if lapsed:
            mine, theirs = self._claim(kind, chunk)  # serves what another process cached
            await asyncio.gather(
                *(self._buy_chunk(kind, c) for c in self._batcher.chunks(kind, mine)),
                *([self._await_claimed(kind, theirs)] if theirs else []),
            )

"""Harvest: buy every teacher embedding a dataset needs, cache it, export the store.

Images (K views each) and class prompts go through one TeacherClient. Everything
bought is cached as it arrives, so a run stopped by the budget, a crash or Ctrl-C
resumes with the rest and a second identical run sends nothing. When every item is
cached, the embeddings are exported as a memory-mapped EmbeddingStore for training.

Writing that store (as vectors arrive, or from the cache alone: :func:`export_store`) is
:mod:`distill.harvest_store`; its public names are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from cache import StoreError
from distill.data import Dataset, class_prompts
from distill.data.views import CANNOT_DECODE, pixels_decode
from distill.harvest_store import (
    FilesChanged,
    ImageItem,
    SizesDisagree,
    VectorSink,
    export_store,
    image_items,
    store_dir,
)
from distill.view_requests import ViewClient, build_requests, upload_encoding, view_request
from distill.workers import all_or_none, off_loop
from vlmclient import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ClientStats,
    ConfigurationError,
    Embedder,
    ImageEmbeddingRequest,
    InputError,
    InputTooLongError,
    InternalServerError,
    Kind,
    MalformedResponsesError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RedirectError,
    RequestTimeoutError,
    SpendRecordError,
    TextEmbeddingRequest,
    Timings,
    VLMError,
)

__all__ = [
    "FATAL",
    "TOO_LONG",
    "UNREADABLE",
    "CountsPurchases",
    "HarvestClient",
    "HarvestResult",
    "ImageItem",
    "Spending",
    "export_store",
    "harvest",
    "image_items",
    "refused_prompts",
    "store_dir",
    "view_request",
]

log = logging.getLogger("distill.harvest")
R = TypeVar("R")

# Errors that every later request would hit too: stop at once instead of failing item by item.
# Requests in a row that got no HTTP answer at all (connection refused or lost, timed out),
# or a status time was to fix (429, 5xx, 529), after their retries: the run stops instead
# of waiting out every request's retries (and, for a gateway's 502/504, paying for each).
UNANSWERED_IN_A_ROW = 3
# Errors the retries were for: one that still fails after them fails its item.
_UNANSWERED = (
    APIConnectionError, RateLimitError, OverloadedError, InternalServerError, RequestTimeoutError
)

FATAL = (
    AuthenticationError,
    PermissionDeniedError,
    NotFoundError,
    QuotaExceededError,
    RedirectError,
    ConfigurationError,
    SpendRecordError,
    MalformedResponsesError,
)
UNREADABLE = "cannot prepare image"  # failure reason of items that no retry can fix
TOO_LONG = "too long for the teacher"  # ... of prompts the model refuses: shorten them
SHOWN_CLASS_CHARS = 40  # of a class name that names its refused prompt
CHUNKS_IN_FLIGHT_PER_SLOT = 2  # chunks scheduled ahead per concurrency slot
# What a stop signal loses during the steps after the purchases (run off the event loop,
# :func:`~distill.workers.off_loop`, so that the signal stops them between two files):
STOPPED_WRITING = (
    "while the embedding store was written (no request was in flight): every answer is "
    "bought and cached; run again to write the store (it sends nothing: $0)"
)
STOPPED_COUNTING = (
    "while what is left to buy was priced (no request was in flight): every answer "
    "received is cached; run again to resume"
)


class Spending(Protocol):
    """The part of a budget harvest reads: what was spent so far."""

    @property
    def spent(self) -> Decimal: ...


@runtime_checkable
class HarvestClient(Embedder, ViewClient, Protocol):
    """What :func:`harvest` needs of its client (:class:`vlmclient.TeacherClient` is one):
    the two embedding calls, cache look-ups by key (:class:`ViewClient`), plus the
    client's limits, spend, health and identity."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def budget(self) -> Spending: ...

    @property
    def overrun(self) -> Exception | None: ...

    @property
    def storage_problem(self) -> str | None: ...

    def batch_limit(self, kind: Kind) -> int: ...

    def plan(
        self, kind: Kind, requests: Iterable[ImageEmbeddingRequest | TextEmbeddingRequest]
    ) -> tuple[int, Decimal]: ...


@dataclass
class HarvestResult:
    images_total: int = 0
    texts_total: int = 0
    bought: int = 0
    cache_hits: int = 0
    # answered by the purchase of an identical item (two files with the same bytes): not
    # bought twice, so not counted in ``bought`` (when the client counts its purchases)
    identical: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    # images whose pixels cannot be decoded (image id, reason): never sent, and the store
    # is written without them (its meta lists them: train and eval leave them out)
    left_out: list[tuple[str, str]] = field(default_factory=list)
    # image views done with because their image is left out (never sent): with ``bought``,
    # ``cache_hits`` and ``identical`` they make the progress of ``images_total`` views
    left_out_views: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    spent_usd: Decimal = Decimal(0)
    stopped_by_budget: str | None = None  # the budget error's message
    remaining_items: int = 0
    remaining_cost_usd: Decimal = Decimal(0)
    store_path: Path | None = None
    fatal: str | None = None
    fatal_is_usage: bool = False  # the fatal error is a configuration error (CLI exit 2)
    overrun: str | None = None  # the provider billed more than reserved: what happened
    store_error: str | None = None  # the export failed after every item was bought
    store_error_is_disk: bool = False  # ... writing it, not vectors of two sizes
    views_computed: int = 0  # augmented views computed (a fully cached rerun computes none)
    # Memory is bounded by these, not by the data set: image views prepared (bytes read)
    # and not yet answered, now and at most; ``window`` is the bound harvest keeps to
    # (requests in flight x items per request).
    in_flight: int = 0
    in_flight_peak: int = 0
    window: int = 0

    @property
    def complete(self) -> bool:
        return self.store_path is not None


def _batches(items: Iterable[ImageItem], size: int) -> Iterator[list[ImageItem]]:
    batch: list[ImageItem] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@runtime_checkable
class CountsPurchases(Protocol):
    """A client that counts what it bought (:class:`vlmclient.TeacherClient` does): the
    harvest then also counts items of a call that failed part-way, e.g. a later batch of
    it stopped by a cap, which were bought and cached all the same."""

    @property
    def stats(self) -> ClientStats: ...


async def harvest(
    dataset: Dataset,
    client: HarvestClient,
    *,
    cache_dir: str | os.PathLike[str],
    views: int = 1,
    prompt: str = "a photo of a {}",
    on_progress: Callable[[HarvestResult], None] | None = None,
    timings: Timings | None = None,
) -> HarvestResult:
    """Embed every image view and class prompt of ``dataset``; export the store when done.

    ``timings`` (the client's, for ``harvest -v``) also counts the harvest's own work:
    reading images and computing views (``prepare``), writing the store (``store``).
    """
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        # 0 bought every class prompt and no image, and wrote no store
        raise ValueError(f"views must be a whole number >= 1 (views per image), not {views!r}")
    timings = timings if timings is not None else Timings()
    cache_dir = Path(cache_dir)  # a str was a TypeError deep in store_dir
    result = HarvestResult(skipped=list(dataset.skipped))
    counted = client.stats.items_bought if isinstance(client, CountsPurchases) else None
    prompts = class_prompts(dataset.class_names, prompt) if dataset.class_names else []
    result.images_total, result.texts_total = len(dataset.samples) * views, len(prompts)
    text_vectors: list[np.ndarray] = []
    stop = asyncio.Event()
    # Vectors go straight into the store being built (no per-item vectors held); a store
    # is only made for labelled data (it needs the class prompts).
    sink = VectorSink(
        store_dir(cache_dir, client.teacher, dataset) if prompts and dataset.samples else None,
        dataset.samples.ids,
        views,
        timings,
    )

    views_left_out: set[tuple[int, int]] = set()

    def leave_out(item: ImageItem, why: str) -> None:
        if item.row not in sink.left_out:  # once an image, whatever its views
            result.left_out.append((item.image_id, why))
        sink.leave_out(item, why)
        if (item.row, item.view) not in views_left_out:  # done with, for the progress
            views_left_out.add((item.row, item.view))
            result.left_out_views += 1
            if on_progress is not None:
                on_progress(result)

    unanswered = [0]  # requests in a row that got no answer after their retries
    answered = [0]  # items answered by a purchase: bought, or identical to one bought

    def count_bought() -> None:
        result.bought = answered[0]
        if counted is not None and isinstance(client, CountsPurchases):
            # the client's count: an item identical to another one in flight shares its
            # answer (not cached, not bought again); items of a call that failed part-way
            # (a later batch stopped by a cap) were bought and cached all the same
            result.bought = client.stats.items_bought - counted
            result.identical = max(0, answered[0] - result.bought)

    def account(n_hits: int, n_bought: int) -> None:
        result.cache_hits += n_hits
        answered[0] += n_bought
        count_bought()
        result.spent_usd = client.budget.spent
        if on_progress is not None:
            on_progress(result)

    async def run(
        coro_factory: Callable[[], Awaitable[list[R]]],
        names: Sequence[str],
        refused: list[BadRequestError] | None = None,
        too_long: list[InputTooLongError] | None = None,
    ) -> list[R] | None:
        """The results, or None when the call failed (recorded in ``result``; a request
        the teacher refused goes to ``refused`` instead, when one is given; a call whose
        only failures are inputs too long for the model to ``too_long``)."""
        try:
            out = await coro_factory()
            unanswered[0] = 0
            return out
        except InputTooLongError as exc:
            if too_long is not None and exc.results is not None:
                unanswered[0] = 0
                too_long.append(exc)
            else:
                result.failed.extend((n, str(exc)) for n in names)
        except BadRequestError as exc:
            if refused is None:
                result.failed.extend((n, str(exc)) for n in names)
            else:
                refused.append(exc)
        except BudgetExceededError as exc:
            result.stopped_by_budget = str(exc)
            stop.set()
        except FATAL as exc:
            if result.fatal is None:
                result.fatal_is_usage = isinstance(exc, ConfigurationError)
            result.fatal = str(exc)
            stop.set()
        except VLMError as exc:
            result.failed.extend((n, str(exc)) for n in names)
            if isinstance(exc, _UNANSWERED):
                unanswered[0] += 1
                if unanswered[0] >= UNANSWERED_IN_A_ROW and result.fatal is None:
                    # a teacher that stopped (or a wrong --base-url), or one rate-limiting
                    # or overloaded for good: every further request would wait out its
                    # retries too (a minute of them; a gateway's 504s charged each time)
                    failed = f"{unanswered[0]} requests in a row failed after their retries"
                    if isinstance(exc, APIConnectionError):
                        result.fatal = (
                            f"the teacher does not answer: {failed} (last: {exc}); nothing "
                            "more was sent. Check that it runs (and --base-url / --timeout), "
                            "then run again: what was bought is cached"
                        )
                    else:
                        result.fatal = (
                            f"the teacher refuses what it is sent: {failed} (last: {exc}); "
                            "nothing more was sent. Wait (or lower --concurrency, set --rpm), "
                            "then run again: what was bought is cached"
                        )
                    stop.set()
        account(0, 0)
        return None

    refused: set[int] = set()  # prompts refused as too long: no rerun buys them as they are
    if prompts:
        reqs = [TextEmbeddingRequest(text=p) for p in prompts]
        too_long: list[InputTooLongError] = []
        out = await run(lambda: client.embed_texts(reqs), prompts, too_long=too_long)
        if too_long:
            # only those fail (a rerun alone fails them again); the others are bought
            exc = too_long[0]
            result.failed.extend(refused_prompts(exc, dataset.class_names))
            refused = {e.index for e in exc.errors}
            out = [r for r in exc.results or () if r is not None]
            account(sum(r.cached for r in out), sum(not r.cached for r in out))
        elif out is not None:
            text_vectors = [r.vector for r in out]
            account(sum(r.cached for r in out), sum(not r.cached for r in out))

    limit = client.batch_limit("image_embedding")
    slots = max(1, client.concurrency * CHUNKS_IN_FLIGHT_PER_SLOT)
    result.window = slots * limit
    # One shared generator: each worker takes the next chunk when it is free, so at most
    # ``slots`` chunks are read and prepared at any moment, whatever the data set's size.
    chunks = _batches(image_items(dataset, views), limit)

    async def embed_chunk(chunk: list[ImageItem]) -> None:
        started, booked = time.perf_counter(), timings.booked()
        # Cached views are found by content id before any view is computed; the rest are
        # prepared item by item (the client then finds them ready): one image that cannot
        # be decoded must not fail the other items of its request. The client times its
        # own cache look-ups and preparing inside: those seconds are not counted twice.
        built = build_requests(client, chunk, hflip=dataset.hflip)
        timings.add("prepare", started, nested=timings.booked() - booked)
        sink.read(chunk, built.digests)
        result.views_computed += built.views_computed
        for item, why in built.failed:
            if why.startswith(CANNOT_DECODE):
                leave_out(item, why)
            else:
                result.failed.append((item.image_id, f"{UNREADABLE}: {why}"))
        if built.cached:
            sink.put([i for i, _ in built.cached], [r.vector for _, r in built.cached])
            account(len(built.cached), 0)
        reqs, kept = built.requests, built.items
        if not reqs:
            return
        result.in_flight += len(reqs)
        result.in_flight_peak = max(result.in_flight_peak, result.in_flight)
        sent = len(reqs)
        refused: list[BadRequestError] = []
        try:
            out = await run(
                lambda: client.embed_images(reqs),
                [i.image_id for i in kept],
                refused,
            )
            if refused:
                reqs, kept = _without_undecodable(reqs, kept, refused[0], result, leave_out)
                out = (
                    await run(lambda: client.embed_images(reqs), [i.image_id for i in kept])
                    if reqs
                    else None
                )
        finally:
            result.in_flight -= sent
        if out is None:
            return
        sink.put(kept, [r.vector for r in out])
        account(sum(r.cached for r in out), sum(not r.cached for r in out))

    async def worker() -> None:
        for chunk in chunks:
            if stop.is_set():
                return
            await embed_chunk(chunk)

    try:
        await all_or_none([worker() for _ in range(slots)])
        if client.overrun is not None:  # even when the overrun was the last request
            result.overrun = str(client.overrun)
        if client.storage_problem is not None and result.fatal is None:
            # a failure on the last requests: nothing more was sent, but the run is not sound
            result.fatal = client.storage_problem

        missing = sink.missing
        if missing or len(text_vectors) != len(prompts):
            # the prompts refused as too long are not counted: they need shortening first
            buyable = [p for i, p in enumerate(prompts) if i not in refused]
            result.remaining_items = missing + len(buyable) - len(text_vectors)
            if result.fatal is None:  # after a fatal stop (a damaged cache...) it is not asked
                # Counted by the cache, not by the failed chunks: a chunk stopped by the budget
                # may hold items that were cached all along, and those cost nothing to finish.
                result.remaining_items, result.remaining_cost_usd = await off_loop(
                    lambda check: _remaining(
                        client, dataset, views, sink, buyable, text_vectors, check
                    ),
                    STOPPED_COUNTING,
                )
            return result
        if not result.images_total or not prompts:
            return result  # nothing to export (unlabelled data or empty)
        if len(sink.left_out) == len(dataset.samples):
            result.fatal = (
                "no image of the data can be decoded (listed above): no embedding store was "
                "written. Replace them with good copies, then run again"
            )
            return result
        started, booked = time.perf_counter(), timings.booked()
        try:
            vectors = np.stack(text_vectors)
            result.store_path = await off_loop(
                lambda check: sink.commit(
                    text_vectors=vectors,
                    class_names=list(dataset.class_names),
                    prompts=prompts,
                    teacher=client.teacher,
                    teacher_fingerprint=client.fingerprint,
                    dataset=dataset,
                    check=check,
                ),
                STOPPED_WRITING,
            )
        except FilesChanged as exc:
            result.fatal = str(exc)  # their old content's answers: a rerun buys the new
        except (OSError, StoreError) as exc:
            # Every vector is paid for and cached; only the export failed (disk full, or
            # cached vectors that disagree in size: a server that answered some wrongly).
            result.store_error = f"could not write the embedding store: {exc}"
            result.store_error_is_disk = not isinstance(exc, SizesDisagree)
        finally:
            timings.add("store", started, nested=timings.booked() - booked)
        return result
    finally:
        sink.abort()  # a store not committed (stopped, failed, cancelled) leaves nothing
        count_bought()


def refused_prompts(exc: InputTooLongError, class_names: Sequence[str]) -> list[tuple[str, str]]:
    """The failures (class, reason) of the class prompts ``exc`` refused as too long for
    the teacher, each named by its class: what every command that embeds the class
    prompts reports (the CLI then says to shorten them)."""
    return [(_class_named(class_names[e.index]), f"{TOO_LONG}: {e}") for e in exc.errors]


def _class_named(name: str) -> str:
    """How a failure names the class of a refused prompt (its name may be kilobytes).

    >>> _class_named("cat")
    "class 'cat'"
    """
    if len(name) > SHOWN_CLASS_CHARS:
        name = name[:SHOWN_CLASS_CHARS] + "..."
    return f"class {name!r}"


def _without_undecodable(
    reqs: list[ImageEmbeddingRequest],
    kept: list[ImageItem],
    refused: BadRequestError,
    result: HarvestResult,
    leave_out: Callable[[ImageItem, str], None],
) -> tuple[list[ImageEmbeddingRequest], list[ImageItem]]:
    """After the teacher refused a whole request (400): the requests and items left once
    those whose pixels do not decode are taken out and left out (``leave_out``).

    A file whose header opens but whose pixels do not decode (a truncated download) is
    sent as it is on disk (view 0); a provider then refuses its whole request, batch-mates
    included, on every run. The pixels are decoded here only after a refusal, so a harvest
    pays nothing for the check until one happens. When every image decodes, the refusal
    was about something else: every item fails with it, as before.
    """
    bad = [k for k, req in enumerate(reqs) if not pixels_decode(req.image.data)]
    if not bad:
        result.failed.extend((i.image_id, str(refused)) for i in kept)
        return [], []
    for k in bad:
        leave_out(
            kept[k],
            f"{CANNOT_DECODE} {os.fspath(kept[k].path)!r}: its pixel data is damaged (the "
            "teacher refused its request)",
        )
    good = [k for k in range(len(reqs)) if k not in set(bad)]
    return [reqs[k] for k in good], [kept[k] for k in good]


def _remaining(
    client: HarvestClient,
    dataset: Dataset,
    views: int,
    sink: VectorSink,
    prompts: list[str],
    text_vectors: list[np.ndarray],
    check: Callable[[], None],
) -> tuple[int, Decimal]:
    """(items still to buy, worst-case cost of buying them): the uncached ones only, of
    the image views and of ``prompts`` (those a rerun can buy: not the ones refused as
    too long).

    Priced item by item as they are read (the client holds one request's items at a
    time), never every remaining image's bytes at once; ``check()`` before each item (it
    raises to stop: :func:`distill.workers.off_loop`)."""

    encoding = upload_encoding(client.teacher)

    def requests() -> Iterator[ImageEmbeddingRequest]:
        for item in image_items(dataset, views):
            if sink.have[item.row, item.view] or item.row in sink.left_out:
                continue
            check()
            try:
                yield client.prepare(view_request(item, dataset.hflip, encoding))
            except (InputError, OSError, ValueError):
                continue  # cannot be sent at all, so it costs nothing

    count, cost = 0, Decimal(0)
    if sink.missing:
        count, cost = client.plan("image_embedding", requests())
    if len(text_vectors) < len(prompts):
        n, c = client.plan("text_embedding", [TextEmbeddingRequest(text=p) for p in prompts])
        count, cost = count + n, cost + c
    return count, cost

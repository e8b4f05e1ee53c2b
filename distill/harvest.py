"""Harvest: buy every teacher embedding a dataset needs, cache it, export the store.

Images (K views each) and class prompts go through one TeacherClient. Everything
bought is cached as it arrives, so a run stopped by the budget, a crash or Ctrl-C
resumes with the rest and a second identical run sends nothing. When every item is
cached, the embeddings are exported as a memory-mapped EmbeddingStore for training.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from cache import CacheLike, VectorFormat
from cache.layout import STORES_DIR
from cache.store import EmbeddingStore, StoreError
from distill.data import Dataset, class_prompts
from distill.view_requests import (
    ViewClient,
    build_requests,
    cached_view_vector,
    upload_encoding,
    view_request,
)
from vlmclient import (
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    Embedder,
    ImageEmbeddingRequest,
    InputError,
    Kind,
    MalformedResponsesError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    SpendRecordError,
    TextEmbeddingRequest,
    Timings,
    VLMError,
    endpoint_id,
    item_cache_key,
    prepare_item,
    teacher_fingerprint,
)
from vlmclient.providers import parse_teacher

__all__ = [
    "FATAL",
    "UNREADABLE",
    "HarvestClient",
    "HarvestResult",
    "ImageItem",
    "Spending",
    "export_store",
    "harvest",
    "image_items",
    "store_dir",
    "view_request",
]

log = logging.getLogger("distill.harvest")
R = TypeVar("R")

# Errors that every later request would hit too: stop at once instead of failing item by item.
FATAL = (
    AuthenticationError,
    PermissionDeniedError,
    NotFoundError,
    QuotaExceededError,
    ConfigurationError,
    SpendRecordError,
    MalformedResponsesError,
)
UNREADABLE = "cannot prepare image"  # failure reason of items that no retry can fix
CHUNKS_IN_FLIGHT_PER_SLOT = 2  # chunks scheduled ahead per concurrency slot


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
        self, kind: Kind, requests: Sequence[ImageEmbeddingRequest | TextEmbeddingRequest]
    ) -> tuple[int, Decimal]: ...


@dataclass(frozen=True)
class ImageItem:
    """One (image, view) pair to embed: its row in the store and its bytes to send."""

    row: int
    view: int
    image_id: str
    path: Path


@dataclass
class HarvestResult:
    images_total: int = 0
    texts_total: int = 0
    bought: int = 0
    cache_hits: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    spent_usd: Decimal = Decimal(0)
    stopped_by_budget: str | None = None  # the budget error's message
    remaining_items: int = 0
    remaining_cost_usd: Decimal = Decimal(0)
    store_path: Path | None = None
    fatal: str | None = None
    overrun: str | None = None  # the provider billed more than reserved: what happened
    store_error: str | None = None  # the export failed after every item was bought
    views_computed: int = 0  # augmented views computed (a fully cached rerun computes none)

    @property
    def complete(self) -> bool:
        return self.store_path is not None


def image_items(dataset: Dataset, views: int) -> list[ImageItem]:
    return [
        ImageItem(row=row, view=v, image_id=s.id, path=s.path)
        for row, s in enumerate(dataset.samples)
        for v in range(views)
    ]


def store_dir(cache_dir: Path, teacher: str, dataset: Dataset) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset.root.name}-{teacher}")
    return cache_dir / STORES_DIR / f"{slug}-{dataset.fingerprint()[:12]}"


async def harvest(
    dataset: Dataset,
    client: HarvestClient,
    *,
    cache_dir: Path,
    views: int = 1,
    prompt: str = "a photo of a {}",
    on_progress: Callable[[HarvestResult], None] | None = None,
    timings: Timings | None = None,
) -> HarvestResult:
    """Embed every image view and class prompt of ``dataset``; export the store when done.

    ``timings`` (the client's, for ``harvest -v``) also counts the harvest's own work:
    reading images and computing views (``prepare``), writing the store (``store``).
    """
    timings = timings if timings is not None else Timings()
    result = HarvestResult(skipped=list(dataset.skipped))
    items = image_items(dataset, views)
    prompts = class_prompts(dataset.class_names, prompt) if dataset.class_names else []
    result.images_total, result.texts_total = len(items), len(prompts)
    vectors: dict[tuple[int, int], np.ndarray] = {}
    text_vectors: list[np.ndarray] = []
    stop = asyncio.Event()

    def account(n_hits: int, n_bought: int) -> None:
        result.cache_hits += n_hits
        result.bought += n_bought
        result.spent_usd = client.budget.spent
        if on_progress is not None:
            on_progress(result)

    async def run(
        coro_factory: Callable[[], Awaitable[list[R]]], names: Sequence[str]
    ) -> list[R] | None:
        """The results, or None when the call failed (recorded in ``result``)."""
        try:
            return await coro_factory()
        except BudgetExceededError as exc:
            result.stopped_by_budget = str(exc)
            stop.set()
        except FATAL as exc:
            result.fatal = str(exc)
            stop.set()
        except VLMError as exc:
            result.failed.extend((n, str(exc)) for n in names)
        account(0, 0)
        return None

    if prompts:
        reqs = [TextEmbeddingRequest(text=p) for p in prompts]
        out = await run(lambda: client.embed_texts(reqs), prompts)
        if out is not None:
            text_vectors = [r.vector for r in out]
            account(sum(r.cached for r in out), sum(not r.cached for r in out))

    limit = client.batch_limit("image_embedding")
    chunks = [items[i : i + limit] for i in range(0, len(items), limit)]
    gate = asyncio.Semaphore(max(1, client.concurrency * CHUNKS_IN_FLIGHT_PER_SLOT))

    async def embed_chunk(chunk: list[ImageItem]) -> None:
        async with gate:
            if stop.is_set():
                return
            started = time.perf_counter()
            # Cached views are found by content id before any view is computed; the rest
            # are prepared item by item (the client then finds them ready): one image that
            # cannot be decoded must not fail the other items of its request.
            built = build_requests(client, chunk, hflip=dataset.hflip)
            timings.add("prepare", started)
            result.views_computed += built.views_computed
            result.failed.extend((i.image_id, f"{UNREADABLE}: {why}") for i, why in built.failed)
            for i, r in built.cached:
                vectors[(i.row, i.view)] = r.vector
            if built.cached:
                account(len(built.cached), 0)
            reqs, kept = built.requests, built.items
            if not reqs:
                return
            out = await run(lambda: client.embed_images(reqs), [i.image_id for i in kept])
            if out is None:
                return
            for item, r in zip(kept, out, strict=True):
                vectors[(item.row, item.view)] = r.vector
            account(sum(r.cached for r in out), sum(not r.cached for r in out))

    await asyncio.gather(*(embed_chunk(c) for c in chunks))
    if client.overrun is not None:  # even when the overrun was the last request
        result.overrun = str(client.overrun)
    if client.storage_problem is not None and result.fatal is None:
        # a failure on the last requests: nothing more was sent, but the run is not sound
        result.fatal = client.storage_problem

    missing = [i for i in items if (i.row, i.view) not in vectors]
    if missing or len(text_vectors) != len(prompts):
        result.remaining_items = len(missing) + (len(prompts) - len(text_vectors))
        if result.fatal is None:  # after a fatal stop (a damaged cache...) the cache is not asked
            # Counted by the cache, not by the failed chunks: a chunk stopped by the budget may
            # hold items that were cached all along, and those cost nothing to finish.
            result.remaining_items, result.remaining_cost_usd = _remaining(
                client, dataset, missing, prompts, text_vectors
            )
        return result
    if not items or not prompts:
        return result  # nothing to export (unlabelled data or empty)
    started = time.perf_counter()
    image_matrix = np.stack(
        [np.stack([vectors[(row, v)] for v in range(views)]) for row in range(len(dataset.samples))]
    )
    try:
        result.store_path = _write_store(
            cache_dir,
            client.teacher,
            client.fingerprint,
            dataset,
            image_matrix,
            np.stack(text_vectors),
            prompts,
        )
    except (OSError, StoreError) as exc:
        # Every vector is paid for and cached; only the export failed (disk full...).
        result.store_error = f"could not write the embedding store: {exc}"
    finally:
        timings.add("store", started)
    return result


def _remaining(
    client: HarvestClient,
    dataset: Dataset,
    missing: list[ImageItem],
    prompts: list[str],
    text_vectors: list[np.ndarray],
) -> tuple[int, Decimal]:
    """(items still to buy, worst-case cost of buying them): the uncached ones only."""
    count, cost = 0, Decimal(0)
    reqs = []
    encoding = upload_encoding(client.teacher)
    for item in missing:
        try:
            reqs.append(client.prepare(view_request(item, dataset.hflip, encoding)))
        except (InputError, OSError, ValueError):
            continue  # cannot be sent at all, so it costs nothing
    if reqs:
        n, c = client.plan("image_embedding", reqs)
        count, cost = count + n, cost + c
    if len(text_vectors) != len(prompts):
        n, c = client.plan("text_embedding", [TextEmbeddingRequest(text=p) for p in prompts])
        count, cost = count + n, cost + c
    return count, cost


def _write_store(
    cache_dir: Path,
    teacher: str,
    fingerprint: str,
    dataset: Dataset,
    images: np.ndarray,
    texts: np.ndarray,
    prompts: list[str],
    fmt: VectorFormat = "float16",
) -> Path:
    path = store_dir(cache_dir, teacher, dataset)
    EmbeddingStore.write(
        path,
        image_ids=[s.id for s in dataset.samples],
        image_vectors=images.astype(np.float32),
        text_vectors=texts.astype(np.float32),
        class_names=list(dataset.class_names),
        prompts=prompts,
        teacher=teacher,
        teacher_fingerprint=fingerprint,
        dataset_fingerprint=dataset.fingerprint(),
        fmt=fmt,
        extra_meta={"dataset_root": str(dataset.root), "layout": dataset.layout},
    )
    return path


def export_store(
    dataset: Dataset,
    cache: CacheLike,
    *,
    cache_dir: Path,
    teacher: str,
    views: int = 1,
    prompt: str = "a photo of a {}",
    params: dict[str, object] | None = None,
    fmt: VectorFormat = "float16",
    base_url: str | None = None,
    cache_namespace: str | None = None,
) -> tuple[Path | None, int]:
    """Build the store from cached responses only (sends nothing, needs no API key).

    ``base_url`` / ``cache_namespace`` must be those the items were bought with.
    Returns (store path or None, number of items missing from the cache).
    """
    provider, model = parse_teacher(teacher)
    params = params or {}
    endpoint = endpoint_id(provider, base_url, cache_namespace)

    def lookup(kind: str, item: ImageEmbeddingRequest | TextEmbeddingRequest) -> np.ndarray | None:
        key = item_cache_key(provider, model, params, kind, prepare_item(provider, item), endpoint)
        entry = cache.get(key)
        return None if entry is None else entry.vector

    prompts = class_prompts(dataset.class_names, prompt)
    texts = [lookup("text_embedding", TextEmbeddingRequest(text=p)) for p in prompts]
    images: dict[tuple[int, int], np.ndarray | None] = {}
    for item in image_items(dataset, views):
        try:
            if item.view == 0:
                request = view_request(item, dataset.hflip)
                images[(item.row, item.view)] = lookup("image_embedding", request)
            else:  # by its content id, else by its key before content ids
                images[(item.row, item.view)] = cached_view_vector(
                    cache, item, hflip=dataset.hflip, teacher=teacher, params=params,
                    endpoint=endpoint,
                )  # fmt: skip
        except (InputError, OSError, ValueError):
            images[(item.row, item.view)] = None
    missing = sum(v is None for v in texts) + sum(v is None for v in images.values())
    if missing or not prompts:
        return None, missing
    rows = [[images[(row, v)] for v in range(views)] for row in range(len(dataset.samples))]
    matrix = np.stack([np.stack(r) for r in rows])  # every entry present: checked above
    fingerprint = teacher_fingerprint(teacher, params, endpoint)
    path = _write_store(
        cache_dir, teacher, fingerprint, dataset, matrix, np.stack(texts), prompts, fmt
    )
    return path, 0

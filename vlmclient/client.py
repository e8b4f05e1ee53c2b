"""TeacherClient: the one way vlm-distill talks to a paid teacher.

Every item goes through the same fixed pipeline::

    cache lookup -> budget reserve -> rate limit -> retry(send) -> parse -> budget settle
    -> cache put

Identical items in flight at the same time share one future and one payment
(single-flight); cache misses are batched up to the provider's limit.

This module holds the client's public methods; the machinery lives in modules named for
what they do: :mod:`~vlmclient.keys` (cache keys, item preparation),
:mod:`~vlmclient.pipeline` (single-flight, cache hits, claims, buying),
:mod:`~vlmclient.batching` (items per request), :mod:`~vlmclient.send` (reserve, rate
limit, send, retry), :mod:`~vlmclient.settle` (billing, overruns, the breaker),
:mod:`~vlmclient.storage` (the response cache and the spend ledger) and
:mod:`~vlmclient.stats`.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, SecretStr

from cache.money import money_context
from cache.protocols import CacheEntry, CacheLike, LedgerLike

from .batching import Batcher, describe_input
from .budget import Budget
from .claims import Claims
from .credentials import SECRET_ENV, check_credentials, resolve_key
from .errors import BudgetOverrunError, ConfigurationError, InputTooLongError
from .keys import (
    ItemT,
    Keyer,
    content_cache_key,
    endpoint_id,
    image_key_part,
    item_cache_key,
    normalise_base_url,
    prepare_item,
    teacher_fingerprint,
)
from .models import (
    AnswerRequest,
    AnswerResult,
    EmbeddingResult,
    ImageEmbeddingRequest,
    Kind,
    MixedEmbeddingRequest,
    Price,
    TextEmbeddingRequest,
)
from .pipeline import Pipeline
from .price_check import refuse_free
from .prices import PriceTable, resolve_price
from .providers import PROVIDERS, parse_teacher
from .providers.base import Item, refuse_client_fields
from .ratelimit import MIN_RATE, RateLimiter
from .redact import MAX_MESSAGE_CHARS, Redactor
from .retry import RetryPolicy
from .send import Sender, default_transport
from .settle import MALFORMED_STOP_FRACTION, MALFORMED_STOP_MIN, Settler
from .shared_budget import SharedBudget
from .stats import ClientStats, EventHook
from .storage import Storage, result_from_entry
from .timing import Timings

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT",
    "MALFORMED_STOP_FRACTION",
    "MALFORMED_STOP_MIN",
    "ClientStats",
    "TeacherClient",
    "content_cache_key",
    "endpoint_id",
    "image_key_part",
    "item_cache_key",
    "normalise_base_url",
    "prepare_item",
    "teacher_fingerprint",
]

# Measured on loopback (benchmarks/client_throughput.py, docs/benchmarks.md).
DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 60.0  # seconds per request

R = TypeVar("R", EmbeddingResult, AnswerResult)

# the request class and the method of each kind (for the TypeError of a wrong item)
_REQUESTS: dict[Kind, tuple[type[Item], str]] = {
    "image_embedding": (ImageEmbeddingRequest, "embed_images"),
    "text_embedding": (TextEmbeddingRequest, "embed_texts"),
    "mixed_embedding": (MixedEmbeddingRequest, "embed_mixed"),
    "answer": (AnswerRequest, "answer"),
}


def _checked(kind: Kind, requests: object) -> Sequence[Item]:
    """``requests`` as a sequence (a generator read once), or a TypeError before
    anything is reserved or sent when they are not a list of ``kind``'s request class: a
    str or one request where a list goes, a dict, a str, bytes, or another kind's request
    in it (an image request given to embed_texts went out as a text request with no
    texts; a dict was an AttributeError)."""
    _check_many(kind, requests)
    assert isinstance(requests, Iterable)  # (for mypy: _check_many refused the rest)
    items: Sequence[Any] = requests if isinstance(requests, (list, tuple)) else list(requests)
    for i, item in enumerate(items):
        _check_item(kind, i, item)
    return items


def _check_many(kind: Kind, requests: object) -> None:
    """TypeError for ``requests`` that are not an iterable of requests."""
    cls, method = _REQUESTS[kind]
    if isinstance(requests, (str, bytes, bytearray, BaseModel)) or not isinstance(
        requests, Iterable
    ):
        raise TypeError(
            f"{method} takes a list of {cls.__name__}, not a {type(requests).__name__}: "
            f"{method}([{cls.__name__}(...), ...])"
        )


def _check_item(kind: Kind, i: int, item: object) -> None:
    """TypeError for request ``i`` when it is not ``kind``'s request class."""
    cls, method = _REQUESTS[kind]
    if not isinstance(item, cls):
        other = [m for c, m in _REQUESTS.values() if isinstance(item, c)]
        hint = f"use {other[0]} for it" if other else f"wrap it: {cls.__name__}(...)"
        raise TypeError(
            f"{method} takes a list of {cls.__name__}; request {i} is a "
            f"{type(item).__name__} ({hint}; nothing was sent)"
        )


def _not_json(value: object, where: str = "params") -> str | None:
    """What in ``value`` JSON cannot carry as itself (None if all of it can): params go
    into every request body and cache key as JSON. A numpy number, a Decimal or an
    object was keyed by its str() and then failed every request as "not JSON
    serializable"; NaN went out as invalid JSON.

    >>> _not_json({"stop": ["a", 1.5, None, True], "extra": {"k": float("inf")}})
    "params['extra']['k'] is inf"
    """
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value}"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} key {key!r} is a {type(key).__name__}"
            found = _not_json(item, f"{where}[{key!r}]")
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _not_json(item, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    return f"{where} is a {type(value).__name__}"


def _outcome(fut: asyncio.Future[Any]) -> Any:
    """What ``asyncio.gather(..., return_exceptions=True)`` gives for a done future."""
    if fut.cancelled():
        return asyncio.CancelledError()
    return fut.exception() or fut.result()


def _check_settings(*, concurrency: Any, batch_size: Any, rpm: Any, tpm: Any,
                    timeout: Any) -> None:
    """ConfigurationError for a setting the client cannot work with, named, before
    anything is built: a zero or negative timeout failed every request as "could not
    connect", rpm=nan or inf raised a bare ValueError or OverflowError (and rpm=1e-320
    waited for ever after one request), concurrency="4"
    a TypeError.

    >>> _check_settings(concurrency=4, batch_size=None, rpm=None, tpm=None, timeout=0)
    Traceback (most recent call last):
    ...
    vlmclient.errors.ConfigurationError: timeout must be a number of seconds > 0, not 0
    """
    for name, value in (("concurrency", concurrency), ("batch_size", batch_size)):
        if value is None and name == "batch_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be a whole number >= 1, not {value!r}")
    for name, value in (("rpm", rpm), ("tpm", tpm), ("timeout", timeout)):
        if value is None and name != "timeout":
            continue
        ok = isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
        if name == "timeout" and (not ok or not math.isfinite(value) or value <= 0):
            raise ConfigurationError(f"{name} must be a number of seconds > 0, not {value!r}")
        if name != "timeout" and (not ok or not math.isfinite(value) or value < MIN_RATE):
            # slower than one an hour: 1e-320 sent one request, then waited for ever
            raise ConfigurationError(
                f"{name} must be a finite number per minute >= {MIN_RATE:.4f} (at most an "
                f"hour between requests, or per token; None for no limit), not {value!r}"
            )


class TeacherClient:
    """Async, budgeted, cached, rate-limited client for one teacher (``provider:model``).

    Example (inside an async function)::

        async with TeacherClient("local:pseudo-clip", budget=Budget("1.00")) as teacher:
            [vec] = await teacher.embed_texts([TextEmbeddingRequest(text="a photo of a cat")])

    Several processes buying into one cache pass ``claims`` (a
    :class:`cache.coordination.Coordinator`) and a :class:`~vlmclient.SharedBudget`: a
    cache miss is bought only under a lease on its key, and items another live process
    holds are waited for instead of bought twice (see :mod:`vlmclient.claims`).

    A price (``price``, or the entry of ``prices``) that makes a unit the provider bills
    free is refused with :class:`ConfigurationError` before a kind's first request, as
    every reservation would be $0 and the budget could not stop the spend; pass
    ``allow_free=True`` for a teacher that really is free.
    """

    def __init__(
        self,
        teacher: str,
        *,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        budget: Budget | Decimal | str | int | None = None,
        cache: CacheLike | None = None,
        ledger: LedgerLike | None = None,
        prices: PriceTable | None = None,
        price: Price | None = None,
        params: Mapping[str, Any] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch_size: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RateLimiter | None = None,
        on_event: EventHook | None = None,
        env: Mapping[str, str] | None = None,
        cache_namespace: str | None = None,
        claims: Claims | None = None,
        allow_free: bool = False,
    ) -> None:
        _check_settings(concurrency=concurrency, batch_size=batch_size, rpm=rpm, tpm=tpm,
                        timeout=timeout)
        self.provider, self.model = parse_teacher(teacher)
        self.teacher = teacher
        self._loop: asyncio.AbstractEventLoop | None = None  # the first call's (_check_loop)
        self._kinds = self.provider.kinds_for(self.model)  # asked on every call
        env = os.environ if env is None else env
        self._api_key = resolve_key(self.provider, api_key, env)
        # Every string kept from a response goes through this: a server may echo the key.
        self._redact = Redactor(
            [self._api_key.get_secret_value(), *(env.get(v, "") for v in SECRET_ENV)]
        )
        self.base_url = (base_url or self.provider.default_base_url).rstrip("/")
        check_credentials(self.provider, self._api_key, self.base_url)
        if cache_namespace is not None and not cache_namespace.strip():
            raise ConfigurationError("the cache namespace must not be empty")
        self.endpoint = endpoint_id(self.provider, base_url, cache_namespace)
        self.price, self.price_entry = resolve_price(self.provider.name, self.model, prices, price)
        self.budget = _as_budget(budget)
        if isinstance(self.budget, SharedBudget):
            _check_shared_teacher(self.budget.teacher, self.provider.name, self.model)
        # kinds whose price was checked: one that makes a billed unit free is refused
        # before the kind's first request (the cap could not stop its spend)
        self._priced_kinds: set[Kind] = set()
        self._allow_free = allow_free
        self.params = dict(params or {})
        problem = _not_json(self.params)
        if problem is not None:
            raise ConfigurationError(
                f"{problem}: params must be JSON (str, finite int or float, bool, None, "
                "and lists and str-keyed dicts of them); convert it, e.g. int(x) or "
                "float(x) for a numpy number"
            )
        if self.provider.check_setup is not None:
            try:
                self.provider.check_setup(self.params)
            except ConfigurationError as exc:  # it may quote a setting holding a secret
                exc.args = (self._redact.text(str(exc), MAX_MESSAGE_CHARS),)
                raise
        refuse_client_fields(self.provider, self.params)
        self._keyer = Keyer(self.provider, self.model, self.params, self.endpoint)
        self.concurrency = concurrency
        if batch_size is not None and batch_size < 1:
            raise ConfigurationError("batch size must be >= 1")
        self.batch_size = batch_size
        self.stats = ClientStats()
        self.timings = Timings()
        """Seconds per phase (prepare, parse, cache, ledger) and waiting on the provider."""
        rpm = self.provider.default_rpm if rpm is None else rpm
        self._limiter = limiter or RateLimiter(rpm=rpm, tpm=tpm)
        self._dims: dict[str, int] = {}  # the vector length each kind answered with so far
        # ... or the one the params ask for (else the model's documented default), from
        # the first answer on (a fresh cache's first answer at another length is
        # rejected, not made the rule)
        asked = self._asked_dims(self.provider.requested_dim)
        defaults = {
            kind: dim
            for kind, dim in self._asked_dims(self.provider.default_dim).items()
            if kind not in asked
        }
        self._dims.update(defaults)
        self._dims.update(asked)
        # The client owns the transport (closing it closes the transport); requests go
        # to the transport directly (see Sender._send).
        self._transport = transport or default_transport(concurrency)
        self._timeout = httpx.Timeout(timeout)
        self._http = httpx.AsyncClient(transport=self._transport, timeout=self._timeout)
        # The machinery, one piece per module; each is handed what it works with.
        # the base URL paid at (not the namespace: that names the answers, not the bill)
        self._storage = Storage(
            cache, ledger, provider=self.provider.name, model=self.model, timings=self.timings,
            endpoint=endpoint_id(self.provider, base_url),
        )  # fmt: skip
        self._batcher = Batcher(
            self.provider,
            self.model,
            base_url=self.base_url,
            api_key=self._api_key,
            params=self.params,
            batch_size=batch_size,
            max_image_tokens=self.price.max_image_tokens,
            redact=self._redact,
        )
        self._settler = Settler(
            self.provider,
            teacher=teacher,
            base_url=self.base_url,
            price=self.price,
            price_entry=self.price_entry,
            budget=self.budget,
            api_key=self._api_key,
            redact=self._redact,
            limiter=self._limiter,
            storage=self._storage,
            stats=self.stats,
            timings=self.timings,
            dims=self._dims,
            asked_dims=asked,
            default_dims=defaults,
        )
        sender = Sender(
            self.provider,
            base_url=self.base_url,
            http=self._http,
            transport=self._transport,
            timeout=self._timeout,
            concurrency=concurrency,
            limiter=self._limiter,
            retry=retry or RetryPolicy(),
            budget=self.budget,
            settler=self._settler,
            storage=self._storage,
            redact=self._redact,
            stats=self.stats,
            timings=self.timings,
            on_event=on_event,
        )
        self._pipeline = Pipeline(
            self.provider,
            price=self.price,
            batcher=self._batcher,
            sender=sender,
            storage=self._storage,
            claims=claims,
            stats=self.stats,
            timings=self.timings,
            on_event=on_event,
            dims=self._dims,
        )

    def _asked_dims(
        self, requested: Callable[[str, str, Mapping[str, Any]], int | None] | None
    ) -> dict[str, int]:
        if requested is None:
            return {}
        kinds: tuple[Kind, ...] = ("image_embedding", "text_embedding", "mixed_embedding")
        found = {kind: requested(self.model, kind, self.params) for kind in kinds}
        return {kind: dim for kind, dim in found.items() if dim is not None}

    def __repr__(self) -> str:
        return (
            f"TeacherClient({self.teacher!r}, base_url={self.base_url!r}, budget={self.budget!r})"
        )

    async def __aenter__(self) -> TeacherClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's connections; in the event loop of its first call, or after
        that loop has closed (a later ``asyncio.run``). ConfigurationError, nothing closed,
        while that loop is open: its connections (and the requests on them) are its own."""
        first = self._loop
        if first is not None and not first.is_closed() and first is not asyncio.get_running_loop():
            raise ConfigurationError(
                "this TeacherClient was first used in another event loop, which is still "
                "open (another thread?): close it in that loop, or once that loop is "
                "closed (nothing was closed)"
            )
        await self._http.aclose()

    @property
    def storage_problem(self) -> str | None:
        """Why no further requests are sent: the ledger or the cache failed (None if fine)."""
        return self._storage.problem

    @property
    def fingerprint(self) -> str:
        """Identity of the teacher's answers: provider, model, API version, parameters,
        and the endpoint when it is not the provider's default."""
        return teacher_fingerprint(self.teacher, self.params, self.endpoint)

    @property
    def rpm(self) -> float | None:
        """Requests per minute the client paces at now (None: no pacing until the
        provider's rate-limit headers give one)."""
        return self._limiter.rpm

    @property
    def overrun(self) -> BudgetOverrunError | None:
        """The first overrun of this client (the provider billed more than reserved)."""
        return self._settler.overrun

    @property
    def billed_ok(self) -> int:
        """Billed 200s whose answers could be used."""
        return self._settler.billed_ok

    @property
    def billed_malformed(self) -> int:
        """Billed 200s whose answers could not be used (charged, never retried)."""
        return self._settler.billed_malformed

    # -- the Teacher protocol ------------------------------------------------------------

    async def embed_images(
        self, requests: Sequence[ImageEmbeddingRequest]
    ) -> list[EmbeddingResult]:
        return await self._run("image_embedding", requests, EmbeddingResult)

    async def embed_texts(self, requests: Sequence[TextEmbeddingRequest]) -> list[EmbeddingResult]:
        return await self._run("text_embedding", requests, EmbeddingResult)

    async def answer(self, requests: Sequence[AnswerRequest]) -> list[AnswerResult]:
        return await self._run("answer", requests, AnswerResult)

    async def embed_mixed(self, requests: Sequence[MixedEmbeddingRequest]) -> list[EmbeddingResult]:
        """One vector per request, its texts and images fused by the provider.

        Cached (the key holds every part in order), budgeted, rate-limited, retried and
        billed like the other kinds. Teachers that cannot fuse inputs (everything but
        ``cohere:embed-v4.0``, ``voyage:`` and ``local:``) raise
        :class:`ConfigurationError` before anything is sent. Not part of the
        :class:`~vlmclient.Teacher` protocol: ``distill`` does not need it.

        Example (inside an async function)::

            [vec] = await teacher.embed_mixed(
                [MixedEmbeddingRequest(parts=("a red shoe", Image.from_path("shoe.jpg")))]
            )
        """
        return await self._run("mixed_embedding", requests, EmbeddingResult)

    def plan(self, kind: Kind, requests: Iterable[Item]) -> tuple[int, Decimal]:
        """(uncached items, worst-case cost of buying them); sends nothing.

        ``requests`` is read once, item by item (a generator is fine): only the keys seen
        and the request being priced are held, never every item's bytes.
        """
        seen: set[str] = set()
        total = Decimal(0)
        cache = self._storage.cache
        if kind in _REQUESTS:
            _check_many(kind, requests)

        def misses() -> Iterator[tuple[str, Item]]:
            for i, item in enumerate(requests):
                if kind in _REQUESTS:
                    _check_item(kind, i, item)
                item = self.prepare(item)
                key = self.cache_key(kind, item)
                if key not in seen and (cache is None or cache.get(key) is None):
                    seen.add(key)
                    yield key, item

        for chunk in self._batcher.iter_chunks(kind, misses()):
            cost = self.price.cost(
                self.provider.estimate_usage(self._batcher.spec(kind, [i for _, i in chunk]))
            )
            with money_context():
                total += cost
        # After an overrun our estimate is known to be short by this factor at least.
        with money_context():
            return len(seen), total * self.budget.scale

    # -- keys -----------------------------------------------------------------------------

    def cache_key(self, kind: Kind, item: Item) -> str:
        """sha256 of everything that changes the answer, the endpoint included; never a
        secret."""
        return self._keyer.item_key(kind, item)

    def content_key(self, content_id: str) -> str:
        """The cache key of the image embedding of an image named by ``content_id``
        (:attr:`Image.content_id`), computed without the image."""
        return self._keyer.content_key(content_id)

    def cached(
        self, kind: Kind, keys: Sequence[str], fallback: Sequence[str | None] = ()
    ) -> list[EmbeddingResult | AnswerResult | None]:
        """The results cached under ``keys`` (None for a miss); sends nothing.

        A caller that names its images by ``content_id`` asks this first and encodes only
        the misses. ``fallback[i]``, when given, is the key the same item had before (an
        older way of keying it, e.g. by the bytes of an earlier encoding): on a miss under
        ``keys[i]`` the entry found there is used and stored under ``keys[i]`` too, so
        the next run finds it directly. Hits are counted and recorded like those of the
        embed calls.

        Example::

            [hit] = teacher.cached("image_embedding", [teacher.content_key("view1:4f2a...")])
            if hit is None:  # only now compute, encode and buy the image
                [hit] = await teacher.embed_images([ImageEmbeddingRequest(image=image)])
        """
        if isinstance(keys, str):  # each of its characters was looked up: all misses
            raise TypeError("cached takes a list of cache keys, not a str: cached(kind, [key])")
        out: list[EmbeddingResult | AnswerResult | None] = []
        adopted: list[tuple[str, CacheEntry]] = []
        hits, saved = 0, Decimal(0)
        entries = self._storage.get_many(keys)
        olds = [
            fallback[i] if i < len(fallback) and entries[i] is None else None
            for i in range(len(keys))
        ]
        asked = [old for old in olds if old is not None]
        found = dict(zip(asked, self._storage.get_many(asked), strict=True))
        for i, key in enumerate(keys):
            entry = entries[i]
            old = olds[i]
            if entry is None and old is not None:
                entry = found[old]
                if entry is not None:
                    adopted.append((key, entry))
            if entry is None or (kind != "answer" and entry.vector is None):
                out.append(None)
                continue
            if entry.vector is not None:
                self._dims.setdefault(kind, int(entry.vector.shape[0]))
            out.append(result_from_entry(kind, entry))
            hits += 1
            saved += Decimal(str(entry.meta.get("cost_usd", "0")))
        if adopted:
            self._storage.adopt(adopted)
        if hits:
            self._pipeline.count_hits(kind, hits, saved)
        return out

    def prepare(self, item: ItemT) -> ItemT:
        """``item`` as it will be sent: the image downscaled / re-encoded to the provider's
        limits (what the cache key is computed on)."""
        return prepare_item(self.provider, item)

    def batch_limit(self, kind: Kind) -> int:
        """Items per request: the provider's limit, or the smaller ``batch_size``."""
        return self._batcher.batch_limit(kind)

    # -- the pipeline ----------------------------------------------------------------------

    def _check_loop(self) -> None:
        """ConfigurationError, before anything is reserved, when called from another event
        loop than the first call's: its pooled connections, locks and in-flight futures
        belong to that loop. Reused from a second ``asyncio.run``, the request went out on
        a dead loop's connection, was billed, and its answer was lost; from two threads
        at once, one of them hung."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise ConfigurationError(
                "this TeacherClient was first used in another event loop (asyncio.run "
                "called twice, or another thread?); create one client per event loop, or "
                "make every call inside one asyncio.run (nothing was sent)"
            )

    async def _run(self, kind: Kind, requests: Sequence[Item], result_type: type[R]) -> list[R]:
        self._check_loop()
        requests = _checked(kind, requests)
        if kind not in self._kinds:
            offering = sorted(n for n, p in PROVIDERS.items() if kind in p.kinds)
            raise ConfigurationError(
                f"{self.teacher} does not offer {kind.replace('_', ' ')}s (offered by "
                f"{', '.join(offering)}, not by every model of each; nothing was sent)"
            )
        if kind not in self._priced_kinds:
            if not self._allow_free:
                refuse_free(
                    self.teacher,
                    self.price,
                    [kind],
                    fix=f"fix the {self.price_entry}, or pass allow_free=True to "
                    "TeacherClient if the teacher really is free",
                )
            self._priced_kinds.add(kind)
        if len(requests) > self.concurrency * self._batcher.batch_limit(kind):
            return await self._run_windows(kind, requests, result_type)
        # one round of requests at most (every call the harvest makes): prepared, looked
        # up and bought at once; an InputError is raised here, before any spend
        prepared, keys = self._prepare_window(kind, requests)
        outcomes = await self._finish(kind, prepared, keys, *self._start(kind, prepared, keys))
        return self._results(outcomes, prepared, result_type)

    def _prepare_window(self, kind: Kind, requests: Sequence[Item]) -> tuple[list[Item], list[str]]:
        """(``requests`` prepared, their cache keys); an InputError for an item that cannot
        be sent."""
        started = time.perf_counter()
        prepared, keys = self._prepared(kind, requests)
        self.timings.add("prepare", started)
        return prepared, keys

    def _prepared(self, kind: Kind, requests: Sequence[Item]) -> tuple[list[Item], list[str]]:
        """:meth:`_prepare_window`, untimed (it may run in a worker thread)."""
        # what prepare() and cache_key() do, without their wrappers
        provider, item_key = self.provider, self._keyer.item_key
        prepared = [prepare_item(provider, item) for item in requests]
        return prepared, [item_key(kind, item) for item in prepared]

    def _start(
        self, kind: Kind, prepared: list[Item], keys: list[str]
    ) -> tuple[list[asyncio.Future[Any]], Awaitable[Any] | None]:
        """(one future per item, what buys the misses: await it, at once)."""
        # in flight or cached: served; the rest are bought (or waited for, when another
        # process sharing the cache holds them), and their futures resolved
        futures, to_buy = self._pipeline.lookup(kind, prepared, keys)
        return futures, (self._pipeline.buy(kind, to_buy) if to_buy else None)

    async def _finish(
        self,
        kind: Kind,
        prepared: list[Item],
        keys: list[str],
        futures: list[asyncio.Future[Any]],
        buying: Awaitable[Any] | None,
    ) -> list[Any]:
        """The outcome (result or error) of each item once ``buying`` is done."""
        if buying is not None:
            await buying
        if all(f.done() for f in futures):  # the usual case: no gather needed
            outcomes: list[Any] = [_outcome(f) for f in futures]
        else:
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        # Items shared with another call (single-flight) whose purchase was cancelled with
        # that call: this one was not cancelled (that raises out of the awaits above), so
        # it asks for them again (ended as cancelled itself, its other items for nothing).
        again = [i for i, o in enumerate(outcomes) if isinstance(o, asyncio.CancelledError)]
        while again:
            futures, to_buy = self._pipeline.lookup(
                kind, [prepared[i] for i in again], [keys[i] for i in again]
            )
            if to_buy:
                await self._pipeline.buy(kind, to_buy)
            retried = await asyncio.gather(*futures, return_exceptions=True)
            for i, outcome in zip(again, retried, strict=True):
                outcomes[i] = outcome
            again = [i for i in again if isinstance(outcomes[i], asyncio.CancelledError)]
        return outcomes

    async def _run_windows(
        self, kind: Kind, requests: Sequence[Item], result_type: type[R]
    ) -> list[R]:
        """A call of more items than one round of requests (concurrency x batch limit):
        its items are prepared (in a worker thread), looked up and bought a batch at a
        time, each request sent as soon as it is whole (cut as the whole call's misses
        would be), with at most 2 x concurrency batches prepared and not yet answered.
        Preparing all of 100,000 images first sent nothing for minutes and held every
        re-encoded copy.

        An item that cannot be prepared fails the call when it is reached: what was sent
        before it is bought (and cached), the misses not yet sent are not. Repeats far
        apart share one purchase, as within one batch."""
        step = self._batcher.batch_limit(kind)
        shared: dict[str, asyncio.Future[Any]] = {}  # the call's keys bought or shared
        outcomes: list[Any] = []
        failed: dict[int, Item] = {}  # (only what an error of the call describes)
        batches: deque[tuple[int, list[Item], list[str], list[asyncio.Future[Any]]]] = deque()
        buying: list[asyncio.Future[Any]] = []
        carry: list[tuple[str, Item]] = []  # misses not yet a whole request

        def send(chunk: list[tuple[str, Item]]) -> None:
            buying.append(asyncio.ensure_future(self._pipeline.buy(kind, chunk)))

        async def finish() -> None:
            nonlocal carry, buying
            start, prepared, keys, futures = batches.popleft()
            if carry and not all(f.done() for f in futures):
                # before waiting: no item this call put in flight waits unsent meanwhile
                # (another call may be waiting on it, and this one on that call)
                send(carry)
                carry = []
            done = await self._finish(kind, prepared, keys, futures, None)
            for i, outcome in enumerate(done):
                if isinstance(outcome, InputTooLongError):
                    failed[start + i] = prepared[i]
            outcomes.extend(done)
            buying = [t for t in buying if not t.done() or t.cancelled() or t.exception()]

        try:
            for start in range(0, len(requests), step):
                while len(batches) >= 2 * self.concurrency:
                    await finish()
                # in a worker thread: the requests started go on meanwhile (images are
                # decoded and encoded, bytes hashed, outside the GIL)
                started = time.perf_counter()
                prepared, keys = await asyncio.to_thread(
                    self._prepared, kind, requests[start : start + step]
                )
                self.timings.add("prepare", started)
                futures, misses = self._pipeline.lookup(kind, prepared, keys, shared)
                batches.append((start, prepared, keys, futures))
                chunks = list(self._batcher.iter_chunks(kind, carry + misses))
                # the last one may take the next misses too, unless it is full
                carry = chunks.pop() if chunks and len(chunks[-1]) < step else []
                for chunk in chunks:
                    send(chunk)
            if carry:
                send(carry)
                carry = []
            while batches:
                await finish()
            await asyncio.gather(*buying)  # (what a claimed purchase raised, again)
        except BaseException as exc:
            # a bad item, the caller's hook, or a cancel: what was started ends first
            # (cancelled with the call, or bought and cached); the misses not yet sent
            # are not bought
            for key, _ in carry:
                self._pipeline.inflight.pop(key).cancel()
            if not isinstance(exc, Exception):
                for task in buying:
                    task.cancel()
            await asyncio.gather(*buying, return_exceptions=True)
            for *_, futures in batches:  # (no "exception never retrieved" for them)
                for fut in futures:
                    if fut.done() and not fut.cancelled():
                        fut.exception()
            raise
        return self._results(outcomes, failed, result_type)

    def _results(
        self, outcomes: list[Any], prepared: Sequence[Item] | Mapping[int, Item],
        result_type: type[R],
    ) -> list[R]:
        """The call's results, or its error: the first failure that is not an input
        refused as too long, else one naming every such input (``prepared[i]``: item i)."""
        failed = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
        if failed:
            for _, outcome in failed:  # a budget stop, a fatal error... go first
                if not isinstance(outcome, InputTooLongError):
                    raise outcome
            raise _too_long(failed, outcomes, prepared, self._redact) from failed[0][1]
        return [o for o in outcomes if isinstance(o, result_type)]


def _with_index(err: InputTooLongError, index: int, n: int) -> InputTooLongError:
    """``err`` (shared by every caller of its item) naming its place in this call."""
    if err.index >= 0:
        return err
    named = InputTooLongError(
        "", status_code=err.status_code, provider=err.provider, request_id=err.request_id
    )
    named.args = (f"input {index} of {n}: {err.args[0] if err.args else err}",)
    named.index, named.limit = index, err.limit
    return named


def _too_long(
    failed: list[tuple[int, Any]],
    outcomes: list[Any],
    prepared: Sequence[Item] | Mapping[int, Item],
    redact: Redactor,
) -> InputTooLongError:
    """The error of a call whose only failures are inputs refused as too long: the first
    one's, naming the others too, with every one in ``errors`` and the results of the
    rest in ``results``."""
    n = len(outcomes)
    errors = tuple(_with_index(o, i, n) for i, o in failed)
    first = errors[0]
    err = InputTooLongError(
        "", status_code=first.status_code, provider=first.provider, request_id=first.request_id
    )
    err.args = first.args
    if len(errors) > 1:
        also = "; ".join(f"input {e.index} of {n}: {describe_input(prepared[e.index], redact)}"
                         for e in errors[1:])  # fmt: skip
        err.args = (f"{first.args[0]} Also refused alone as too long (not billed): {also}",)
    err.index, err.limit, err.errors = first.index, first.limit, errors
    err.results = [None if isinstance(o, BaseException) else o for o in outcomes]
    return err


def _check_shared_teacher(named: str, provider: str, model: str) -> None:
    """ConfigurationError for a SharedBudget of another teacher: it caps what the ledger
    records for the teacher it names, so this client's spend was under no cap of its own
    (a second run bought past the first one's cap)."""
    try:
        same = parse_teacher(named)[0].name == provider and parse_teacher(named)[1] == model
    except ConfigurationError:
        same = False
    if not same:
        raise ConfigurationError(
            f"the budget is a SharedBudget of {named}, which caps that teacher's spend, "
            f"not {provider}:{model}'s: make it SharedBudget(coordinator, "
            f"'{provider}:{model}', ...) (nothing was sent)"
        )


def _as_budget(budget: object) -> Budget:
    """``budget`` as a :class:`Budget`: one as it is, a cap in dollars (Decimal, str or
    int) as ``Budget(cap)``, None as no cap. Anything else is a ConfigurationError now,
    not an AttributeError at the first request."""
    if budget is None:
        return Budget()
    if isinstance(budget, Budget):
        return budget
    if isinstance(budget, (Decimal, str, int, float)):
        try:
            return Budget(budget)  # type: ignore[arg-type]  # Budget refuses a float
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
    raise ConfigurationError(
        f"budget must be a vlmclient.Budget or a cap in dollars (e.g. '1.00'), not "
        f"{type(budget).__name__}"
    )

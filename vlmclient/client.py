"""TeacherClient: the one way vlm-distill talks to a paid teacher.

Every item goes through the same fixed pipeline::

    cache lookup -> budget reserve -> rate limit -> retry(send) -> parse -> budget settle
    -> cache put

Identical items in flight at the same time share one future and one payment
(single-flight); cache misses are batched up to the provider's limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from cache.keys import make_key
from cache.protocols import CacheEntry, CacheLike, LedgerLike, LedgerRecord

from .budget import Budget, Reservation
from .claims import CLAIM_POLL_S, Claims
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    BudgetExceededError,
    BudgetOverrunError,
    CacheStoreError,
    ConfigurationError,
    MalformedResponsesError,
    RateLimitError,
    ResponseValidationError,
    SpendRecordError,
)
from .models import (
    AnswerRequest,
    AnswerResult,
    EmbeddingResult,
    Image,
    ImageEmbeddingRequest,
    Kind,
    MixedEmbeddingRequest,
    Price,
    TextEmbeddingRequest,
    Usage,
)
from .prices import STALE_PRICE_DAYS, PriceTable, price_age_days
from .providers import PROVIDERS, CallSpec, Parsed, Provider, parse_teacher
from .providers.base import Item, text_tokens_upper_bound
from .ratelimit import RateLimiter
from .redact import Redactor
from .retry import RetryPolicy
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

log = logging.getLogger("vlmclient")

# Measured on loopback (benchmarks/client_throughput.py, docs/benchmarks.md).
DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 60.0  # seconds per request
CACHE_KEY_VERSION = 1
# The circuit breaker: a 200 we cannot use is billed and never retried, and a run whose
# billed answers are mostly unusable stops instead of spending its budget on garbage.
MALFORMED_STOP_MIN = 5  # unusable billed answers before the breaker may open ...
MALFORMED_STOP_FRACTION = 0.2  # ... and their least share of all billed 200s
# Secrets shorter than this are not looked for in a usage block (a 1-letter test token
# would match every field name); real API keys are far longer.
MIN_SCRUBBED_SECRET = 8
DEFAULT_NAMESPACE = "default"  # --cache-namespace value meaning "the provider's own endpoint"

R = TypeVar("R", EmbeddingResult, AnswerResult)
ItemT = TypeVar("ItemT", bound=Item)  # one kind of request in, the same kind out
EventHook = Callable[[str, int], None]


@dataclass
class ClientStats:
    """Counters since the client was made (attempts, not items, unless named so)."""

    requests_sent: int = 0
    requests_ok: int = 0
    retries: int = 0
    failures: int = 0
    cache_hits: int = 0
    items_bought: int = 0
    shared_in_flight: int = 0
    saved_usd: Decimal = Decimal(0)
    estimated: int = 0  # billed 200s charged at the reservation: they did not say the bill


def _default_transport(concurrency: int) -> httpx.AsyncBaseTransport:
    # httpx's own pool degrades above ~8 connections (encode/httpcore#1035); aiohttp's
    # does not, and keeps the httpx API and its transport seam.
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(limits=httpx.Limits(max_connections=concurrency))


# Secrets besides the API key that a provider signs with (Titan) and could echo back.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _resolve_key(
    provider: Provider, api_key: str | SecretStr | None, env: Mapping[str, str]
) -> SecretStr:
    if isinstance(api_key, SecretStr):
        return api_key
    if api_key:
        return SecretStr(api_key)
    for var in provider.env_vars:
        if env.get(var):
            return SecretStr(env[var])
    if provider.key_optional:
        return SecretStr("")  # the adapter resolves credentials itself when it signs
    names = " or ".join(provider.env_vars)
    raise ConfigurationError(f"no API key for {provider.name}: set {names} (nothing was sent)")


def kind_params(provider: Provider, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The params one kind of request is sent with: the provider's defaults for the kind,
    the caller's on top; ``reasoning`` only reaches answers (it cannot change an
    embedding, so it stays out of embedding bodies and cache keys)."""
    merged = {**provider.default_params.get(kind, {}), **params}
    if kind != "answer":
        merged.pop("reasoning", None)
    return merged
def normalise_base_url(url: str) -> str:
    """A base URL as it identifies a server, with no credentials.

    Scheme and host in lower case, the scheme's default port dropped, no trailing slash;
    user:password, query and fragment are dropped (they may hold keys, and a provider's
    base URL has none).

    >>> normalise_base_url("HTTPS://user:sk-1@API.Example.com:443/v1/?key=sk-2")
    'https://api.example.com/v1'
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: keep what was written, minus userinfo
        port = None
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def endpoint_id(
    provider: Provider, base_url: str | None = None, namespace: str | None = None
) -> str | None:
    """What the cache key and teacher fingerprint hold about where answers come from.

    ``None`` (nothing in the key, so keys made before endpoints were keyed stay valid)
    for the provider's own default endpoint or ``namespace="default"``; otherwise the
    explicit namespace, or the normalised base URL (never credentials).

    >>> from vlmclient.providers import get_provider
    >>> endpoint_id(get_provider("openai"), "https://api.openai.com/v1/") is None
    True
    >>> endpoint_id(get_provider("openai"), "http://gpu-box:8000/v1")
    'http://gpu-box:8000/v1'
    """
    if namespace is not None:
        return None if namespace == DEFAULT_NAMESPACE else f"namespace:{namespace}"
    if base_url is None:
        return None
    url = normalise_base_url(base_url)
    return None if url == normalise_base_url(provider.default_base_url) else url


def key_base(
    provider: Provider,
    model: str,
    params: Mapping[str, Any],
    kind: str,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """The parts of every key of one teacher; ``endpoint`` comes from :func:`endpoint_id`."""
    parts: dict[str, Any] = {
        "v": CACHE_KEY_VERSION,
        "provider": provider.name,
        "model": model,
        "api_version": provider.api_version,
        "kind": kind,
        "params": kind_params(provider, kind, params),
    }
    if endpoint is not None:  # absent for the default endpoint: old keys stay valid
        parts["endpoint"] = endpoint
    return parts


def teacher_fingerprint(
    teacher: str, params: Mapping[str, Any] | None = None, endpoint: str | None = None
) -> str:
    """What :attr:`TeacherClient.fingerprint` is for ``teacher`` (``provider:model``) with
    these ``params``; usable without a client or an API key. ``endpoint`` is
    :func:`endpoint_id` of the base URL / namespace the answers come from."""
    provider, model = parse_teacher(teacher)
    return make_key(key_base(provider, model, params or {}, "fingerprint", endpoint))


def item_cache_key(
    provider: Provider,
    model: str,
    params: Mapping[str, Any],
    kind: str,
    item: Item,
    endpoint: str | None = None,
) -> str:
    """The cache key of one prepared item: everything that changes the answer, no secret.

    Usable without a client (``cache export`` computes keys with no API key at hand).
    ``endpoint`` is :func:`endpoint_id` of the base URL / namespace the item was bought at.
    """
    parts = key_base(provider, model, params, kind, endpoint)
    if isinstance(item, TextEmbeddingRequest):
        parts["text"] = item.text
    elif isinstance(item, MixedEmbeddingRequest):
        # every part, in order: the same text and image in another order is another input
        parts["parts"] = [
            {"text": p} if isinstance(p, str) else image_key_part(p) for p in item.parts
        ]
    else:
        parts.update(image_key_part(item.image))
        if isinstance(item, AnswerRequest):
            parts["prompt"] = item.prompt
            parts["max_output_tokens"] = item.max_output_tokens
    return make_key(parts)


def image_key_part(image: Image) -> dict[str, str]:
    """What a key holds of an image: its ``content_id`` when the caller named the pixels,
    else the sha256 and media type of the bytes sent (keys made before content ids)."""
    if image.content_id is not None:
        return {"content_id": image.content_id}
    return {"image_sha256": image.digest, "media_type": image.media_type}


def content_cache_key(
    provider: Provider,
    model: str,
    params: Mapping[str, Any],
    content_id: str,
    endpoint: str | None = None,
) -> str:
    """The cache key of the image embedding of an image named by ``content_id``, computed
    without the image: equal to :func:`item_cache_key` of an
    ``ImageEmbeddingRequest(image=Image(..., content_id=content_id))``."""
    parts = key_base(provider, model, params, "image_embedding", endpoint)
    parts.update({"content_id": content_id})
    return make_key(parts)


def _scrub(obj: Mapping[str, Any], secret: str) -> dict[str, Any]:
    """``obj`` without any field whose name or value holds ``secret``."""
    return {
        k: _scrub(v, secret) if isinstance(v, Mapping) else v
        for k, v in obj.items()
        if secret not in k and not (isinstance(v, str) and secret in v)
    }


def _again(exc: Exception) -> Exception:
    """A fresh copy of a stored stop error, so concurrent raises share no traceback."""
    if isinstance(exc, BudgetOverrunError):
        return BudgetOverrunError(str(exc), billed=exc.spent, reserved=exc.reserved)
    copy = MalformedResponsesError("")
    copy.args, copy.provider = exc.args, getattr(exc, "provider", "")
    return copy


def prepare_item(provider: Provider, item: ItemT) -> ItemT:
    """The item as it will be sent (images downscaled / re-encoded to the provider's limits)."""
    if isinstance(item, TextEmbeddingRequest):
        return item
    if isinstance(item, MixedEmbeddingRequest):
        parts = tuple(p if isinstance(p, str) else provider.prepare_image(p) for p in item.parts)
        same = all(a is b for a, b in zip(parts, item.parts, strict=True))
        return item if same else item.model_copy(update={"parts": parts})
    image = provider.prepare_image(item.image)
    if image is item.image:
        return item
    # model_copy keeps the class; mypy only sees the narrowed union
    return cast(ItemT, item.model_copy(update={"image": image}))


def request_share(provider: Provider, item: Item) -> tuple[int, int]:
    """(image bytes, tokens) one prepared item adds to a request, for the provider's
    per-request caps (``max_request_bytes``, ``max_request_tokens``)."""
    if isinstance(item, TextEmbeddingRequest):
        return 0, text_tokens_upper_bound(item.text)
    if isinstance(item, MixedEmbeddingRequest):
        images = item.images
        tokens = sum(text_tokens_upper_bound(t) for t in item.texts)
        return (
            sum(len(i.data) for i in images),
            tokens + len(images) * provider.image_request_tokens,
        )
    if isinstance(item, ImageEmbeddingRequest):
        return len(item.image.data), provider.image_request_tokens
    return len(item.image.data), 0


class TeacherClient:
    """Async, budgeted, cached, rate-limited client for one teacher (``provider:model``).

    Example (inside an async function)::

        async with TeacherClient("local:pseudo-clip", budget=Budget("1.00")) as teacher:
            [vec] = await teacher.embed_texts([TextEmbeddingRequest(text="a photo of a cat")])

    Several processes buying into one cache pass ``claims`` (a
    :class:`cache.coordination.Coordinator`) and a :class:`~vlmclient.SharedBudget`: a
    cache miss is bought only under a lease on its key, and items another live process
    holds are waited for instead of bought twice (see :mod:`vlmclient.claims`).
    """

    def __init__(
        self,
        teacher: str,
        *,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        budget: Budget | None = None,
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
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be >= 1")
        self.provider, self.model = parse_teacher(teacher)
        self.teacher = teacher
        env = os.environ if env is None else env
        self._api_key = _resolve_key(self.provider, api_key, env)
        # Every string kept from a response goes through this: a server may echo the key.
        self._redact = Redactor(
            [self._api_key.get_secret_value(), *(env.get(v, "") for v in _SECRET_ENV)]
        )
        self.base_url = (base_url or self.provider.default_base_url).rstrip("/")
        if any(ord(c) < 32 or ord(c) == 127 for c in self._api_key.get_secret_value()):
            # A trailing newline from a key file: every HTTP stack refuses the header, after
            # the budget was reserved, with a traceback.
            raise ConfigurationError(
                f"the API key for {self.provider.name} contains a newline or another control "
                "character; set it without one (nothing was sent)"
            )
        if httpx.URL(self.base_url).userinfo:
            # It would be logged with every request URL; the key goes in its own setting.
            raise ConfigurationError(
                "the base URL contains credentials (user:password@host); remove them and "
                f"give the key in {' or '.join(self.provider.env_vars) or 'its own setting'} "
                "(nothing was sent)"
            )
        if cache_namespace is not None and not cache_namespace.strip():
            raise ConfigurationError("the cache namespace must not be empty")
        self.endpoint = endpoint_id(self.provider, base_url, cache_namespace)
        if price is not None:
            self.price, self.price_entry = price, "price given to TeacherClient"
        else:
            table = prices or PriceTable.default()
            entry = table.entry_for(self.provider.name, self.model)
            self.price, self.price_entry = table.prices[entry], f"price entry {entry!r}"
        age = price_age_days(self.price)
        if age is not None and age > STALE_PRICE_DAYS:
            log.warning(
                "the %s was read on %s, %d days ago (prices drift): check the provider's "
                "price page and override it with --price-file if it changed",
                self.price_entry,
                self.price.verified_on,
                age,
            )
        self.budget = budget or Budget()
        self.params = dict(params or {})
        self.concurrency = concurrency
        if batch_size is not None and batch_size < 1:
            raise ConfigurationError("batch size must be >= 1")
        self.batch_size = batch_size
        self.stats = ClientStats()
        self.timings = Timings()
        """Seconds per phase (prepare, parse, cache, ledger) and waiting on the provider."""
        self._cache = cache
        self._ledger = ledger
        self._retry = retry or RetryPolicy()
        rpm = self.provider.default_rpm if rpm is None else rpm
        self._limiter = limiter or RateLimiter(rpm=rpm, tpm=tpm)
        self._sem = asyncio.Semaphore(concurrency)
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._dims: dict[str, int] = {}
        self._ledger_error: str | None = None
        self._overrun: BudgetOverrunError | None = None
        self._breaker: MalformedResponsesError | None = None
        self._warned_estimated = False
        self.billed_ok = 0  # billed 200s we could use
        self.billed_malformed = 0  # billed 200s we could not use
        self._cache_error: str | None = None  # set once the cache fails a paid result
        self._on_event = on_event
        self._claims = claims  # leases shared with other processes buying into the same cache
        self._http = httpx.AsyncClient(
            transport=transport or _default_transport(concurrency),
            timeout=httpx.Timeout(timeout),
        )

    def __repr__(self) -> str:
        return (
            f"TeacherClient({self.teacher!r}, base_url={self.base_url!r}, budget={self.budget!r})"
        )

    async def __aenter__(self) -> TeacherClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def storage_problem(self) -> str | None:
        """Why no further requests are sent: the ledger or the cache failed (None if fine)."""
        if self._ledger_error is not None:
            return f"the spend ledger cannot be written ({self._ledger_error})"
        if self._cache_error is not None:
            return f"the response cache cannot keep paid results ({self._cache_error})"
        return None

    @property
    def fingerprint(self) -> str:
        """Identity of the teacher's answers: provider, model, API version, parameters,
        and the endpoint when it is not the provider's default."""
        return teacher_fingerprint(self.teacher, self.params, self.endpoint)

    @property
    def overrun(self) -> BudgetOverrunError | None:
        """The first overrun of this client (the provider billed more than reserved)."""
        return self._overrun

    # -- the Teacher protocol ------------------------------------------------------------

    async def embed_images(
        self, requests: Sequence[ImageEmbeddingRequest]
    ) -> list[EmbeddingResult]:
        return await self._run("image_embedding", requests, EmbeddingResult)

    async def embed_texts(self, requests: Sequence[TextEmbeddingRequest]) -> list[EmbeddingResult]:
        return await self._run("text_embedding", requests, EmbeddingResult)

    async def answer(self, requests: Sequence[AnswerRequest]) -> list[AnswerResult]:
        return await self._run("answer", requests, AnswerResult)

    async def embed_mixed(
        self, requests: Sequence[MixedEmbeddingRequest]
    ) -> list[EmbeddingResult]:
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

        def misses() -> Iterator[tuple[str, Item]]:
            for item in requests:
                item = self.prepare(item)
                key = self.cache_key(kind, item)
                if key not in seen and (self._cache is None or self._cache.get(key) is None):
                    seen.add(key)
                    yield key, item

        for chunk in self._iter_chunks(kind, misses()):
            total += self.price.cost(
                self.provider.estimate_usage(self._spec(kind, [i for _, i in chunk]))
            )
        # After an overrun our estimate is known to be short by this factor at least.
        return len(seen), total * self.budget.scale

    # -- keys -----------------------------------------------------------------------------

    def cache_key(self, kind: Kind, item: Item) -> str:
        """sha256 of everything that changes the answer, the endpoint included; never a
        secret."""
        return item_cache_key(self.provider, self.model, self.params, kind, item, self.endpoint)

    def content_key(self, content_id: str) -> str:
        """The cache key of the image embedding of an image named by ``content_id``
        (:attr:`Image.content_id`), computed without the image."""
        return content_cache_key(self.provider, self.model, self.params, content_id, self.endpoint)

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
        out: list[EmbeddingResult | AnswerResult | None] = []
        adopted: list[tuple[str, CacheEntry]] = []
        hits, saved = 0, Decimal(0)
        for i, key in enumerate(keys):
            entry = self._cache_get(key)
            old = fallback[i] if i < len(fallback) else None
            if entry is None and old is not None:
                entry = self._cache_get(old)
                if entry is not None:
                    adopted.append((key, entry))
            if entry is None or (kind != "answer" and entry.vector is None):
                out.append(None)
                continue
            if entry.vector is not None:
                self._dims.setdefault(kind, int(entry.vector.shape[0]))
            out.append(self._from_entry(kind, entry))
            hits += 1
            saved += Decimal(str(entry.meta.get("cost_usd", "0")))
        if adopted and self._cache is not None:
            started = time.perf_counter()
            try:
                self._cache.set_many(adopted)
            except Exception as exc:  # the old entry stays where it was: nothing is lost
                log.warning(
                    "could not store %d cache entries under their new keys: %s", len(adopted), exc
                )
            finally:
                self.timings.add("cache", started)
        if hits:
            self.stats.cache_hits += hits
            self.stats.saved_usd += saved
            self._event("hit", hits)
            self._record(kind, hits, Decimal(0), Usage(), outcome="cache_hit", saved=saved)
        return out

    def prepare(self, item: ItemT) -> ItemT:
        """``item`` as it will be sent: the image downscaled / re-encoded to the provider's
        limits (what the cache key is computed on)."""
        return prepare_item(self.provider, item)

    # -- pipeline ------------------------------------------------------------------------

    def _event(self, name: str, n: int = 1) -> None:
        if self._on_event is not None:
            self._on_event(name, n)

    def _cache_get(self, key: str) -> CacheEntry | None:
        if self._cache is None:
            return None
        started = time.perf_counter()
        try:
            return self._cache.get(key)
        except Exception as exc:
            # A cache that cannot read may hold this item already paid for: buying it again
            # (and everything else) would pay twice. Treat it as a miss and send nothing more.
            if self._cache_error is None:
                self._cache_error = f"{type(exc).__name__}: {exc}"
                log.critical("CACHE UNREADABLE: %s; no further requests will be sent", exc)
            return None
        finally:
            self.timings.add("cache", started)

    def _from_entry(self, kind: Kind, entry: CacheEntry) -> EmbeddingResult | AnswerResult:
        rid = entry.meta.get("request_id")
        if kind == "answer":
            return AnswerResult(text=entry.text or "", cached=True, request_id=rid)
        assert entry.vector is not None
        return EmbeddingResult(vector=entry.vector, cached=True, request_id=rid)

    async def _run(self, kind: Kind, requests: Sequence[Item], result_type: type[R]) -> list[R]:
        if kind not in self.provider.kinds_for(self.model):
            offering = sorted(n for n, p in PROVIDERS.items() if kind in p.kinds)
            raise ConfigurationError(
                f"{self.teacher} does not offer {kind.replace('_', ' ')}s (offered by "
                f"{', '.join(offering)}, not by every model of each; nothing was sent)"
            )
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        prepared = [self.prepare(item) for item in requests]  # InputError before any spend
        keys = [self.cache_key(kind, item) for item in prepared]
        self.timings.add("prepare", started)
        futures: list[asyncio.Future[Any]] = []
        to_buy: list[tuple[str, Item]] = []
        hits = 0
        saved = Decimal(0)
        for item, key in zip(prepared, keys, strict=True):
            fut = self._inflight.get(key)
            if fut is not None:
                self.stats.shared_in_flight += 1
            else:
                fut = loop.create_future()
                entry = self._cache_get(key)
                if entry is not None and (kind == "answer" or entry.vector is not None):
                    if entry.vector is not None:
                        # what was bought before is the dimension every new answer must have
                        self._dims.setdefault(kind, int(entry.vector.shape[0]))
                    fut.set_result(self._from_entry(kind, entry))
                    hits += 1
                    saved += Decimal(str(entry.meta.get("cost_usd", "0")))
                else:
                    self._inflight[key] = fut
                    to_buy.append((key, item))
            futures.append(fut)
        if hits:
            self.stats.cache_hits += hits
            self.stats.saved_usd += saved
            self._event("hit", hits)
            self._record(kind, hits, Decimal(0), Usage(), outcome="cache_hit", saved=saved)
        if to_buy:
            to_buy, theirs = self._claim(kind, to_buy)
            await asyncio.gather(
                *(self._buy(kind, chunk) for chunk in self._chunks(kind, to_buy)),
                *([self._await_claimed(kind, theirs)] if theirs else []),
            )
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [o for o in outcomes if isinstance(o, result_type)]

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
        for key, item in pairs:
            if key not in mine:
                theirs.append((key, item))
                continue
            entry = self._cache_get(key)
            if entry is not None and (kind == "answer" or entry.vector is not None):
                found.append((key, entry))
            else:
                to_buy.append((key, item))
        if found:
            started = time.perf_counter()
            self._claims.release([key for key, _ in found])
            self.timings.add("cache", started)
            self._serve_cached(kind, found)
        return to_buy, theirs

    def _serve_cached(self, kind: Kind, found: list[tuple[str, CacheEntry]]) -> None:
        """Resolve waiting items with entries another process just cached (cache hits)."""
        saved = Decimal(0)
        for key, entry in found:
            fut = self._inflight.pop(key)
            if not fut.done():
                fut.set_result(self._from_entry(kind, entry))
            saved += Decimal(str(entry.meta.get("cost_usd", "0")))
        self.stats.cache_hits += len(found)
        self.stats.saved_usd += saved
        self._event("hit", len(found))
        self._record(kind, len(found), Decimal(0), Usage(), outcome="cache_hit", saved=saved)

    async def _await_claimed(self, kind: Kind, pairs: list[tuple[str, Item]]) -> None:
        """Wait for items another live process is buying; buy those it leaves (it stopped
        or died before caching them)."""
        assert self._claims is not None
        pending = dict(pairs)
        try:
            while pending:
                await asyncio.sleep(CLAIM_POLL_S)  # polling: the other process is remote
                found = []
                for key in pending:
                    entry = self._cache_get(key)
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
                    await asyncio.gather(*(self._buy(kind, c) for c in self._chunks(kind, mine)))
        except BaseException as exc:
            for key in pending:
                fut = self._inflight.pop(key, None)
                if fut is not None and not fut.done():
                    if isinstance(exc, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(exc)
            raise

    def _chunks(self, kind: Kind, pairs: list[tuple[str, Item]]) -> list[list[tuple[str, Item]]]:
        return list(self._iter_chunks(kind, pairs))

    def _iter_chunks(
        self, kind: Kind, pairs: Iterable[tuple[str, Item]]
    ) -> Iterator[list[tuple[str, Item]]]:
        """``pairs`` cut into requests (batch limit, byte and token caps), as they come."""
        limit = self.batch_limit(kind)
        max_bytes = self.provider.max_request_bytes
        max_tokens = self.provider.max_request_tokens
        current: list[tuple[str, Item]] = []
        size = tokens = 0
        for key, item in pairs:
            n, t = request_share(self.provider, item)
            if current and (
                len(current) >= limit
                or (max_bytes and size + n > max_bytes)
                or (max_tokens and tokens + t > max_tokens)
            ):
                yield current
                current, size, tokens = [], 0, 0
            current.append((key, item))
            size += n
            tokens += t
        if current:
            yield current

    def batch_limit(self, kind: Kind) -> int:
        """Items per request: the provider's limit, or the smaller ``batch_size``."""
        limit = self.provider.limit_for(self.model, kind)
        return min(limit, self.batch_size) if self.batch_size else limit

    def _spec(self, kind: Kind, items: Sequence[Item]) -> CallSpec:
        params = kind_params(self.provider, kind, self.params)
        return CallSpec(
            kind,
            self.model,
            list(items),
            self.base_url,
            self._api_key,
            params,
            max_image_tokens=self.price.max_image_tokens,
        )

    async def _buy(self, kind: Kind, chunk: list[tuple[str, Item]]) -> None:
        spec = self._spec(kind, [item for _, item in chunk])
        futs = [self._inflight[key] for key, _ in chunk]
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
                parsed, cost = await self._send_with_retries(spec, estimate, tokens)
            except BudgetExceededError as exc:
                if len(chunk) == 1 or isinstance(exc, BudgetOverrunError):
                    raise
                # A whole batch does not fit what is left: buy what does fit, in halves.
                mid = len(chunk) // 2
                await asyncio.gather(self._buy(kind, chunk[:mid]), self._buy(kind, chunk[mid:]))
                return
            results = self._results(kind, parsed, cost, len(chunk))
            self._store(kind, chunk, results, parsed, cost)
            self.stats.items_bought += len(chunk)
            self._event("bought", len(chunk))
            for fut, result in zip(futs, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
        except asyncio.CancelledError:
            for fut in futs:
                fut.cancel()
            raise
        except BaseException as exc:
            for fut in futs:
                if not fut.done():
                    fut.set_exception(exc)
        finally:
            for key, _ in chunk:
                self._inflight.pop(key, None)
            if self._claims is not None:
                started = time.perf_counter()
                self._claims.release([key for key, _ in chunk])  # after the results are cached
                self.timings.add("cache", started)

    def _results(
        self, kind: Kind, parsed: Parsed, cost: Decimal, n: int
    ) -> list[EmbeddingResult] | list[AnswerResult]:
        share = cost / n
        if kind == "answer":
            assert parsed.texts is not None
            return [
                AnswerResult(
                    text=t, cost_usd=share, request_id=parsed.request_id, usage=parsed.usage
                )
                for t in parsed.texts
            ]
        assert parsed.vectors is not None
        return [
            EmbeddingResult(vector=v, cost_usd=share, request_id=parsed.request_id)
            for v in parsed.vectors
        ]

    def _store(
        self,
        kind: Kind,
        chunk: list[tuple[str, Item]],
        results: Sequence[EmbeddingResult | AnswerResult],
        parsed: Parsed,
        cost: Decimal,
    ) -> None:
        if self._cache is None:
            return
        meta = {
            "provider": self.provider.name,
            "model": self.model,
            "kind": kind,
            "request_id": parsed.request_id,
            "cost_usd": str(cost / len(chunk)),
            "created": time.time(),
        }
        entries = [
            (
                key,
                CacheEntry(vector=r.vector, meta=meta)
                if isinstance(r, EmbeddingResult)
                else CacheEntry(text=r.text, meta=meta),
            )
            for (key, _), r in zip(chunk, results, strict=True)
        ]
        started = time.perf_counter()
        try:
            self._cache.set_many(entries)
        except Exception as exc:
            # The money is spent; the caller still gets the results. Whatever is bought next
            # could not be stored either, so no further requests are sent (as for the ledger).
            if self._cache_error is None:
                self._cache_error = f"{type(exc).__name__}: {exc}"
            log.critical(
                "PAID RESULTS NOT CACHED: writing %d %s results (request id %s) to the cache "
                "failed (%s: %s); no further requests will be sent",
                len(entries),
                kind,
                parsed.request_id,
                type(exc).__name__,
                exc,
            )
        finally:
            self.timings.add("cache", started)

    async def _send_with_retries(
        self, spec: CallSpec, estimate: Decimal, tokens: int
    ) -> tuple[Parsed, Decimal]:
        outcome: tuple[Parsed, Decimal] | None = None
        async for attempt in self._retry.retrying():
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.stats.retries += 1
                    self._event("retry")
                try:
                    outcome = await self._attempt(spec, estimate, tokens)
                except APIError:
                    self.stats.failures += 1
                    self._event("failure")
                    raise
        assert outcome is not None
        return outcome

    async def _attempt(
        self, spec: CallSpec, estimate: Decimal, tokens: int
    ) -> tuple[Parsed, Decimal]:
        self._check_storage()
        if self._overrun is not None:
            raise _again(self._overrun)
        if self._breaker is not None:
            raise _again(self._breaker)
        started = time.perf_counter()
        reservation = self.budget.reserve(estimate, items=len(spec.items))
        self.timings.add("ledger", started)
        try:
            await self._sem.acquire()
        except BaseException:
            self.budget.release(reservation)
            raise
        try:
            try:
                await self._limiter.acquire(tokens)
                self._check_storage()  # again: the ledger or cache may have failed meanwhile
                if self._overrun is not None:
                    raise _again(self._overrun)
                if self._breaker is not None:
                    raise _again(self._breaker)
                started = time.perf_counter()
                request = self.provider.build_request(spec)
                self.timings.add("prepare", started)
            except BaseException:
                self.budget.release(reservation)
                raise
            response = await self._send(spec, request, reservation)
        finally:
            self._sem.release()
        return self._handle(spec, response, reservation)

    def _check_storage(self) -> None:
        """Refuse to send while paid results could not be recorded or kept."""
        if self._ledger_error is not None:
            raise SpendRecordError(
                f"the spend ledger cannot be written ({self._ledger_error}); fix the disk "
                "and run again: cached results are kept"
            )
        if self._cache_error is not None:
            raise CacheStoreError(
                f"the response cache cannot keep paid results ({self._cache_error}); "
                "nothing more is bought until it can"
            )

    async def _send(
        self, spec: CallSpec, request: httpx.Request, reservation: Reservation
    ) -> httpx.Response:
        self.stats.requests_sent += 1
        self.timings.sent()
        try:
            try:
                return await self._http.send(request)
            finally:
                self.timings.answered()
        except httpx.HTTPError as exc:
            err = self._transport_error(exc)
            if err.sent:
                self.budget.charge_reservation(reservation)
                outcome = "timeout" if isinstance(err, APITimeoutError) else "connection"
                self._record(
                    spec.kind,
                    len(spec.items),
                    reservation.usd,
                    Usage(),
                    outcome=outcome,
                    reserved=reservation.usd,
                    estimated=True,
                )
            else:
                self.budget.release(reservation)
                self._record(spec.kind, len(spec.items), Decimal(0), Usage(), outcome="refused")
            raise err from exc
        except BaseException:
            # Cancelled (Ctrl-C) while the request may be on the wire: assume it was billed.
            self.budget.charge_reservation(reservation)
            self._record(
                spec.kind,
                len(spec.items),
                reservation.usd,
                Usage(),
                outcome="cancelled",
                reserved=reservation.usd,
                estimated=True,
            )
            raise

    def _transport_error(self, exc: httpx.HTTPError) -> APIConnectionError:
        name = self.provider.name
        cause = exc.__cause__
        if cause is not None and type(cause).__module__.startswith("aiohttp"):
            import aiohttp

            never_left = isinstance(cause, aiohttp.ClientConnectorError)
            timed_out = isinstance(cause, (aiohttp.ServerTimeoutError, asyncio.TimeoutError))
        else:
            never_left = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            timed_out = isinstance(exc, httpx.TimeoutException) and not never_left
        if never_left:
            return APIConnectionError(
                f"could not connect to {self.base_url} ({self._redact(str(exc))}); "
                "nothing was sent or billed",
                provider=name,
                sent=False,
            )
        if timed_out:
            return APITimeoutError(
                f"no answer from {self.base_url} in time ({type(exc).__name__}); "
                "charged at the worst-case estimate since the provider may have billed it",
                provider=name,
            )
        return APIConnectionError(
            f"connection to {self.base_url} failed after sending "
            f"({type(exc).__name__}: {self._redact(str(exc))}); "
            "charged at the worst-case estimate",
            provider=name,
            sent=True,
        )

    def _handle(
        self, spec: CallSpec, response: httpx.Response, reservation: Reservation
    ) -> tuple[Parsed, Decimal]:
        self._limiter.update(self.provider.rate_limit_hints(response.headers))
        if not response.is_success:
            self.budget.release(reservation)  # providers do not bill error statuses
            err = self._status_error(response)
            self._record(
                spec.kind,
                len(spec.items),
                Decimal(0),
                Usage(),
                outcome=f"http_{response.status_code}",
                request_id=err.request_id,
            )
            if isinstance(err, RateLimitError) and err.retry_after is not None:
                self._limiter.pause(err.retry_after)  # everyone waits, not only this task
            raise err
        started = time.perf_counter()
        try:
            parsed = self.provider.parse_response(spec, response)
            parsed = replace(parsed, request_id=self._redact.request_id(parsed.request_id))
            self._check_dim(spec.kind, parsed, response)
        except ResponseValidationError as exc:
            self.timings.add("parse", started)
            exc.request_id = self._redact.request_id(exc.request_id)
            exc.args = tuple(self._redact(str(a)) for a in exc.args)
            # Billed, recorded, and never retried (the retry policy goes by status only).
            usage = exc.usage if isinstance(exc.usage, Usage) else Usage()
            reported = exc.reported if isinstance(exc.reported, Mapping) else None
            self.billed_malformed += 1
            self._settle(
                spec, reservation, usage, reported, outcome="malformed", request_id=exc.request_id
            )
            log.warning("rejected a billed response (not retried): %s", exc)
            self._check_breaker(exc)
            raise
        self.timings.add("parse", started)
        self.billed_ok += 1
        cost = self._settle(
            spec,
            reservation,
            parsed.usage,
            parsed.reported,
            outcome="ok",
            request_id=parsed.request_id,
        )
        self.stats.requests_ok += 1
        return parsed, cost

    def _settle(
        self,
        spec: CallSpec,
        reservation: Reservation,
        usage: Usage,
        reported: Mapping[str, Any] | None,
        *,
        outcome: str,
        request_id: str | None,
    ) -> Decimal:
        """Charge a billed 200: its usage at our prices, or, when the provider did not
        say what it billed, the reservation (our worst case), marked ``estimated``."""
        cost = self.price.cost(usage)
        # No usage block, or one that prices what was sent at $0 (a gateway's empty
        # usage, Cohere's billed_units without the unit we are charged for): unknown.
        estimated = not self.provider.usage_in_response or reported is None or cost <= 0
        if estimated:
            cost = reservation.usd
            self.stats.estimated += 1
            self._warn_estimated(reported is None)
        started = time.perf_counter()
        overran = self.budget.settle(reservation, cost)
        self.timings.add("ledger", started)
        secret = self._api_key.get_secret_value()
        if reported is not None and len(secret) >= MIN_SCRUBBED_SECRET:
            reported = _scrub(reported, secret)  # a server knows the key it was sent
        self._record(
            spec.kind,
            len(spec.items),
            cost,
            usage,
            outcome=outcome,
            request_id=request_id,
            reserved=reservation.usd,
            estimated=estimated,
            reported=reported,
        )
        if overran and self._overrun is None:
            self._overrun = self._overrun_error(spec, reservation, usage, cost, request_id)
            log.error("%s", self._overrun)
        return cost

    def _warn_estimated(self, no_usage: bool) -> None:
        if self._warned_estimated:
            return
        self._warned_estimated = True
        if not self.provider.usage_in_response:
            what = f"{self.teacher} answers never say what they billed"
        elif no_usage:
            what = f"{self.teacher} at {self.base_url} answered a 200 without usage"
        else:
            what = f"{self.teacher} at {self.base_url} reported usage that prices at $0"
        log.warning(
            "%s: such requests are charged at our worst-case estimate and marked "
            "'estimated' in the ledger (said once per run); compare the ledger with the "
            "provider's bill",
            what,
        )

    def _overrun_error(
        self,
        spec: CallSpec,
        reservation: Reservation,
        usage: Usage,
        cost: Decimal,
        request_id: str | None,
    ) -> BudgetOverrunError:
        estimate = self.provider.estimate_usage(spec).model_dump()
        billed = usage.model_dump()
        units = ", ".join(
            f"{name} {billed[name]} billed vs {estimate[name]} estimated"
            for name in billed
            if billed[name] > estimate[name]
        )
        ratio = cost / reservation.usd if reservation.usd > 0 else Decimal("Infinity")
        rid = f" (request id {request_id})" if request_id else ""
        verified = f" (read on {self.price.verified_on})" if self.price.verified_on else ""
        return BudgetOverrunError(
            f"OVERRUN: {self.teacher} billed ${cost} for a request of {len(spec.items)} "
            f"{spec.kind.replace('_', ' ')} items{rid} for which ${reservation.usd} was "
            f"reserved, {ratio:.2f}x our worst case ({units or 'units within the estimate'}). "
            f"The {self.price_entry}{verified} or our usage estimate for this model looks "
            "wrong, so the budget can no longer be trusted: no new requests are sent (those "
            "in flight finish and are recorded). Check the provider's bill and correct the "
            "price with --price-file before running again",
            billed=cost,
            reserved=reservation.usd,
        )

    def _check_breaker(self, exc: ResponseValidationError) -> None:
        bad, good = self.billed_malformed, self.billed_ok
        if self._breaker is not None or bad < MALFORMED_STOP_MIN:
            return
        if bad < MALFORMED_STOP_FRACTION * (bad + good):
            return
        self._breaker = MalformedResponsesError(
            f"{bad} of {bad + good} billed answers from {self.teacher} could not be used "
            f"(last: {exc}), so no further requests are sent. Each is charged in the ledger "
            "as 'malformed' and none was retried. Check the model name, its parameters and "
            "--base-url before running again"
        )
        self._breaker.provider = self.provider.name
        log.error("%s", self._breaker)

    def _status_error(self, response: httpx.Response) -> APIStatusError:
        err = self.provider.classify_error(response)
        err.provider = self.provider.name
        message = err.args[0] if err.args else ""
        # Some gateways echo the key they were sent, in the body or in a request id.
        err.request_id = self._redact.request_id(err.request_id)
        err.args = (f"{self.provider.name} ({self.teacher}): {self._redact(str(message))}",)
        return err

    def _check_dim(self, kind: Kind, parsed: Parsed, response: httpx.Response) -> None:
        if not parsed.vectors:
            return
        dim = int(parsed.vectors[0].shape[0])
        expected = self._dims.setdefault(kind, dim)
        if dim != expected:
            raise ResponseValidationError(
                f"embedding dimension {dim} differs from the {expected} seen before",
                provider=self.provider.name,
                request_id=parsed.request_id,
            )

    def _record(
        self,
        kind: str,
        items: int,
        cost: Decimal,
        usage: Usage,
        *,
        outcome: str,
        request_id: str | None = None,
        saved: Decimal = Decimal(0),
        reserved: Decimal = Decimal(0),
        estimated: bool = False,
        reported: Mapping[str, Any] | None = None,
    ) -> None:
        if self._ledger is None:
            return
        rec = LedgerRecord(
            provider=self.provider.name,
            model=self.model,
            kind=kind,
            items=items,
            cost_usd=str(cost),
            outcome=outcome,
            usage={k: v for k, v in usage.model_dump().items() if v},
            request_id=request_id,
            saved_usd=str(saved),
            time=time.time(),
            reserved_usd=str(reserved),
            estimated=estimated,
            provider_usage=dict(reported or {}),
        )
        started = time.perf_counter()
        try:
            self._ledger.record(rec)
        except Exception as exc:
            # The call is paid and its result will still be returned and cached, but no
            # more money is spent while spend cannot be recorded.
            self._ledger_error = f"{type(exc).__name__}: {exc}"
            log.critical(
                "SPEND NOT RECORDED: the ledger write for a %s call (%s USD, request id %s) "
                "failed (%s); no further requests will be sent",
                kind,
                cost,
                request_id,
                self._ledger_error,
            )
        finally:
            self.timings.add("ledger", started)

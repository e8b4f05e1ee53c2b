"""Where a client writes down what it paid for: the response cache and the spend ledger.

Both are optional. Either one failing does not lose what is already paid (the caller
still gets its results), but no further request is sent while paid results could not be
recorded or kept: :meth:`Storage.check` refuses, and :attr:`Storage.problem` says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from cache.codecs import as_stored
from cache.protocols import CacheEntry, CacheLike, LedgerLike, LedgerRecord

from .errors import CacheStoreError, SpendRecordError
from .models import AnswerResult, EmbeddingResult, Kind, Usage
from .providers import Parsed
from .providers.base import Item
from .timing import Timings

__all__ = ["Storage", "result_from_entry"]

log = logging.getLogger("vlmclient")


def result_from_entry(kind: Kind, entry: CacheEntry) -> EmbeddingResult | AnswerResult:
    """The result a cache entry holds, marked ``cached``."""
    rid = entry.meta.get("request_id")
    if kind == "answer":
        cut = entry.meta.get("truncated") is True
        return AnswerResult(text=entry.text or "", cached=True, request_id=rid, truncated=cut)
    assert entry.vector is not None
    return EmbeddingResult(vector=entry.vector, cached=True, request_id=rid)


def _answer_meta(meta: dict[str, Any], result: AnswerResult) -> dict[str, Any]:
    """A cached answer's meta: a cut answer stays marked cut when read back."""
    return {**meta, "truncated": True} if result.truncated else meta


class Storage:
    """The response cache and the spend ledger of one teacher (``provider``, ``model``)."""

    def __init__(
        self,
        cache: CacheLike | None,
        ledger: LedgerLike | None,
        *,
        provider: str,
        model: str,
        timings: Timings,
        endpoint: str | None = None,
    ) -> None:
        self.cache = cache
        self.ledger = ledger
        self.provider = provider
        self.model = model
        self.endpoint = endpoint  # where requests go, on every ledger line (None: default)
        self.timings = timings
        self.ledger_error: str | None = None  # set once a ledger write fails
        self.cache_error: str | None = None  # set once the cache fails a paid result

    @property
    def problem(self) -> str | None:
        """Why no further requests are sent: the ledger or the cache failed (None if fine)."""
        if self.ledger_error is not None:
            return f"the spend ledger cannot be written ({self.ledger_error})"
        if self.cache_error is not None:
            return f"the response cache cannot keep paid results ({self.cache_error})"
        return None

    def check(self) -> None:
        """Refuse to send while paid results could not be recorded or kept."""
        if self.ledger_error is not None:  # first: requests were billed and not recorded
            raise SpendRecordError(
                f"the spend ledger cannot be written ({self.ledger_error}): requests "
                "already billed are not in it (logged as SPEND NOT RECORDED, with their "
                "cost) and nothing more is sent; fix it and run again: cached results "
                "are kept"
            )
        if getattr(self.ledger, "closed", False) is True:
            # (a client used after its ledger's ``with`` block: billed, then not recorded)
            raise SpendRecordError(
                "the spend ledger is closed: keep it open while the client is used "
                "(with SpendLedger(...) as ledger: async with TeacherClient(..., "
                "ledger=ledger)); this request was not sent"
            )
        if self.cache_error is not None:
            raise CacheStoreError(
                f"the response cache cannot keep paid results ({self.cache_error}); "
                "nothing more is bought until it can"
            )
        waiting = getattr(self.cache, "spill_problem", None)
        if waiting is not None:  # paid results of a run wait, or no room to keep them
            raise CacheStoreError(f"the response cache cannot keep paid results: {waiting}")

    def get(self, key: str) -> CacheEntry | None:
        """The entry cached under ``key``; None for a miss, or when the cache cannot read."""
        if self.cache is None:
            return None
        started = time.perf_counter()
        try:
            return self.cache.get(key)
        except Exception as exc:
            # A cache that cannot read may hold this item already paid for: buying it again
            # (and everything else) would pay twice. Treat it as a miss and send nothing more.
            if self.cache_error is None:
                self.cache_error = f"{type(exc).__name__}: {exc}"
                log.critical("CACHE UNREADABLE: %s; no further requests will be sent", exc)
            return None
        finally:
            self.timings.add("cache", started)

    def get_many(self, keys: Sequence[str]) -> list[CacheEntry | None]:
        """:meth:`get` of each key, in one call to the cache's ``get_many`` when it has
        one (a query per batch instead of per key); key by key when that fails, so each
        key is read (or not) as :meth:`get` reads it."""
        if self.cache is None or not keys:
            return [None] * len(keys)
        many = getattr(self.cache, "get_many", None)
        if many is not None:
            started = time.perf_counter()
            try:
                return list(many(keys))
            except Exception:  # read again key by key, where each error is handled
                pass
            finally:
                self.timings.add("cache", started)
        return [self.get(key) for key in keys]

    def adopt(self, entries: list[tuple[str, CacheEntry]]) -> None:
        """Store entries found under an item's old keys under its new keys too."""
        if self.cache is None:
            return
        started = time.perf_counter()
        try:
            self.cache.set_many(entries)
        except Exception as exc:  # the old entry stays where it was: nothing is lost
            log.warning(
                "could not store %d cache entries under their new keys: %s", len(entries), exc
            )
        finally:
            self.timings.add("cache", started)

    def put(
        self,
        kind: Kind,
        chunk: list[tuple[str, Item]],
        results: Sequence[EmbeddingResult | AnswerResult],
        parsed: Parsed,
        cost: Decimal,
    ) -> Sequence[EmbeddingResult | AnswerResult]:
        """Cache the results of one paid request, each under its key, and return them as
        the cache holds them: a cache that keeps vectors in a lossy format (the response
        cache's float16) would otherwise give its hits other values than the paid answer
        gave its caller, and a rerun from the cache would not reproduce the first run."""
        if self.cache is None:
            return results
        meta = {
            "provider": self.provider,
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
                else CacheEntry(text=r.text, meta=_answer_meta(meta, r)),
            )
            for (key, _), r in zip(chunk, results, strict=True)
        ]
        started = time.perf_counter()
        try:
            self.cache.set_many(entries)
            fmt = getattr(self.cache, "vector_format", None)
            if fmt is not None:  # what was stored encoded, so it encodes again
                results = [
                    r.model_copy(update={"vector": as_stored(r.vector, fmt)})
                    if isinstance(r, EmbeddingResult) else r
                    for r in results
                ]
        except Exception as exc:
            # The money is spent; the caller still gets the results. Whatever is bought next
            # could not be stored either, so no further requests are sent (as for the ledger).
            if self.cache_error is None:
                self.cache_error = f"{type(exc).__name__}: {exc}"
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
        return results

    def record(
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
        reservation: object = None,
    ) -> None:
        """Append one ledger record (a request's outcome, or cache hits with what they
        saved); ``reservation``: the one the record settles (a shared one is named)."""
        if self.ledger is None:
            return
        rec = LedgerRecord(
            provider=self.provider,
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
            endpoint=self.endpoint,
            reservation=getattr(reservation, "key", None),
        )
        started = time.perf_counter()
        try:
            self.ledger.record(rec)
        except Exception as exc:
            # The call is paid and its result will still be returned and cached, but no
            # more money is spent while spend cannot be recorded.
            self.ledger_error = f"{type(exc).__name__}: {exc}"
            log.critical(
                "SPEND NOT RECORDED: the ledger write for a %s call (%s USD, request id %s) "
                "failed (%s); no further requests will be sent",
                kind,
                cost,
                request_id,
                self.ledger_error,
            )
        finally:
            self.timings.add("ledger", started)

"""The cache and ledger interfaces the teacher client plugs into: the protocols and the
records that cross them.

``cache`` imports nothing else of vlm-distill, so these are plain dataclasses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["CacheEntry", "CacheLike", "LedgerLike", "LedgerRecord"]


@dataclass(frozen=True)
class CacheEntry:
    """One paid response item: a vector (embeddings) or a text (answers), plus metadata.

    ``meta`` is JSON-able and never holds secrets: provider, model, kind, request_id,
    cost_usd (decimal string), created (unix time).
    """

    vector: np.ndarray | None = None
    text: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


class CacheLike(Protocol):
    def get(self, key: str) -> CacheEntry | None:
        """The entry, or None on a miss (a corrupt entry is a miss, never an exception)."""

    def set_many(self, items: Iterable[tuple[str, CacheEntry]]) -> None:
        """Store entries durably, in one transaction where the backend has them."""


@dataclass(frozen=True)
class LedgerRecord:
    """One billed (or possibly billed) call, or a batch of cache hits.

    ``outcome`` is "ok", "malformed" (billed 200 we could not use), "timeout" /
    "connection" / "cancelled" (sent, outcome unknown, charged at the reservation),
    "unsettled" (answered, but an error of ours came before it was settled: charged at
    the reservation),
    "orphaned" (a reservation a killed process left open, charged at the reservation by
    the next process under the kind and endpoint it was reserved for, kind "unknown" for
    one reserved before 2026-12-07; see :mod:`cache.coordination`),
    "http_<status>" or "refused" (an attempt the provider did not bill, cost 0), or
    "cache_hit" (nothing billed; ``saved_usd`` is what the hits would have cost).

    ``cost_usd`` is our arithmetic (the provider's usage times the price table), not the
    provider's invoice. So a user can reconcile the two, ``usage`` holds the units we
    priced, ``provider_usage`` the provider's own usage block as it sent it (tokens,
    images, pixels, any dollar figure), ``reserved_usd`` the worst case held before
    sending, and ``estimated`` is True when the provider did not say what it billed and
    ``cost_usd`` is that reservation. ``cost_usd > reserved_usd`` is an overrun.

    ``endpoint``: the base URL the request went to (normalised, no credentials), None for
    the provider's default one (and for lines written before 2026-12-07, orphaned ones
    included): one ``provider:model`` served at two URLs is two bills.

    ``reservation``: the shared budget's reservation the line settles (``owner:id`` in
    ``coordination.db``), None without one: a process reading the ledger while that
    reservation is still open leaves the line to its settle (counted once).
    """

    provider: str
    model: str
    kind: str
    items: int
    cost_usd: str
    outcome: str = "ok"
    usage: Mapping[str, int] = field(default_factory=dict)
    request_id: str | None = None
    saved_usd: str = "0"
    time: float = 0.0
    reserved_usd: str = "0"
    estimated: bool = False
    provider_usage: Mapping[str, Any] = field(default_factory=dict)
    endpoint: str | None = None
    reservation: str | None = None


class LedgerLike(Protocol):
    def record(self, rec: LedgerRecord) -> None:
        """Append durably (flush + fsync) before returning, except cache_hit records."""

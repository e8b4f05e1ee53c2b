"""The server's own bill: what it charged, per request, in ``Decimal``.

Tests hold a client's spend ledger against this record, so the rules are the same
ones a real provider applies (see :mod:`distill.server.config`): refusals (401, 413,
429) and server errors (5xx/529) are never billed; a request the server finished is
billed even when the client never saw a usable answer (malformed body, wrong
dimension, a reply after the client's timeout, a dropped connection).
"""

from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .config import Pricing

__all__ = ["BILLS_KEPT", "Bill", "Billing", "count_tokens"]

# Bills kept one by one (about 330 bytes each); the totals count every bill.
BILLS_KEPT = 10_000
_TOKEN = re.compile(r"\w+|[^\w\s]")
_M = Decimal(1_000_000)


def count_tokens(text: str) -> int:
    """Tokens as this server counts them: words plus punctuation marks.

    >>> count_tokens("a photo of a cat.")
    6
    """
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class Bill:
    """Usage of one request and what it cost."""

    request_id: str
    endpoint: str
    images: int
    input_tokens: int
    output_tokens: int
    usd: Decimal
    body_bytes: int = 0  # size of the request body as received (what the client uploaded)


def price_embed(pricing: Pricing, *, images: int, input_tokens: int) -> Decimal:
    """Cohere-style charge: a flat fee per image plus input tokens."""
    return pricing.usd_per_image * images + pricing.usd_per_1m_input_tokens * input_tokens / _M


def price_tokens(pricing: Pricing, *, input_tokens: int, output_tokens: int) -> Decimal:
    """OpenAI-style charge: tokens only (images are already counted as prompt tokens)."""
    return (
        pricing.usd_per_1m_input_tokens * input_tokens / _M
        + pricing.usd_per_1m_output_tokens * output_tokens / _M
    )


class Billing:
    """Thread-safe running bill of one server: exact totals of every request billed, and
    the last ``keep`` bills themselves (:meth:`bills`, ``billed_request_ids``). A server
    that runs for weeks (one chat request per image: a million bills) held every bill,
    and each ``GET /admin/billing`` listed them all on the event loop."""

    def __init__(self, keep: int = BILLS_KEPT) -> None:
        self._lock = threading.Lock()
        self._bills: deque[Bill] = deque(maxlen=keep)
        self._totals = _Totals()

    def record(self, bill: Bill) -> None:
        with self._lock:
            self._bills.append(bill)
            self._totals.add(bill)

    def bills(self) -> list[Bill]:
        """The last ``keep`` bills, oldest first."""
        with self._lock:
            return list(self._bills)

    def reset(self) -> None:
        with self._lock:
            self._bills.clear()
            self._totals = _Totals()

    def snapshot(self) -> dict[str, Any]:
        """The ``GET /admin/billing`` body; USD as a decimal string. The totals count every
        request billed; ``billed_request_ids`` lists the last ``keep`` of them (oldest
        first), ``earlier_ids_not_listed`` says how many came before those."""
        with self._lock:
            t, ids = self._totals, [b.request_id for b in self._bills]
            return {
                "requests": t.requests,
                "images": t.images,
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "usd": str(t.usd),
                "body_bytes": t.body_bytes,
                "billed_request_ids": ids,
                "earlier_ids_not_listed": t.requests - len(ids),
            }


@dataclass
class _Totals:
    requests: int = 0
    images: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: Decimal = Decimal(0)
    body_bytes: int = 0

    def add(self, bill: Bill) -> None:
        self.requests += 1
        self.images += bill.images
        self.input_tokens += bill.input_tokens
        self.output_tokens += bill.output_tokens
        self.usd += bill.usd
        self.body_bytes += bill.body_bytes

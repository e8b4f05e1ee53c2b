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
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .config import Pricing

__all__ = ["Bill", "Billing", "count_tokens"]

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
    """Thread-safe running bill of one server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bills: list[Bill] = []

    def record(self, bill: Bill) -> None:
        with self._lock:
            self._bills.append(bill)

    def bills(self) -> list[Bill]:
        with self._lock:
            return list(self._bills)

    def reset(self) -> None:
        with self._lock:
            self._bills.clear()

    def snapshot(self) -> dict[str, Any]:
        """The ``GET /admin/billing`` body; USD as a decimal string."""
        bills = self.bills()
        return {
            "requests": len(bills),
            "images": sum(b.images for b in bills),
            "input_tokens": sum(b.input_tokens for b in bills),
            "output_tokens": sum(b.output_tokens for b in bills),
            "usd": str(sum((b.usd for b in bills), Decimal(0))),
            "body_bytes": sum(b.body_bytes for b in bills),
            "billed_request_ids": [b.request_id for b in bills],
        }

"""A small stand-in provider on 127.0.0.1 that bills like a real one, but can be told to
misbehave the ways issue 13 found: leave usage out of its 200s, bill 3x what it was
asked to, or answer every request with a billed but unusable body.

It speaks Cohere's ``POST /v2/embed`` (also the ``local:`` teacher's embedding format)
and OpenAI's ``POST /v1/embeddings``, and keeps its own bill in dollars (at the prices of
the built-in ``local:*`` entry unless told others), so a test can compare the ledger
with what was billed.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from distill.server import ServerThread

USD_PER_IMAGE = Decimal("0.0001")  # the built-in local:* prices
USD_PER_1M_TOKENS = Decimal("0.12")


def vector(seed: str, dim: int, salt: str) -> list[float]:
    digest = hashlib.sha256((salt + seed).encode()).digest()
    return [(digest[i % len(digest)] - 128) / 128.0 for i in range(dim)]


@dataclass
class StandIn:
    """The provider's behaviour and its own bill (per request, in dollars)."""

    usage: bool = True  # False: 200s carry no usage / billed_units block at all
    bill_factor: int = 1  # bills (and reports) this many times the units sent
    malformed: bool = False  # every 200 has one embedding too few (still billed)
    dim: int = 16
    salt: str = "A"  # two stand-ins with different salts answer differently
    usd_per_image: Decimal = USD_PER_IMAGE
    usd_per_1m_tokens: Decimal = USD_PER_1M_TOKENS
    bills: list[Decimal] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return len(self.bills)

    @property
    def billed_usd(self) -> Decimal:
        return sum(self.bills, Decimal(0))

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path.endswith("/v2/embed"):
            items = body.get("images") or body.get("texts") or []
            images = len(body.get("images") or [])
            tokens = sum(len(t.split()) for t in body.get("texts") or [])
        elif path.endswith("/v1/embeddings"):
            raw = body.get("input")
            items = raw if isinstance(raw, list) else [raw]
            images, tokens = 0, sum(len(str(t).split()) for t in items)
        else:
            return 404, {"message": f"no route {path}"}
        images, tokens = images * self.bill_factor, tokens * self.bill_factor
        with self._lock:
            self.bills.append(self.usd_per_image * images + self.usd_per_1m_tokens * tokens / 10**6)
        vectors = [vector(str(x)[-64:], self.dim, self.salt) for x in items]
        if self.malformed:
            vectors = vectors[:-1]
        if path.endswith("/v2/embed"):
            out: dict[str, Any] = {"id": f"req-{self.requests}", "embeddings": {"float": vectors}}
            if self.usage:
                out["meta"] = {"billed_units": {"images": images, "input_tokens": tokens}}
        else:
            out = {
                "object": "list",
                "data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)],
                "model": body.get("model"),
            }
            if self.usage:
                out["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return 200, out

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, payload = self.answer(scope["path"], json.loads(raw or b"{}"))
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})


@contextmanager
def standin(**behaviour: Any) -> Iterator[tuple[StandIn, str]]:
    """A running stand-in provider and its base URL."""
    app = StandIn(**behaviour)
    with ServerThread(app) as server:
        yield app, server.base_url

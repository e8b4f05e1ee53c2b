"""A small stand-in provider on 127.0.0.1 that bills like a real one, but can be told to
misbehave the ways issue 13 found: leave usage out of its 200s, bill 3x what it was
asked to, or answer every request with a billed but unusable body.

It speaks Cohere's ``POST /v2/embed`` (also the ``local:`` teacher's embedding format),
OpenAI's ``POST /v1/embeddings`` and ``POST /v1/chat/completions``, and keeps its own bill
in dollars (at the prices of the built-in ``local:*`` entry unless told others), so a test
can compare the ledger with what was billed. ``partial`` usage blocks name some units and
leave out the one an image or an answer is billed by (as gateways have been seen to).
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
USD_PER_1M_OUTPUT = Decimal("0.60")
PROMPT_TOKENS = 100  # what the stand-in says a chat prompt (text + image) cost


def vector(seed: str, dim: int, salt: str) -> list[float]:
    digest = hashlib.sha256((salt + seed).encode()).digest()
    return [(digest[i % len(digest)] - 128) / 128.0 for i in range(dim)]


@dataclass
class StandIn:
    """The provider's behaviour and its own bill (per request, in dollars)."""

    usage: bool = True  # False: 200s carry no usage / billed_units block at all
    bill_factor: int = 1  # bills (and reports) this many times the units sent
    malformed: bool = False  # every 200 has one embedding too few (still billed)
    # 200s whose usage leaves out images (Cohere shape: input tokens only) or an answer's
    # completion_tokens (total_tokens only): billed in full all the same
    partial: bool = False
    # the first N requests are billed by the provider behind a gateway that gives up
    # waiting or loses the answer and says ``gateway_status`` (504; a proxy's 502,
    # Cloudflare's 520 or 524)
    gateway_timeouts: int = 0
    gateway_status: int = 504
    prompt_tokens: int = PROMPT_TOKENS  # what each chat prompt is billed (and said) at
    garbled: bool = False  # 200s say Content-Encoding: gzip over a body that is not gzip
    # (nor JSON)
    dim: int = 16
    salt: str = "A"  # two stand-ins with different salts answer differently
    usd_per_image: Decimal = USD_PER_IMAGE
    usd_per_1m_tokens: Decimal = USD_PER_1M_TOKENS
    usd_per_1m_output: Decimal = USD_PER_1M_OUTPUT
    bills: list[Decimal] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return len(self.bills)

    @property
    def billed_usd(self) -> Decimal:
        return sum(self.bills, Decimal(0))

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """An answer of ``max_completion_tokens`` (or ``max_tokens``) tokens, all billed."""
        out_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        with self._lock:
            self.bills.append(
                (self.usd_per_1m_tokens * self.prompt_tokens + self.usd_per_1m_output * out_tokens)
                / 10**6
            )
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": out_tokens,
            "total_tokens": self.prompt_tokens + out_tokens,
        }
        if self.partial:
            del usage["completion_tokens"]
        out: dict[str, Any] = {
            "id": f"chatcmpl-{self.requests}",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "A"},
                    "finish_reason": "length",
                }
            ],
        }
        if self.usage:
            out["usage"] = usage
        return 200, out

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path.endswith("/chat/completions"):
            return self.chat(body)
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
            if len(self.bills) <= self.gateway_timeouts:
                return self.gateway_status, {"message": "upstream request failed"}
        vectors = [vector(str(x)[-64:], self.dim, self.salt) for x in items]
        if self.malformed:
            vectors = vectors[:-1]
        if path.endswith("/v2/embed"):
            out: dict[str, Any] = {"id": f"req-{self.requests}", "embeddings": {"float": vectors}}
            billed = {"images": images, "input_tokens": tokens}
            if self.partial:  # a prompt-token count for every item, and no images
                billed = {"input_tokens": tokens + len(items)}
            if self.usage:
                out["meta"] = {"billed_units": billed}
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
        headers = [(b"content-type", b"application/json")]
        if self.garbled:
            headers.append((b"content-encoding", b"gzip"))
            data = b"not gzip " + data
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


@contextmanager
def standin(**behaviour: Any) -> Iterator[tuple[StandIn, str]]:
    """A running stand-in provider and its base URL."""
    app = StandIn(**behaviour)
    with ServerThread(app) as server:
        yield app, server.base_url

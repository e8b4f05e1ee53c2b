"""Shared test helpers: fake clocks, a programmable provider on httpx.MockTransport."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import io
import json
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from cache import LedgerRecord


class FakeClock:
    """A virtual clock for many concurrent sleepers.

    ``sleep(d)`` wakes a task when virtual time reaches now + d; time jumps to the
    earliest pending wake-up once every sleeper has had a chance to run, so tests of
    waiting code run instantly and deterministically.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._waiting: list[tuple[float, int]] = []
        self._seq = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._seq += 1
        me = (self.now + max(0.0, seconds), self._seq)
        heapq.heappush(self._waiting, me)
        while True:
            # let every runnable task run (and register its own wake-up) first
            for _ in range(3):
                await asyncio.sleep(0)
            if self._waiting[0] == me:
                heapq.heappop(self._waiting)
                self.now = max(self.now, me[0])
                return


class ListLedger:
    """A spend ledger that keeps its records in a list (what a test reads back)."""

    def __init__(self) -> None:
        self.records: list[LedgerRecord] = []

    def record(self, rec: LedgerRecord) -> None:
        self.records.append(rec)


def hash_vector(content: str, dim: int = 8) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(content.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim)
    return [float(x) for x in v / np.linalg.norm(v)]


class FakeCohere:
    """A Cohere-format embed endpoint on a MockTransport, with programmable faults.

    ``faults`` is a list consumed one per request: None (ok), an int status, "malformed",
    "timeout", "refused", "drop", or a callable(request) -> httpx.Response.
    """

    def __init__(self, dim: int = 8, usd_images: bool = True) -> None:
        self.dim = dim
        self.requests: list[dict] = []
        self.faults: list[object] = []
        self.billed_images = 0
        self.billed_requests = 0
        self.headers: dict[str, str] = {}
        self.delay = 0.0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        body = json.loads(request.content)
        fault = self.faults.pop(0) if self.faults else None
        if fault == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if fault == "timeout":
            self.requests.append(body)
            self._bill(body)
            raise httpx.ReadTimeout("timed out", request=request)
        if fault == "drop":
            self.requests.append(body)
            self._bill(body)
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        self.requests.append(body)
        if callable(fault):
            return fault(request)
        if isinstance(fault, int):
            return httpx.Response(fault, json={"message": f"fault {fault}"}, headers=self.headers)
        items = body.get("images") or body.get("texts") or []
        rid = f"req-{len(self.requests)}"
        vectors = [hash_vector(x, self.dim) for x in items]
        self._bill(body)
        if fault == "malformed":
            return httpx.Response(
                200,
                content=b'{"id": "' + rid.encode() + b'", "embeddings": {',
                headers={"x-request-id": rid},
            )
        if fault == "wrongdim":
            vectors = [v[:-1] for v in vectors]
        payload = {
            "id": rid,
            "embeddings": {"float": vectors},
            "meta": {
                "billed_units": {
                    "images": len(body.get("images", [])),
                    "input_tokens": sum(len(t.encode()) + 1 for t in body.get("texts", [])),
                }
            },
            "response_type": "embeddings_by_type",
        }
        return httpx.Response(200, json=payload, headers={"x-request-id": rid, **self.headers})

    def _bill(self, body: dict) -> None:
        self.billed_requests += 1
        self.billed_images += len(body.get("images", []))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


def png_bytes(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    PILImage.fromarray(arr).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def adam_lrs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The lr of every ``torch.optim.Adam`` step taken during the test, read from the
    optimizer as it steps (not from a log)."""
    torch = pytest.importorskip("torch")
    seen: list[float] = []
    step = torch.optim.Adam.step

    def recording(self: object, *a: object, **k: object) -> object:
        seen.append(float(self.param_groups[0]["lr"]))  # type: ignore[attr-defined]
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    return seen


@pytest.fixture
def fake_cohere() -> FakeCohere:
    return FakeCohere()


def make_image_requests(n: int, size: int = 16) -> list:
    from vlmclient import Image, ImageEmbeddingRequest

    return [ImageEmbeddingRequest(image=Image.from_bytes(png_bytes(i, size))) for i in range(n)]


Maker = Callable[..., object]

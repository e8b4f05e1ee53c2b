"""A faulty local teacher on 127.0.0.1 for the reliability tests, and ledger/bill helpers.

Everything here is the real thing: uvicorn serving the teacher app with its own billing
and seeded fault injection (500/503/529, drops, slow answers, truncated 200s), plus an
outer ASGI layer that answers a seeded fraction of requests with 429 + Retry-After
before they reach the app (the app's own 429 only comes from its requests/min window).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from cache import LedgerRecord, SpendLedger
from distill.server import Faults, HashBackend, ServerConfig, ServerThread, create_app
from distill.server.billing import Bill

TOKEN = "reliability-token-5d1e"


@pytest.fixture(autouse=True)
def teacher_token(monkeypatch: pytest.MonkeyPatch) -> str:
    """The local teacher's bearer token, where the harvest CLI looks for it."""
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    return TOKEN


class Inject429:
    """ASGI wrapper: a seeded ``fraction`` of API requests get 429 with Retry-After.

    Sent before the app sees the request, so (as at a real provider) it is never billed.
    ``send`` is passed through untouched: the app's dropped-connection fault needs it.
    """

    def __init__(self, app: Any, fraction: float, seed: int = 0, retry_after_ms: int = 100):
        self.app = app
        self.fraction = fraction
        self.retry_after_ms = retry_after_ms
        self._rng = random.Random(seed)
        self.sent = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith(("/v1/", "/v2/"))
            and self._rng.random() < self.fraction
        ):
            self.sent += 1
            rid = str(uuid.uuid4())
            body = json.dumps({"id": rid, "message": "injected: too many requests"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"x-request-id", rid.encode()),
                        (b"retry-after", b"1"),  # whole seconds, as the RFC spells it
                        (b"retry-after-ms", str(self.retry_after_ms).encode()),  # OpenAI's
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class Teacher:
    """A running server: its URL, its own bill (per request), and the 429 injector."""

    def __init__(self, server: ServerThread, app: Any, injector: Inject429 | None) -> None:
        self.server = server
        self.url = server.base_url
        self.app = app
        self.injector = injector

    def bills(self) -> list[Bill]:
        return self.app.state.teacher.billing.bills()  # type: ignore[no-any-return]

    def billing(self) -> dict[str, Any]:
        r = httpx.get(self.url + "/admin/billing", headers={"Authorization": f"Bearer {TOKEN}"})
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


@contextmanager
def teacher(
    faults: Faults | None = None,
    *,
    inject_429: float = 0.0,
    rpm: int | None = None,
    dim: int = 32,
    seed: int = 0,
    token: str = TOKEN,
    decode: bool = False,
) -> Iterator[Teacher]:
    config = ServerConfig(token=SecretStr(token), faults=faults or Faults(), rpm=rpm)
    app = create_app(config, HashBackend(dim=dim, decode=decode))
    injector = Inject429(app, inject_429, seed) if inject_429 else None
    with ServerThread(injector or app) as server:
        yield Teacher(server, app, injector)


def harvest_argv(
    url: str, data: Path, cache: Path, *extra: str, budget: str = "5"
) -> list[str]:
    return [
        "harvest",
        str(data),
        "--teacher",
        "local:hash",
        "--base-url",
        url,
        "--cache",
        str(cache),
        "--budget",
        budget,
        *extra,
    ]


def ledger(cache: Path) -> list[LedgerRecord]:
    return SpendLedger.read(cache / "ledger.jsonl")


def paid(records: list[LedgerRecord]) -> Decimal:
    return sum((Decimal(r.cost_usd) for r in records), Decimal(0))

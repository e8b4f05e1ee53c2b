"""A real local teacher server on 127.0.0.1 and a small real image dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from cache import SpendLedger, totals
from distill.server import HashBackend, ServerConfig, ServerThread, create_app
from distill.server.config import Faults

TOKEN = "e2e-token-3f9a"


class LocalTeacher:
    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.url = server.base_url

    def billing(self) -> dict:
        r = httpx.get(self.url + "/admin/billing", headers={"Authorization": f"Bearer {TOKEN}"})
        r.raise_for_status()
        return r.json()

    def reset(self) -> None:
        """Start the bill again from zero (the server's caches stay)."""
        r = httpx.post(self.url + "/admin/reset", headers={"Authorization": f"Bearer {TOKEN}"})
        r.raise_for_status()


@contextmanager
def local_teacher(
    monkeypatch: pytest.MonkeyPatch,
    *,
    latency_ms: float = 0.0,
    dim: int = 32,
    wrap: Callable[[Any], Any] | None = None,
    decode: bool = False,
) -> Iterator[LocalTeacher]:
    """The hash teacher on 127.0.0.1 (every API request ``latency_ms`` late), its token
    where the harvest CLI looks for it; ``wrap``: an ASGI app around the teacher's;
    ``decode``: it decodes every image, so a file whose pixels do not decode is a 400."""
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    config = ServerConfig(token=SecretStr(TOKEN), faults=Faults(latency_ms=latency_ms))
    app = create_app(config, HashBackend(dim=dim, decode=decode))
    with ServerThread(app if wrap is None else wrap(app)) as server:
        yield LocalTeacher(server)


def harvest(teacher: LocalTeacher, data: Path, cache: Path, *extra: str) -> int:
    """``vlm-distill harvest DATA`` from ``teacher`` into ``cache``: its exit code."""
    from distill.cli import main

    return main(
        [
            "harvest", str(data), "--teacher", "local:hash", "--base-url", teacher.url,
            "--cache", str(cache), *extra,
        ]
    )  # fmt: skip


def ledger_spent(cache: Path) -> Decimal:
    """What the cache's ledger records as spent."""
    return totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd


@pytest.fixture
def hash_teacher(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalTeacher]:
    with local_teacher(monkeypatch, dim=64) as teacher:
        yield teacher


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.data.digits import make_digits

    out = tmp_path_factory.mktemp("digits") / "digits"
    return make_digits(out, size=32, per_class=3, seed=0)

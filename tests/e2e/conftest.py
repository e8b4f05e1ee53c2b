"""A real local teacher server on 127.0.0.1 and a small real image dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from distill.server import HashBackend, ServerConfig, ServerThread, create_app

TOKEN = "e2e-token-3f9a"


class LocalTeacher:
    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.url = server.base_url

    def billing(self) -> dict:
        r = httpx.get(self.url + "/admin/billing", headers={"Authorization": f"Bearer {TOKEN}"})
        r.raise_for_status()
        return r.json()


@pytest.fixture
def hash_teacher(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalTeacher]:
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    config = ServerConfig(token=SecretStr(TOKEN))
    with ServerThread(create_app(config, HashBackend(dim=64))) as server:
        yield LocalTeacher(server)


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.data.digits import make_digits

    out = tmp_path_factory.mktemp("digits") / "digits"
    return make_digits(out, size=32, per_class=3, seed=0)

"""Helpers for the teacher-server tests: a real uvicorn server on 127.0.0.1, tiny images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from distill.server import Faults, HashBackend, ServerConfig, ServerThread, create_app
from tests.server.helpers import TOKEN, auth

Serve = Callable[..., str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(backend=None, **config)`` starts a server and returns its base URL."""
    servers: list[ServerThread] = []

    def start(backend: Any = None, faults: Faults | None = None, **config: Any) -> str:
        cfg = ServerConfig(token=SecretStr(TOKEN), faults=faults or Faults(), **config)
        server = ServerThread(create_app(cfg, backend or HashBackend()))
        servers.append(server)
        return server.start()

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(headers=auth(), timeout=10) as c:
        yield c

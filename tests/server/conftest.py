"""Helpers for the teacher-server tests: a real uvicorn server on 127.0.0.1, tiny images."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from pydantic import SecretStr

from distill.server import Faults, HashBackend, ServerConfig, ServerThread, create_app

TOKEN = "test-token-0123456789"


def png(seed: int, size: int = 16) -> bytes:
    img = Image.new("RGB", (size, size + 4), ((seed * 37) % 256, (seed * 91) % 256, 120))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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

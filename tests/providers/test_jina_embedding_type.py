"""Jina's ``embedding_type`` param (reference notes, /v1/embeddings: ``float|base64|binary|
ubinary``): the client reads float number lists only.

Until 2026-12-07 a caller's ``embedding_type`` replaced the ``"float"`` the adapter asks
for. ``"binary"``/``"ubinary"`` answers (packed bits, one small integer per 8 dimensions)
passed as vectors and were cached as the teacher's; ``"base64"`` answers were billed and
refused as malformed, request after request. Now any value but ``"float"`` is refused
before anything is sent or reserved.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from cache import MemoryCache
from tests.providers.conftest import image
from tests.providers.loopback import loopback
from vlmclient import ConfigurationError, ImageEmbeddingRequest, Price, TeacherClient


def jina(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Answers in the type asked for: float lists, or packed bits (16 ints for 128 dims)."""
    kind = body.get("embedding_type", "float")
    row: Any = [0.25] * 128 if kind == "float" else [-7 + i % 15 for i in range(16)]
    if kind == "base64":
        row = "AACAPgAAgD4="
    n = len(body["input"])
    data = [{"object": "embedding", "index": i, "embedding": row} for i in range(n)]
    usage = {"total_tokens": 10, "prompt_tokens": 10}
    return 200, {"model": body["model"], "object": "list", "usage": usage, "data": data}


@pytest.mark.parametrize("given", ["binary", "ubinary", "base64", "FLOAT"])
async def test_an_embedding_type_other_than_float_sends_nothing(given: str) -> None:
    cache = MemoryCache()
    with loopback(jina) as server:
        async with TeacherClient(
            "jina:jina-clip-v2",
            api_key="k",
            base_url=server.url,
            price=Price(usd_per_1m_input_tokens=Decimal("0.05")),
            params={"embedding_type": given},
            cache=cache,
            rpm=60_000,
        ) as client:
            with pytest.raises(ConfigurationError, match="embedding_type"):
                await client.embed_images([ImageEmbeddingRequest(image=image())])
            assert server.requests == [] and len(cache) == 0
            assert client.budget.spent == 0 and client.budget.reserved == 0
        # "float" (or leaving it out) is what the client reads: bought as before
        async with TeacherClient(
            "jina:jina-clip-v2",
            api_key="k",
            base_url=server.url,
            price=Price(usd_per_1m_input_tokens=Decimal("0.05")),
            params={"embedding_type": "float"},
            cache=cache,
            rpm=60_000,
        ) as client:
            [got] = await client.embed_images([ImageEmbeddingRequest(image=image())])
    assert got.dim == 128 and len(cache) == 1
    assert server.bodies[-1]["embedding_type"] == "float"

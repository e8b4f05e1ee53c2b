"""The default transport (httpx-aiohttp reading each answer whole) against a real
server on 127.0.0.1: compressed answers are decoded, and a closed client sends nothing."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from vlmclient import Budget, Price, TeacherClient, TextEmbeddingRequest

VECTOR = np.arange(8, dtype="<f4") / 8


@contextmanager
def gzip_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An OpenAI-style /v1/embeddings that answers gzip-compressed JSON."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            seen.append(body)
            answer = {
                "data": [
                    {"index": i, "embedding": base64.b64encode(VECTOR.tobytes()).decode()}
                    for i in range(len(body["input"]))
                ],
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
            data = gzip.compress(json.dumps(answer).encode())
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # poll_interval: shutdown() waits for the serving loop's next poll (0.5 s by default,
    # half a second of every test that serves)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _client(url: str) -> TeacherClient:
    return TeacherClient(
        "openai:m",
        api_key="k",
        base_url=url + "/v1",
        price=Price(usd_per_1m_input_tokens=Decimal("1")),
        budget=Budget("1"),
    )


async def test_a_gzip_answer_is_decoded() -> None:
    with gzip_server() as (url, seen):
        async with _client(url) as client:
            [got] = await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert np.array_equal(got.vector, VECTOR) and seen[0]["input"] == ["a cat"]
    assert client.budget.spent == Decimal("0.000003")


async def test_a_closed_client_sends_nothing() -> None:
    with gzip_server() as (url, seen):
        client = _client(url)
        await client.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    # refused before its budget was reserved: nothing charged as if it had been sent
    assert seen == [] and client.budget.reserved == 0 and client.budget.spent == 0

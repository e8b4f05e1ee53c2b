"""Embeddings sent as base64 float32 (issue 17, item 3), through the real TeacherClient
against the real local teacher on 127.0.0.1: the same vectors, cached as the same bytes
under the same keys as the float answers of the same values."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import pytest

from cache import ResponseCache
from tests.conftest import make_image_requests
from tests.e2e.conftest import TOKEN, LocalTeacher
from vlmclient import ImageEmbeddingRequest, Price, TeacherClient, TextEmbeddingRequest
from vlmclient.client import item_cache_key, prepare_item
from vlmclient.providers import get_provider

PRICE = Price(usd_per_1m_input_tokens=Decimal("0.12"), max_image_tokens=85)
TEXTS = [TextEmbeddingRequest(text=f"a photo of a {c}") for c in ("cat", "dog", "car")]


class WireLog(httpx.AsyncBaseTransport):
    """A real HTTP transport that keeps each request body and response body it carried."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[bytes] = []
        self.received: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.content)
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        self.received.append(body)
        return httpx.Response(response.status_code, headers=response.headers, content=body)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _buy(
    teacher: str,
    url: str,
    cache_dir: Path,
    kind: str,
    items: Sequence[TextEmbeddingRequest | ImageEmbeddingRequest],
    params: dict[str, object] | None = None,
    price: Price | None = PRICE,
) -> tuple[list[np.ndarray], ResponseCache, TeacherClient, WireLog]:
    wire = WireLog()
    cache = ResponseCache(cache_dir)  # float16, the default
    async with TeacherClient(
        teacher, api_key=TOKEN, base_url=url, price=price, cache=cache, params=params,
        transport=wire,
    ) as client:
        if kind == "text_embedding":
            out = await client.embed_texts(list(items))  # type: ignore[arg-type]
        else:
            out = await client.embed_images(list(items))  # type: ignore[arg-type]
    return [r.vector for r in out], cache, client, wire


def _cached(cache: ResponseCache, client: TeacherClient, kind: str, items: Sequence) -> list:
    keys = [client.cache_key(kind, prepare_item(client.provider, i)) for i in items]  # type: ignore[arg-type]
    return [entry.vector for entry in cache.get_many(keys) if entry is not None]


async def test_openai_route_base64_caches_the_float_answers_bytes(
    hash_teacher: LocalTeacher, tmp_path: Path
) -> None:
    url = hash_teacher.url + "/v1"
    b64, b64_cache, b64_client, b64_wire = await _buy(
        "openai:hash", url, tmp_path / "b64", "text_embedding", TEXTS
    )
    flt, flt_cache, flt_client, flt_wire = await _buy(
        "openai:hash", url, tmp_path / "flt", "text_embedding", TEXTS,
        params={"encoding_format": "float"},
    )
    assert b'"encoding_format":"base64"' in b64_wire.sent[0]
    assert b'"encoding_format":"float"' in flt_wire.sent[0]
    # the server answered each as asked: strings in one, number lists in the other
    assert b'"embedding":"' in b64_wire.received[0]
    assert b'"embedding":[' in flt_wire.received[0]
    assert len(b64_wire.received[0]) < len(flt_wire.received[0]) / 2
    for a, b in zip(b64, flt, strict=True):
        assert a.dtype == np.float32 and a.tobytes() == b.tobytes()
    for a, b in zip(
        _cached(b64_cache, b64_client, "text_embedding", TEXTS),
        _cached(flt_cache, flt_client, "text_embedding", TEXTS),
        strict=True,
    ):
        assert a.tobytes() == b.tobytes()
    # asking for base64 is not a parameter: the default key is the key caches already hold
    provider = get_provider("openai")
    assert b64_client.cache_key("text_embedding", TEXTS[0]) == item_cache_key(
        provider, "hash", {}, "text_embedding", TEXTS[0], b64_client.endpoint
    )
    b64_cache.close()
    flt_cache.close()


async def test_local_teacher_images_base64_same_cached_bytes(
    hash_teacher: LocalTeacher, tmp_path: Path
) -> None:
    images = make_image_requests(4)
    b64, b64_cache, b64_client, b64_wire = await _buy(
        "local:hash", hash_teacher.url, tmp_path / "b64", "image_embedding", images, price=None
    )
    # asking for "float" beside it makes the server send both; the client reads "float"
    flt, flt_cache, flt_client, flt_wire = await _buy(
        "local:hash", hash_teacher.url, tmp_path / "flt", "image_embedding", images,
        params={"embedding_types": ["float"]}, price=None,
    )
    assert b'"embedding_types":["base64"]' in b64_wire.sent[0]
    assert b'"base64":["' in b64_wire.received[0] and b'"float"' not in b64_wire.received[0]
    assert b'"float":[[' in flt_wire.received[0]
    for a, b in zip(b64, flt, strict=True):
        assert a.tobytes() == b.tobytes()
    for a, b in zip(
        _cached(b64_cache, b64_client, "image_embedding", images),
        _cached(flt_cache, flt_client, "image_embedding", images),
        strict=True,
    ):
        assert a.tobytes() == b.tobytes()
    # the key of an image did not change: no params, the same digest of the bytes sent
    provider = get_provider("local")
    prepared = prepare_item(provider, images[0])
    assert b64_client.cache_key("image_embedding", prepared) == item_cache_key(
        provider, "hash", {}, "image_embedding", prepared, b64_client.endpoint
    )
    assert b64_client.budget.spent + flt_client.budget.spent == Decimal(
        hash_teacher.billing()["usd"]
    )
    b64_cache.close()
    flt_cache.close()


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("not base64 !", "not base64"),
        ("AAAA", "whole float32"),  # 3 bytes
        ("AAAAAA==|AAAAAAAAAAA=", r"one length \(bytes: \[4, 8\]\)"),  # 4 and 8 bytes
        ("AADAfw==", "NaN"),  # one float32 NaN
    ],
)
async def test_bad_base64_is_a_billed_malformed_answer(fault: str, says: str) -> None:
    """A 200 whose base64 is not whole float32 vectors of one length is rejected (billed,
    recorded, not retried); pure wire format, so a MockTransport answers."""
    from vlmclient import ResponseValidationError

    rows = fault.split("|")
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        data = [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)]
        return httpx.Response(
            200, json={"data": data, "usage": {"prompt_tokens": 4, "total_tokens": 4}}
        )

    texts = TEXTS[: len(rows)]
    async with TeacherClient(
        "openai:m", api_key="k", base_url="http://x/v1", price=PRICE,
        transport=httpx.MockTransport(handler),
    ) as client:
        with pytest.raises(ResponseValidationError, match=says):
            await client.embed_texts(texts)
    assert len(calls) == 1 and client.billed_malformed == 1

"""Voyage ``/multimodalembeddings`` params with a fixed set of values: ``input_type``
(``query``, ``document`` or null) and ``encoding_format`` (``base64`` or null) in the
pinned spec; ``output_dimension`` 256/512/1024/2048 for voyage-multimodal-3.5 only
(reference notes: "3.5 adds ... 256/512/1024/2048 dims").

Until 2026-12-07 any value was sent: a 400 on every request (nothing bought), or, for an
``output_dimension`` the model does not apply, vectors of its own length billed and
refused as malformed, request after request. Now such a value is refused before anything
is reserved or sent; the spec's values are sent as given.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import vector
from tests.providers.loopback import loopback
from vlmclient import ConfigurationError, Price, TeacherClient, TextEmbeddingRequest

PRICE = Price(usd_per_1m_input_tokens=Decimal("0.12"), usd_per_1b_pixels=Decimal("0.60"))


def voyage(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """As the spec says: a 400 ``{detail}`` for a value outside its enums; vectors at the
    asked length on 3.5, at 1024 on voyage-multimodal-3 whatever is asked."""
    if body.get("input_type") not in (None, "query", "document") or body.get(
        "encoding_format"
    ) not in (None, "base64"):
        return 400, {"detail": "invalid request"}
    dim = body.get("output_dimension", 1024) if body["model"].endswith("3.5") else 1024
    data = [{"object": "embedding", "index": i, "embedding": vector(i, dim)}
            for i in range(len(body["inputs"]))]
    usage = {"text_tokens": 5, "image_pixels": 0, "total_tokens": 5}
    return 200, {"object": "list", "data": data, "model": body["model"], "usage": usage}


def _client(url: str, model: str, params: dict[str, Any]) -> TeacherClient:
    return TeacherClient(
        f"voyage:{model}", api_key="k", base_url=url, price=PRICE, params=params, rpm=60_000
    )


BAD = [
    ("voyage-multimodal-3", {"input_type": "search_query"}, "input_type"),
    ("voyage-multimodal-3", {"encoding_format": "float"}, "encoding_format"),
    ("voyage-multimodal-3", {"output_dimension": 256}, "output_dimension"),
    ("voyage-multimodal-3.5", {"output_dimension": 300}, "output_dimension"),
]


async def test_a_value_outside_the_spec_sends_nothing() -> None:
    with loopback(voyage) as server:
        for model, params, named in BAD:
            async with _client(server.url, model, params) as client:
                with pytest.raises(ConfigurationError, match=named):
                    await client.embed_texts([TextEmbeddingRequest(text="a cat")])
            assert client.budget.spent == 0 and client.budget.reserved == 0, params
    assert server.requests == []


async def test_the_spec_values_are_sent_as_given() -> None:
    good = [
        ("voyage-multimodal-3", {"input_type": "query", "encoding_format": None}, 1024),
        ("voyage-multimodal-3.5", {"input_type": None, "output_dimension": 256}, 256),
        ("voyage-multimodal-3.5", {"input_type": "document"}, 1024),
    ]
    with loopback(voyage) as server:
        for model, params, dim in good:
            async with _client(server.url, model, params) as client:
                [got] = await client.embed_texts([TextEmbeddingRequest(text=f"cat {dim}")])
            assert got.dim == dim
    for body, (_, params, _) in zip(server.bodies, good, strict=True):
        assert {k: body[k] for k in params} == params

"""Params that name a body field the client builds (the model, the inputs) are refused.

Until 2026-12-07 most adapters spread the caller's params over the body they built, so
``params={"input": [...]}`` on Jina or OpenAI, ``inputs`` on Voyage, ``texts``/``images``
on Cohere, ``messages`` on an OpenAI chat replaced the items of every request: each item
was cached under its own key with the answer for the params' inputs, and reserved for
what it was not sent. ``model`` bought another model's vectors at this one's price and
under its name. Now such a param is refused when the client is made: nothing is
reserved or sent, and the message names the param and what sets it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from cache import MemoryCache
from tests.providers.conftest import anthropic_message, ask, vector
from tests.providers.loopback import loopback
from vlmclient import ConfigurationError, Price, TeacherClient, TextEmbeddingRequest

PRICE = Price(
    usd_per_1m_input_tokens=Decimal("1"),
    usd_per_1m_output_tokens=Decimal("5"),
    usd_per_1b_pixels=Decimal("1"),
)
OTHER = "a caption that is not the item's"


def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Each provider's answer to what it was sent: one vector (or answer) per input."""
    usage = {"total_tokens": 5, "prompt_tokens": 5, "text_tokens": 5, "completion_tokens": 1}
    if path.endswith("/chat/completions"):
        choice = {"index": 0, "message": {"role": "assistant", "content": "7"},
                  "finish_reason": "stop"}
        return 200, {"id": "c", "object": "chat.completion", "choices": [choice],
                     "usage": usage}
    if ":generateContent" in path:  # a field it does not know in generationConfig
        return 400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                               "message": "Unknown name \"contents\" at 'generation_config'"}}
    if path.endswith("/v1/messages"):
        return 200, anthropic_message({"input_tokens": 5, "output_tokens": 1})
    if path.endswith("/v2/embed"):
        n = len(body.get("texts") or body.get("images") or body.get("inputs") or [])
        return 200, {"id": "e", "embeddings": {"float": [vector(i, 1536) for i in range(n)],
                                               "base64": None},
                     "meta": {"billed_units": {"input_tokens": 5}}}
    if path.endswith("/embedding/text"):
        n = len(body["texts"])
        return 200, {"embeddings": [vector(i, 768) for i in range(n)],
                     "usage": {"total_tokens": 5}, "model": body["model"]}
    rows = body.get("input") or body.get("inputs") or []
    data = [{"object": "embedding", "index": i, "embedding": vector(i)}
            for i in range(len(rows))]
    return 200, {"object": "list", "data": data, "model": body["model"], "usage": usage}


CASES = [
    ("jina:jina-clip-v2", {"input": [{"text": OTHER}]}, "input"),
    ("jina:jina-clip-v2", {"model": "jina-embeddings-v4"}, "model"),
    ("voyage:voyage-multimodal-3", {"inputs": [{"content": [{"type": "text", "text": OTHER}]}]},
     "inputs"),
    ("openai:text-embedding-3-small", {"input": [OTHER]}, "input"),
    ("openai:gpt-5-mini", {"messages": [{"role": "user", "content": OTHER}]}, "messages"),
    ("cohere:embed-v4.0", {"texts": [OTHER]}, "texts"),
    ("cohere:embed-v4.0", {"images": []}, "images"),
    ("local:teacher", {"texts": [OTHER]}, "texts"),
    ("nomic:nomic-embed-vision-v1.5", {"texts": [OTHER]}, "texts"),
    ("anthropic:claude-haiku-4-5", {"messages": []}, "messages"),
    ("anthropic:claude-haiku-4-5", {"max_tokens": 4096}, "max_tokens"),
    ("gemini:gemini-2.5-flash", {"contents": []}, "contents"),
    # sent inside generationConfig (a 400 after the reservation)
    ("gemini:gemini-3.8-flash", {"model": "gemini-3.1-pro"}, "model"),
    # replaced by the item's limit without a word
    ("gemini:gemini-3.8-flash", {"maxOutputTokens": 8192}, "maxOutputTokens"),
    # sent beside our maxOutputTokens: which one Gemini bills by is not known
    ("gemini:gemini-3.8-flash", {"max_output_tokens": 8192}, "max_output_tokens"),
]


@pytest.mark.parametrize(("teacher", "params", "named"), CASES)
async def test_a_param_naming_a_field_the_client_builds_is_refused(
    teacher: str, params: dict[str, Any], named: str
) -> None:
    cache = MemoryCache()
    with (
        loopback(respond) as server,
        pytest.raises(ConfigurationError, match=rf"'{named}'.*set by") as caught,
    ):
        client = TeacherClient(
            teacher, api_key="test-key-123", base_url=server.url, price=PRICE, params=params,
            cache=cache, rpm=60_000,
        )
        async with client:
            if teacher.startswith(("openai:gpt", "anthropic:", "gemini:")):
                await client.answer([ask()])
            else:
                await client.embed_texts([TextEmbeddingRequest(text="cat")])
    assert "nothing was sent" in str(caught.value)
    assert server.requests == [] and len(cache) == 0


async def test_other_params_are_still_sent() -> None:
    with loopback(respond) as server:
        async with TeacherClient(
            "jina:jina-clip-v2", api_key="k", base_url=server.url, price=PRICE,
            params={"task": "retrieval.query", "normalized": True}, rpm=60_000,
        ) as client:
            [got] = await client.embed_texts([TextEmbeddingRequest(text="cat")])
    assert got.dim == 8
    assert server.bodies[0]["input"] == [{"text": "cat"}]
    assert server.bodies[0]["task"] == "retrieval.query"

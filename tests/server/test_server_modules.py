"""Issue 16 item 6: each wire format's handler runs alone, without HTTP or the gate."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from pydantic import SecretStr

from distill.server import HashBackend, ServerConfig
from distill.server.gate import error_body
from distill.server.route_chat import chat_completions, truncate_tokens
from distill.server.route_cohere import cohere_embed
from distill.server.route_openai_embed import openai_embed
from distill.server.state import TeacherState
from distill.server.wire import WireError
from tests.server.helpers import TOKEN, data_uri, png


@pytest.fixture
async def state():  # type: ignore[no-untyped-def]
    s = TeacherState(ServerConfig(token=SecretStr(TOKEN)), HashBackend(dim=8), time.monotonic)
    yield s
    await s.aclose()


async def test_cohere_handler_alone(state: TeacherState) -> None:
    body = {"model": "m", "input_type": "image", "images": [data_uri(png(1)), data_uri(png(2))]}
    out = await cohere_embed(state, body, "rid-1")
    assert out.images == 2 and out.input_tokens == 0
    assert out.usd == Decimal("0.0002")  # two images at the default $0.0001
    assert out.body["id"] == "rid-1" and out.body["meta"]["billed_units"]["images"] == 2
    assert len(out.body["embeddings"]["float"][0]) == 8
    assert out.wrong_dim_body is not None
    assert len(out.wrong_dim_body["embeddings"]["float"][0]) == 4


async def test_openai_embed_handler_alone(state: TeacherState) -> None:
    out = await openai_embed(state, {"model": "m", "input": ["a", "b c"], "dimensions": 4}, "r")
    assert [len(d["embedding"]) for d in out.body["data"]] == [4, 4]
    assert out.body["usage"]["prompt_tokens"] == out.input_tokens > 0
    with pytest.raises(WireError, match="dimensions"):
        await openai_embed(state, {"model": "m", "input": "x", "dimensions": 99}, "r")


async def test_chat_handler_alone(state: TeacherState) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": data_uri(png(3))}}]}]}  # fmt: skip
    out = await chat_completions(state, body, "r")
    assert out.body["choices"][0]["finish_reason"] in ("stop", "length")
    assert out.output_tokens == out.body["usage"]["completion_tokens"] <= 1
    assert truncate_tokens("a b c", 2) == ("a b", True)


def test_error_envelopes() -> None:
    assert error_body("cohere", 400, "bad", "id1", None) == {"id": "id1", "message": "bad"}
    err = error_body("openai", 408, "slow", "r", None)["error"]
    assert err["code"] == "request_timeout" and err["type"] == "invalid_request_error"
    assert error_body("openai", 529, "Overloaded", "r", None)["error"]["type"] == (
        "overloaded_error"
    )

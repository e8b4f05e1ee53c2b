"""Request bodies of the OpenAI adapter validate against the pinned OpenAI spec schemas."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import httpx
import jsonschema
import pytest
from pydantic import SecretStr
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.conftest import png_bytes
from vlmclient import AnswerRequest, Image, Price, TeacherClient, TextEmbeddingRequest
from vlmclient.providers import openai
from vlmclient.providers.base import CallSpec

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "openai_schemas.json"


def validator(name: str) -> jsonschema.Draft202012Validator:
    doc = json.loads(FIXTURE.read_text())
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:openai", resource)
    schema = {"$ref": f"urn:openai#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def spec(kind: str, items: list, params: dict | None = None) -> CallSpec:
    return CallSpec(
        kind, "gpt-4o-mini", items, "https://api.openai.com/v1", SecretStr("sk-x"), params or {}
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 3, 2048])
def test_embedding_body_matches_spec(n: int) -> None:
    items = [TextEmbeddingRequest(text=f"a photo of a {i}") for i in range(n)]
    body = json.loads(openai.build_request(spec("text_embedding", items)).content)
    validator("CreateEmbeddingRequest").validate(body)


def test_embedding_body_with_dimensions_matches_spec() -> None:
    items = [TextEmbeddingRequest(text="a cat")]
    body = json.loads(
        openai.build_request(spec("text_embedding", items, {"dimensions": 256})).content
    )
    validator("CreateEmbeddingRequest").validate(body)


def test_chat_body_matches_spec() -> None:
    item = AnswerRequest(
        image=Image.from_bytes(png_bytes(1)), prompt="What digit is this?", max_output_tokens=5
    )
    request = openai.build_request(spec("answer", [item]))
    body = json.loads(request.content)
    validator("CreateChatCompletionRequest").validate(body)
    part = body["messages"][0]["content"][1]
    assert part["image_url"]["url"].startswith("data:image/png;base64,")
    assert request.url.path == "/v1/chat/completions"


def test_spec_rejects_a_wrong_body() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validator("CreateEmbeddingRequest").validate({"model": "m", "input": ["x"], "bogus": 1})


async def test_answer_round_trip_with_usage_cost() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        validator("CreateChatCompletionRequest").validate(body)
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "seven"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 2, "total_tokens": 102},
            },
            headers={"x-request-id": "req_abc"},
        )

    price = Price(usd_per_1m_input_tokens=Decimal("0.15"), usd_per_1m_output_tokens=Decimal("0.60"))
    async with TeacherClient(
        "openai:gpt-4o-mini", api_key="sk-x", price=price, transport=httpx.MockTransport(handler)
    ) as c:
        [ans] = await c.answer(
            [AnswerRequest(image=Image.from_bytes(png_bytes(2)), prompt="digit?")]
        )
    assert ans.text == "seven" and ans.request_id == "req_abc"
    assert ans.cost_usd == Decimal("0.000016200")
    assert (
        c.budget.spent
        == Decimal("100") * Decimal("0.15") / 1_000_000 + 2 * Decimal("0.60") / 1_000_000
    )


def test_rate_limit_headers_are_read_the_right_way_round() -> None:
    hints = openai.rate_limit_hints(
        httpx.Headers(
            {
                "x-ratelimit-limit-requests": "500",
                "x-ratelimit-limit-tokens": "200000",
                "x-ratelimit-remaining-requests": "499",
                "x-ratelimit-remaining-tokens": "199000",
                "x-ratelimit-reset-requests": "120ms",
                "x-ratelimit-reset-tokens": "6m0s",
            }
        )
    )
    assert hints.limit_requests == 500 and hints.limit_tokens == 200000
    assert hints.remaining_requests == 499 and hints.remaining_tokens == 199000
    assert hints.reset_requests_s == pytest.approx(0.12) and hints.reset_tokens_s == 360.0

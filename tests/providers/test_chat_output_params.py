"""Chat params that change what comes back, or what it is billed as, are refused.

Until 2026-12-07 these went out as given, each after a reservation for a plain text
answer: Gemini's ``generationConfig`` as a param was sent nested inside the adapter's own
(an unbilled 400 on every request); ``responseModalities`` with IMAGE or AUDIO and
``speechConfig`` buy image or audio output, dearer than the text rate the estimate
prices; ``stream: true`` (OpenAI, Anthropic) brings server-sent events back, which the
client cannot read: a billed answer lost as unreadable; OpenAI's ``prediction``
bills its rejected tokens as output the spec does not put under max_completion_tokens;
an Anthropic ``thinking`` budget not below the answer's ``max_tokens`` is a 400.
Now each is refused before anything is sent, the message naming the param.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import (
    anthropic_message,
    ask,
    loopback_client,
    refused_before_sending,
)
from tests.providers.loopback import Loopback, loopback
from vlmclient import Price, TeacherClient

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))
TEACHERS = {
    "gemini": "gemini:gemini-3.8-flash",
    "openai": "openai:gpt-4.1-mini",
    "anthropic": "anthropic:claude-sonnet-4-6",
}


def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A plain text answer "7" from whichever API was asked."""
    if ":generateContent" in path:
        return 200, {
            "candidates": [
                {"content": {"parts": [{"text": "7"}], "role": "model"}, "finishReason": "STOP"}
            ],
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 1},
        }
    if path.endswith("/v1/messages"):
        return 200, anthropic_message({"input_tokens": 40, "output_tokens": 1})
    choice = {"index": 0, "message": {"role": "assistant", "content": "7"}, "finish_reason": "stop"}
    return 200, {
        "id": "c",
        "object": "chat.completion",
        "choices": [choice],
        "usage": {"prompt_tokens": 40, "completion_tokens": 1, "total_tokens": 41},
    }


def client_on(provider: str) -> Any:
    def client_with(server: Loopback, params: dict[str, Any]) -> TeacherClient:
        return loopback_client(
            TEACHERS[provider], server, "key-test-output", price=PRICE, params=params
        )

    return client_with


@pytest.mark.parametrize(
    ("provider", "params", "named"),
    [
        ("gemini", {"generationConfig": {"temperature": 0}}, "generationConfig.*as params"),
        ("gemini", {"generation_config": {"topK": 3}}, "generation_config.*as params"),
        ("gemini", {"responseModalities": ["TEXT", "IMAGE"]}, "responseModalities"),
        ("gemini", {"response_modalities": ["audio"]}, "response_modalities"),
        ("gemini", {"speechConfig": {"voiceConfig": {}}}, "speechConfig"),
        ("gemini", {"speech_config": {}}, "speech_config"),
        ("openai", {"stream": True}, "stream"),
        ("openai", {"prediction": {"type": "content", "content": "7"}}, "prediction"),
        ("anthropic", {"stream": True}, "stream"),
        # ask() allows 16 output tokens: a 400 from Anthropic after each reservation
        ("anthropic", {"thinking": {"type": "enabled", "budget_tokens": 1024}}, "budget_tokens"),
    ],
)
async def test_refused_before_sending(provider: str, params: dict[str, Any], named: str) -> None:
    await refused_before_sending(respond, client_on(provider), params, named)


@pytest.mark.parametrize(
    ("provider", "params"),
    [
        ("gemini", {"responseModalities": ["TEXT"], "temperature": 0}),
        ("openai", {"stream": False}),
        ("anthropic", {"stream": False}),
        ("anthropic", {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
    ],
)
async def test_text_only_params_still_sent(provider: str, params: dict[str, Any]) -> None:
    with loopback(respond) as server:
        async with client_on(provider)(server, params) as client:
            [answer] = await client.answer([ask(max_output_tokens=2048)])
    assert answer.text == "7" and client.overrun is None
    body = server.bodies[0]
    sent = body.get("generationConfig", body) if provider == "gemini" else body
    assert all(sent[k] == v for k, v in params.items())

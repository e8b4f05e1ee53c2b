"""Gemini params whose bill no estimate can bound before sending.

``cachedContent`` names a context cache made earlier: its tokens (up to the model's whole
context) are part of every request's ``promptTokenCount``. The ``google_search``,
``url_context`` and ``code_execution`` tools add what they fetch or run to the prompt
(``toolUsePromptTokenCount``). None of it is in the request, so the reservation counted
a few dozen bytes of params while Gemini billed thousands of tokens: an overrun on the
first request. A loopback server bills like Gemini; such params are now refused before
anything is sent, while function declarations (billed as the params' own text) pass.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import loopback_client, refused_before_sending, tools_sent
from tests.providers.loopback import Loopback
from vlmclient import Price, TeacherClient

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))
CACHED = 50_000  # tokens of the context cache, or of what a tool fetched


def bill_like_gemini(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    cached = CACHED if body.get("cachedContent") or body.get("cached_content") else 0
    tools = [t for t in body.get("tools", []) if "functionDeclarations" not in t]
    used = CACHED if tools else 0
    usage = {"promptTokenCount": 40 + cached, "candidatesTokenCount": 1}
    if cached:
        usage["cachedContentTokenCount"] = cached
    if used:
        usage["toolUsePromptTokenCount"] = used
    return 200, {
        "candidates": [
            {"content": {"parts": [{"text": "7"}], "role": "model"}, "finishReason": "STOP"}
        ],
        "usageMetadata": usage,
    }


def client_with(server: Loopback, params: dict[str, Any]) -> TeacherClient:
    return loopback_client(
        "gemini:gemini-3.8-flash", server, "gm-test-unbounded", price=PRICE, params=params
    )


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"cachedContent": "cachedContents/abc123"}, "cachedContent"),
        ({"cached_content": "cachedContents/abc123"}, "cached_content"),
        ({"tools": [{"google_search": {}}]}, "google_search"),
        ({"tools": [{"googleSearch": {}}]}, "googleSearch"),
        ({"tools": [{"url_context": {}}]}, "url_context"),
        ({"tools": [{"codeExecution": {}}]}, "codeExecution"),
    ],
)
async def test_what_adds_unseen_prompt_tokens_is_refused_before_sending(
    params: dict[str, Any], named: str
) -> None:
    await refused_before_sending(bill_like_gemini, client_with, params, named)


async def test_function_declarations_are_sent_and_reserved() -> None:
    tools = [{"functionDeclarations": [{"name": "pick", "description": "the digit"}]}]
    await tools_sent(bill_like_gemini, client_with, tools)

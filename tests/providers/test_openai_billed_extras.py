"""OpenAI chat params that buy what the token estimate does not hold.

``web_search_options`` runs a web search for every answer: billed per search beside the
tokens, and its results added to the prompt. ``modalities: ["text", "audio"]`` (with an
``audio`` block) makes the answer audio tokens, billed at audio rates the price table
does not hold. A tool of another type than ``function`` or ``custom`` (``web_search``,
``file_search``: what an OpenAI-compatible gateway may run for the model) bills what it
fetches. All were sent, and the reservation counted their few bytes of JSON. A loopback
server bills like OpenAI; such params are now refused before anything is sent, while
function tools (billed as their own text) pass.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import loopback_client, refused_before_sending, tools_sent
from tests.providers.loopback import Loopback
from vlmclient import Price, TeacherClient

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))
SEARCHED = 30_000  # prompt tokens of what a search brought back


def bill_like_openai(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    tools = [t for t in body.get("tools", []) if t.get("type") not in ("function", "custom")]
    searched = "web_search_options" in body or bool(tools)
    audio = 2_000 if "audio" in (body.get("modalities") or []) else 0
    usage = {
        "prompt_tokens": 60 + (SEARCHED if searched else 0),
        "completion_tokens": 1 + audio,
        "completion_tokens_details": {"audio_tokens": audio},
    }
    choice = {"index": 0, "message": {"role": "assistant", "content": "7"},
              "finish_reason": "stop"}
    return 200, {"id": "chatcmpl-extras", "object": "chat.completion", "choices": [choice],
                 "usage": usage}


def client_with(server: Loopback, params: dict[str, Any]) -> TeacherClient:
    return loopback_client("openai:gpt-5-mini", server, "sk-extras", price=PRICE, params=params)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"web_search_options": {}}, "web_search_options"),
        ({"web_search_options": {"search_context_size": "high"}}, "web_search_options"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
         "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"tools": [{"type": "web_search"}]}, "web_search"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "file_search"),
    ],
)
async def test_what_bills_beyond_the_estimate_is_refused_before_sending(
    params: dict[str, Any], named: str
) -> None:
    await refused_before_sending(bill_like_openai, client_with, params, named)


async def test_function_tools_are_sent() -> None:
    tools = [{"type": "function", "function": {"name": "pick", "parameters": {}}}]
    await tools_sent(bill_like_openai, client_with, tools)

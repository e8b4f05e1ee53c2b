"""Anthropic server tools run on Anthropic's side and bill what they bring back.

``web_search`` adds its results to the prompt (and $10 per 1,000 searches), ``web_fetch``
the pages it fetches, ``code_execution`` what it runs; ``mcp_servers`` whatever the
server returns. None of it is in the request, so the reservation counted the tool's few
bytes of JSON while the usage reported thousands of input tokens: an overrun on the first
answer. A loopback server bills like Anthropic; such params are now refused before
anything is sent, while client tools (a plain ``{"name", "input_schema"}``) pass.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import (
    anthropic_message,
    loopback_client,
    refused_before_sending,
    tools_sent,
)
from tests.providers.loopback import Loopback
from vlmclient import Price, TeacherClient

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))
FETCHED = 30_000  # input tokens of what a server tool brought back


def bill_like_anthropic(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    server_side = body.get("mcp_servers") or any("type" in t for t in body.get("tools", []))
    usage = {"input_tokens": 60 + (FETCHED if server_side else 0), "output_tokens": 2}
    return 200, anthropic_message(usage, id="msg_tools")


def client_with(server: Loopback, params: dict[str, Any]) -> TeacherClient:
    return loopback_client(
        "anthropic:claude-haiku-5-5", server, "sk-ant-tools", price=PRICE, params=params
    )


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "web_search"),
        ({"tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}, "web_fetch"),
        (
            {"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]},
            "code_execution",
        ),
        ({"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}, "mcp_servers"),
    ],
)
async def test_a_server_tool_is_refused_before_sending(params: dict[str, Any], named: str) -> None:
    await refused_before_sending(bill_like_anthropic, client_with, params, named)


async def test_a_client_tool_is_sent() -> None:
    tools = [{"name": "pick", "description": "the digit", "input_schema": {"type": "object"}}]
    await tools_sent(bill_like_anthropic, client_with, tools)

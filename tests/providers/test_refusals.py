"""A refusal is a billed response, not an answer: charged, recorded, never cached.

Anthropic sends a refusal as a normal response with ``stop_reason: "refusal"`` (its text,
if any, is no answer); OpenAI cuts a filtered answer with ``finish_reason:
"content_filter"``. Before, any non-empty text was accepted and cached as the answer, so
a rerun never asked again. A loopback server answers like each provider.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cache import ResponseCache, SpendLedger
from tests.providers.conftest import image, loopback_client
from tests.providers.loopback import loopback
from vlmclient import AnswerRequest, Price, ResponseValidationError, Usage

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))


def anthropic_refusal(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {
        "id": "msg_refused",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "I can't help with"}],
        "stop_reason": "refusal",
        "usage": {"input_tokens": 90, "output_tokens": 5},
    }


def openai_filtered(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {
        "id": "chatcmpl-filtered",
        "choices": [
            {"index": 0, "message": {"content": "The digit"}, "finish_reason": "content_filter"}
        ],
        "usage": {"prompt_tokens": 90, "completion_tokens": 5},
    }


@pytest.mark.parametrize(
    ("teacher", "respond", "suffix", "why"),
    [
        ("anthropic:claude-haiku-5-5", anthropic_refusal, "", "refused"),
        ("openai:gpt-4o-mini", openai_filtered, "/v1", "content filter"),
    ],
)
async def test_a_refusal_is_charged_and_never_cached(
    tmp_path: Path, teacher: str, respond: Any, suffix: str, why: str
) -> None:
    ask = [AnswerRequest(image=image((64, 48)), prompt="Which digit?", max_output_tokens=16)]
    with (
        loopback(respond) as server,
        ResponseCache(tmp_path / "cache") as cache,
        SpendLedger(tmp_path / "ledger.jsonl") as ledger,
    ):
        client = loopback_client(
            teacher,
            server,
            "sk-test-refusal",
            base_url=server.url + suffix,
            price=PRICE,
            cache=cache,
            ledger=ledger,
        )
        async with client:
            with pytest.raises(ResponseValidationError, match=why):
                await client.answer(ask)
        assert len(server.requests) == 1
        assert len(cache) == 0  # a rerun asks again
        billed = PRICE.cost(Usage(input_tokens=90, output_tokens=5))
        assert client.budget.spent == billed
    [record] = SpendLedger.read(tmp_path / "ledger.jsonl")
    assert record.outcome == "malformed" and Decimal(record.cost_usd) == billed


def openai_refusal(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    # structured outputs: the model declines in message.refusal, content is null
    refusal = "I'm sorry, I can't help with identifying\nthis person (sk-test-refusal). "
    refusal += "x" * 400
    return 200, {
        "id": "chatcmpl-refused",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": refusal},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 90, "completion_tokens": 5},
    }


async def test_an_openai_refusal_is_named_and_quoted(tmp_path: Path) -> None:
    """Before, ``message.refusal`` was ignored and the error said "empty answer
    (finish_reason 'stop')"; now it says the model refused and quotes a bounded prefix."""
    ask = [AnswerRequest(image=image((64, 48)), prompt="Who is this?", max_output_tokens=16)]
    with loopback(openai_refusal) as server, ResponseCache(tmp_path / "cache") as cache:
        client = loopback_client(
            "openai:gpt-4o-mini",
            server,
            "sk-test-refusal",
            base_url=server.url + "/v1",
            price=PRICE,
            cache=cache,
        )
        async with client:
            with pytest.raises(ResponseValidationError) as caught:
                await client.answer(ask)
        assert len(cache) == 0
        assert client.budget.spent == PRICE.cost(Usage(input_tokens=90, output_tokens=5))
    message = str(caught.value)
    assert "refused" in message and "empty answer" not in message
    assert "I'm sorry, I can't help with identifying\\nthis person (***)." in message
    assert "x" * 200 not in message and "\n" not in message

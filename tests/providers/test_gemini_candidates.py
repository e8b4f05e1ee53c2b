"""Gemini's ``candidateCount`` asks for several answers in one request, each with its own
``maxOutputTokens``; the output of every candidate is billed. The estimate reserved one
answer's output, so a caller's ``params={"candidateCount": 3}`` on a thinking model
overran (an OpenAI ``n`` was already reserved per choice). A loopback server bills like
Gemini with each candidate using its whole allowance."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import ask, loopback_client
from tests.providers.loopback import Loopback, loopback
from vlmclient import Price, TeacherClient, Usage

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))


def bill_every_candidate(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    config = body["generationConfig"]
    n = config.get("candidateCount", config.get("candidate_count", 1))  # both spellings
    each = config["maxOutputTokens"]  # thinking plus answer used the whole allowance
    return 200, {
        "candidates": [
            {"index": i, "content": {"parts": [{"text": "7"}], "role": "model"},
             "finishReason": "STOP"}
            for i in range(n)
        ],
        "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": n * each},
    }


def flash(server: Loopback, params: dict[str, Any]) -> TeacherClient:
    return loopback_client(
        "gemini:gemini-3.8-flash", server, "gm-test-candidates", price=PRICE, params=params
    )


@pytest.mark.parametrize(("params", "n"), [({}, 1), ({"candidateCount": 3}, 3),
                                           ({"candidate_count": 2}, 2)])
async def test_every_candidate_is_reserved(params: dict[str, Any], n: int) -> None:
    with loopback(bill_every_candidate) as server:
        client = flash(server, params)
        async with client:
            [answer] = await client.answer([ask(max_output_tokens=500)])
    assert answer.text == "7"
    sent = server.bodies[0]["generationConfig"]
    assert sent.get("candidateCount", sent.get("candidate_count", 1)) == n
    assert client.overrun is None and client.budget.overruns == 0
    assert client.budget.spent == PRICE.cost(Usage(input_tokens=40, output_tokens=500 * n))


def bill_like_proto_json(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Gemini parses its body as proto3 JSON: an int32 may be sent as a string ("3") or
    as an integral number (3.0), and is the count all the same."""
    config = body["generationConfig"]
    config["candidateCount"] = int(float(config.get("candidateCount", 1)))
    return bill_every_candidate(path, body)


@pytest.mark.parametrize("value", ["3", 3.0, " 3"])
async def test_a_count_spelled_as_a_string_or_float_is_reserved(value: Any) -> None:
    """``candidateCount: "3"`` (a value read from a config file or an environment
    variable) was reserved as one answer while Gemini bills three: an overrun."""
    with loopback(bill_like_proto_json) as server:
        client = flash(server, {"candidateCount": value})
        async with client:
            [answer] = await client.answer([ask(max_output_tokens=500)])
    assert answer.text == "7"
    assert client.overrun is None and client.budget.overruns == 0
    assert client.budget.spent == PRICE.cost(Usage(input_tokens=40, output_tokens=500 * 3))


@pytest.mark.parametrize("value", ["three", 2.5, True, [3]])
def test_a_count_that_is_no_number_is_refused(value: Any) -> None:
    from vlmclient.errors import ConfigurationError
    from vlmclient.providers.gemini import candidates

    with pytest.raises(ConfigurationError, match="candidateCount"):
        candidates({"candidateCount": value})

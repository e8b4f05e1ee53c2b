"""gpt-5.6-luna (the built-in OpenAI answer teacher) billed as OpenAI documents it.

A loopback server answers like OpenAI's chat completions for gpt-5.6-luna:
``reasoning_effort`` outside none/low/medium/high/xhigh/max is a 400 (the model page:
"Reasoning.effort supports: none, low, medium (default), high, xhigh, and max"); unless
the request turns implicit prompt caching off (``prompt_cache_options.mode: explicit``)
the prompt is written to the cache and those tokens are billed at 1.25x the input rate
("Cache writes are billed at 1.25x the uncached input token rate"); a prompt over 272K
tokens is billed at 2x input and 1.5x output. The real TeacherClient, with the built-in
price, must be sent and charged what such a server bills.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import ask, loopback_client
from tests.providers.loopback import Loopback, Respond, loopback
from vlmclient import TeacherClient

M = Decimal(1_000_000)
EFFORTS = {"none", "low", "medium", "high", "xhigh", "max"}
OUTPUT = 2


def bill_like_luna(prompt_tokens: int) -> Any:
    """Responds with ``prompt_tokens`` billed; records each request's bill in ``bills``."""
    bills: list[Decimal] = []

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        effort = body.get("reasoning_effort", "medium")
        if effort not in EFFORTS:
            return 400, {
                "error": {
                    "message": f"Unsupported value: 'reasoning_effort' does not support "
                    f"'{effort}' with this model.",
                    "type": "invalid_request_error",
                    "param": "reasoning_effort",
                    "code": "unsupported_value",
                }
            }
        caching = body.get("prompt_cache_options", {}).get("mode", "implicit") == "implicit"
        written = prompt_tokens if caching else 0
        long = prompt_tokens > 272_000
        rate_in = Decimal("0.40") if long else Decimal("0.20")
        rate_out = Decimal("1.80") if long else Decimal("1.20")
        bills.append(
            ((prompt_tokens - written) * rate_in + written * rate_in * Decimal("1.25")
             + OUTPUT * rate_out) / M
        )  # fmt: skip
        return 200, {
            "id": "chatcmpl-luna",
            "choices": [{"index": 0, "message": {"content": "7"}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": OUTPUT,
                "total_tokens": prompt_tokens + OUTPUT,
                "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": written},
            },
        }

    respond.bills = bills  # type: ignore[attr-defined]
    return respond


def served_at(tier: str, standard: Any) -> Respond:
    """``standard``'s answers, said to be served at ``service_tier`` ``tier``."""

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, out = standard(path, body)
        out["service_tier"] = tier
        return status, out

    return respond


def luna(server: Loopback, params: dict[str, Any] | None = None) -> TeacherClient:
    """The real client for gpt-5.6-luna (the built-in price), sending to ``server``."""
    return loopback_client(
        "openai:gpt-5.6-luna", server, "sk-test-luna", base_url=server.url + "/v1", params=params
    )


@pytest.mark.parametrize(
    ("reasoning", "prompt", "prompt_tokens", "sent_effort"),
    [
        ("off", "Which digit?", 1_500, "none"),  # an image prompt: cache-write sized
        ("minimal", "Which digit?", 1_500, "low"),  # minimal is not one of luna's efforts
        ("off", "x" * 300_000, 272_100, "none"),  # the long-prompt tier
    ],
)
async def test_luna_is_sent_what_it_accepts_and_charged_what_it_bills(
    reasoning: str, prompt: str, prompt_tokens: int, sent_effort: str
) -> None:
    respond = bill_like_luna(prompt_tokens)
    with loopback(respond) as server:
        async with luna(server, {"reasoning": reasoning}) as client:
            [answer] = await client.answer([ask(prompt)])
    assert answer.text == "7"
    [body] = server.bodies
    assert body["reasoning_effort"] == sent_effort
    assert client.budget.spent == sum(respond.bills)  # charged what was billed
    assert client.overrun is None


async def test_a_callers_own_cache_writes_are_charged_at_their_rate() -> None:
    """A caller who turns implicit caching back on is charged 1.25x for the tokens
    written (usage ``prompt_tokens_details.cache_write_tokens``), not the plain rate."""
    respond = bill_like_luna(1_500)
    with loopback(respond) as server:
        async with luna(server, {"prompt_cache_options": {"mode": "implicit"}}) as client:
            await client.answer([ask()])
    assert server.bodies[0]["prompt_cache_options"] == {"mode": "implicit"}
    assert client.budget.spent == sum(respond.bills)


async def test_a_callers_own_cache_writes_are_reserved_at_their_rate() -> None:
    """The settlement charged a caller's cache writes at 1.25x, but the reservation
    counted the prompt at 1x: a prompt billed near the estimate's own worst case (one
    token per byte, the image at its bound) and written to the cache overran."""
    from pydantic import SecretStr

    from vlmclient.providers.base import CallSpec
    from vlmclient.providers.openai import OPENAI

    item = ask()
    prepared = item.model_copy(update={"image": OPENAI.prepare_image(item.image)})
    spec = CallSpec("answer", "gpt-5.6-luna", [prepared], base_url="", api_key=SecretStr("x"))
    worst = OPENAI.estimate_usage(spec).input_tokens  # the prompt at its bound, no params
    respond = bill_like_luna(worst)
    with loopback(respond) as server:
        async with luna(server, {"prompt_cache_options": {"mode": "implicit"}}) as client:
            await client.answer([item])
    billed = sum(respond.bills)
    assert billed <= client.budget.spent < billed + Decimal("0.000001")  # a quarter token up
    assert client.overrun is None and client.budget.overruns == 0


@pytest.mark.parametrize("tier", ["priority", "fast", "scale", "PRIORITY"])
async def test_a_premium_service_tier_is_refused_before_sending(tier: str) -> None:
    """``service_tier: priority`` (or ``fast``, its alias) is billed at premium rates the
    price table does not hold, with the same token counts in the usage: the ledger recorded
    the standard price while OpenAI billed more, and no overrun could show it."""
    from vlmclient import ConfigurationError

    respond = bill_like_luna(1_500)
    with loopback(respond) as server:
        async with luna(server, {"service_tier": tier}) as client:
            with pytest.raises(ConfigurationError, match="service_tier"):
                await client.answer([ask("Digit?")])
    assert server.requests == []
    assert client.budget.spent == 0


@pytest.mark.parametrize("tier", ["default", "flex", "auto"])
async def test_a_standard_or_cheaper_service_tier_is_sent(tier: str) -> None:
    respond = bill_like_luna(1_500)
    with loopback(respond) as server:
        async with luna(server, {"service_tier": tier}) as client:
            await client.answer([ask("Digit?")])
    assert server.bodies[0]["service_tier"] == tier


@pytest.mark.parametrize("served", ["priority", "scale"])
async def test_an_answer_served_at_a_premium_tier_stops_the_run(served: str) -> None:
    """A project whose default tier is priority serves ``auto`` (what we send when no
    service_tier is given) at premium rates; only the response's ``service_tier`` says so
    (pinned spec, ServiceTier). That answer was recorded at the standard price as if
    nothing happened and the run went on buying at premium rates: it is now charged its
    reservation, marked estimated, and no new request is sent (exit 3, as an overrun)."""
    from vlmclient import BudgetOverrunError

    standard = bill_like_luna(1_500)  # the token counts; the premium rates are unknown
    respond = served_at(served, standard)

    item = ask()
    with loopback(respond) as server:
        async with luna(server) as client:
            _, reserved = client.plan("answer", [item])
            [answer] = await client.answer([item])
            assert answer.text == "7"  # paid for, so kept (and cached)
            with pytest.raises(BudgetOverrunError, match=f"service_tier '{served}'"):
                await client.answer([ask("Digit?", size=(60, 40))])
    assert "service_tier" not in server.bodies[0]  # auto: the project's default tier
    assert len(server.requests) == 1  # nothing sent after the premium answer
    assert client.budget.spent == reserved  # not the standard price of its usage
    assert client.budget.spent > standard.bills[0]
    assert client.stats.estimated == 1


@pytest.mark.parametrize("served", ["default", "flex"])
async def test_an_answer_served_at_a_standard_or_cheaper_tier_is_charged_its_usage(
    served: str,
) -> None:
    standard = bill_like_luna(1_500)
    respond = served_at(served, standard)

    with loopback(respond) as server:
        async with luna(server) as client:
            await client.answer([ask("Digit?")])
    assert client.budget.spent == sum(standard.bills)
    assert client.overrun is None and client.stats.estimated == 0

"""The budget never lets concurrent requests pass the cap together."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest

from tests.conftest import FakeCohere
from vlmclient import Budget, BudgetExceededError, Price, TeacherClient, TextEmbeddingRequest


def test_reserve_settle_release() -> None:
    b = Budget("1.00")
    r1 = b.reserve(Decimal("0.60"))
    with pytest.raises(BudgetExceededError, match=r"\$1.00"):
        b.reserve(Decimal("0.50"))
    b.settle(r1, Decimal("0.55"))
    assert b.spent == Decimal("0.55") and b.reserved == 0
    r2 = b.reserve(Decimal("0.45"))
    b.release(r2)
    assert b.remaining == Decimal("0.45")
    with pytest.raises(RuntimeError):
        b.release(r2)


def test_error_message_says_what_and_what_to_do() -> None:
    b = Budget("0.10")
    b.settle(b.reserve(Decimal("0.08")), Decimal("0.08"))
    with pytest.raises(BudgetExceededError) as info:
        b.reserve(Decimal("0.05"))
    msg = str(info.value)
    assert "$0.10" in msg and "$0.08" in msg and "$0.05" in msg and "Nothing was sent" in msg


def test_request_and_item_caps() -> None:
    b = Budget(max_requests=2, max_items=5)
    b.reserve(Decimal(0), items=3)
    with pytest.raises(BudgetExceededError, match="items"):
        b.reserve(Decimal(0), items=3)
    b.reserve(Decimal(0), items=2)
    with pytest.raises(BudgetExceededError, match="requests"):
        b.reserve(Decimal(0), items=0)


def test_settle_above_reservation_is_recorded_not_hidden() -> None:
    b = Budget("1")
    b.settle(b.reserve(Decimal("0.1")), Decimal("0.2"))
    assert b.spent == Decimal("0.2") and b.overruns == 1


async def test_500_concurrent_requests_never_pass_the_cap() -> None:
    """600 concurrent requests at a cap: cap - one request's max cost <= spent <= cap."""
    fake = FakeCohere()  # bills one token per UTF-8 byte + 1, the client's worst case
    fake.delay = 0.001  # let requests overlap
    per_token = Decimal("0.001")
    price = Price(usd_per_1m_input_tokens=per_token * 1_000_000)
    cap = Decimal("5")
    budget = Budget(cap)
    # costs vary per request: 12 to 111 tokens
    texts = [TextEmbeddingRequest(text="x" * (11 + i % 100) + f"{i:04d}") for i in range(600)]
    max_cost = max((len(t.text.encode()) + 1) * per_token for t in texts)

    async with TeacherClient(
        "local:hash",
        api_key="k",
        price=price,
        budget=budget,
        transport=fake.transport(),
        concurrency=600,
    ) as client:
        # one item per call, so that all 600 requests race for the budget at once
        results = await asyncio.gather(
            *(client.embed_texts([t]) for t in texts), return_exceptions=True
        )
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    bought = [r for r in results if isinstance(r, list)]
    assert len(refused) + len(bought) == 600 and refused and len(bought) >= 50
    billed = sum(
        (Decimal(len(t.encode()) + 1) * per_token for b in fake.requests for t in b["texts"]),
        Decimal(0),
    )
    assert budget.spent == billed  # the client's spend equals the provider's bill
    assert cap - max_cost <= budget.spent <= cap
    assert budget.reserved == 0
    assert len(fake.requests) == len(bought)


async def test_budget_is_checked_before_sending() -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    price = Price(usd_per_1m_input_tokens=Decimal("1000000"))
    async with TeacherClient(
        "local:hash",
        api_key="k",
        price=price,
        budget=Budget("0.5"),
        transport=httpx.MockTransport(handler),
    ) as client:
        with pytest.raises(BudgetExceededError):
            await client.embed_texts([TextEmbeddingRequest(text="too expensive")])
    assert sent == []


async def test_a_batch_that_does_not_fit_is_split_to_use_the_budget() -> None:
    from tests.conftest import make_image_requests

    fake = FakeCohere()
    price = Price(usd_per_image=Decimal("0.001"))
    budget = Budget("0.0045")
    async with TeacherClient(
        "local:hash", api_key="k", price=price, budget=budget, transport=fake.transport()
    ) as client:
        with pytest.raises(BudgetExceededError):
            await client.embed_images(make_image_requests(10))
    assert budget.spent == Decimal("0.004")  # 4 of 10 images bought, within one image of the cap
    assert fake.billed_images == 4


@pytest.mark.parametrize("amount", ["-0.001", "NaN", "Infinity", "-Infinity"])
def test_a_price_made_in_code_cannot_be_negative_or_infinite(amount: str) -> None:
    """Before: Price(usd_per_image="-0.001") was accepted and a $0.0001 cap let 100
    requests through while ``spent`` went negative (the price-file loader refused it,
    code did not)."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Price(usd_per_image=Decimal(amount))
    with pytest.raises(ValidationError):
        Price(usd_per_1m_output_tokens_long_prompt=Decimal(amount))


def test_a_price_made_in_code_cannot_make_images_free() -> None:
    """Before: Price(max_image_tokens=0) was accepted: an OpenAI-format answer reserved its
    image at no tokens (the price-file loader refuses 0 too)."""
    with pytest.raises(ValueError, match="max_image_tokens"):
        Price(max_image_tokens=0)
    assert Price(max_image_tokens=1).max_image_tokens == 1


def test_a_price_made_in_code_above_the_bound_is_refused_when_made() -> None:
    """Before: Price(usd_per_image=Decimal("1e1000000")) was accepted and the first
    request's reservation raised decimal.Overflow (the price-file loader caps a unit at
    $1,000,000, code did not)."""
    with pytest.raises(ValueError, match="usd_per_image"):
        Price(usd_per_image=Decimal("1e1000000"))
    with pytest.raises(ValueError, match="usd_per_1m_output_tokens_long_prompt"):
        Price(usd_per_1m_output_tokens_long_prompt=Decimal("1000000.01"))
    assert Price(usd_per_image=Decimal(1_000_000)).usd_per_image == 1_000_000  # the bound


@pytest.mark.parametrize("amount", ["-0.01", "NaN", "sNaN", "Infinity"])
def test_a_reservation_or_a_bill_must_be_a_finite_amount_at_least_zero(amount: str) -> None:
    budget = Budget(usd=Decimal("1"))
    with pytest.raises(ValueError, match="finite amount >= 0"):
        budget.reserve(Decimal(amount))
    held = budget.reserve(Decimal("0.1"))
    with pytest.raises(ValueError, match="finite amount >= 0"):
        budget.settle(held, Decimal(amount))
    assert budget.remaining == Decimal("0.9") and budget.spent == 0

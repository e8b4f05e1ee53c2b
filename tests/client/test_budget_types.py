"""What a budget may be given as: money is Decimal (or its text), never a float."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cache.coordination import Coordinator
from tests.providers.loopback import loopback
from vlmclient import (
    Budget,
    ConfigurationError,
    SharedBudget,
    TeacherClient,
    TextEmbeddingRequest,
)
from vlmclient.prices import PriceTable

PRICE = PriceTable.default().lookup("local", "hash")


def respond(path: str, body: dict) -> tuple[int, dict]:
    n = len(body["texts"])
    return 200, {
        "id": "r1",
        "embeddings": {"float": [[1.0, 0.0, 0.5, 0.25] for _ in range(n)]},
        "meta": {"billed_units": {"input_tokens": 3 * n}},
    }


@pytest.mark.parametrize("cap", ["0.01", Decimal("0.01"), 1])
async def test_a_cap_in_dollars_is_a_budget(cap: object) -> None:
    # budget="0.01" was accepted and failed at the first request: AttributeError: 'str'
    # object has no attribute 'reserve'
    with loopback(respond) as server:
        async with TeacherClient("local:hash", api_key="tok-12345678", base_url=server.url,
                                 budget=cap, price=PRICE) as client:  # type: ignore[arg-type]
            [out] = await client.embed_texts([TextEmbeddingRequest(text="a photo of a cat")])
    assert out.vector.shape == (4,)
    assert isinstance(client.budget, Budget) and client.budget.cap == Decimal(str(cap))
    assert Decimal(0) < client.budget.spent <= Decimal(str(cap))
    assert len(server.requests) == 1


@pytest.mark.parametrize("cap", [0.01, "abc", "-1", "nan", "inf", True, [1]])
def test_a_float_or_a_non_amount_is_refused_before_anything_is_sent(cap: object) -> None:
    with pytest.raises(ConfigurationError, match="budget"):
        TeacherClient("local:hash", api_key="tok-12345678", base_url="http://127.0.0.1:9",
                      budget=cap)  # type: ignore[arg-type]


@pytest.mark.parametrize("cap", [0.01, "nan", "-0.5", "Infinity"])
def test_budget_refuses_float_and_non_finite_caps(cap: object) -> None:
    # Budget(0.01) kept 0.01000000000000000020816681711721685... as the cap
    with pytest.raises(ValueError, match="budget"):
        Budget(cap)  # type: ignore[arg-type]


def test_the_missing_price_message_gives_entries_that_load() -> None:
    """The examples a user is told to copy into --price-file are valid price entries, for
    a chat model and for an embedder that bills images (a Bedrock ARN has no entry)."""
    import json
    import re

    from vlmclient import Price

    with pytest.raises(ConfigurationError) as caught:
        PriceTable.default().lookup("titan", "arn:aws:bedrock:us-east-1:1:provisioned-model/x")
    examples = re.findall(r"\{\"usd_per[^{}]*\}", str(caught.value))
    assert len(examples) == 2
    loaded = [Price.model_validate(json.loads(text)) for text in examples]
    assert loaded[0].usd_per_1m_output_tokens > 0  # a chat model
    assert loaded[1].usd_per_image > 0  # an image embedder


OUT_OF_RANGE = ["1e1000000", "1e13", "1000000000000.01", "1e-13", "1e-1000000"]


@pytest.mark.parametrize("cap", OUT_OF_RANGE)
def test_a_cap_past_the_bounds_is_refused_by_the_library(cap: str, tmp_path: Path) -> None:
    """Before: Budget(Decimal("1e1000000")) (or SharedBudget's total) was taken, and the
    first reservation was a decimal.Overflow traceback; 1e-1000000 printed a million
    zeros in its refusal. The CLI bounds --budget to $1e-12..$1e12: so does the library."""
    for value in (cap, Decimal(cap)):
        with pytest.raises(ValueError, match=r"budget must be 0 or from \$0.000000000001 to"):
            Budget(value)
        with Coordinator(str(tmp_path / "c.db"), ledger_path=str(tmp_path / "l")) as coord:
            with pytest.raises(ValueError, match="budget must be 0 or from"):
                SharedBudget(coord, "local:hash", total=value)
            with pytest.raises(ValueError, match="budget must be 0 or from"):
                SharedBudget(coord, "local:hash", total=Decimal(1), usd=value)
        with pytest.raises(ConfigurationError, match="budget must be 0 or from"):
            TeacherClient("local:hash", api_key="tok-12345678", base_url="http://127.0.0.1:9",
                          budget=value)  # fmt: skip


@pytest.mark.parametrize("cap", ["0", "1e-12", "1e12", "0.000000000001", "1000000000000"])
def test_the_bounds_themselves_are_budgets(cap: str, tmp_path: Path) -> None:
    budget = Budget(cap)
    assert budget.cap == Decimal(cap) and budget.remaining == Decimal(cap)
    with Coordinator(str(tmp_path / "c.db"), ledger_path=str(tmp_path / "l")) as coord:
        shared = SharedBudget(coord, "local:hash", total=cap)
        assert shared.total == Decimal(cap)
        if Decimal(cap) > Decimal("1e-6"):
            shared.settle(shared.reserve(Decimal("1e-6")), Decimal("1e-6"))
            assert shared.remaining == Decimal(cap) - Decimal("1e-6")


@pytest.mark.parametrize(
    "caps",
    [
        {"max_items": float("nan")},
        {"max_requests": float("inf")},
        {"max_requests": 1.5},
        {"max_requests": "3"},
        {"max_requests": -1},
        {"max_items": True},
    ],
)
async def test_request_and_item_caps_are_whole_numbers_from_0(caps: dict, tmp_path: Path) -> None:
    """``Budget(max_items=float("nan"))`` was no cap at all (every comparison with NaN
    is false: every request went out under it), ``max_requests="3"`` a TypeError at the first
    request, -1 a refusal of every request. Now a ValueError when the budget is made,
    for SharedBudget too."""
    with pytest.raises(ValueError, match="must be a whole number >= 0"):
        Budget("1.00", **caps)
    with (
        Coordinator(tmp_path / "c.db", ledger_path=tmp_path / "l.jsonl") as coord,
        pytest.raises(ValueError, match="must be a whole number >= 0"),
    ):
        SharedBudget(coord, "local:hash", total=Decimal("1"), **caps)

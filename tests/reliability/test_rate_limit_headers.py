"""A billed answer is settled and recorded whatever its rate-limit headers say.

The real CLI harvests from the local teacher on 127.0.0.1, wrapped in an ASGI layer that
adds a header to every API answer (as a gateway in front of a provider may).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from distill.server import Faults, HashBackend, ServerConfig, ServerThread, create_app
from tests.reliability.conftest import TOKEN, harvest_argv, ledger, paid
from tests.reliability.test_money_boundary import labelled, usage_exit

TOO_BIG_FOR_A_FLOAT = "1" + "0" * 400  # an integer; float() of it raises OverflowError


class AddHeader:
    """ASGI wrapper: every API answer carries one more header."""

    def __init__(self, app: Any, name: str, value: str) -> None:
        self.app, self.header = app, (name.encode(), value.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(("/v1/", "/v2/")):
            await self.app(scope, receive, send)
            return

        async def with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, with_header)


@pytest.mark.parametrize("name", ["x-ratelimit-limit-requests", "x-ratelimit-limit-tokens"])
def test_a_rate_limit_too_big_for_a_float_does_not_lose_the_billed_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """Before: float() of the 401-digit limit raised OverflowError before the billed 200
    was settled: the harvest ended in a traceback, the answers bought were neither cached
    nor recorded as bought, and their reservations stayed open (charged as `orphaned` by
    the coordinator when it closed)."""
    app = create_app(ServerConfig(token=SecretStr(TOKEN), faults=Faults()), HashBackend(dim=16))
    data = labelled(tmp_path / "data")
    cache = tmp_path / "cache"
    with ServerThread(AddHeader(app, name, TOO_BIG_FOR_A_FLOAT)) as server:
        argv = harvest_argv(server.base_url, data, cache, "--batch-size", "2")
        assert usage_exit(argv) == 0
        bills = app.state.teacher.billing.bills()
        # a rerun buys nothing: every billed answer was cached
        assert usage_exit(argv) == 0
        assert len(app.state.teacher.billing.bills()) == len(bills)
    records = [r for r in ledger(cache) if r.outcome != "cache_hit"]
    assert bills and {r.outcome for r in records} == {"ok"}
    assert paid(records) == sum(b.usd for b in bills)
    assert "Traceback" not in capsys.readouterr().err


async def test_an_error_of_ours_while_settling_an_answer_charges_its_reservation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever raises after the answer came and before it was settled (here a stand-in
    for a bug of ours in reading its headers) leaves no reservation open and no bill
    unrecorded: it is charged at its reservation. Before: the reservation stayed held for
    the rest of the run and the ledger had no line for the billed request."""
    from tests.conftest import ListLedger
    from vlmclient import Budget, RateLimiter, RetryPolicy, TeacherClient, TextEmbeddingRequest

    def a_bug(self: RateLimiter, hints: object) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(RateLimiter, "update", a_bug)
    app = create_app(ServerConfig(token=SecretStr(TOKEN), faults=Faults()), HashBackend(dim=16))
    budget, spend = Budget("1"), ListLedger()
    with ServerThread(app) as server:
        async with TeacherClient(
            "local:hash", api_key=TOKEN, base_url=server.base_url, budget=budget,
            ledger=spend, retry=RetryPolicy(max_attempts=1),
        ) as client:  # fmt: skip
            with pytest.raises(RuntimeError, match="a bug of ours"):
                await client.embed_texts([TextEmbeddingRequest(text="a photo of a cat")])
        billed = app.state.teacher.billing.bills()
    assert len(billed) == 1
    assert budget.reserved == 0 and budget.spent > 0
    assert [(r.outcome, r.estimated, Decimal(r.cost_usd)) for r in spend.records] == [
        ("unsettled", True, budget.spent)
    ]
    assert budget.spent >= billed[0].usd

"""An overrun in one run of a cache folder stops the other runs buying from that teacher.

Two budgets on one cache folder's coordination database (two Coordinators: two owners,
as two processes are) drive the real TeacherClient against a loopback server that bills
like OpenAI's chat completions. The first answer of run A is billed far above its
reservation (an overrun: our estimate for this model is wrong); run B, already running,
must stop before sending anything, and say why. Before this, B went on reserving by the
same short estimate until its own first overrun.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cache.coordination import Coordinator
from tests.providers.conftest import image, nosleep
from tests.providers.loopback import loopback
from vlmclient import (
    AnswerRequest,
    BudgetOverrunError,
    Price,
    SharedBudget,
    TeacherClient,
    Usage,
)
from vlmclient.retry import RetryPolicy

TEACHER = "openai:gpt-4.1-mini"
PRICE = Price(usd_per_1m_input_tokens=Decimal("0.40"), usd_per_1m_output_tokens=Decimal("1.60"))
OVERBILLED_PROMPT = 200_000  # far above any estimate for a 64 px image


def bill(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Run A's first answer (path /a/...) is billed OVERBILLED_PROMPT prompt tokens."""
    prompt = OVERBILLED_PROMPT if path.startswith("/a/") else 20  # within the estimate
    return 200, {
        "id": "chatcmpl-x",
        "choices": [{"index": 0, "message": {"content": "seven"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": 1},
    }


def ask(seed: int) -> list[AnswerRequest]:
    return [
        AnswerRequest(
            image=image((64, 64), seed=seed), prompt="Which digit?", max_output_tokens=4
        )
    ]


def run(url: str, name: str, coord: Coordinator) -> TeacherClient:
    return TeacherClient(
        TEACHER,
        api_key="sk-test-overrun",
        base_url=f"{url}/{name}/v1",
        budget=SharedBudget(coord, TEACHER, total=Decimal("5")),
        price=PRICE,
        retry=RetryPolicy(max_attempts=1, sleep=nosleep),
    )


def coordinator(folder: Path) -> Coordinator:
    return Coordinator(folder / "coordination.db", ledger_path=folder / "ledger.jsonl")


async def test_an_overrun_in_one_run_stops_the_other_running_one(tmp_path: Path) -> None:
    with loopback(bill) as server, coordinator(tmp_path) as ca, coordinator(tmp_path) as cb:
        async with run(server.url, "a", ca) as a, run(server.url, "b", cb) as b:
            await a.answer(ask(0))
            assert a.overrun is not None and a.budget.overruns == 1
            with pytest.raises(BudgetOverrunError, match="another run of this cache"):
                await b.answer(ask(1))
            # B sent nothing, holds nothing, and says so the way its own overrun would
            assert [p for p, _, _ in server.requests if p.startswith("/b/")] == []
            assert b.budget.spent == 0 and b.budget.reserved == 0
            assert isinstance(b.budget, SharedBudget) and b.budget.view().reserved == 0
            assert b.overrun is not None and f"${b.overrun.spent}" in str(b.overrun)
            assert b.overrun.spent == PRICE.cost(
                Usage(input_tokens=OVERBILLED_PROMPT, output_tokens=1)
            )
            assert b.budget.scale > 1  # B's remaining-cost estimates use A's ratio
            with pytest.raises(BudgetOverrunError):  # and it stays stopped
                await b.answer(ask(2))


async def test_a_run_started_after_the_overrun_may_try_again(tmp_path: Path) -> None:
    """As after an overrun in one process: the next run is not refused up front (its own
    first overrun stops it); only runs that were going when it happened stop."""
    with loopback(bill) as server, coordinator(tmp_path) as ca:
        async with run(server.url, "a", ca) as a:
            await a.answer(ask(0))
        assert a.overrun is not None
        with coordinator(tmp_path) as cc:
            async with run(server.url, "c", cc) as c:
                [answer] = await c.answer(ask(1))
    assert answer.text == "seven" and c.overrun is None

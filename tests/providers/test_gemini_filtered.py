"""A Gemini candidate stopped by a filter is a billed response, not an answer.

googleapis ``google/ai/generativelanguage/v1beta/generative_service.proto``
(``Candidate.FinishReason``, read at f8291d2b, 2026-08-22): ``SAFETY`` and ``RECITATION``
mean the candidate's content "was flagged", ``LANGUAGE`` that it used an unsupported
language, ``BLOCKLIST``, ``PROHIBITED_CONTENT`` and ``SPII`` that "token generation
stopped" for that reason. Whatever text such a candidate carries is what was left: the
adapter took it as the whole answer and cached it (``It is a ca`` for ``cat``), so a rerun
never asked again. Now it is charged by its usage, recorded as ``malformed`` and never
cached, as OpenAI's ``content_filter`` and Anthropic's ``refusal`` are.

A loopback server answers like ``models/{model}:generateContent`` and refuses (400, as
Gemini does) a body without the proto's required ``contents`` or with an unknown
top-level field.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cache import ResponseCache, SpendLedger
from tests.providers.conftest import image, nosleep
from tests.providers.loopback import loopback
from vlmclient import AnswerRequest, Budget, Price, ResponseValidationError, TeacherClient, Usage
from vlmclient.retry import RetryPolicy

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))
# GenerateContentRequest's fields (proto names and their JSON camelCase forms)
REQUEST_FIELDS = {
    "model", "contents", "systemInstruction", "system_instruction", "tools", "toolConfig",
    "tool_config", "safetySettings", "safety_settings", "generationConfig",
    "generation_config", "cachedContent", "cached_content",
}  # fmt: skip


def stopped_by(reason: str) -> Any:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        unknown = set(body) - REQUEST_FIELDS
        if not body.get("contents") or unknown or not path.endswith(":generateContent"):
            return 400, {"error": {"code": 400, "message": f"Invalid JSON payload: {unknown}",
                                   "status": "INVALID_ARGUMENT"}}  # fmt: skip
        return 200, {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": "It is a ca"}]},
                    "finishReason": reason,
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 90,
                "candidatesTokenCount": 5,
                "totalTokenCount": 95,
            },
            "responseId": "resp-filtered",
        }

    return respond


@pytest.mark.parametrize(
    "reason", ["SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"]
)
async def test_a_filtered_candidate_is_charged_and_never_cached(
    tmp_path: Path, reason: str
) -> None:
    ask = [AnswerRequest(image=image((64, 48)), prompt="Which animal?", max_output_tokens=16)]
    with (
        loopback(stopped_by(reason)) as server,
        ResponseCache(tmp_path / "cache") as cache,
        SpendLedger(tmp_path / "ledger.jsonl") as ledger,
    ):
        client = TeacherClient(
            "gemini:gemini-3.5-flash-lite",
            api_key="AIza-test-filtered",
            base_url=server.url,
            price=PRICE,
            cache=cache,
            ledger=ledger,
            budget=Budget("1.00"),
            retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        )
        async with client:
            with pytest.raises(ResponseValidationError, match=reason):
                await client.answer(ask)
        assert len(server.requests) == 1
        assert len(cache) == 0  # a rerun asks again
        billed = PRICE.cost(Usage(input_tokens=90, output_tokens=5))
        assert client.budget.spent == billed
    [record] = SpendLedger.read(tmp_path / "ledger.jsonl")
    assert record.outcome == "malformed" and Decimal(record.cost_usd) == billed


async def test_a_whole_answer_is_still_taken(tmp_path: Path) -> None:
    with loopback(stopped_by("STOP")) as server:
        async with TeacherClient(
            "gemini:gemini-3.5-flash-lite",
            api_key="AIza-test-filtered",
            base_url=server.url,
            price=PRICE,
            budget=Budget("1.00"),
            retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        ) as client:
            [answer] = await client.answer(
                [AnswerRequest(image=image((64, 48)), prompt="Which animal?")]
            )
    assert answer.text == "It is a ca"

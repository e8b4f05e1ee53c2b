"""Reasoning settings of the answer adapters, and the empty-answer-at-the-limit error.

Issue 15 item 1: reasoning models spend hidden tokens inside the answer's output limit,
so a short limit can return no text. Each answer adapter sends an explicit setting
(``off`` by default); an empty answer that stopped at the limit is billed, recorded,
never retried and never cached, and its message names the fix.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cache import ResponseCache, SpendLedger
from tests.providers.conftest import (
    body_of,
    call_spec,
    client_for,
    image,
    nosleep,
    openai_doc,
    validator_for,
)
from tests.providers.loopback import loopback
from vlmclient import (
    AnswerRequest,
    Budget,
    ConfigurationError,
    Price,
    ResponseValidationError,
    TeacherClient,
    TruncatedAnswerError,
    Usage,
)
from vlmclient.providers import anthropic, gemini, openai
from vlmclient.retry import RetryPolicy

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("10"))


def _answer(max_tokens: int = 16) -> AnswerRequest:
    return AnswerRequest(image=image((64, 48)), prompt="Which digit?", max_output_tokens=max_tokens)


# -- what each adapter sends -------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "level", "expected"),
    [
        ("gpt-5-mini", "off", {"reasoning_effort": "minimal"}),
        ("gpt-5", "off", {"reasoning_effort": "minimal"}),
        ("gpt-5.2", "off", {"reasoning_effort": "none"}),
        ("gpt-6-luna", "off", {"reasoning_effort": "none"}),
        ("o3", "off", {"reasoning_effort": "low"}),
        ("o3", "minimal", {"reasoning_effort": "low"}),
        ("gpt-5-mini", "high", {"reasoning_effort": "high"}),
        ("gpt-5-mini", "default", {}),
        ("gpt-4o-mini", "off", {}),
        ("my-vllm-model", "off", {}),
    ],
)
def test_openai_reasoning_effort_per_model(model: str, level: str, expected: dict) -> None:
    spec = call_spec("openai", "answer", model, [_answer()], {"reasoning": level})
    body = body_of(openai.build_request(spec))
    assert {k: v for k, v in body.items() if k == "reasoning_effort"} == expected
    assert "reasoning" not in body
    validator_for(openai_doc(), "#/components/schemas/CreateChatCompletionRequest").validate(body)


def test_openai_reasoning_effort_validates_against_the_pinned_enum() -> None:
    """The pinned spec's ReasoningEffort enum holds every value the adapter sends."""
    from tests.providers.conftest import SHARED_SPECS, load_yaml

    path = SHARED_SPECS / "openai-openapi-f85dbe223d40.yaml"
    if not path.exists():
        pytest.skip("pinned OpenAI spec not present")
    enum = load_yaml(path)["components"]["schemas"]["ReasoningEffort"]["anyOf"][0]["enum"]
    sent = set(openai.OFF_EFFORT.values()) | {"minimal", "low", "medium", "high"}
    assert sent <= set(enum)


def test_openai_non_reasoning_model_refuses_a_reasoning_level() -> None:
    spec = call_spec("openai", "answer", "gpt-4o", [_answer()], {"reasoning": "high"})
    with pytest.raises(ConfigurationError, match="does not reason"):
        openai.build_request(spec)


def test_openai_caller_reasoning_effort_wins() -> None:
    spec = call_spec("openai", "answer", "gpt-5-mini", [_answer()], {"reasoning_effort": "low"})
    assert body_of(openai.build_request(spec))["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("model", "level", "expected"),
    [
        ("gemini-2.5-flash", "off", {"thinkingBudget": 0}),
        ("gemini-2.5-flash-lite", "off", {"thinkingBudget": 0}),
        ("gemini-2.5-pro", "off", {"thinkingBudget": 128}),
        ("gemini-2.5-flash", "medium", {"thinkingBudget": 8192}),
        ("gemini-3.5-flash-lite", "off", {"thinkingLevel": "minimal"}),  # its default level
        ("gemini-3.1-flash-lite", "off", {"thinkingLevel": "minimal"}),
        ("gemini-3.8-flash", "off", {"thinkingLevel": "low"}),  # no minimal (LOW..HIGH)
        ("gemini-3-flash-preview", "high", {"thinkingLevel": "high"}),
        ("gemini-2.5-flash", "default", None),
        ("gemini-2.0-flash", "off", None),
    ],
)
def test_gemini_thinking_config_per_model(model: str, level: str, expected: Any) -> None:
    spec = call_spec("gemini", "answer", model, [_answer()], {"reasoning": level})
    config = body_of(gemini.build_request(spec))["generationConfig"]
    assert config.get("thinkingConfig") == expected
    assert "reasoning" not in config


@pytest.mark.parametrize(
    ("model", "level", "max_tokens", "expected"),
    [
        ("claude-haiku-4-5", "off", 16, {"type": "disabled"}),
        ("claude-sonnet-4-6", "off", 16, {"type": "disabled"}),
        ("claude-opus-4-8", "medium", 8192, {"type": "enabled", "budget_tokens": 4096}),
        ("claude-haiku-4-5", "default", 16, None),
        ("claude-3-5-haiku-20241022", "off", 16, None),
    ],
)
def test_anthropic_thinking_per_model(
    model: str, level: str, max_tokens: int, expected: Any
) -> None:
    spec = call_spec("anthropic", "answer", model, [_answer(max_tokens)], {"reasoning": level})
    body = body_of(anthropic.build_request(spec))
    assert body.get("thinking") == expected
    assert "reasoning" not in body


@pytest.mark.parametrize(
    ("model", "level", "effort"),
    [
        ("claude-sonnet-5-5", "off", "low"),
        ("claude-sonnet-5-5", "minimal", "low"),
        ("claude-haiku-5-5", "medium", "medium"),
        ("claude-sonnet-5", "high", "high"),
        ("claude-fable-5-1", "low", "low"),
    ],
)
def test_claude_5_thinks_adaptively_with_an_effort(model: str, level: str, effort: str) -> None:
    # Sonnet 5.5 answers 400 to a thinking budget and to {"type": "disabled"} (its migration
    # guide), so every level is adaptive thinking with an effort; a short answer limit is
    # no error (there is no budget to fit under it).
    spec = call_spec("anthropic", "answer", model, [_answer(16)], {"reasoning": level})
    body = body_of(anthropic.build_request(spec))
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": effort}
    assert "reasoning" not in body


def test_claude_5_default_reasoning_and_callers_own_params_are_left_alone() -> None:
    spec = call_spec(
        "anthropic", "answer", "claude-sonnet-5-5", [_answer()], {"reasoning": "default"}
    )
    body = body_of(anthropic.build_request(spec))
    assert "thinking" not in body and "output_config" not in body
    own = {"reasoning": "off", "output_config": {"effort": "xhigh"}}
    body = body_of(
        anthropic.build_request(
            call_spec("anthropic", "answer", "claude-sonnet-5-5", [_answer()], own)
        )
    )
    assert body["output_config"] == {"effort": "xhigh"}
    assert body["thinking"] == {"type": "adaptive"}


# The pinned Anthropic spec (2024-11) predates thinking, so these two fields are checked
# against anthropic-sdk-python's generated types instead (read at 009b0353, 2026-11-30):
# ThinkingConfigParam = Enabled {type: "enabled", budget_tokens: int, "Must be >=1024 and
# less than `max_tokens`"} | Disabled {type: "disabled"} | Adaptive {type: "adaptive"};
# OutputConfigParam.effort: Literal["low", "medium", "high", "xhigh", "max"].
_SDK_THINKING = {
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "type": {"const": "enabled"},
                "budget_tokens": {"type": "integer", "minimum": 1024},
            },
            "required": ["type", "budget_tokens"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"type": {"enum": ["disabled", "adaptive"]}},
            "required": ["type"],
            "additionalProperties": False,
        },
    ]
}
_SDK_OUTPUT_CONFIG = {
    "type": "object",
    "properties": {"effort": {"enum": ["low", "medium", "high", "xhigh", "max"]}},
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "model", ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6", "claude-sonnet-5-5"]
)
@pytest.mark.parametrize("level", ["off", "minimal", "low", "medium", "high"])
def test_anthropic_thinking_fields_match_the_sdk_types(model: str, level: str) -> None:
    max_tokens = 32768  # room for every budget, so no level is refused here
    spec = call_spec("anthropic", "answer", model, [_answer(max_tokens)], {"reasoning": level})
    body = body_of(anthropic.build_request(spec))
    jsonschema.validate(body["thinking"], _SDK_THINKING)
    budget = body["thinking"].get("budget_tokens")
    assert budget is None or budget < body["max_tokens"]
    if "output_config" in body:
        jsonschema.validate(body["output_config"], _SDK_OUTPUT_CONFIG)


def test_sdk_thinking_schema_is_live() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "enabled", "budget_tokens": 512}, _SDK_THINKING)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"effort": "minimal"}, _SDK_OUTPUT_CONFIG)


def test_anthropic_thinking_budget_must_fit_the_answer_limit() -> None:
    spec = call_spec("anthropic", "answer", "claude-haiku-4-5", [_answer(64)], {"reasoning": "low"})
    with pytest.raises(ConfigurationError, match="--reasoning off"):
        anthropic.build_request(spec)


def test_unknown_reasoning_level_is_a_configuration_error() -> None:
    spec = call_spec("gemini", "answer", "gemini-2.5-flash", [_answer()], {"reasoning": "max!"})
    with pytest.raises(ConfigurationError, match="reasoning must be one of"):
        gemini.build_request(spec)


# -- the empty answer at the limit: billed, recorded, not retried, not cached ------------


def _openai_truncated(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    limit = body["max_completion_tokens"]
    return 200, {
        "id": "chatcmpl-1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "length"}
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": limit,
            "completion_tokens_details": {"reasoning_tokens": limit},
        },
    }


async def test_openai_empty_answer_at_limit_is_billed_once_and_never_cached(tmp_path: Path) -> None:
    with (
        loopback(_openai_truncated) as server,
        ResponseCache(tmp_path / "cache") as cache,
        SpendLedger(tmp_path / "ledger.jsonl") as ledger,
    ):
        client = TeacherClient(
            "openai:gpt-5-mini",
            api_key="sk-test",
            base_url=server.url + "/v1",
            price=PRICE,
            cache=cache,
            ledger=ledger,
            budget=Budget("1.00"),
            retry=RetryPolicy(sleep=nosleep),
        )
        async with client:
            with pytest.raises(TruncatedAnswerError) as info:
                await client.answer([_answer(16)])
        assert len(server.requests) == 1  # not retried
        assert server.bodies[0]["reasoning_effort"] == "minimal"
        assert len(cache) == 0  # never cached
        billed = PRICE.cost(Usage(input_tokens=120, output_tokens=16))
        assert client.budget.spent == billed  # charged what the provider billed
    records = SpendLedger.read(tmp_path / "ledger.jsonl")
    assert [r.outcome for r in records] == ["malformed"]
    assert Decimal(records[0].cost_usd) == billed
    message = str(info.value)
    assert "16-token output limit" in message and "max_output_tokens" in message


async def test_openai_truncated_with_reasoning_on_names_reasoning_off() -> None:
    with loopback(_openai_truncated) as server:
        client = TeacherClient(
            "openai:gpt-5-mini",
            api_key="sk-test",
            base_url=server.url + "/v1",
            price=PRICE,
            params={"reasoning": "high"},
            retry=RetryPolicy(sleep=nosleep),
        )
        async with client:
            with pytest.raises(TruncatedAnswerError, match="--reasoning off"):
                await client.answer([_answer(16)])
        assert server.bodies[0]["reasoning_effort"] == "high"


async def test_openai_empty_answer_that_did_not_stop_at_the_limit_is_not_accepted() -> None:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {
            "choices": [{"message": {"content": ""}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }

    with loopback(respond) as server:
        client = TeacherClient(
            "openai:gpt-4o-mini",
            api_key="sk-test",
            base_url=server.url + "/v1",
            price=PRICE,
            retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        )
        async with client:
            with pytest.raises(ResponseValidationError, match="empty answer"):
                await client.answer([_answer(16)])


async def truncated_once(teacher: str, answer: dict[str, Any]) -> tuple[Any, TeacherClient]:
    """``answer`` (thinking only, stopped at the token limit) is a truncated answer, sent
    once: the body sent, and the client."""
    import httpx

    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(body_of(request))
        return httpx.Response(200, json=answer)

    client = client_for(teacher, handler, price=PRICE)
    async with client:
        with pytest.raises(TruncatedAnswerError):
            await client.answer([_answer(16)])
    assert len(sent) == 1
    return sent[0], client


async def test_gemini_max_tokens_without_text_is_truncated_and_not_retried() -> None:
    answer = {
        "candidates": [{"content": {"parts": []}, "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {
            "promptTokenCount": 300,
            "candidatesTokenCount": 0,
            "thoughtsTokenCount": 16,
        },
    }
    sent, client = await truncated_once("gemini:gemini-2.5-flash-lite", answer)
    assert sent["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
    assert client.budget.spent == PRICE.cost(Usage(input_tokens=300, output_tokens=16))


async def test_anthropic_max_tokens_without_text_is_truncated_and_not_retried() -> None:
    answer = {
        "id": "msg_1",
        "content": [{"type": "thinking", "thinking": "..."}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 90, "output_tokens": 16},
    }
    sent, _ = await truncated_once("anthropic:claude-haiku-4-5", answer)
    assert sent["thinking"] == {"type": "disabled"}


def test_reasoning_changes_answer_cache_keys_but_not_embedding_keys() -> None:
    item = _answer()
    off = client_for("openai:gpt-5-mini", lambda r: None, price=PRICE)  # type: ignore[arg-type,return-value]
    high = client_for(
        "openai:gpt-5-mini",
        lambda r: None,  # type: ignore[arg-type,return-value]
        price=PRICE,
        params={"reasoning": "high"},
    )
    from vlmclient import TextEmbeddingRequest

    text = TextEmbeddingRequest(text="a cat")
    assert off.cache_key("answer", item) != high.cache_key("answer", item)
    assert off.cache_key("text_embedding", text) == high.cache_key("text_embedding", text)
    assert off.fingerprint == high.fingerprint


def test_pseudolabel_reasoning_flag_reaches_the_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import argparse

    from cache.coordination import Coordinator

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    from distill.cli._common import open_client
    from distill.cli.pseudolabel import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["data", "--teacher", "openai:gpt-5.6-luna", "--reasoning", "low", "--budget", "1"]
    )
    coord = Coordinator(tmp_path / "coordination.db", ledger_path=tmp_path / "ledger.jsonl")
    try:
        client = open_client(args, None, None, coord, kinds=("answer",))
        assert client.params == {"reasoning": "low"}
    finally:
        coord.close()
    args = parser.parse_args(["data", "--teacher", "openai:gpt-5.6-luna"])
    assert args.reasoning == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "--reasoning", "lots"])


# -- a non-empty answer cut at the limit: kept, but marked cut -------------------------------

_CUT_BODIES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "openai": (
        "gpt-4o-mini",
        {"choices": [{"message": {"content": "It is a cat"}, "finish_reason": "length"}],
         "usage": {"prompt_tokens": 5, "completion_tokens": 16}},
        {"choices": [{"message": {"content": "It is a cat"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 5, "completion_tokens": 4}},
    ),
    "anthropic": (
        "claude-haiku-4-5",
        {"content": [{"type": "text", "text": "It is a cat"}], "stop_reason": "max_tokens",
         "usage": {"input_tokens": 5, "output_tokens": 16}},
        {"content": [{"type": "text", "text": "It is a cat"}], "stop_reason": "end_turn",
         "usage": {"input_tokens": 5, "output_tokens": 4}},
    ),
    "gemini": (
        "gemini-2.5-flash",
        {"candidates": [{"content": {"parts": [{"text": "It is a cat"}]},
                         "finishReason": "MAX_TOKENS"}],
         "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 16}},
        {"candidates": [{"content": {"parts": [{"text": "It is a cat"}]}, "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4}},
    ),
}  # fmt: skip


@pytest.mark.parametrize("provider", sorted(_CUT_BODIES))
def test_an_answer_cut_at_the_limit_is_marked_cut(provider: str) -> None:
    """Before: a non-empty answer cut at the output limit was returned as if whole, so
    pseudolabel read its cut last word ("cat" of "caterpillar") as the class."""
    import httpx

    module = {"openai": openai, "anthropic": anthropic, "gemini": gemini}[provider]
    model, cut, whole = _CUT_BODIES[provider]
    spec = call_spec(provider, "answer", model, [_answer()])
    parsed = module.parse_response(spec, httpx.Response(200, json=cut))
    assert parsed.texts == ["It is a cat"] and parsed.truncated
    assert not module.parse_response(spec, httpx.Response(200, json=whole)).truncated

"""Issue 13's provider money risks: the reservation must cover what the provider bills.

Each test runs the real TeacherClient against a loopback server that bills the way the
provider is documented (or reported) to bill, and checks the reservation covered it
(``budget.overruns == 0``) and that what was charged is what was billed.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.providers.conftest import image, nosleep
from tests.providers.loopback import loopback
from vlmclient import AnswerRequest, Budget, ConfigurationError, Price, TeacherClient, Usage
from vlmclient.prices import load_prices
from vlmclient.retry import RetryPolicy

PRICE = Price(usd_per_1m_input_tokens=Decimal("1.25"), usd_per_1m_output_tokens=Decimal("10"))


def openai_biller(image_tokens: int) -> Any:
    """Bills each image at ``image_tokens`` and the whole output allowance it was sent."""

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        out = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        n = body.get("n", 1)
        return 200, {
            "id": "chatcmpl-x",
            "choices": [
                {"index": i, "message": {"content": "seven"}, "finish_reason": "stop"}
                for i in range(n)
            ],
            "usage": {"prompt_tokens": 20 + image_tokens, "completion_tokens": out * n},
        }

    return respond


def _client(url: str, teacher: str, **kw: Any) -> TeacherClient:
    kw.setdefault("price", PRICE)
    return TeacherClient(
        teacher,
        api_key="sk-test",
        base_url=url + "/v1",
        budget=Budget("1.00"),
        retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        **kw,
    )


def _ask(max_tokens: int = 16) -> list[AnswerRequest]:
    return [
        AnswerRequest(image=image((64, 64)), prompt="Which digit?", max_output_tokens=max_tokens)
    ]


async def test_gpt5x_image_billed_at_1844_tokens_stays_within_the_reservation() -> None:
    """gpt-5.2 fell to the gpt-5 row (70 tokens); a 1,844-token image bill overran it."""
    with loopback(openai_biller(1844)) as server:
        async with _client(server.url, "openai:gpt-5.2") as client:
            [result] = await client.answer(_ask())
    assert client.budget.overruns == 0
    assert result.cost_usd == PRICE.cost(Usage(input_tokens=20 + 1844, output_tokens=16))


async def test_params_raising_max_completion_tokens_are_reserved() -> None:
    """params can override max_completion_tokens; the estimate read the item's 16."""
    with loopback(openai_biller(70)) as server:
        client = _client(server.url, "openai:gpt-5", params={"max_completion_tokens": 2000, "n": 2})
        async with client:
            await client.answer(_ask(16))
    assert server.bodies[0]["max_completion_tokens"] == 2000
    assert client.budget.overruns == 0
    assert client.budget.spent == PRICE.cost(Usage(input_tokens=90, output_tokens=4000))


def lax_int(value: Any) -> int:
    """What a pydantic (lax mode) OpenAI-compatible server reads an int field as: vLLM,
    SGLang and LiteLLM take "2000" and 2000.0 for 2000."""
    return int(Decimal(str(value)))


def lax_openai_biller(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Bills the whole output allowance, read the way a pydantic-based server reads it."""
    out = lax_int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
    n = lax_int(body.get("n", 1))
    return 200, {
        "id": "chatcmpl-x",
        "choices": [
            {"index": i, "message": {"content": "seven"}, "finish_reason": "stop"}
            for i in range(n)
        ],
        "usage": {"prompt_tokens": 90, "completion_tokens": out * n},
    }


@pytest.mark.parametrize(
    "params",
    [{"max_completion_tokens": "2000", "n": "2"}, {"max_completion_tokens": 2000.0, "n": 2.0}],
    ids=["strings", "floats"],
)
async def test_params_raising_the_output_limit_as_a_string_or_float_are_reserved(
    params: dict[str, Any],
) -> None:
    """An OpenAI-compatible server built on pydantic (vLLM, SGLang, LiteLLM) takes "2000"
    and 2000.0 as 2000 answers' tokens; the estimate read only ints and reserved the
    item's 16 (an overrun of 250x)."""
    with loopback(lax_openai_biller) as server:
        client = _client(server.url, "openai:gpt-5", params=params)
        async with client:
            await client.answer(_ask(16))
    assert len(server.requests) == 1
    assert client.budget.overruns == 0
    assert client.budget.spent == PRICE.cost(Usage(input_tokens=90, output_tokens=4000))


async def test_an_output_limit_that_is_not_a_whole_number_is_refused_before_sending() -> None:
    with loopback(lax_openai_biller) as server:
        async with _client(server.url, "openai:gpt-5", params={"max_tokens": "2k"}) as client:
            with pytest.raises(ConfigurationError, match="max_tokens"):
                await client.answer(_ask(16))
    assert server.requests == []


async def test_a_null_output_limit_in_params_is_refused_before_sending() -> None:
    """``max_completion_tokens: None`` went out as JSON null, which the API reads as no
    limit (the model's own, 128k tokens for gpt-5), while the estimate reserved the
    item's 16: one answer billed 30,000 output tokens was an overrun of 900x."""

    def unlimited(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        out = body.get("max_completion_tokens") or body.get("max_tokens") or 30_000
        return 200, {
            "id": "chatcmpl-x",
            "choices": [{"index": 0, "message": {"content": "seven"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 90, "completion_tokens": out},
        }

    with loopback(unlimited) as server:
        params: dict[str, Any] = {"max_completion_tokens": None}
        async with _client(server.url, "openai:gpt-5", params=params) as client:
            with pytest.raises(ConfigurationError, match="max_completion_tokens"):
                await client.answer(_ask(16))
        assert server.requests == []
        assert client.budget.spent == 0
        # with a max_tokens beside it the answer is bounded (and reserved) by that
        params = {"max_completion_tokens": None, "max_tokens": 500}
        async with _client(server.url, "openai:gpt-5", params=params) as client:
            await client.answer(_ask(16))
    assert client.budget.overruns == 0
    assert client.budget.spent == PRICE.cost(Usage(input_tokens=90, output_tokens=500))


async def test_reasoning_left_out_of_completion_tokens_but_in_the_total_is_charged() -> None:
    """Gateways that translate Gemini to the OpenAI shape (Portkey before its PR #1458,
    CLIProxyAPI before #5744, any-llm #1290) put only the answer's tokens in
    ``completion_tokens`` and the thoughts in ``reasoning_tokens``, while
    ``total_tokens`` holds both: the client charged max(198, 405) output tokens of the
    603 billed, so the ledger (and the cap) saw two thirds of the bill."""

    def gateway(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {
            "id": "chatcmpl-x",
            "choices": [{"index": 0, "message": {"content": "seven"}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": 90,
                "completion_tokens": 198,
                "total_tokens": 90 + 198 + 405,
                "completion_tokens_details": {"reasoning_tokens": 405},
            },
        }

    with loopback(gateway) as server:
        async with _client(server.url, "openai:gpt-5") as client:
            [result] = await client.answer(_ask(1000))
    billed = PRICE.cost(Usage(input_tokens=90, output_tokens=198 + 405))
    assert result.cost_usd == client.budget.spent == billed
    assert client.budget.overruns == 0


async def test_unknown_openai_model_is_refused_before_sending(tmp_path: Path) -> None:
    with loopback(openai_biller(85)) as server:
        client = _client(server.url, "openai:my-vllm-model")
        async with client:
            with pytest.raises(ConfigurationError, match="max_image_tokens"):
                await client.answer(_ask())
        assert server.requests == []

        prices = tmp_path / "prices.json"
        prices.write_text(
            json.dumps(
                {
                    "openai:my-vllm-model": {
                        "usd_per_1m_input_tokens": "1.25",
                        "usd_per_1m_output_tokens": "10",
                        "max_image_tokens": 600,
                    }
                }
            )
        )
        table = load_prices(prices)
        client = _client(server.url, "openai:my-vllm-model", price=None, prices=table)
        async with client:
            _, worst = client.plan("answer", _ask())
            await client.answer(_ask())
    assert len(server.requests) == 1
    assert worst == PRICE.cost(Usage(input_tokens=16 + 13 + 600, output_tokens=16))
    assert client.budget.overruns == 0


async def test_a_price_file_bound_below_the_models_known_image_tokens_does_not_overrun(
    tmp_path: Path,
) -> None:
    """A price file's max_image_tokens replaced the adapter's own bound: gpt-4o-mini
    declared at 100 tokens an image was reserved at 100 and billed 2,833, so the first
    answer overran its reservation and stopped the run (after it was billed). The known
    bound now wins when it is the larger; a larger declared one is kept."""
    prices = tmp_path / "prices.json"
    entry = {"usd_per_1m_input_tokens": "1.25", "usd_per_1m_output_tokens": "10"}
    for declared, reserved in ((100, 2833), (4000, 4000)):
        prices.write_text(
            json.dumps({"openai:gpt-4o-mini": {**entry, "max_image_tokens": declared}})
        )
        with loopback(openai_biller(2833)) as server:
            client = _client(server.url, "openai:gpt-4o-mini", price=None,
                             prices=load_prices(prices))  # fmt: skip
            async with client:
                _, worst = client.plan("answer", _ask())
                [result] = await client.answer(_ask())
        assert result.text == "seven"
        assert worst == PRICE.cost(Usage(input_tokens=16 + 13 + reserved, output_tokens=16))
        assert client.budget.overruns == 0, declared


# -- Cohere: image responses that bill {"images": 1} at a per-image-token price -----------


def cohere_images_only(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """What embed-v4 image responses have been seen to say: images, no image tokens."""
    n = len(body.get("images") or body.get("texts") or [])
    kind = "images" if body.get("images") else "input_tokens"
    return 200, {
        "id": "emb-1",
        # embed-v4.0's default length, which the client expects of it
        "embeddings": {"float": [[0.1 * (i + 1), 0.2, 0.3] * 512 for i in range(n)]},
        "meta": {"billed_units": {kind: n}},
    }


async def test_cohere_image_bill_without_image_tokens_never_settles_at_zero(
    tmp_path: Path,
) -> None:
    from cache import SpendLedger
    from vlmclient import ImageEmbeddingRequest

    price = load_prices().lookup("cohere", "embed-v4.0")  # priced per image token only
    items = [ImageEmbeddingRequest(image=image((96, 96), "PNG", seed=i)) for i in range(3)]
    with loopback(cohere_images_only) as server, SpendLedger(tmp_path / "l.jsonl") as ledger:
        client = TeacherClient(
            "cohere:embed-v4.0",
            api_key="co-test",
            base_url=server.url,
            prices=load_prices(),
            ledger=ledger,
            budget=Budget("1.00"),
            retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        )
        async with client:
            _, reserved = client.plan("image_embedding", items)
            results = await client.embed_images(items)
    assert server.bodies[0]["images"] and len(results) == 3
    assert client.budget.spent > 0
    assert client.budget.spent == reserved  # the estimate's image tokens, what was reserved
    assert client.budget.overruns == 0
    (record,) = SpendLedger.read(tmp_path / "l.jsonl")
    assert Decimal(record.cost_usd) == client.budget.spent
    assert price.usd_per_image == 0  # the trap: {"images": 3} alone would cost $0
    # our own figure, not Cohere's: marked estimated, so `report` says to compare it with
    # the bill (before 2026-12-06 the adapter filled in its estimate and it read as billed)
    assert record.estimated is True
    assert client.stats.estimated == 1


@pytest.mark.parametrize("model", ["embed-english-v3.0", "embed-multilingual-v3.0"])
async def test_cohere_v3_images_are_charged_per_image_as_billed(model: str) -> None:
    """Embed v3 bills $0.0001 per image (LiteLLM's map: input_cost_per_image) and reports
    ``billed_units.images``. The built-in entry priced v3 images per image token at
    $0.10/M: a 96 x 96 image was charged $0.0000058 for a $0.0001 bill, silently."""
    from vlmclient import ImageEmbeddingRequest

    per_image = Decimal("0.0001")
    items = [ImageEmbeddingRequest(image=image((96, 96), "PNG", seed=i)) for i in range(3)]
    with loopback(cohere_images_only) as server:
        client = TeacherClient(
            f"cohere:{model}",  # the built-in price
            api_key="co-test",
            base_url=server.url,
            budget=Budget("1.00"),
            retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        )
        async with client:
            await client.embed_images(items)
    billed = per_image * sum(
        body["meta"]["billed_units"]["images"]
        for body in (cohere_images_only("", b)[1] for b in server.bodies)
    )
    assert billed == per_image * 3  # v3 takes one image per call: three requests
    assert client.budget.spent == billed
    assert client.budget.overruns == 0


# -- Anthropic: ceil(w/28) * ceil(h/28) image tokens ---------------------------------------


def anthropic_patch_biller(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Bills like the current docs: 28-px patches for the image, 4 framing tokens."""
    import base64
    import io
    import math

    from PIL import Image as PILImage

    block = body["messages"][0]["content"][0]
    with PILImage.open(io.BytesIO(base64.b64decode(block["source"]["data"]))) as im:
        w, h = im.size
    text = body["messages"][0]["content"][1]["text"]
    tokens = 4 + len(text.encode()) + math.ceil(w / 28) * math.ceil(h / 28)
    return 200, {
        "id": "msg_1",
        "type": "message",
        "content": [{"type": "text", "text": "seven"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": tokens, "output_tokens": body["max_tokens"]},
    }


async def test_anthropic_thin_image_billed_by_28px_patches_stays_within_the_reservation() -> None:
    """1568x29 is 112 patch tokens; w*h/750 reserved 61 and the bill overran it."""
    item = AnswerRequest(image=image((1568, 29), "PNG"), prompt="?", max_output_tokens=1)
    with loopback(anthropic_patch_biller) as server:
        client = TeacherClient(
            "anthropic:claude-haiku-4-5",
            api_key="sk-ant-test",
            base_url=server.url,
            price=PRICE,
            retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        )
        async with client:
            await client.answer([item])
    assert client.budget.overruns == 0
    assert client.budget.spent == PRICE.cost(Usage(input_tokens=4 + 1 + 112, output_tokens=1))

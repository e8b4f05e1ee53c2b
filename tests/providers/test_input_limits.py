"""One text in a batch longer than the model takes per input (audit of 2026-12-06).

Each test runs the real TeacherClient against a loopback server that rejects an over-long
input the way the provider does: OpenAI (no truncation: 8,192 tokens an input), Voyage with
``truncation: false`` (32,000 tokens), Jina (``truncate`` off by default: 8,192 for
jina-clip-v2). Before, the 400 failed every item of the request with a message that named
no item of the call (or an index inside the request), and nothing of the batch was bought.
Now, when a request holding an input that may be over the limit is refused, the others are
bought without it and it is sent alone: the others are cached, the one is refused by the
provider (nothing is charged) and the error names it and the limit.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cache import ResponseCache, SpendLedger, totals
from tests.providers.conftest import nosleep
from tests.providers.loopback import loopback
from vlmclient import (
    BadRequestError,
    Budget,
    Price,
    TeacherClient,
    TextEmbeddingRequest,
    Usage,
)
from vlmclient.errors import InputTooLongError
from vlmclient.retry import RetryPolicy

PRICE = Price(usd_per_1m_input_tokens=Decimal("0.02"))
TEXTS = [f"a photo of class {i}" for i in range(100)]
LONG_AT = 57


def tokens(text: str) -> int:
    return max(1, len(text.encode()) // 4)


def _vec(i: int) -> str:
    return base64.b64encode(np.full(8, i + 1, "<f4").tobytes()).decode()


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"object": "embedding", "index": i, "embedding": _vec(i)} for i in range(n)]


def openai_server(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """As api.openai.com: one input over 8,192 tokens fails the request, unbilled."""
    inputs = body["input"]
    for text in inputs:
        n = tokens(text)
        if n > 8192:
            return 400, {
                "error": {
                    "message": f"This model's maximum context length is 8192 tokens, however "
                    f"you requested {n} tokens ({n} in your prompt; 0 for the completion). "
                    "Please reduce your prompt; or completion length.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
    total = sum(tokens(t) for t in inputs)
    return 200, {
        "object": "list",
        "data": _rows(len(inputs)),
        "model": body["model"],
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }


def voyage_server(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """As Voyage with truncation false: the 4XX body ``{detail}`` names the index in the
    request."""
    texts = [p["text"] for i in body["inputs"] for p in i["content"]]
    if body.get("truncation") is False:
        for i, text in enumerate(texts):
            if tokens(text) > 32_000:
                return 400, {
                    "detail": f"Request to model '{body['model']}' failed. The example at "
                    f"index {i} in your batch has too many tokens and does not fit into the "
                    "model's context window of 32000 tokens. Please lower the number of "
                    "tokens in the listed example(s) or use truncation."
                }
    total = sum(min(tokens(t), 32_000) for t in texts)
    return 200, {
        "object": "list",
        "data": _rows(len(texts)),
        "model": body["model"],
        "usage": {"text_tokens": total, "total_tokens": total},
    }


def jina_server(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """As Jina without ``truncate``: an input over the context fails the request."""
    inputs = body["input"]
    if not body.get("truncate"):
        for i, x in enumerate(inputs):
            if tokens(x["text"]) > 8192:
                return 400, {"detail": f"Input text at index {i} is longer than 8192 tokens"}
    total = sum(min(tokens(x["text"]), 8192) for x in inputs)
    rows = [
        {"object": "embedding", "index": i, "embedding": [float(i + 1)] * 8}
        for i in range(len(inputs))
    ]
    return 200, {"model": body["model"], "object": "list", "data": rows,
                 "usage": {"total_tokens": total, "prompt_tokens": total}}


# 50,000 bytes (about 12,500 tokens at 4 bytes a token); 200,000 for Voyage's 32k
CASES = [
    ("openai:text-embedding-3-small", openai_server, "/v1", None, 8191, 10_000),
    ("voyage:voyage-multimodal-3", voyage_server, "/v1", {"truncation": False}, 32_000, 40_000),
    ("jina:jina-clip-v2", jina_server, "", None, 8192, 10_000),
]


def _client(teacher: str, url: str, cache: ResponseCache, ledger: SpendLedger,
            params: dict[str, Any] | None) -> TeacherClient:
    return TeacherClient(
        teacher,
        api_key="sk-test-key-123456",
        base_url=url,
        budget=Budget("1.00"),
        price=PRICE,
        cache=cache,
        ledger=ledger,
        params=params,
        retry=RetryPolicy(max_attempts=3, sleep=nosleep),
    )


@pytest.mark.parametrize(("teacher", "server", "prefix", "params", "limit", "words"), CASES)
async def test_one_over_long_text_fails_alone_named_and_the_rest_is_bought(
    teacher: str, server: Any, prefix: str, params: dict[str, Any] | None, limit: int,
    words: int, tmp_path: Path,
) -> None:
    long = "word " * words
    texts = list(TEXTS)
    texts[LONG_AT] = long
    reqs = [TextEmbeddingRequest(text=t) for t in texts]
    with loopback(server) as srv, ResponseCache(tmp_path / "c") as cache, SpendLedger(
        tmp_path / "l.jsonl"
    ) as ledger:
        client = _client(teacher, srv.url + prefix, cache, ledger, params)
        with pytest.raises(BadRequestError) as caught:
            await client.embed_texts(reqs)
        err = caught.value
        assert isinstance(err, InputTooLongError)
        message = str(err)
        # names the item of the call (not the index inside some request) and the limit
        assert f"input {LONG_AT} of 100" in message
        assert f"{len(long):,} bytes" in message and f"{limit:,} tokens" in message
        assert "'word word word" in message
        assert err.index == LONG_AT and err.limit == limit
        # the other 99 were bought and cached; the long one was refused, unbilled
        cached = [cache.get(client.cache_key("text_embedding", r)) is not None for r in reqs]
        assert cached == [i != LONG_AT for i in range(100)]
        billed = sum(tokens(t) for i, t in enumerate(texts) if i != LONG_AT)
        assert client.budget.spent == PRICE.cost(Usage(input_tokens=billed))
        assert client.budget.reserved == 0
        # the request refused with it, then it alone (never retried): three requests
        assert [long in str(b) for b in srv.bodies] == [True, False, True]
        await client.aclose()
        spent = totals(SpendLedger.read(tmp_path / "l.jsonl")).spent_usd
        assert spent == client.budget.spent

        # the user shortens it: the rerun buys that one text alone
        texts[LONG_AT] = "a photo of a long thing"
        sent = len(srv.requests)
        client = _client(teacher, srv.url + prefix, cache, ledger, params)
        out = await client.embed_texts([TextEmbeddingRequest(text=t) for t in texts])
        assert len(out) == 100 and client.stats.cache_hits == 99
        assert len(srv.requests) == sent + 1
        await client.aclose()


async def test_voyage_truncating_by_default_buys_the_long_text_in_the_batch(
    tmp_path: Path,
) -> None:
    """Already sound: Voyage truncates (its default), so nothing is isolated or refused."""
    texts = list(TEXTS)
    texts[LONG_AT] = "word " * 200_000  # 1 MB, truncated to 32,000 tokens by Voyage
    with loopback(voyage_server) as srv, ResponseCache(tmp_path / "c") as cache, SpendLedger(
        tmp_path / "l.jsonl"
    ) as ledger:
        client = _client("voyage:voyage-multimodal-3", srv.url + "/v1", cache, ledger, None)
        out = await client.embed_texts([TextEmbeddingRequest(text=t) for t in texts])
        assert len(out) == 100 and client.budget.overruns == 0
        await client.aclose()


async def test_a_400_for_another_reason_is_not_sent_again_input_by_input(
    tmp_path: Path,
) -> None:
    """A request refused whatever it holds (a bad parameter): the others are asked once
    more without the long inputs, refused again, and nothing more is sent."""
    texts = [*TEXTS[:10], "word " * 10_000, "word " * 12_000]

    def bad_param(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 400, {"error": {"message": "Unrecognized request argument supplied: foo",
                               "type": "invalid_request_error", "param": None, "code": None}}

    with loopback(bad_param) as srv, ResponseCache(tmp_path / "c") as cache, SpendLedger(
        tmp_path / "l.jsonl"
    ) as ledger:
        client = _client("openai:text-embedding-3-small", srv.url + "/v1", cache, ledger, None)
        with pytest.raises(BadRequestError) as caught:
            await client.embed_texts([TextEmbeddingRequest(text=t) for t in texts])
        assert not isinstance(caught.value, InputTooLongError)
        assert "Unrecognized request argument" in str(caught.value)
        assert [len(b["input"]) for b in srv.bodies] == [12, 10]
        assert client.budget.spent == 0 and client.budget.reserved == 0
        await client.aclose()


async def test_long_texts_that_fit_still_share_requests(tmp_path: Path) -> None:
    """Texts over the bound but under the real limit: nothing changes (no 400, no split)."""
    texts = [f"{i:05d} " + "word " * 3_000 for i in range(15)]  # 15 kB, ~3,750 tokens each
    with loopback(openai_server) as srv, ResponseCache(tmp_path / "c") as cache, SpendLedger(
        tmp_path / "l.jsonl"
    ) as ledger:
        client = _client("openai:text-embedding-3-small", srv.url + "/v1", cache, ledger, None)
        out = await client.embed_texts([TextEmbeddingRequest(text=t) for t in texts])
        assert len(out) == 15 and len(srv.requests) == 1
        await client.aclose()


def test_per_input_limits_apply_only_where_the_provider_would_refuse() -> None:
    from vlmclient.providers import cohere, jina, openai, voyage

    assert openai.max_input_tokens("text-embedding-3-large", {}) == 8191
    assert voyage.max_input_tokens("voyage-multimodal-3", {}) is None  # truncates
    assert voyage.max_input_tokens("voyage-multimodal-3", {"truncation": False}) == 32_000
    assert jina.max_input_tokens("jina-clip-v2", {}) == 8192
    assert jina.max_input_tokens("jina-clip-v2", {"truncate": True}) is None
    assert cohere.max_input_tokens("embed-v4.0", {}) is None  # truncate END by default
    assert cohere.max_input_tokens("embed-v4.0", {"truncate": "NONE"}) == 128_000
    assert cohere.max_input_tokens("embed-english-v3.0", {"truncate": "NONE"}) == 512
    assert cohere.max_input_tokens("embed-v4.0", {"truncate": "NONE", "max_tokens": 64}) == 64

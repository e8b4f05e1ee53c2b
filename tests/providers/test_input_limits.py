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
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from cache import ResponseCache, SpendLedger, totals
from distill.cli import main
from tests.providers.conftest import nosleep
from tests.providers.loopback import loopback
from vlmclient import (
    BadRequestError,
    Budget,
    Price,
    QuotaExceededError,
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


JINA_IMAGE_TOKENS = 1000  # billed an image (under the client's estimate of 4,000 a tile)


def jina_server(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """As Jina without ``truncate``: an input over the context fails the request."""
    inputs = body["input"]
    if not body.get("truncate"):
        for i, x in enumerate(inputs):
            if "text" in x and tokens(x["text"]) > 8192:
                return 400, {"detail": f"Input text at index {i} is longer than 8192 tokens"}
    total = sum(min(tokens(x["text"]), 8192) if "text" in x else JINA_IMAGE_TOKENS
                for x in inputs)
    rows = [
        {"object": "embedding", "index": i, "embedding": [float(i + 1)] * 8}
        for i in range(len(inputs))
    ]
    return 200, {"model": body["model"], "object": "list", "data": rows,
                 "usage": {"total_tokens": total, "prompt_tokens": total}}


# OpenAI's answer for an account out of credit
OUT_OF_CREDIT: tuple[int, dict[str, Any]] = (429, {"error": {
    "message": "You exceeded your current quota", "type": "insufficient_quota",
    "param": None, "code": "insufficient_quota"}})

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


async def test_every_over_long_text_of_a_call_is_named_and_the_others_are_handed_back(
    tmp_path: Path,
) -> None:
    """Before: a call with two texts over the limit raised for the first only (the second
    was refused too, but nothing said so), and the 98 others bought in it were cached but
    not handed back. Now the error names both (``errors``) and holds the others'
    results (``results``, None where refused): nothing more is sent to get them."""
    texts = list(TEXTS)
    texts[20], texts[70] = "word " * 10_000, "long " * 12_000
    reqs = [TextEmbeddingRequest(text=t) for t in texts]
    with loopback(openai_server) as srv, ResponseCache(tmp_path / "c") as cache, SpendLedger(
        tmp_path / "l.jsonl"
    ) as ledger:
        client = _client("openai:text-embedding-3-small", srv.url + "/v1", cache, ledger, None)
        with pytest.raises(InputTooLongError) as caught:
            await client.embed_texts(reqs)
        err = caught.value
        assert err.index == 20 and err.limit == 8191
        assert [e.index for e in err.errors] == [20, 70]
        assert all(e.limit == 8191 for e in err.errors)
        assert "input 20 of 100" in str(err.errors[0]) and "50,000 bytes" in str(err.errors[0])
        assert "input 70 of 100" in str(err.errors[1]) and "60,000 bytes" in str(err.errors[1])
        message = str(err)  # the one message names both
        assert "input 20 of 100: the text 'word word" in message
        assert "input 70 of 100: the text 'long long" in message
        assert err.results is not None and len(err.results) == 100
        assert [r is None for r in err.results] == [i in (20, 70) for i in range(100)]
        kept = [r for r in err.results if r is not None]
        assert not any(r.cached for r in kept)
        assert [float(r.vector[0]) for r in kept[:3]] == [1.0, 2.0, 3.0]
        # refused with both, the 98 without them, then each alone: nothing else was sent
        assert [len(b["input"]) for b in srv.bodies] == [100, 98, 1, 1]
        billed = sum(tokens(t) for i, t in enumerate(texts) if i not in (20, 70))
        assert client.budget.spent == PRICE.cost(Usage(input_tokens=billed))
        await client.aclose()


async def test_a_call_with_an_over_long_text_and_another_failure_raises_the_other(
    tmp_path: Path,
) -> None:
    """Before, the first failure in call order was raised: an over-long text hid an
    account out of credit (or a budget stop) met by later inputs of the same call, so a
    harvest listed every item as too long and went on. Now that other error is raised."""
    texts = ["word " * 10_000, *TEXTS[:30]]

    def out_of_credit_at_25(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "a photo of class 25" in body["input"]:
            return OUT_OF_CREDIT
        return openai_server(path, body)

    with loopback(out_of_credit_at_25) as srv, ResponseCache(
        tmp_path / "c"
    ) as cache, SpendLedger(tmp_path / "l.jsonl") as ledger:
        client = TeacherClient(
            "openai:text-embedding-3-small", api_key="sk-test-key-123456",
            base_url=srv.url + "/v1", budget=Budget("1"), price=PRICE, cache=cache,
            ledger=ledger, retry=RetryPolicy(max_attempts=3, sleep=nosleep), batch_size=10,
        )  # fmt: skip
        with pytest.raises(QuotaExceededError):
            await client.embed_texts([TextEmbeddingRequest(text=t) for t in texts])
        assert any(len(b["input"]) == 1 and b["input"][0] == texts[0] for b in srv.bodies)
        await client.aclose()


async def test_the_others_stopped_by_another_failure_stop_the_long_text_with_it(
    tmp_path: Path,
) -> None:
    """One request of 31 texts, the first over the limit: refused (400), the other 30 are
    sent again without it and meet an account out of credit (429). Before, the long text
    then got the first request's 400, and the call raised that BadRequestError (first in
    call order) instead of the quota error: a harvest listed the items as refused and went
    on. Now the long text fails with what stopped the others, unsent."""
    texts = ["word " * 10_000, *TEXTS[:30]]

    def out_of_credit_without_it(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return OUT_OF_CREDIT if len(body["input"]) == 30 else openai_server(path, body)

    with loopback(out_of_credit_without_it) as srv, ResponseCache(
        tmp_path / "c"
    ) as cache, SpendLedger(tmp_path / "l.jsonl") as ledger:
        client = _client("openai:text-embedding-3-small", srv.url + "/v1", cache, ledger, None)
        with pytest.raises(QuotaExceededError):
            await client.embed_texts([TextEmbeddingRequest(text=t) for t in texts])
        assert [len(b["input"]) for b in srv.bodies] == [31, 30]  # the long one never alone
        assert client.budget.spent == 0 and client.budget.reserved == 0
        await client.aclose()


async def test_requests_split_after_a_stop_look_again_before_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process is stopped while its request (one long text among 31) is on the wire,
    past its lease time; meanwhile another process bought the 30 others. The 400 comes
    back on resume. Before, the requests split from it (the others, the long one alone)
    started a new lease clock and were sent without a look: the 30 were bought twice. Now
    they keep the first request's claim time, claim again and find them cached."""
    import vlmclient.pipeline as pipeline_module
    from cache import CacheEntry
    from tests.client.test_lease_guard import OtherProcessBoughtThem

    times = iter([0.0, 0.0])  # claimed and sent at t = 0; the answer comes at t = 100 s
    monkeypatch.setattr(pipeline_module, "_now", lambda: next(times, 100.0))
    texts = ["word " * 10_000, *TEXTS[:30]]
    with loopback(openai_server) as srv, ResponseCache(tmp_path / "c") as cache, SpendLedger(
        tmp_path / "l.jsonl"
    ) as ledger:
        claims = OtherProcessBoughtThem(cache)  # type: ignore[arg-type]
        client = TeacherClient(
            "openai:text-embedding-3-small", api_key="sk-test-key-123456",
            base_url=srv.url + "/v1", budget=Budget("1"), price=PRICE, cache=cache,
            ledger=ledger, claims=claims, retry=RetryPolicy(max_attempts=3, sleep=nosleep),
        )  # fmt: skip
        out = await client.embed_texts([TextEmbeddingRequest(text=t) for t in texts])
        assert [len(b["input"]) for b in srv.bodies] == [31]  # nothing sent after the stop
        assert all(r.cached for r in out) and client.budget.spent == 0
        assert isinstance(cache.get(client.cache_key("text_embedding",
                                                     TextEmbeddingRequest(text=texts[1]))),
                          CacheEntry)
        await client.aclose()


def _jina_harvest(tmp_path: Path, classes: list[str]) -> tuple[list[str], Path]:
    """Two class folders of three images, a class file of ``classes`` and a price file:
    the argv of ``vlm-distill harvest`` against jina:jina-clip-v2 (URL appended)."""
    data = tmp_path / "data"
    for c in ("cat", "dog"):
        (data / c).mkdir(parents=True)
        for k in range(3):
            arr = np.random.default_rng(k + 10 * (c == "dog")).integers(0, 255, (32, 32, 3))
            PILImage.fromarray(arr.astype(np.uint8)).save(data / c / f"{k}.png")
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"jina:jina-clip-v2": {"usd_per_1m_input_tokens": "0.05"}}))
    cache = tmp_path / "cache"
    argv = ["harvest", str(data), "--teacher", "jina:jina-clip-v2", "--cache", str(cache),
            "--class-file", str(tmp_path / "classes.txt"), "--price-file", str(prices),
            "--budget", "1", "--base-url"]  # fmt: skip
    return argv, cache


def _billing_jina() -> tuple[Any, list[int]]:
    """jina_server, keeping the provider's bill: tokens of each answered request."""
    bill: list[int] = []

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, out = jina_server(path, body)
        if status == 200:
            bill.append(out["usage"]["total_tokens"])
        return status, out

    return respond, bill


def _summary_row(out: str, label: str) -> str:
    found = re.search(rf"│ {label}\s+│ (\S+)", out)
    assert found is not None, out
    return found.group(1)


JINA_PRICE = Decimal("0.05") / 1_000_000


@pytest.mark.parametrize("long_at", [[20], [20, 30]], ids=["one", "two"])
def test_harvest_fails_only_the_over_long_prompts_each_named_and_says_shorten(
    long_at: list[int], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Audit of 2026-12-06: a class file of 43 names, one of them 50 kB. Before, the
    harvest listed all 43 prompts as failed with the one message, said "43 items failed
    at the teacher; run again to retry them (nothing paid is lost)" (a rerun failed the
    same way) and counted the 42 prompts it bought and cached as neither bought nor
    cached; of two long names only the first was named. Now only the long ones fail,
    each named, with the advice to shorten them; the others count as bought (then
    cached), and the exit status is 1 until the names are shortened."""
    monkeypatch.setenv("JINA_API_KEY", "jina_test_key_1234567890")
    monkeypatch.setenv("COLUMNS", "240")
    classes = ["cat", "dog", *(f"class{i}" for i in range(41))]
    for k, at in enumerate(long_at):
        classes[at] = f"long{k} " + "very " * 10_000 + "long"
    argv, cache = _jina_harvest(tmp_path, classes)
    n = len(long_at)
    respond, bill = _billing_jina()
    with loopback(respond) as srv:
        assert main([*argv, srv.url]) == 1
        out = " ".join(capsys.readouterr().out.split(" "))
        flat = " ".join(out.split())
        failed = [ln for ln in out.splitlines() if ln.startswith("failed ")]
        assert len(failed) == n, out
        for k, (line, at) in enumerate(zip(failed, long_at, strict=True)):
            assert line.startswith(f"failed class 'long{k} very very"), line
            assert f"input {at} of 43" in line
        for at in long_at:
            assert f"input {at} of 43: the text 'a photo of a long" in flat
        assert "failed a photo of a" not in flat and "items failed at the teacher" not in flat
        assert "run again to retry" not in flat
        too_long = f"{n} prompt{'s' * (n > 1)} {'are' if n > 1 else 'is'} too long"
        assert too_long in flat and "shorten" in flat
        assert "re-running alone will not help" in flat
        assert _summary_row(out, "bought") == str(6 + 43 - n)
        assert _summary_row(out, "cache hits") == "0"
        # charged as before: what the provider billed, the refusals nothing
        spent = totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd
        assert spent == sum(bill) * JINA_PRICE
        sent = len(srv.requests)

        # run again as it is: the same, nothing bought; the long ones are refused again
        assert main([*argv, srv.url]) == 1
        out = " ".join(capsys.readouterr().out.split(" "))
        assert len([ln for ln in out.splitlines() if ln.startswith("failed ")]) == n
        assert too_long in " ".join(out.split())
        assert _summary_row(out, "bought") == "0"
        assert _summary_row(out, "cache hits") == str(6 + 43 - n)
        again = [x for b in srv.bodies[sent:] for x in b["input"]]  # refused, unbilled
        assert again and all(len(x.get("text", "")) > 50_000 for x in again)
        assert totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd == spent

        # the user shortens them: only those are bought, and the store is written
        for k, at in enumerate(long_at):
            classes[at] = f"long{k}"
        (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
        assert main([*argv, srv.url]) == 0
        out = capsys.readouterr().out
        assert _summary_row(out, "bought") == str(n)
        assert "embedding store:" in out
        assert totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd == sum(bill) * JINA_PRICE


async def test_an_over_long_text_holding_the_key_is_named_with_the_key_masked(
    tmp_path: Path,
) -> None:
    """Before: the error named each over-long input by its first 40 characters, cut from
    the text as it was: a key pasted into a prompt (a template with a secret in it) was
    quoted there, in the raised error and the CLI's line, never redacted."""
    from vlmclient.redact import Redactor

    key = "sk-proj-SECRETSECRET0123456789abcd"
    texts = list(TEXTS)
    texts[20] = f"key: {key} " + "word " * 10_000
    texts[70] = f"{key} " + "long " * 12_000
    with loopback(openai_server) as srv, ResponseCache(tmp_path / "c") as cache, SpendLedger(
        tmp_path / "l.jsonl"
    ) as ledger:
        async with TeacherClient(
            "openai:text-embedding-3-small", api_key=key, base_url=srv.url + "/v1",
            budget=Budget("1.00"), price=PRICE, cache=cache, ledger=ledger,
            retry=RetryPolicy(max_attempts=3, sleep=nosleep),
        ) as client:
            with pytest.raises(InputTooLongError) as caught:
                await client.embed_texts([TextEmbeddingRequest(text=t) for t in texts])
    err = caught.value
    assert [e.index for e in err.errors] == [20, 70]
    assert "input 20 of 100: the text 'key: ***" in str(err)
    assert "input 70 of 100: the text '***" in str(err)
    holds = Redactor([key]).holds
    assert not holds(str(err)) and not any(holds(str(e)) for e in err.errors)

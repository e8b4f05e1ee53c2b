"""Issue 13 (money safety), the client's share: how a billed answer is settled.

Every test drives the real CLI or the real TeacherClient against a stand-in provider on
127.0.0.1 (tests/reliability/standin.py) that bills like a provider but leaves usage out,
bills 3x, or answers with unusable 200s, and compares the ledger with its bill.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from cache import ResponseCache
from distill.cli import main
from tests.conftest import ListLedger
from tests.reliability.conftest import ledger, paid
from tests.reliability.standin import StandIn, standin
from vlmclient import (
    Budget,
    PriceTable,
    ResponseValidationError,
    RetryPolicy,
    TeacherClient,
    TextEmbeddingRequest,
)
from vlmclient.client import MALFORMED_STOP_MIN

SENT = ("ok", "malformed", "timeout", "connection", "cancelled")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.data.digits import make_digits

    # 4 domains x 10 classes x 1 image: 40 images and 10 prompts
    return make_digits(tmp_path_factory.mktemp("money") / "digits", size=16, per_class=1)


def harvest(url: str, data: Path, cache: Path, *extra: str) -> int:
    return main(
        [
            "harvest",
            str(data),
            "--teacher",
            "local:hash",
            "--base-url",
            url,
            "--cache",
            str(cache),
            "--batch-size",
            "5",
            "--concurrency",
            "1",  # one request at a time: "what was in flight" is exactly one request
            *extra,
        ]
    )


# -- 1. a 200 that does not say what it billed -------------------------------------------


def test_answers_without_usage_are_charged_the_reservation_so_the_cap_holds(
    digits: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: settled at $0, so a $0.002 budget let the provider bill $0.0040+ (exit 0)."""
    cache = tmp_path / "cache"
    with standin(usage=False) as (provider, url):
        code = harvest(url, digits, cache, "--budget", "0.002")
    out = capsys.readouterr().out
    records = [r for r in ledger(cache) if r.outcome in SENT]
    assert f"{len(records)} requests (no usage said)" in out
    assert code == 3  # stopped by the budget
    assert paid(records) <= Decimal("0.002")
    assert provider.billed_usd <= paid(records)  # the ledger is never below the bill
    assert records and all(r.estimated for r in records)
    assert all(r.cost_usd == r.reserved_usd and Decimal(r.cost_usd) > 0 for r in records)
    said = [r for r in caplog.records if "without usage" in r.getMessage()]
    assert len(said) == 1  # once per run, not once per request


async def test_openai_shaped_200_without_usage_is_charged_the_reservation() -> None:
    openai_price = PriceTable.default().lookup("openai", "text-embedding-3-small")
    with standin(usage=False, usd_per_1m_tokens=openai_price.usd_per_1m_input_tokens) as (
        provider,
        url,
    ):
        records = ListLedger()
        async with TeacherClient(
            "openai:text-embedding-3-small",
            api_key="sk-standin",
            base_url=url + "/v1",
            ledger=records,
            budget=Budget("1"),
        ) as client:
            texts = [TextEmbeddingRequest(text=f"a photo of digit {i}") for i in range(3)]
            await client.embed_texts(texts)
    [rec] = records.records
    assert rec.outcome == "ok" and rec.estimated and rec.provider_usage == {}
    assert Decimal(rec.cost_usd) == Decimal(rec.reserved_usd) > 0
    assert client.budget.spent == Decimal(rec.cost_usd) >= provider.billed_usd


async def test_cohere_invalid_200_without_billed_units_is_charged_not_retried() -> None:
    """Before: a parseable but invalid Cohere 200 was charged $0 and retried (billed 4x)."""
    with standin(usage=False, malformed=True) as (provider, url):
        records = ListLedger()
        async with TeacherClient(
            "cohere:embed-v4.0",
            api_key="co-standin",
            base_url=url,
            ledger=records,
            retry=RetryPolicy(max_attempts=4, initial_delay=0.01),
        ) as client:
            with pytest.raises(ResponseValidationError, match="expected 2 embeddings"):
                await client.embed_texts([TextEmbeddingRequest(text=t) for t in ("a cat", "a dog")])
    assert provider.requests == 1  # billed once, never retried
    [rec] = records.records
    assert rec.outcome == "malformed" and rec.estimated
    assert Decimal(rec.cost_usd) == Decimal(rec.reserved_usd) > 0
    assert client.stats.retries == 0


def test_usage_without_the_image_unit_is_charged_the_reservation_so_the_cap_holds(
    digits: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: billed_units {"input_tokens": n} for an image request priced per image
    settled at the tokens' $0.0000006 (not marked estimated): the ledger said 1/170th of
    what the provider billed, and the cap could not see it."""
    cache = tmp_path / "cache"
    with standin(partial=True) as (provider, url):
        assert harvest(url, digits, cache, "--budget", "1") == 0
    records = [r for r in ledger(cache) if r.outcome == "ok"]
    images = [r for r in records if r.kind == "image_embedding"]
    assert images and all(r.estimated for r in images)
    assert all(r.cost_usd == r.reserved_usd for r in images)
    assert paid(records) >= provider.billed_usd > 0
    said = [r for r in caplog.records if "without a valid count of images" in r.getMessage()]
    assert len(said) == 1


async def test_answers_whose_usage_leaves_out_output_tokens_cannot_pass_the_cap() -> None:
    """Before: {"prompt_tokens": 100, "total_tokens": ...} settled at the prompt alone,
    so a $0.002 cap let the provider bill $0.0126 (100 answers of 200 output tokens at
    $0.60/M, each charged $0.000012) with no overrun and nothing marked estimated."""
    import io

    from PIL import Image as PILImage

    from vlmclient import AnswerRequest, BudgetExceededError, Image

    def image(i: int) -> Image:
        buf = io.BytesIO()
        PILImage.new("RGB", (32, 32), (i, 255 - i, 7)).save(buf, "PNG")
        return Image(data=buf.getvalue(), media_type="image/png")

    bought = 0
    with standin(partial=True) as (provider, url):
        records = ListLedger()
        async with TeacherClient(
            "local:hash", api_key="t", base_url=url, ledger=records, budget=Budget("0.002")
        ) as client:
            for i in range(100):
                request = AnswerRequest(
                    image=image(i), prompt="Which digit?", max_output_tokens=200
                )
                try:
                    await client.answer([request])
                except BudgetExceededError:
                    break
                bought += 1
    assert 0 < bought < 100
    assert all(r.estimated and r.cost_usd == r.reserved_usd for r in records.records)
    assert client.budget.spent == sum(Decimal(r.cost_usd) for r in records.records)
    assert provider.billed_usd <= client.budget.spent <= Decimal("0.002")


async def test_usage_that_leaves_out_a_unit_is_charged_what_it_does_say_when_more() -> None:
    """A gateway's usage without completion_tokens was charged the reservation, even when
    the prompt tokens it did report cost 18 times that: no overrun, so a $0.01 cap let
    the provider bill $0.186 (74 answers of 20,000 prompt tokens, $0.00252 each, each
    charged its $0.000134 reservation). Now the first is charged what it reported plus
    the output it left out at our worst case: an overrun, which stops the run."""
    import io

    from PIL import Image as PILImage

    from vlmclient import AnswerRequest, BudgetOverrunError, Image

    def image(i: int) -> Image:
        buf = io.BytesIO()
        PILImage.new("RGB", (32, 32), (i, 255 - i, 7)).save(buf, "PNG")
        return Image(data=buf.getvalue(), media_type="image/png")

    with standin(partial=True, prompt_tokens=20_000) as (provider, url):
        records = ListLedger()
        async with TeacherClient(
            "local:hash", api_key="t", base_url=url, ledger=records, budget=Budget("0.01")
        ) as client:
            with pytest.raises(BudgetOverrunError):
                for i in range(100):
                    request = AnswerRequest(
                        image=image(i), prompt="Which digit?", max_output_tokens=200
                    )
                    await client.answer([request])
    assert provider.requests == 1
    [record] = records.records
    assert record.estimated and Decimal(record.cost_usd) > Decimal(record.reserved_usd)
    assert client.budget.spent == Decimal(record.cost_usd) == provider.billed_usd
    assert client.budget.overruns == 1


@pytest.mark.parametrize("status", [408, 502, 504, 520, 524])
def test_a_gateway_timeout_is_charged_since_the_provider_behind_it_may_have_billed(
    digits: Path, tmp_path: Path, status: int
) -> None:
    """Before: each 504 was released at $0 and retried, so the ledger missed every
    request the provider behind the gateway had billed before the gateway gave up; a
    proxy's 502 and Cloudflare's 520 (the upstream's answer lost) still were, until
    2026-12-05: four billed attempts, $0 in the ledger. A 408 (LiteLLM's proxy when its
    upstream timeout fires after forwarding; Bedrock's model timeout) was released at $0
    and not even retried until 2026-12-08."""
    cache = tmp_path / "cache"
    with standin(gateway_timeouts=3, gateway_status=status) as (provider, url):
        assert harvest(url, digits, cache, "--budget", "1") == 0
    records = ledger(cache)
    timeouts = [r for r in records if r.outcome == f"http_{status}"]
    assert len(timeouts) == 3
    assert all(r.estimated and r.cost_usd == r.reserved_usd for r in timeouts)
    assert paid(records) >= provider.billed_usd > 0


@pytest.mark.parametrize("transport", ["default", "httpx"])
async def test_a_billed_200_that_cannot_be_decoded_is_charged_once_not_retried(
    transport: str,
) -> None:
    """Before: the decoding error passed for a dropped connection: charged and retried,
    so the provider billed the one request four times."""
    with standin(garbled=True) as (provider, url):
        records = ListLedger()
        extra = {} if transport == "default" else {"transport": httpx.AsyncHTTPTransport()}
        async with TeacherClient(
            "local:hash",
            api_key="t",
            base_url=url,
            ledger=records,
            retry=RetryPolicy(max_attempts=4, initial_delay=0.01),
            **extra,
        ) as client:
            with pytest.raises(ResponseValidationError):
                await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert provider.requests == 1 and client.stats.retries == 0
    [rec] = records.records
    assert rec.outcome == "malformed" and rec.estimated
    assert Decimal(rec.cost_usd) == Decimal(rec.reserved_usd) >= provider.billed_usd > 0


async def test_usage_counts_sent_as_floats_or_digit_strings_are_charged_and_overrun() -> None:
    """Before: a usage block saying {"prompt_tokens": 20000.0, "completion_tokens": "200",
    "total_tokens": 20200.0} was read as no usage at all (only ints counted), so each
    answer was charged its $0.000134 reservation while the provider billed $0.00252: the
    ledger below the bill and no overrun. Now a finite non-negative number (or a string
    of digits) is a count: the first answer is charged its bill and overruns."""
    import io

    from PIL import Image as PILImage

    from distill.server import ServerThread
    from vlmclient import AnswerRequest, BudgetOverrunError, Image

    buf = io.BytesIO()
    PILImage.new("RGB", (32, 32), (3, 200, 7)).save(buf, "PNG")
    image = Image(data=buf.getvalue(), media_type="image/png")

    provider = StandIn(prompt_tokens=20_000)
    answer = provider.answer

    def counts_as_floats(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, out = answer(path, body)
        usage = out["usage"]
        usage["prompt_tokens"] = float(usage["prompt_tokens"])
        usage["total_tokens"] = float(usage["total_tokens"])
        usage["completion_tokens"] = f" {usage['completion_tokens']} "
        return status, out

    provider.answer = counts_as_floats  # type: ignore[method-assign]
    records = ListLedger()
    with ServerThread(provider) as server:
        async with TeacherClient(
            "local:hash",
            api_key="t",
            base_url=server.base_url,
            ledger=records,
            budget=Budget("0.01"),
        ) as client:
            with pytest.raises(BudgetOverrunError):
                for _ in range(10):
                    request = AnswerRequest(
                        image=image, prompt="Which digit?", max_output_tokens=200
                    )
                    await client.answer([request])
    assert provider.requests == 1
    [record] = records.records
    assert not record.estimated
    assert Decimal(record.cost_usd) > Decimal(record.reserved_usd)
    assert client.budget.spent == Decimal(record.cost_usd) == provider.billed_usd
    assert client.budget.overruns == 1


# -- 7. an overrun ------------------------------------------------------------------------


def test_an_overrun_stops_sending_is_printed_exits_3_and_is_reported(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the provider billed 3x, the run went on to the end and exited 0."""
    cache = tmp_path / "cache"
    with standin(bill_factor=3) as (provider, url):
        code = harvest(url, digits, cache, "--budget", "1")
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the tmp path's length
    assert code == 3
    # the prompts (two requests, billed within the estimate), then one image request
    # that overran: nothing was sent after it
    assert provider.requests == 3
    assert "OVERRUN" in out and "'local:*'" in out and "3.00x" in out
    assert "35 items remain" in out and "finishing would cost about" in out
    records = ledger(cache)
    assert paid(records) == provider.billed_usd  # the ledger says what was billed
    [over] = [r for r in records if Decimal(r.cost_usd) > Decimal(r.reserved_usd)]
    assert over.provider_usage == {"images": 15, "input_tokens": 0}  # the provider's units
    assert main(["report", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [seen] = report["overruns"]
    assert (seen["cost_usd"], seen["reserved_usd"]) == (over.cost_usd, over.reserved_usd)
    assert Decimal(report["overrun_usd"]) == Decimal(over.cost_usd) - Decimal(over.reserved_usd)
    [group] = [g for g in report["by_kind"] if g["kind"] == "image_embedding"]
    assert group["overruns"] == 1
    assert main(["report", str(cache)]) == 0
    assert "1 overruns" in capsys.readouterr().out


def test_after_an_overrun_remaining_estimates_are_scaled_by_what_was_billed(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    with standin(bill_factor=3) as (_, url):
        harvest(url, digits, cache, "--budget", "1")
    out = " ".join(capsys.readouterr().out.split())
    about = Decimal(out.split("finishing would cost about $")[1].split()[0].rstrip("."))
    # 35 images at $0.0001 is what our price table says; the provider bills 3x that
    assert about == Decimal("0.0105")


# -- 8. the provider's own units, and old prices -----------------------------------------


def test_every_billed_record_keeps_the_providers_own_usage(digits: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with standin() as (provider, url):
        assert harvest(url, digits, cache, "--budget", "1") == 0
    records = [r for r in ledger(cache) if r.outcome == "ok"]
    assert paid(records) == provider.billed_usd
    images = [r for r in records if r.kind == "image_embedding"]
    assert [r.provider_usage for r in images] == [{"images": 5, "input_tokens": 0}] * 8
    assert all(not r.estimated and Decimal(r.reserved_usd) >= Decimal(r.cost_usd) for r in records)


def test_a_price_read_long_ago_is_warned_about(
    digits: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prices = {
        "usd_per_image": "0.0001",
        "usd_per_1m_input_tokens": "0.12",
        "usd_per_1m_output_tokens": "0.60",
    }
    for read_on, warned in (("2000-01-01", True), (date.today().isoformat(), False)):
        caplog.clear()
        price_file = tmp_path / f"prices-{read_on}.json"
        price_file.write_text(json.dumps({"local:*": {**prices, "verified_on": read_on}}))
        with caplog.at_level(logging.WARNING, logger="vlmclient"):
            code = harvest(
                "http://127.0.0.1:9",
                digits,
                tmp_path / "cache",
                "--dry-run",
                "--price-file",
                str(price_file),
            )
        assert code == 0
        said = [r.getMessage() for r in caplog.records if "days ago" in r.getMessage()]
        assert bool(said) is warned, said
        if warned:
            assert "'local:*'" in said[0] and "2000-01-01" in said[0]


def test_every_built_in_price_says_when_it_was_read() -> None:
    for name, price in PriceTable.default().prices.items():
        if price.status == "retired":  # refused before its (absent) price is read
            assert price.shutdown_on, name
            continue
        assert price.verified_on, name
        date.fromisoformat(price.verified_on)  # the staleness warning can read it


# -- 10. billed answers we cannot use ------------------------------------------------------


def test_unusable_answers_are_not_retried_and_the_breaker_stops_the_run(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: every chunk was sent (and billed) up to 4 times: 36 requests, exit 1."""
    cache = tmp_path / "cache"
    with standin(malformed=True) as (provider, url):
        code = harvest(url, digits, cache, "--budget", "1")
    out = " ".join(capsys.readouterr().out.split())
    assert code == 1
    assert provider.requests == MALFORMED_STOP_MIN
    assert f"{MALFORMED_STOP_MIN} of {MALFORMED_STOP_MIN} billed answers" in out
    assert "none was retried" in out
    records = [r for r in ledger(cache) if r.outcome in SENT]
    assert [r.outcome for r in records] == ["malformed"] * MALFORMED_STOP_MIN
    assert paid(records) == provider.billed_usd  # each charged what it billed


# -- 11. the endpoint is part of the cache key ---------------------------------------------


async def test_two_servers_with_one_model_name_do_not_share_answers(tmp_path: Path) -> None:
    """Before: server B's request was answered from the cache with server A's vector."""
    texts = [TextEmbeddingRequest(text="a photo of a cat")]
    with (
        standin(salt="A") as (a, url_a),
        standin(salt="B") as (b, url_b),
        ResponseCache(tmp_path / "responses") as cache,
    ):
        async with TeacherClient(
            "openai:text-embedding-3-small", api_key="k", base_url=url_a + "/v1", cache=cache
        ) as client_a:
            [from_a] = await client_a.embed_texts(texts)
        async with TeacherClient(
            "openai:text-embedding-3-small", api_key="k", base_url=url_b + "/v1", cache=cache
        ) as client_b:
            [from_b] = await client_b.embed_texts(texts)
        async with TeacherClient(
            "openai:text-embedding-3-small", api_key="k", base_url=url_a + "/v1/", cache=cache
        ) as again_a:
            [hit] = await again_a.embed_texts(texts)
    assert (a.requests, b.requests) == (1, 1)
    assert not from_b.cached and not np.allclose(from_a.vector, from_b.vector)
    assert hit.cached and np.allclose(hit.vector, from_a.vector)  # same server, same entry
    assert client_a.fingerprint != client_b.fingerprint
    assert client_a.fingerprint == again_a.fingerprint


async def test_the_providers_usage_is_kept_bounded_and_without_the_key() -> None:
    """A hostile usage block: the key echoed as a field name and a value, junk, nesting."""
    secret = "sk-usage-echo-secret-1234"

    def reply(request: httpx.Request) -> httpx.Response:
        usage = {
            "prompt_tokens": 7,
            secret: 1,
            "echo": secret,
            "cost": "0.0000014",
            "note": "not a number",
            "deep": {"a": {"b": {"c": {"d": 1}}}},
            "many": {f"f{i}": i for i in range(500)},
        }
        body = {"data": [{"index": 0, "embedding": [0.1, 0.2]}], "usage": usage}
        return httpx.Response(200, json=body)

    records = ListLedger()
    async with TeacherClient(
        "openai:text-embedding-3-small",
        api_key=secret,
        transport=httpx.MockTransport(reply),
        ledger=records,
    ) as client:
        await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    [rec] = records.records
    kept = rec.provider_usage
    assert secret not in json.dumps(kept)
    assert kept["prompt_tokens"] == 7 and kept["cost"] == "0.0000014"
    assert "note" not in kept and "d" not in json.dumps(kept)
    assert len(json.dumps(kept)) < 2000  # bounded, whatever the server sends
    assert not rec.estimated and rec.usage == {"input_tokens": 7}


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_a_3x_bill_passes_the_cap_by_at_most_what_was_in_flight(
    digits: Path, tmp_path: Path, concurrency: str
) -> None:
    """The issue's "done when": a $0.003 budget, a provider billing 3x."""
    cache = tmp_path / "cache"
    budget = Decimal("0.003")
    with standin(bill_factor=3) as (provider, url):
        code = harvest(url, digits, cache, "--budget", str(budget), "--concurrency", concurrency)
    records = [r for r in ledger(cache) if r.outcome in SENT]
    assert code == 3
    assert paid(records) == provider.billed_usd  # the ledger is never below the bill
    excess = [Decimal(r.cost_usd) - Decimal(r.reserved_usd) for r in records]
    over = sorted((e for e in excess if e > 0), reverse=True)
    assert over  # it did overrun, and said so (exit 3)
    in_flight = int(concurrency)
    # what was reserved never passes the cap; the bills only by the overruns in flight
    assert sum(Decimal(r.reserved_usd) for r in records) <= budget
    assert provider.billed_usd <= budget + sum(over[:in_flight])
    assert len(over) <= in_flight


async def test_only_requests_about_to_be_sent_hold_a_reservation() -> None:
    """Before: every request queued for one of the ``concurrency`` slots reserved its money
    first, so a kill -9 left all of them as orphaned reservations, charged by the next
    run (6 at --concurrency 3 in a reviewer's run, for 3 requests the server had billed)."""
    import asyncio

    from distill.server import Faults
    from tests.reliability.conftest import TOKEN, teacher

    with teacher(Faults(latency_ms=300)) as served:
        async with TeacherClient(
            "local:hash",
            api_key=TOKEN,
            base_url=served.url,
            budget=Budget("1"),
            concurrency=2,
            batch_size=1,
        ) as client:
            texts = [TextEmbeddingRequest(text=f"a photo of digit {i}") for i in range(8)]
            _, one = client.plan("text_embedding", texts[:1])  # each text's worst case
            buying = asyncio.ensure_future(client.embed_texts(texts))
            await asyncio.sleep(0.15)  # the first two are on the wire, six wait for a slot
            held = client.budget.reserved
            await buying
    assert one > 0 and held == 2 * one  # two reservations, not eight
    assert client.budget.reserved == 0 and client.budget.requests == 8


def test_report_prints_an_overrun_whose_request_id_holds_brackets(
    digits: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the overrun line of `report` went through rich markup with the provider's
    request id in it: an id holding "[/x]" was a MarkupError traceback (exit 1, no report),
    and one holding "[b]" lost it silently."""
    from distill.server import ServerThread

    monkeypatch.setenv("COLUMNS", "200")
    provider = StandIn(bill_factor=3)
    answer = provider.answer

    def odd_ids(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, out = answer(path, body)
        if "id" in out:
            out["id"] = f"gw[/x][b]{out['id']}"
        return status, out

    monkeypatch.setattr(provider, "answer", odd_ids)
    cache = tmp_path / "cache"
    with ServerThread(provider) as server:
        assert harvest(server.base_url, digits, cache, "--budget", "1") == 3
    [over] = [r for r in ledger(cache) if Decimal(r.cost_usd) > Decimal(r.reserved_usd)]
    assert over.request_id is not None and over.request_id.startswith("gw[/x][b]")
    capsys.readouterr()
    assert main(["report", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"(request id {over.request_id})" in out, out


@pytest.mark.parametrize("shared", [False, True])
async def test_the_budget_holds_under_a_callers_low_decimal_precision(
    tmp_path: Path, shared: bool
) -> None:
    """Decimal arithmetic rounds to the calling context: a library caller that had set
    ``decimal.getcontext().prec = 2`` (the Python tutorial sets 6) had every sum of the
    budget rounded (0.00049 + 0.0000025 is 0.00049 at two digits), so a $0.0005 cap never
    filled and every request went out. Dollar arithmetic now runs in a context of its own."""
    import decimal

    from cache.coordination import Coordinator
    from vlmclient import BudgetExceededError, Price, SharedBudget

    price = Price(usd_per_1m_input_tokens=Decimal("1.234"))
    tokens = price.usd_per_1m_input_tokens
    coord = Coordinator(tmp_path / "c.db", ledger_path=tmp_path / "ledger.jsonl")
    budget = SharedBudget(coord, "local:hash", total=Decimal("0.0005")) if shared else (
        Budget("0.0005"))  # fmt: skip
    with standin(usd_per_1m_tokens=tokens) as (provider, url), decimal.localcontext() as ctx:
        ctx.prec = 2
        async with TeacherClient(
            "local:hash", api_key="t", base_url=url, budget=budget, price=price
        ) as client:
            with pytest.raises(BudgetExceededError):
                for i in range(400):
                    await client.embed_texts([TextEmbeddingRequest(text=f"cat {i:03d}")])
    # 2 tokens billed a request at $1.234 / M (reserved at the prompt's bytes): about 200
    # requests fit in $0.0005, and they are charged exactly
    assert client.budget.spent == provider.billed_usd == provider.requests * Decimal("0.000002468")
    assert provider.billed_usd <= Decimal("0.0005") < provider.billed_usd + Decimal("0.00001")
    if shared:
        assert budget.ledger_spent == provider.billed_usd
    coord.close()


async def test_a_process_starting_between_a_ledger_line_and_its_settle_counts_it_once(
    tmp_path: Path,
) -> None:
    """A harvest writes each answer's ledger line, then settles it in coordination.db. A
    second process of the cache starting in between raised the shared total to the
    ledger's (the line included), and the settle then added the same amount: one $ answer
    counted twice for good, and the cap reached early with a message quoting the doubled
    total (an audit, 2026-12-08). The ledger line names its open reservation, which the
    second process's reconcile leaves to the settle."""
    from cache import SpendLedger
    from cache.coordination import Coordinator
    from vlmclient import SharedBudget

    cache = tmp_path / "cache"
    ledger_path = cache / "ledger.jsonl"
    coord = Coordinator(cache / "coordination.db", ledger_path=ledger_path)
    others: list[Any] = []
    real_settle = Coordinator.settle

    def settle_after_another_process_starts(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not others:  # the second process: opens the cache, reads the total
            other = Coordinator(cache / "coordination.db", ledger_path=ledger_path)
            others.append((other, other.spend("local:hash").settled))
        return real_settle(self, *args, **kwargs)

    with standin() as (provider, url), SpendLedger(ledger_path) as ledger:
        budget = SharedBudget(coord, "local:hash", total=Decimal("1"))
        Coordinator.settle = settle_after_another_process_starts  # type: ignore[method-assign]
        try:
            async with TeacherClient("local:hash", api_key="t", base_url=url, budget=budget,
                                     ledger=ledger) as client:  # fmt: skip
                await client.embed_texts([TextEmbeddingRequest(text="a cat")])
        finally:
            Coordinator.settle = real_settle  # type: ignore[method-assign]
    in_ledger = sum(Decimal(r.cost_usd) for r in SpendLedger.read(ledger_path))
    assert in_ledger == provider.billed_usd > 0
    other, seen = others[0]
    assert seen == 0  # the line's reservation was still open: left to its settle
    assert coord.spend("local:hash").settled == in_ledger  # not twice
    assert other.spend("local:hash").settled == in_ledger
    other.close()
    coord.close()

"""Money safety at the CLI boundary (issue 13, items 2, 3, 12, 13, 15).

Every test drives the real CLI (``distill.cli.main``) against the local teacher on
127.0.0.1, wrapped in a small ASGI layer that counts the API requests it receives (and,
when told, answers every one with an error status as a provider would). Where the rule is
"refuse", the test asserts that nothing reached the server and nothing was billed.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from cache import ResponseCache, SpendLedger, totals
from distill.cli import main
from distill.cli.validate import MAX_VIEWS
from distill.labelfree.pseudolabel import MAX_FAILURES_IN_A_ROW
from distill.server import Faults, HashBackend, ServerConfig, ServerThread, create_app
from tests.reliability.conftest import TOKEN, harvest_argv, ledger, paid
from vlmclient.price_check import free_units
from vlmclient.prices import PriceTable
from vlmclient.providers import PROVIDERS
from vlmclient.retry import DEFAULT_MAX_ATTEMPTS, RetryPolicy


class Gate:
    """ASGI wrapper: counts API requests; with ``status`` set, answers each with it."""

    def __init__(self, app: Any, status: int | None = None) -> None:
        self.app = app
        self.status = status
        self.received = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(("/v1/", "/v2/")):
            self.received += 1
            if self.status is not None:
                message = f"stand-in provider says {self.status}"
                body = json.dumps({"error": {"message": message, "type": "test"}}).encode()
                headers = [(b"content-type", b"application/json"), (b"retry-after-ms", b"1")]
                if 300 <= self.status < 400:
                    headers.append((b"location", b"https://gw.example/v2?key=sk-loc-secret"))
                await send({"type": "http.response.start", "status": self.status,
                            "headers": headers})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class Served:
    def __init__(self, url: str, gate: Gate, app: Any) -> None:
        self.url, self.gate, self.app = url, gate, app

    def billed_requests(self) -> int:
        return len(self.app.state.teacher.billing.bills())


@contextmanager
def serve(status: int | None = None, faults: Faults | None = None) -> Iterator[Served]:
    app = create_app(
        ServerConfig(token=SecretStr(TOKEN), faults=faults or Faults()), HashBackend(dim=16)
    )
    gate = Gate(app, status)
    with ServerThread(gate) as server:
        yield Served(server.base_url, gate, app)


def _png(path: Path, seed: int) -> None:
    arr = np.random.default_rng(seed).integers(0, 255, (12, 12, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    path.write_bytes(buf.getvalue())


def labelled(root: Path, per_class: int = 3, seed: int = 0) -> Path:
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _png(root / name / f"{i}.png", seed + 100 * c + i)
    return root


def unlabelled(tmp: Path, n: int) -> tuple[Path, Path]:
    folder = tmp / "unlabelled"
    folder.mkdir()
    for i in range(n):
        _png(folder / f"img{i:02d}.png", 1000 + i)
    classes = tmp / "classes.txt"
    classes.write_text("cat\ndog\n")
    return folder, classes


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's client retries as usual, 10 ms apart: what is checked is which requests
    are retried and when the harvest stops, not how long each retry waits."""
    import vlmclient.client

    quick = functools.partial(RetryPolicy, initial_delay=0.01)
    monkeypatch.setattr(vlmclient.client, "RetryPolicy", quick)


def usage_exit(argv: list[str]) -> int:
    """main()'s exit code, whether it returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


# -- item 3: numeric flags and config keys ------------------------------------------------

BAD_FLAGS = [
    ("--timeout", "-1"), ("--timeout", "0"), ("--timeout", "nan"), ("--timeout", "inf"),
    ("--rpm", "0"), ("--rpm", "nan"), ("--rpm", "inf"), ("--tpm", "0"), ("--tpm", "-5"),
    ("--budget", "nan"), ("--budget", "-1"), ("--budget", "inf"), ("--budget", "sNaN"),
    ("--concurrency", "0"), ("--concurrency", "100000"), ("--batch-size", "0"),
    ("--max-requests", "0"), ("--max-items", "-3"), ("--views", "0"), ("--views", "100000"),
    ("--views", str(MAX_VIEWS + 1)), ("--rounds", "0"), ("--round-steps", "-1"),
    # a traceback (decimal.Overflow) past Decimal's exponent range; a million zeros printed
    ("--budget", "1e1000000"), ("--run-budget", "1e1000000"), ("--budget", "1e-1000000"),
]  # fmt: skip


@pytest.mark.parametrize(("flag", "value"), BAD_FLAGS)
def test_bad_numeric_flag_exits_2_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    data = labelled(tmp_path / "data")
    with serve() as srv:
        argv = harvest_argv(srv.url, data, tmp_path / "cache", f"{flag}={value}")
        assert usage_exit(argv) == 2
        assert srv.gate.received == 0
    assert f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "yaml_text",
    ["timeout: -1\n", "rpm: .nan\n", "budget: .inf\n", "views: 100000\n", "tpm: 0\n"],
)
def test_bad_numeric_config_key_exits_2_and_sends_nothing(tmp_path: Path, yaml_text: str) -> None:
    data = labelled(tmp_path / "data")
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    with serve() as srv:
        argv = harvest_argv(srv.url, data, tmp_path / "cache", "--config", str(config))
        assert usage_exit(argv) == 2
        assert srv.gate.received == 0


def test_pseudolabel_validates_the_same_flags(tmp_path: Path) -> None:
    folder, classes = unlabelled(tmp_path, 4)
    with serve() as srv:
        for flag, value in (("--timeout", "-1"), ("--budget", "nan"), ("--rpm", "0")):
            argv = [
                "pseudolabel", str(folder), "--class-file", str(classes), "--teacher",
                "local:hash", "--base-url", srv.url, "--cache", str(tmp_path / "c"),
                f"{flag}={value}",
            ]  # fmt: skip
            assert usage_exit(argv) == 2
        assert srv.gate.received == 0


# -- item 2: empty, zero, tiny, negative and partial prices --------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        {"usd_per_image": "0"},
        {"usd_per_image": "-0"},
        {"usd_per_image": "1e-30"},
        {"usd_per_image": "0", "usd_per_1m_input_tokens": "0", "usd_per_1m_output_tokens": "0"},
        {"usd_per_1m_input_tokens": "0"},
        {"usd_per_image": "-0.0001"},
        {"usd_per_image": "NaN"},
        {"usd_per_image": "Infinity"},
        {"usd_per_image": True},
    ],
)
def test_a_price_that_makes_a_billed_unit_free_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: dict[str, Any]
) -> None:
    data = labelled(tmp_path / "data")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"local:hash": entry}))
    with serve() as srv:
        argv = harvest_argv(srv.url, data, tmp_path / "cache", "--price-file", str(prices))
        assert usage_exit(argv) == 2
        assert srv.gate.received == 0 and srv.billed_requests() == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert "usd_per_" in err or "price" in err


@pytest.mark.parametrize(
    "teacher", ["openai:gpt-9-mini", "anthropic:claude-haiku-9", "gemini:gemini-9-flash"]
)
def test_an_answer_price_without_output_tokens_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    teacher: str,
) -> None:
    """Before: for a chat model with no built-in entry, a --price-file entry with an input
    price only (the form the missing-price error itself suggested) was accepted, and every
    output token was free to the budget."""
    for env in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.setenv(env, "sk-test-0123456789")
    folder, classes = unlabelled(tmp_path, 2)
    prices = tmp_path / "prices.json"
    entry = {"usd_per_1m_input_tokens": "0.25", "max_image_tokens": 1000}
    prices.write_text(json.dumps({teacher: entry}))
    with serve() as srv:
        argv = [
            "pseudolabel", str(folder), "--class-file", str(classes), "--teacher", teacher,
            "--base-url", srv.url, "--cache", str(tmp_path / "c"), "--budget", "1",
            "--price-file", str(prices), "--route", "answer", "--check", "resample",
        ]  # fmt: skip
        assert usage_exit(argv) == 2
        assert srv.gate.received == 0
    err = capsys.readouterr().err
    assert "answers: usd_per_1m_output_tokens is 0" in err


def new_model_pseudolabel_argv(tmp_path: Path, url: str, max_image_tokens: int) -> list[str]:
    """`pseudolabel` of two images by ``openai:gpt-9-mini`` (no built-in price) at ``url``,
    priced by a price file with ``max_image_tokens``."""
    folder, classes = unlabelled(tmp_path, 2)
    prices = tmp_path / "prices.json"
    entry = {
        "usd_per_1m_input_tokens": "0.25",
        "usd_per_1m_output_tokens": "2.00",
        "max_image_tokens": max_image_tokens,
    }
    prices.write_text(json.dumps({"openai:gpt-9-mini": entry}))
    return [
        "pseudolabel", str(folder), "--class-file", str(classes), "--teacher",
        "openai:gpt-9-mini", "--base-url", url + "/v1", "--cache", str(tmp_path / "c"),
        "--budget", "1", "--price-file", str(prices), "--route", "answer", "--check", "none",
    ]  # fmt: skip


def test_a_new_openai_model_priced_as_the_errors_say_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the free-price check estimated its sample answer without the entry's
    max_image_tokens, so the entry the image-token error asks for was refused with that
    same error, and a new OpenAI-compatible chat model could not be used at all."""
    monkeypatch.setenv("OPENAI_API_KEY", TOKEN)  # the local server's bearer token
    with serve() as srv:
        assert usage_exit(new_model_pseudolabel_argv(tmp_path, srv.url, 1000)) == 0
        assert srv.gate.received > 0  # past the price checks: the answers were bought


def test_max_image_tokens_zero_is_refused_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a price-file entry with ``"max_image_tokens": 0`` was accepted, every image
    was reserved as free, and the first answers were bought and overran the budget."""
    monkeypatch.setenv("OPENAI_API_KEY", TOKEN)  # the local server's bearer token
    with serve() as srv:
        assert usage_exit(new_model_pseudolabel_argv(tmp_path, srv.url, 0)) == 2
        assert srv.gate.received == 0 and srv.billed_requests() == 0
    err = capsys.readouterr().err
    assert "openai:gpt-9-mini.max_image_tokens must be a whole number >= 1" in err, err
    assert "not 0" in err


def test_the_entry_the_missing_price_error_suggests_is_enough_for_a_new_openai_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "no price known for openai:MODEL" suggested an entry without
    max_image_tokens; written to a --price-file as given, the run was refused again
    ("cannot bound the image tokens"). The suggested entry now runs as it is."""
    monkeypatch.setenv("OPENAI_API_KEY", TOKEN)  # the local server's bearer token
    folder, classes = unlabelled(tmp_path, 2)
    prices = tmp_path / "prices.json"
    with serve() as srv:
        argv = [
            "pseudolabel", str(folder), "--class-file", str(classes), "--teacher",
            "openai:gpt-9-mini", "--base-url", srv.url + "/v1", "--cache", str(tmp_path / "c"),
            "--budget", "1", "--route", "answer", "--check", "none",
        ]  # fmt: skip
        assert usage_exit(argv) == 2
        err = capsys.readouterr().err
        assert "no price known for openai:gpt-9-mini" in err
        suggested = re.search(r'\{"openai:gpt-9-mini": \{[^}]*\}\}', err)
        assert suggested is not None, err
        prices.write_text(suggested.group(0))
        assert usage_exit([*argv, "--price-file", str(prices)]) == 0, capsys.readouterr().err
        assert srv.gate.received > 0  # past the price checks: the answers were bought


def test_allow_free_runs_a_free_teacher(tmp_path: Path) -> None:
    data = labelled(tmp_path / "data")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"local:hash": {"usd_per_image": "0"}}))
    with serve() as srv:
        argv = harvest_argv(
            srv.url, data, tmp_path / "cache", "--price-file", str(prices), "--allow-free"
        )
        assert usage_exit(argv) == 0
        assert srv.billed_requests() > 0


@pytest.mark.parametrize("how", ["prices", "price"])
def test_a_library_client_refuses_a_free_price_before_sending(tmp_path: Path, how: str) -> None:
    """Before: only the CLI checked prices; ``TeacherClient`` with a price file (or a
    ``Price``) that makes images free reserved $0 a request, so ``Budget("0.001")`` bought
    100 images, the server billed 10x the cap and the budget said $0 spent."""
    from vlmclient import Budget, ConfigurationError, ImageEmbeddingRequest, TeacherClient
    from vlmclient import Image as Picture
    from vlmclient.models import Price
    from vlmclient.prices import load_prices

    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"local:hash": {"usd_per_image": "0"}}))
    table = load_prices(prices) if how == "prices" else None
    price = Price(usd_per_1m_input_tokens=Decimal("0.12")) if how == "price" else None
    _png(tmp_path / "a.png", 0)
    request = ImageEmbeddingRequest(
        image=Picture(data=(tmp_path / "a.png").read_bytes(), media_type="image/png")
    )

    async def buy(allow_free: bool) -> int:
        async with TeacherClient(
            "local:hash", api_key=TOKEN, base_url=srv.url, prices=table, price=price,
            budget=Budget("0.001"), allow_free=allow_free,
        ) as client:  # fmt: skip
            return len(await client.embed_images([request]))

    with serve() as srv:
        with pytest.raises(ConfigurationError, match=r"usd_per_image is 0.*allow_free=True"):
            asyncio.run(buy(False))
        assert srv.gate.received == 0 and srv.billed_requests() == 0
        assert asyncio.run(buy(True)) == 1  # a teacher that really is free: said so
        assert srv.billed_requests() == 1


def test_a_harvest_whose_requests_time_out_does_not_say_nothing_paid_is_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: every request timed out (charged at its reservation: the provider may have
    billed it), and the summary still said "run again to retry them (nothing paid is
    lost)", an invitation to pay again for the same timeouts."""
    data = labelled(tmp_path / "data")
    with serve(faults=Faults(latency_ms=600)) as srv:
        argv = harvest_argv(srv.url, data, tmp_path / "cache", "--timeout", "0.1",
                            "--budget", "0.01", "--batch-size", "16")  # fmt: skip
        assert usage_exit(argv) == 1
    said = " ".join(capsys.readouterr().out.split())  # rich wraps at the tmp path's length
    assert "nothing paid is lost" not in said
    assert "charged at their worst case with no answer" in said and "--timeout" in said
    charged = [r for r in ledger(tmp_path / "cache") if r.outcome == "timeout"]
    assert charged and all(Decimal(r.cost_usd) > 0 for r in charged)


def test_a_partial_override_keeps_the_built_in_image_price(tmp_path: Path) -> None:
    """Only the text price in the file: images must still cost the built-in $0.0001 each."""
    data = labelled(tmp_path / "data")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"local:hash": {"usd_per_1m_input_tokens": "0.5"}}))
    with serve() as srv:
        argv = harvest_argv(srv.url, data, tmp_path / "cache", "--price-file", str(prices))
        assert usage_exit(argv) == 0
    records = [r for r in ledger(tmp_path / "cache") if r.kind == "image_embedding"]
    assert sum(r.items for r in records) == 6
    assert paid(records) == Decimal("0.0006")


def test_an_empty_entry_is_the_built_in_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"cohere:embed-v4.0": {}}))
    assert main(["providers", "--json", "--price-file", str(prices)]) == 0
    rows = {r["provider"]: r for r in json.loads(capsys.readouterr().out)}
    (v4,) = [m for m in rows["cohere"]["models"] if m["model"] == "embed-v4.0"]
    assert v4["prices"] == {"usd_per_1m_input_tokens": "0.12", "usd_per_1m_image_tokens": "0.47"}


def test_no_built_in_price_is_free_for_what_its_teacher_offers() -> None:
    """The refusal rule must not fire on the shipped table (no false alarms)."""
    table = PriceTable.default()
    for key, price in table.prices.items():
        if price.status == "retired":  # refused before any price is looked at
            continue
        name, _, model = key.partition(":")
        model = "hash" if model == "*" else model
        kinds = sorted(PROVIDERS[name].kinds_for(model))
        assert free_units(f"{name}:{model}", price, kinds) == [], key  # type: ignore[arg-type]


# -- item 13: teacher capabilities are checked before anything is sent ---------------------


def test_text_only_teacher_in_harvest_is_refused_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-secret")
    data = labelled(tmp_path / "data")
    with serve() as srv:
        argv = harvest_argv(srv.url, data, tmp_path / "cache")
        argv[argv.index("local:hash")] = "openai:text-embedding-3-small"
        argv[argv.index("--base-url") + 1] = srv.url + "/v1"
        assert usage_exit(argv) == 2
        assert srv.gate.received == 0
    assert "cannot give image embeddings" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("teacher", "route", "lacking"),
    [
        ("openai:text-embedding-3-small", "answer", "answers"),
        ("openai:gpt-4o-mini", "zeroshot", "image embeddings"),
        ("anthropic:claude-haiku-4-5", "zeroshot", "image embeddings"),
    ],
)
def test_pseudolabel_teacher_that_cannot_answer_is_refused_before_sending(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    teacher: str,
    route: str,
    lacking: str,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-secret")
    folder, classes = unlabelled(tmp_path, 4)
    with serve() as srv:
        argv = [
            "pseudolabel", str(folder), "--class-file", str(classes), "--teacher", teacher,
            "--base-url", srv.url + "/v1", "--cache", str(tmp_path / "c"), "--route", route,
            "--check", "none",
        ]  # fmt: skip
        assert usage_exit(argv) == 2
        assert srv.gate.received == 0
    assert f"cannot give {lacking}" in capsys.readouterr().err


# -- item 12: pseudolabel stops on errors and says which -----------------------------------


def _pseudolabel(srv: Served, tmp_path: Path, folder: Path, classes: Path, *extra: str) -> int:
    return usage_exit(
        [
            "pseudolabel", str(folder), "--class-file", str(classes), "--teacher", "local:hash",
            "--base-url", srv.url, "--cache", str(tmp_path / "cache"), "--budget", "1",
            "--check", "none", *extra,
        ]
    )  # fmt: skip


def test_pseudolabel_stops_at_the_first_401_with_the_providers_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, classes = unlabelled(tmp_path, 12)
    with serve(status=401) as srv:
        assert _pseudolabel(srv, tmp_path, folder, classes, "--concurrency", "1") == 1
        # one request, plus at most the one queued behind it (IN_FLIGHT_PER_SLOT = 2)
        assert srv.gate.received <= 2
    captured = capsys.readouterr()
    assert "stand-in provider says 401" in captured.err
    assert "stopped by the budget" not in captured.out


@pytest.mark.parametrize("status", [400, 500])
def test_pseudolabel_errors_are_not_a_budget_stop_and_a_run_of_them_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    folder, classes = unlabelled(tmp_path, 40)
    attempts = DEFAULT_MAX_ATTEMPTS if status >= 500 else 1
    with serve(status=status) as srv:
        assert _pseudolabel(srv, tmp_path, folder, classes, "--concurrency", "1") == 1
        assert srv.gate.received <= (MAX_FAILURES_IN_A_ROW + 2) * attempts
    out = capsys.readouterr().out
    assert "answers failed at the teacher" in out and f"says {status}" in out
    assert "stopped by the budget" not in out


def test_pseudolabel_against_an_all_malformed_server_does_not_burn_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, classes = unlabelled(tmp_path, 40)
    with serve(faults=Faults(malformed=1.0)) as srv:
        assert _pseudolabel(srv, tmp_path, folder, classes, "--concurrency", "1") == 1
        assert srv.billed_requests() <= (MAX_FAILURES_IN_A_ROW + 2) * DEFAULT_MAX_ATTEMPTS
    assert "stopped by the budget" not in capsys.readouterr().out


def test_pseudolabel_with_some_billed_unusable_answers_does_not_say_nothing_paid_is_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "N answers failed at the teacher ...; nothing paid is lost: fix the cause
    and run again", after answers billed and charged as 'malformed' (a rerun pays again)."""
    folder, classes = unlabelled(tmp_path, 40)
    with serve(faults=Faults(malformed=0.2, seed=3)) as srv:
        assert _pseudolabel(srv, tmp_path, folder, classes, "--concurrency", "1") == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "answers failed at the teacher" in out
    assert "nothing paid is lost" not in out and "billed answers could not be used" in out


def test_pseudolabel_failure_advice_after_unusable_answers_reads_as_a_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "6 answers failed at the teacher (last: ...); fix the cause, then 5 billed
    answers could not be used (charged, ...)": the advice was glued to "then", which only
    fits "run again to retry them"."""
    folder, classes = unlabelled(tmp_path, 40)
    with serve(faults=Faults(malformed=0.2, seed=3)) as srv:
        assert _pseudolabel(srv, tmp_path, folder, classes, "--concurrency", "1") == 1
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "answers failed at the teacher" in out, out
    assert re.search(r"then \d+ billed answers", out) is None, out
    assert re.search(r"fix the cause first; \d+ billed answers could not be used", out), out


# -- item 15: smaller footguns --------------------------------------------------------------


def test_yaml_config_with_a_duplicate_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = labelled(tmp_path / "data")
    config = tmp_path / "run.yaml"
    config.write_text("budget: 0.01\nconcurrency: 2\nbudget: 100\n")
    with serve() as srv:
        argv = harvest_argv(srv.url, data, tmp_path / "cache", "--config", str(config))
        assert usage_exit(argv) == 2
        assert srv.gate.received == 0
    err = capsys.readouterr().err
    assert "'budget' is given twice (line 3" in err and err.count("\n") == 1


def test_prune_of_paid_entries_asks_first_and_has_a_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = labelled(tmp_path / "data")
    cache = tmp_path / "cache"
    with serve() as srv:
        assert usage_exit(harvest_argv(srv.url, data, cache)) == 0

    def entries() -> int:
        with ResponseCache(cache / "responses") as c:
            return len(c)

    n = entries()
    assert n == 8  # 6 images + 2 prompts
    prune = ["cache", "prune", "--cache", str(cache), "--older-than-days", "0"]
    capsys.readouterr()
    assert usage_exit(prune) == 2  # no terminal to ask, no --yes: refused
    assert "pass --yes" in capsys.readouterr().err
    assert entries() == n
    assert usage_exit([*prune, "--dry-run"]) == 0
    assert f"would delete {n} entries" in capsys.readouterr().out
    assert entries() == n
    assert usage_exit([*prune, "--yes"]) == 0
    assert entries() == 0
    # before: nothing said, and the next harvest's refusal spoke of a lost database only
    said = " ".join(capsys.readouterr().out.split())
    assert "the next harvest refuses to buy them again unless you pass --allow-rebuy" in said
    with serve() as srv:
        assert usage_exit(harvest_argv(srv.url, data, cache)) == 2
        assert "emptied on purpose (`cache prune`)" in " ".join(capsys.readouterr().err.split())
        assert usage_exit(harvest_argv(srv.url, data, cache, "--allow-rebuy")) == 0
    assert entries() == n
    assert usage_exit(["cache", "prune", "--cache", str(cache), "--older-than-days", "-1"]) == 2


def test_an_empty_cache_a_live_partner_is_filling_is_not_taken_for_a_lost_one(
    tmp_path: Path,
) -> None:
    """Two harvests of one cache started together: the first records its first answers in
    the ledger, then caches them; the second, starting in between, saw an empty cache and a
    ledger of bought items and refused as if the database were lost (exit 2; found by CI
    in tests/e2e/test_two_processes.py). Here the partner is a live coordinator of the
    folder that holds the leases of answers in the ledger and caches them half a second
    later: the harvest waits for them and buys nothing. A live process holding no lease
    does not count."""
    import shutil
    import threading

    from cache.coordination import Coordinator

    data = labelled(tmp_path / "data")
    first, cache = tmp_path / "first", tmp_path / "cache"
    with serve() as srv:  # one server: its address is part of the cache keys
        assert usage_exit(harvest_argv(srv.url, data, first)) == 0
        with ResponseCache(first / "responses") as c:
            entries = [(k, c.get(k)) for k in c.iterkeys()]
        assert len(entries) == 8 and all(e is not None for _, e in entries)
        cache.mkdir()
        shutil.copy(first / "ledger.jsonl", cache / "ledger.jsonl")  # recorded, not cached
        keys = [k for k, _ in entries]
        ledger_path = cache / "ledger.jsonl"
        with Coordinator(cache / "coordination.db", ledger_path=ledger_path) as partner:
            assert partner.claim(keys) == set(keys)

            def cache_them() -> None:
                time.sleep(0.5)
                with ResponseCache(cache / "responses") as c:
                    c.set_many([(k, e) for k, e in entries if e is not None])
                partner.release(keys)

            writer = threading.Thread(target=cache_them)
            sent = srv.gate.received
            writer.start()
            code = usage_exit(harvest_argv(srv.url, data, cache))
            writer.join()
            assert code == 0
            assert srv.gate.received == sent  # every answer came from the partner
    # with no partner buying (one alive that holds no lease: a --dry-run, a run between
    # rounds), an empty cache with a ledger of bought items is refused
    shutil.rmtree(cache / "responses")
    with (
        Coordinator(cache / "coordination.db", ledger_path=cache / "ledger.jsonl"),
        serve() as srv,
    ):
        assert usage_exit(harvest_argv(srv.url, data, cache)) == 2
        assert srv.gate.received == 0


def test_report_skips_and_lists_implausible_ledger_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = labelled(tmp_path / "data")
    cache = tmp_path / "cache"
    with serve() as srv:
        assert usage_exit(harvest_argv(srv.url, data, cache)) == 0
    good = paid(ledger(cache))
    assert good > 0
    base = {"provider": "local", "model": "hash", "kind": "image_embedding", "items": 1,
            "outcome": "ok", "usage": {}, "saved_usd": "0"}  # fmt: skip
    bad = [
        {**base, "cost_usd": "-5"},
        {**base, "cost_usd": "NaN"},
        {**base, "cost_usd": "Infinity"},
        {**base, "cost_usd": "1e30"},
        {**base, "cost_usd": "0.1", "items": -1},
        {**base, "cost_usd": "0.1", "saved_usd": "-inf"},
    ]
    with (cache / "ledger.jsonl").open("a") as f:
        for rec in bad:
            f.write(json.dumps(rec) + "\n")
        f.write('{"provider": "local", "model": "hash", "kind": "x", "items": 1e400, '
                '"cost_usd": "0.1"}\n')  # fmt: skip
    capsys.readouterr()
    assert main(["report", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert Decimal(report["spent_usd"]) == good
    assert len(report["ledger_problems"]) == len(bad) + 1
    assert main(["report", str(cache)]) == 0
    assert capsys.readouterr().out.count("ledger: line") == len(bad) + 1


def test_items_remaining_after_a_budget_stop_count_only_uncached_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chunk stopped by the budget held cached images: only the uncached ones remain."""
    full = labelled(tmp_path / "full")
    half = tmp_path / "half"
    for name in ("cat", "dog"):
        (half / name).mkdir(parents=True)
    for src in ("cat/0.png", "cat/1.png", "dog/0.png"):
        (half / src).write_bytes((full / src).read_bytes())
    cache = tmp_path / "cache"
    with serve() as srv:
        assert usage_exit(harvest_argv(srv.url, half, cache)) == 0
        capsys.readouterr()
        # one chunk of 6 images (3 cached): the 3 new ones cost $0.0003 > $0.0002 (--budget
        # caps the ledger's total, so it is what the first run spent plus $0.0002)
        spent = totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd
        budget = str(spent + Decimal("0.0002"))
        argv = harvest_argv(srv.url, full, cache, "--batch-size", "6", budget=budget)
        assert usage_exit(argv) == 3
    with ResponseCache(cache / "responses") as c:
        left = 6 + 2 - len(c)  # items of the full set minus what the cache holds
    assert 0 < left < 3
    out = " ".join(capsys.readouterr().out.split())
    assert "stopped by the budget" in out and f" {left} items remain" in out


def test_the_client_refuses_a_kind_the_model_cannot_do_before_sending() -> None:
    """The library guard under the CLI check: no request reaches the server."""
    import asyncio

    from vlmclient import AnswerRequest, ConfigurationError, TeacherClient
    from vlmclient.models import Image as VImage

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    req = AnswerRequest(image=VImage.from_bytes(buf.getvalue()), prompt="which?")

    async def go(url: str) -> None:
        async with TeacherClient(
            "openai:text-embedding-3-small", api_key="sk-test", base_url=url + "/v1"
        ) as client:
            with pytest.raises(ConfigurationError, match="does not offer answers"):
                await client.answer([req])

    with serve() as srv:
        asyncio.run(go(srv.url))
        assert srv.gate.received == 0


@pytest.mark.parametrize(("flag", "value"), [("--lr", "inf"), ("--lambda", "nan")])
def test_train_refuses_non_finite_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    argv = [
        "train", str(tmp_path / "data"), "--teacher", "local:hash", "--out", str(tmp_path / "r"),
        "--cache", str(tmp_path / "c"), flag, value,
    ]  # fmt: skip
    assert usage_exit(argv) == 2
    assert "finite number" in capsys.readouterr().err


def test_a_config_value_outside_its_choices_is_refused(tmp_path: Path) -> None:
    """argparse never checks a default against ``choices``: the config loader must."""
    folder, classes = unlabelled(tmp_path, 4)
    config = tmp_path / "run.toml"
    config.write_text('route = "guess"\n')
    with serve() as srv:
        argv = [
            "pseudolabel", str(folder), "--class-file", str(classes), "--teacher", "local:hash",
            "--base-url", srv.url, "--cache", str(tmp_path / "c"), "--config", str(config),
        ]  # fmt: skip
        assert usage_exit(argv) == 2
        assert srv.gate.received == 0


def test_a_teacher_that_does_not_answer_stops_the_harvest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], quick_retries: None
) -> None:
    """A stopped teacher (here: a port nothing listens on) made every request wait out
    its retries, one chunk after another: about a minute and a hundred retries for a
    small harvest (until 2026-12-06). Three requests in a row without an answer stop it."""
    import socket

    data = labelled(tmp_path / "data", per_class=6)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and closed again: connections are refused
    argv = harvest_argv(f"http://127.0.0.1:{port}", data, tmp_path / "cache",
                        "--batch-size", "1", "--concurrency", "1")  # fmt: skip
    assert usage_exit(argv) == 1
    said = " ".join(capsys.readouterr().out.split())
    assert "the teacher does not answer: 3 requests in a row" in said
    assert not [r for r in ledger(tmp_path / "cache") if r.outcome == "ok"]


@pytest.mark.parametrize("status", [408, 429, 503, 504])
def test_a_teacher_that_refuses_every_request_stops_the_harvest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    """A provider rate-limiting or overloaded for good (429, 503), or a gateway whose
    upstream is down (504: charged, the provider may have billed), got every chunk of the
    harvest sent and retried: 4 requests an item here, and for 504 each one charged at
    its worst case, so the budget went on answers that never came (until 2026-12-06).
    A gateway's 408 (its upstream timed out after it forwarded the request) was released
    at $0 and never counted: every chunk was sent (until 2026-12-08).
    Three requests in a row failing after their retries stop it, as three unanswered do."""
    data = labelled(tmp_path / "data", per_class=20)
    with serve(status=status) as srv:
        argv = harvest_argv(srv.url, data, tmp_path / "cache",
                            "--batch-size", "1", "--concurrency", "1")  # fmt: skip
        assert usage_exit(argv) == 1
        # three requests in a row and what was already queued, not the 42 items' 168
        assert srv.gate.received <= 6 * DEFAULT_MAX_ATTEMPTS
    said = " ".join(capsys.readouterr().out.split())
    assert "requests in a row failed after their retries" in said
    assert f"HTTP {status}" in said and "does not answer" not in said
    charged = [r for r in ledger(tmp_path / "cache") if Decimal(r.cost_usd) > 0]
    assert len(charged) <= (6 * DEFAULT_MAX_ATTEMPTS if status in (408, 504) else 0)
    if status == 408:  # charged at the reservation: the provider behind may have billed
        assert charged


def test_a_harvest_with_billed_unusable_answers_does_not_say_nothing_paid_is_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: answers billed but unusable (truncated JSON, charged as 'malformed') ended
    with "run again to retry them (nothing paid is lost)", and the rerun paid for them
    again."""
    data = labelled(tmp_path / "data")
    with serve(faults=Faults(malformed=1.0)) as srv:
        argv = harvest_argv(srv.url, data, tmp_path / "cache", "--budget", "0.01",
                            "--batch-size", "16")  # fmt: skip
        assert usage_exit(argv) == 1
    said = " ".join(capsys.readouterr().out.split())
    assert "nothing paid is lost" not in said
    assert "billed answers could not be used" in said and "buys those items again" in said
    assert [r for r in ledger(tmp_path / "cache") if r.outcome == "malformed"]


@pytest.mark.parametrize("status", [301, 307, 308])
def test_a_redirect_stops_the_harvest_and_says_where_without_its_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    """Before: every item failed with the 3xx, without the Location, and the advice was
    "run again to retry them", which fails the same way on every rerun."""
    data = labelled(tmp_path / "data")
    with serve(status=status) as srv:
        argv = harvest_argv(srv.url, data, tmp_path / "cache", "--concurrency", "1")
        assert usage_exit(argv) == 1
        assert srv.gate.received <= 2  # the first answer stops it (one more may be queued)
    out = " ".join(capsys.readouterr().out.split())
    assert "redirects to https://gw.example/v2;" in out and "sk-loc-secret" not in out
    assert "run again to retry" not in out

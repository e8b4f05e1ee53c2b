"""`vlm-distill report`: what it says matches the ledger, wherever it is run from."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from cache import LedgerRecord, SpendLedger
from distill.cli import main
from distill.server import Faults
from tests.reliability.conftest import TOKEN, harvest_argv, ledger, teacher


def _cache(root: Path, *costs: str) -> Path:
    """A cache folder whose ledger has one billed record per cost, each of its own kind."""
    root.mkdir(parents=True)
    kinds = ("text_embedding", "image_embedding", "answer")
    with SpendLedger(root / "ledger.jsonl") as spend:
        for kind, cost in zip(kinds, costs, strict=False):
            spend.record(LedgerRecord("local", "hash", kind, 1, cost, reserved_usd=cost))
    return root


def test_amounts_are_shown_as_the_ledger_has_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: money went through float with six places: $0.00000048 showed as 0.000000."""
    monkeypatch.setenv("COLUMNS", "200")  # the whole table, no column cut short
    cache = _cache(tmp_path / "c", "0.00000048", "0.1")
    assert main(["report", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "0.00000048" in out and "0.100000" in out and "0.10000048" in out


def test_tiny_amounts_are_plain_decimals_in_the_summary_and_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before 2026-12-06: "the last run spent $7.2E-7" (Decimal's scientific notation), in
    the console line and in the JSON's decimal strings."""
    monkeypatch.setenv("COLUMNS", "200")
    cache = _cache(tmp_path / "c", "0.00000072")
    run = {"teacher": "local:hash", "budget_usd": "0.000001", "spent_usd": "0.00000072",
           "exit_code": 0}  # fmt: skip
    (cache / "runs.jsonl").write_text(json.dumps(run) + "\n")
    assert main(["report", str(cache)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "the last run spent $0.00000072" in out and "E-" not in out
    assert main(["report", str(cache), "--json"]) == 0
    text = capsys.readouterr().out
    assert "E-" not in text and '"0.00000072"' in text


def test_a_run_folder_finds_its_relative_cache_from_anywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: config.json's relative "cache" was taken from the current folder and never
    checked, so `report RUN` from elsewhere printed an empty report: $0 spent, exit 0."""
    _cache(tmp_path / "c1", "0.25")
    run = tmp_path / "runs" / "erm1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"cache": "c1"}))
    monkeypatch.chdir(tmp_path / "runs")  # not where train ran (tmp_path)
    assert main(["report", "erm1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert Decimal(report["spent_usd"]) == Decimal("0.25")

    (run / "config.json").write_text(json.dumps({"cache": "gone"}))
    assert main(["report", "erm1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'gone'" in err


def test_a_run_trained_from_a_store_alone_reports_the_store_s_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train --store S` (no --cache) writes "cache": null: `report RUN` said RUN "is
    neither a cache directory ... nor a run folder" (until 2026-12-08). The store's own
    cache (CACHE/stores/NAME) is reported; a store kept elsewhere is named."""
    _cache(tmp_path / "c1", "0.25")
    (tmp_path / "c1" / "stores" / "s1").mkdir(parents=True)
    run = tmp_path / "runs" / "erm1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"cache": None, "store": "c1/stores/s1"}))
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(run), "--json"]) == 0
    assert Decimal(json.loads(capsys.readouterr().out)["spent_usd"]) == Decimal("0.25")
    (run / "config.json").write_text(json.dumps({"cache": None, "store": "/elsewhere/s"}))
    assert main(["report", str(run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "trained from the store '/elsewhere/s'" in err and "report CACHE" in err, err


def test_per_kind_items_leave_out_unbilled_attempts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the per-kind rows counted the items of 500s (never billed) too, so they
    added up to more than the total, and to more images than the data has."""
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    from distill.data.digits import make_digits

    data = make_digits(tmp_path / "digits", size=16, per_class=2)  # 80 images, 10 prompts
    cache = tmp_path / "cache"
    with teacher(Faults(fail_500=0.4, seed=3)) as served:
        argv = harvest_argv(served.url, data, cache, "--batch-size", "5")
        assert main(argv) == 0
    capsys.readouterr()  # the harvest's own output
    assert any(r.outcome == "http_500" for r in ledger(cache))
    assert main(["report", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    kinds = {g["kind"]: g["items"] for g in report["by_kind"]}
    assert kinds == {"image_embedding": 80, "text_embedding": 10}
    assert sum(kinds.values()) == report["items_bought"] == 90
    assert [m["items"] for m in report["by_model"]] == [90]


@pytest.mark.parametrize("columns", ["80", "40"])
def test_narrow_terminals_still_show_every_amount_in_full(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    columns: str,
) -> None:
    """Before: only the first column was no_wrap, so at 80 columns the money columns were
    cut to `0.012…` and at 40 every number was; the teacher · kind column folds instead."""
    monkeypatch.setenv("COLUMNS", columns)
    cache = _cache(tmp_path / "c", "0.01234567", "0.25", "12.5")
    assert main(["report", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    for amount in ("0.01234567", "0.250000", "12.500000", "12.76234567"):
        assert amount in out, (amount, out)


def test_a_damaged_runs_file_is_passed_over_and_a_torn_line_swallows_no_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a last runs.jsonl line with a budget that does not parse was a
    decimal.InvalidOperation traceback, one that is JSON but no object an AttributeError,
    and a torn last line glued the next run's line onto it, so the report showed an older
    run; run_budget_usd came out as a JSON float."""
    from distill.report import append_run

    cache = _cache(tmp_path / "c", "0.002")
    good = {"teacher": "local:hash", "budget_usd": "0.01", "spent_usd": "0.002",
            "run_budget_usd": 0.005, "exit_code": 0}  # fmt: skip
    for last in ('{"teacher": "local:hash", "budget_usd": "lots", "spent_usd": "0"}', "[1, 2]"):
        (cache / "runs.jsonl").write_text(json.dumps(good) + "\n" + last + "\n")
        assert main(["report", str(cache), "--json"]) == 0
        run = json.loads(capsys.readouterr().out)["last_run"]
        assert run["budget_left_usd"] == "0.008" and run["run_budget_usd"] == "0.005"
    (cache / "runs.jsonl").write_text(json.dumps(good) + "\n" + '{"teacher": "local:h')  # torn
    append_run(cache, {**good, "budget_usd": "0.02"})
    assert main(["report", str(cache), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_run"]["budget_usd"] == "0.02"


def test_budget_left_goes_by_what_the_last_run_saw_when_the_ledger_lost_a_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: with a ledger line lost after the run, the report said more budget was left
    than the next harvest could spend (its coordination database keeps the higher total)."""
    cache = _cache(tmp_path / "c", "0.002")
    run = {"teacher": "local:hash", "budget_usd": "0.01", "spent_usd": "0.009",
           "teacher_spent_usd": "0.009", "exit_code": 0}  # fmt: skip
    (cache / "runs.jsonl").write_text(json.dumps(run) + "\n")
    assert main(["report", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["last_run"]["budget_left_usd"] == "0.001"
    assert any("a line lost or damaged" in p for p in report["ledger_problems"])


def test_a_run_folder_prefers_the_cache_beside_it_to_one_of_the_same_name_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `report ../proj1/runs/x` run from proj2 reported proj2's own `vlm-cache`
    (the current folder was tried first), and cache_dir said only "vlm-cache"."""
    _cache(tmp_path / "proj1" / "vlm-cache", "0.25")
    _cache(tmp_path / "proj2" / "vlm-cache", "0.75")
    run = tmp_path / "proj1" / "runs" / "x"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"cache": "vlm-cache"}))
    monkeypatch.chdir(tmp_path / "proj2")
    assert main(["report", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert Decimal(report["spent_usd"]) == Decimal("0.25")
    assert report["cache_dir"] == str(tmp_path / "proj1" / "vlm-cache")


@pytest.mark.slow
def test_a_killed_harvest_s_open_reservations_count_in_budget_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: after `kill -9` of a harvest with requests on the wire, the report summed the
    ledger alone: "budget left" was above what the next harvest may spend (it first charges
    the killed run's open reservations as `orphaned`), and nothing said the provider may
    have billed them. A real harvest (a subprocess) is killed while its requests wait at
    the teacher; the report must say the same before and after the next run charges them."""
    import os
    import sqlite3
    import subprocess
    import sys
    import time

    from distill.data.digits import make_digits

    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    monkeypatch.setenv("COLUMNS", "200")
    data = make_digits(tmp_path / "digits", size=16, per_class=2)
    cache = tmp_path / "cache"
    flags = ("--batch-size", "4", "--concurrency", "2")
    with teacher() as fast:  # a first run, stopped by --max-items: the runs.jsonl line
        assert main(harvest_argv(fast.url, data, cache, *flags, "--max-items", "8")) == 3
    with teacher(Faults(latency_ms=600_000)) as slow:  # every request waits at the teacher
        argv = harvest_argv(slow.url, data, cache, *flags)
        code = f"import sys; from distill.cli import main; sys.exit(main({argv!r}))"
        root = Path(__file__).resolve().parents[1]
        proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            open_rows = 0
            while open_rows < 2 and proc.poll() is None:  # both requests on the wire
                time.sleep(0.05)
                try:
                    with sqlite3.connect(cache / "coordination.db") as db:
                        open_rows = db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
                except sqlite3.Error:
                    continue
            assert proc.poll() is None, "the harvest ended before its requests were sent"
        finally:
            proc.kill()
            proc.wait()
        capsys.readouterr()
        assert main(["report", str(cache), "--json"]) == 0
        before = json.loads(capsys.readouterr().out)
        assert main(["report", str(cache)]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        # the next run charges the killed run's open reservations (a dry run sends nothing)
        assert main([*argv, "--dry-run"]) == 0
        capsys.readouterr()
    assert main(["report", str(cache), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    orphaned = sum(
        (Decimal(r.cost_usd) for r in ledger(cache) if r.outcome == "orphaned"), Decimal(0)
    )
    assert orphaned > 0
    assert before["last_run"]["budget_left_usd"] == after["last_run"]["budget_left_usd"]
    assert Decimal(before["reserved_usd"]) == orphaned and after["reserved_usd"] == "0"
    assert Decimal(before["spent_usd"]) + orphaned == Decimal(after["spent_usd"])
    assert f"${before['reserved_usd']} is reserved" in shown, shown


@pytest.mark.parametrize("when", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_ledger_line_with_numbers_that_are_not_numbers_keeps_its_money_and_the_json_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    """Before: a line whose time (or a provider usage figure) was NaN or overflowed
    (hand-edited, damaged) was read as is, and `report --json` printed ``"time": NaN`` /
    ``Infinity`` in its overruns: not JSON (jq, JSON.parse and
    json.loads(parse_constant=...) refuse the whole report)."""
    cache = tmp_path / "c"
    cache.mkdir()
    line = {"provider": "local", "model": "hash", "kind": "image_embedding", "items": 1,
            "cost_usd": "0.02", "reserved_usd": "0.01", "outcome": "ok"}  # fmt: skip
    text = json.dumps(line)[:-1] + f', "time": {when}, "provider_usage": {{"x": [{when}]}}}}\n'
    (cache / "ledger.jsonl").write_text(text)
    assert main(["report", str(cache), "--json"]) == 0

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    doc = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert doc["spent_usd"] == "0.02" and doc["ledger_problems"] == []
    assert doc["overrun_usd"] == "0.01" and doc["overruns"][0]["time"] == 0.0
    assert doc["overruns"][0]["provider_usage"] == {}


def test_orphaned_reservations_count_as_estimated_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a killed run's open reservation, charged by the next run as `orphaned` at
    its worst case, was not counted in `estimated_requests` (nor a group's `estimated`):
    the report said every charge but the estimated ones was the provider's bill. A
    process reserves and dies; the next harvest (a dry run) charges it; a line of a
    ledger written before orphaned lines were marked counts too."""
    import subprocess
    import sys

    from distill.data.digits import make_digits

    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    data = make_digits(tmp_path / "digits", size=16, per_class=1)
    cache = tmp_path / "cache"
    cache.mkdir()
    code = (
        "import os, sys; from decimal import Decimal; from cache import Coordinator\n"
        "c = Coordinator(sys.argv[1] + '/coordination.db', ledger_path=sys.argv[1] + "
        "'/ledger.jsonl')\n"
        "assert c.try_reserve('local:hash', Decimal('0.004'), 4, None)[0]\n"
        "os._exit(0)  # killed with the request on the wire\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code, str(cache)], check=True, cwd=root)
    with teacher() as served:
        assert main(harvest_argv(served.url, data, cache, "--dry-run")) == 0
    capsys.readouterr()
    (orphan,) = [r for r in ledger(cache) if r.outcome == "orphaned"]
    assert orphan.estimated and orphan.cost_usd == orphan.reserved_usd == "0.004"
    assert main(["report", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["estimated_requests"] == 1
    assert [m["estimated"] for m in report["by_model"]] == [1]
    assert main(["report", str(cache)]) == 0
    assert "1 requests are charged at our worst-case estimate" in " ".join(
        capsys.readouterr().out.split())
    old = {"provider": "local", "model": "hash", "kind": "unknown", "items": 2,
           "cost_usd": "0.002", "outcome": "orphaned"}  # fmt: skip
    with open(cache / "ledger.jsonl", "a") as f:
        f.write(json.dumps(old) + "\n")
    assert main(["report", str(cache), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["estimated_requests"] == 2


def test_a_killed_run_s_orphaned_reservations_keep_their_endpoint_and_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the reservations a killed run left open were charged by the next run as
    `orphaned` lines of kind "unknown" with no endpoint, so `report --json` put their money
    under the provider's default URL in `by_endpoint` (and under kind "unknown") though
    the requests went to another server. A client at a base URL of its own is killed
    with its request on the wire; the next run charges it under that URL and kind."""
    import subprocess
    import sys

    from distill.data.digits import make_digits

    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    cache = tmp_path / "cache"
    cache.mkdir()
    url = "http://127.0.0.1:9/elsewhere"
    code = (
        "import asyncio, os, sys, httpx; from cache import Coordinator\n"
        "from vlmclient import SharedBudget, TeacherClient, TextEmbeddingRequest\n"
        "c = Coordinator(sys.argv[1] + '/coordination.db', ledger_path=sys.argv[1] + "
        "'/ledger.jsonl')\n"
        "def on_the_wire(request): os._exit(0)  # killed with the request sent\n"
        "async def run():\n"
        "    async with TeacherClient('local:hash', api_key='tok-12345678', base_url=sys.argv[2],"
        " budget=SharedBudget(c, 'local:hash', total=None),"
        " transport=httpx.MockTransport(on_the_wire)) as client:\n"
        "        await client.embed_texts([TextEmbeddingRequest(text='a cat')])\n"
        "asyncio.run(run())\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code, str(cache), url], check=True, cwd=root)
    data = make_digits(tmp_path / "digits", size=16, per_class=1)
    with teacher() as served:  # the next run charges the killed run's open reservation
        assert main(harvest_argv(served.url, data, cache, "--dry-run")) == 0
    capsys.readouterr()
    (orphan,) = [r for r in ledger(cache) if r.outcome == "orphaned"]
    assert main(["report", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    spent = {e["endpoint"]: Decimal(e["spent_usd"]) for e in report["by_endpoint"]}
    assert spent == {url: Decimal(orphan.cost_usd)} and spent[url] > 0
    assert [g["kind"] for g in report["by_kind"]] == ["text_embedding"]


def test_spend_at_two_base_urls_of_one_teacher_is_told_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the ledger lines did not say where a request was sent, so a teacher served
    at two base URLs (a local teacher on two ports, a gateway and the vendor under one
    model name) was one sum in the report, though the cache keeps their answers apart
    and each server bills its own. Two harvests of one cache at two servers: the report
    says what each billed, and the total is still their sum."""
    from distill.data.digits import make_digits

    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    monkeypatch.setenv("COLUMNS", "200")
    data = make_digits(tmp_path / "digits", size=16, per_class=1)
    cache = tmp_path / "cache"
    billed = {}
    for _ in range(2):
        with teacher() as served:
            assert main(harvest_argv(served.url, data, cache)) == 0
            billed[served.url.rstrip("/")] = sum((b.usd for b in served.bills()), Decimal(0))
    assert len(billed) == 2 and all(billed.values())
    capsys.readouterr()
    assert main(["report", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    spent = {e["endpoint"]: Decimal(e["spent_usd"]) for e in report["by_endpoint"]}
    assert spent == billed
    assert {(e["provider"], e["model"]) for e in report["by_endpoint"]} == {("local", "hash")}
    assert Decimal(report["spent_usd"]) == sum(billed.values())
    assert main(["report", str(cache)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for url, usd in billed.items():
        assert f"at {url}: ${usd}" in out, out


def test_lines_of_a_newer_version_keep_their_money_in_the_report_and_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a ledger line whose `time` was not a number (an ISO date) or whose `usage`
    held something else than counts (a nested block, a null: another version's ledger,
    or one edited by hand) was skipped whole, its money too: the report said $0 spent and
    the next harvest's --budget was seeded without it, so it spent the cap again."""
    from distill.data.digits import make_digits

    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    data = make_digits(tmp_path / "digits", size=16, per_class=1)
    cache = tmp_path / "cache"
    cache.mkdir()
    line = {"provider": "local", "model": "hash", "kind": "image_embedding", "items": 5,
            "outcome": "ok", "reserved_usd": "2", "future_field": [1, {"x": None}]}  # fmt: skip
    lines = [
        {**line, "cost_usd": "2", "time": "2026-12-07T00:00:00Z", "usage": {"images": 5}},
        {**line, "cost_usd": "2", "usage": {"images": 5, "cache": {"read": 3}}},
        {**line, "cost_usd": "1", "usage": {"images": None, "input_tokens": -1}},
    ]
    (cache / "ledger.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["report", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["spent_usd"] == "5" and report["ledger_problems"] == []
    assert report["requests_sent"] == 3 and report["items_bought"] == 15
    with teacher() as served:  # the $5 cap is spent: nothing is bought (exit 3)
        # (--allow-rebuy: the cache is empty though the ledger records items bought)
        assert main(harvest_argv(served.url, data, cache, "--allow-rebuy", budget="5")) == 3
        assert served.bills() == []


def test_a_large_ledger_is_reported_without_holding_it_in_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `report` read the whole ledger into memory, then every line as a record:
    a 154 MB ledger (500,000 requests) took 1 GB. It streams now: what it holds does not
    grow with the ledger (measured here against the file's own size)."""
    import tracemalloc

    cache = _cache(tmp_path / "c", "0.25")  # one line first: imports happen before
    assert main(["report", str(cache), "--json"]) == 0
    capsys.readouterr()
    line = {"provider": "local", "model": "hash", "kind": "image_embedding", "items": 5,
            "cost_usd": "0.0000125", "reserved_usd": "0.00002", "outcome": "ok",
            "usage": {"images": 5}, "provider_usage": {"images": 5, "input_tokens": 0},
            "request_id": "6f8d4873-e4d3-4b1a-9c1e-1234567890ab", "time": 1796601437.1}  # fmt: skip
    count = 20_000
    with open(cache / "ledger.jsonl", "a") as f:
        f.write((json.dumps(line) + "\n") * count)
    size = (cache / "ledger.jsonl").stat().st_size
    tracemalloc.start()
    try:
        assert main(["report", str(cache), "--json"]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    report = json.loads(capsys.readouterr().out)
    assert report["requests_sent"] == count + 1
    assert Decimal(report["spent_usd"]) == Decimal("0.25") + count * Decimal("0.0000125")
    assert peak < size / 4, (peak, size)


def test_a_cache_given_twice_is_refused_unless_a_config_file_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `report c1 --cache c2` reported c1 without a word about c2 (PATH won
    silently). Two different folders given are refused (exit 2); the same one twice is
    fine, and a config file's `cache` stays a default that PATH overrides."""
    c1, c2 = _cache(tmp_path / "c1", "0.25"), _cache(tmp_path / "c2", "0.75")
    assert main(["report", str(c1), "--cache", str(c2), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(c1) in err and str(c2) in err
    assert main(["report", str(c1), "--cache", str(c1), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spent_usd"] == "0.25"
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f"cache = {json.dumps(str(c2))}\n")
    assert main(["report", "--config", str(cfg), str(c1), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spent_usd"] == "0.25"
    assert main(["report", "--config", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spent_usd"] == "0.75"


def test_budget_left_counts_a_teacher_this_version_does_not_know(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a last run whose teacher's provider this version does not know (a newer
    version's run of the cache) was taken for no teacher: $0 spent on it, the whole
    budget left, though the ledger holds its spend under that name."""
    cache = tmp_path / "c"
    cache.mkdir()
    line = {"provider": "newvendor", "model": "m1", "kind": "answer", "items": 1,
            "cost_usd": "0.5"}  # fmt: skip
    (cache / "ledger.jsonl").write_text(json.dumps(line) + "\n")
    run = {"teacher": "newvendor:m1", "budget_usd": "1", "spent_usd": "0.5", "exit_code": 0}
    (cache / "runs.jsonl").write_text(json.dumps(run) + "\n")
    assert main(["report", str(cache), "--json"]) == 0
    last = json.loads(capsys.readouterr().out)["last_run"]
    assert last["teacher_spent_usd"] == "0.5" and last["budget_left_usd"] == "0.5"


def test_a_url_that_only_served_cache_hits_is_not_listed_as_a_bill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's rerun: a local teacher on a new port under one --cache-namespace buys
    nothing (all cached); the report does not list its URL as a second bill."""
    from distill.data.digits import make_digits

    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    monkeypatch.setenv("COLUMNS", "200")
    data = make_digits(tmp_path / "digits", size=16, per_class=1)
    cache = tmp_path / "cache"
    for _ in range(2):
        with teacher() as served:
            argv = harvest_argv(served.url, data, cache, "--cache-namespace", "demo")
            assert main(argv) == 0
    capsys.readouterr()
    assert main(["report", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(e["requests"] > 0 for e in report["by_endpoint"]) == [False, True]
    assert main(["report", str(cache)]) == 0
    assert "local:hash at" not in capsys.readouterr().out


def test_a_ledger_of_many_unreadable_lines_lists_the_first_and_counts_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: every unreadable line was one entry of `ledger_problems` and one console
    line: a ledger whose 200,000 lines another version wrote in a format this one cannot
    read printed 200,000 lines over 80 s (and held them all). The first 100 are listed,
    then how many more."""
    cache = _cache(tmp_path / "c", "0.25")
    bad = {"provider": "local", "model": "hash", "kind": "answer", "count": 1,
           "cost_usd": "0.001"}  # fmt: skip
    with open(cache / "ledger.jsonl", "a") as f:
        f.write((json.dumps(bad) + "\n") * 1000)
    assert main(["report", str(cache), "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["ledger_problems"]
    assert len(problems) == 101 and problems[0].startswith("line 2: unreadable line")
    assert problems[-1] == "900 more lines that do not read (lines 102 to 1001)"
    assert main(["report", str(cache)]) == 0
    assert capsys.readouterr().out.count("ledger:") == 101


def test_a_harvest_stopped_holding_the_coordination_lock_is_named_by_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: with a harvest stopped (Ctrl-Z) in the middle of a write to
    coordination.db, `report` waited the whole busy timeout (30 s), then said only
    "cannot be read (database is locked)". It names the stopped process at once, and
    what to do."""
    import os
    import signal
    import subprocess
    import sys

    from tests.cache.test_coordination import LOCK_HOLDER, stopped

    cache = _cache(tmp_path / "c", "0.25")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(cache / "coordination.db"),
         str(cache / "ledger.jsonl"), "EXCLUSIVE"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        stopped(proc.pid)
        assert main(["report", str(cache), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.communicate()
    assert report["spent_usd"] == "0.25"
    [problem] = report["ledger_problems"]
    assert f"process {proc.pid} on this host is stopped" in problem, problem
    assert f"kill -CONT {proc.pid}" in problem


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_file_of_someone_else_s_as_the_ledger_is_refused_as_other_commands_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], json_flag: list[str]
) -> None:
    """Before: `report --cache ~/notes` where `~/notes/ledger.jsonl` is the user's own file
    listed each of its lines as "unreadable line" and exited 0, where harvest refuses it
    as "not a spend ledger". A ledger of ours with damaged lines is still reported."""
    notes = tmp_path / "notes"
    notes.mkdir()
    theirs = notes / "ledger.jsonl"
    theirs.write_text('{"date": "2026-01-03", "item": "coffee", "amount": 3.5}\nrent 900\n')
    assert main(["report", "--cache", str(notes), *json_flag]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"error: {theirs} is not a spend ledger"), line
    assert "unreadable" not in captured.out + captured.err and "bought" not in line
    assert theirs.read_text().endswith("rent 900\n")

    ours = _cache(tmp_path / "c", "0.25")
    with open(ours / "ledger.jsonl", "a") as f:
        f.write("rent 900\n")
    assert main(["report", "--cache", str(ours), *json_flag]) == 0
    assert "line 2: unreadable line" in capsys.readouterr().out

"""SpendLedger: durable appends, kill -9, torn lines, threads, processes, totals."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from cache import LedgerRecord, SpendLedger, read_ledger, totals
from cache import ledger as ledger_module
from cache.ledger import LedgerWriteError, by_model

REPO = Path(__file__).resolve().parents[2]


def _rec(i: int, outcome: str = "ok", cost: str = "0.001") -> LedgerRecord:
    return LedgerRecord(provider="fake", model="m1", kind="image_embedding", items=2,
                        cost_usd=cost, outcome=outcome, usage={"images": 2},
                        request_id=f"req-{i}")


def test_record_writes_one_json_line_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "ledger.jsonl"
    with SpendLedger(path) as ledger:
        ledger.record(_rec(1))
        ledger.record(LedgerRecord("cohere", "embed-v4.0", "text", 5, "0.0000012",
                                   request_id=None, time=123.5))
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["request_id"] == "req-1" and first["cost_usd"] == "0.001"
    assert first["time"] > 1_600_000_000  # filled in when left unset
    records = SpendLedger.read(path)
    assert records[1] == LedgerRecord("cohere", "embed-v4.0", "text", 5, "0.0000012", time=123.5)
    assert records[0].usage == {"images": 2}


def test_fsync_before_return_except_for_cache_hits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    with SpendLedger(tmp_path / "l.jsonl") as ledger:
        monkeypatch.setattr(ledger_module.os, "fsync", counting_fsync)
        ledger.record(_rec(1))
        assert len(synced) == 1
        ledger.record(_rec(2, outcome="cache_hit", cost="0"))
        assert len(synced) == 1  # flushed to the OS, not fsynced
        ledger.record(_rec(3, outcome="timeout"))
        assert len(synced) == 2
    assert len(read_ledger(tmp_path / "l.jsonl").records) == 3


def test_closed_ledger_refuses_to_record(tmp_path: Path) -> None:
    ledger = SpendLedger(tmp_path / "l.jsonl")
    ledger.close()
    ledger.close()
    with pytest.raises(LedgerWriteError, match="closed"):
        ledger.record(_rec(1))


def test_torn_last_line_is_skipped_reported_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with SpendLedger(path) as ledger:
        ledger.record(_rec(1))
        ledger.record(_rec(2))
    full = path.read_bytes()
    with open(path, "ab") as f:  # what kill -9 in the middle of a write leaves
        f.write(full.splitlines()[0][:37])
    contents = read_ledger(path)
    assert [r.request_id for r in contents.records] == ["req-1", "req-2"]
    assert contents.problems == [(3, "torn last line (interrupted write)")]
    with SpendLedger(path) as ledger:  # the next run starts on a fresh line
        ledger.record(_rec(3))
    contents = read_ledger(path)
    assert [r.request_id for r in contents.records] == ["req-1", "req-2", "req-3"]
    assert [n for n, _ in contents.problems] == [3]


def test_garbage_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text('[1, 2]\n{"provider": "p"}\n\n' + json.dumps(
        {"provider": "p", "model": "m", "kind": "k", "items": 1, "cost_usd": "x"}) + "\n")
    contents = read_ledger(path)
    assert contents.records == []
    assert [n for n, _ in contents.problems] == [1, 2, 4]
    assert read_ledger(tmp_path / "absent.jsonl").records == []


def test_a_line_nested_too_deep_is_skipped_not_a_crash(tmp_path: Path) -> None:
    """A damaged line of 100,000 nested brackets: json.loads raised RecursionError, which
    crashed every reader (`report`, a harvest's budget) with a traceback."""
    path = tmp_path / "l.jsonl"
    with SpendLedger(path) as ledger:
        ledger.record(_rec(1))
    with open(path, "a") as f:
        f.write('{"provider": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    contents = read_ledger(path)
    assert [r.request_id for r in contents.records] == ["req-1"]
    assert [n for n, _ in contents.problems] == [2]


def test_threads_share_one_ledger(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with SpendLedger(path) as ledger:

        def work(t: int) -> None:
            for i in range(100):
                ledger.record(_rec(t * 1000 + i, outcome="cache_hit"))

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    contents = read_ledger(path)
    assert contents.problems == []
    assert len({r.request_id for r in contents.records}) == 800


APPENDER = textwrap.dedent(
    """
    import os, sys, time
    from cache import LedgerRecord, SpendLedger

    path, tag, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with SpendLedger(path) as ledger:
        print("ready", flush=True)
        while not os.path.exists(go):  # concurrent writers start together
            time.sleep(0.002)
        for i in range(count):
            ledger.record(LedgerRecord("fake", "m1", "text", 1, "0.01",
                                       request_id=f"{tag}-{i}", usage={"pad": i}))
            if tag == "kill":
                # reported only after record() returned: it must be in the file by now
                print(f"{tag}-{i}", flush=True)
    """
)


def test_two_processes_append_to_one_ledger(tmp_path: Path) -> None:
    path, go = tmp_path / "l.jsonl", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(path), tag, "1000", str(go)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ("a", "b")]
    for proc in procs:  # both have imported and opened the ledger
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    contents = read_ledger(path)
    assert contents.problems == []
    assert sorted(r.request_id or "" for r in contents.records) == sorted(
        [f"a-{i}" for i in range(1000)] + [f"b-{i}" for i in range(1000)]
    )
    assert totals(contents.records).spent_usd == Decimal("20.00")


def test_every_reported_record_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    go = tmp_path / "go"
    go.touch()
    proc = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(path), "kill", "1000000", str(go)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    reported = []
    for line in proc.stdout:
        reported.append(line.strip())
        if len(reported) == 300:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    contents = read_ledger(path)  # at most a torn last line is skipped
    assert len(contents.problems) <= 1
    in_file = [r.request_id for r in contents.records]
    assert set(reported) <= set(in_file)
    assert in_file[: len(reported)] == reported  # appended in order, nothing lost between
    with SpendLedger(path) as ledger:  # a resumed run appends cleanly after the crash
        ledger.record(_rec(9))
    assert read_ledger(path).records[-1].request_id == "req-9"


def test_totals_by_provider_model_kind() -> None:
    records = [
        _rec(1, cost="0.1"),
        _rec(2, cost="0.2"),
        LedgerRecord("fake", "m1", "image_embedding", 7, "0", outcome="cache_hit",
                     saved_usd="0.35"),
        _rec(3, outcome="timeout", cost="0.1"),
        _rec(4, outcome="malformed", cost="0.05"),
        LedgerRecord("fake", "m1", "text", 3, "0.003"),
        LedgerRecord("other", "m2", "answer", 1, "0.5", outcome="connection"),
    ]
    t = totals(records)
    assert t.requests == 6
    assert t.items == 2 * 4 + 3 + 1
    assert t.spent_usd == Decimal("0.953")  # exact, not 0.9530000000000001
    assert t.cache_hits == 7 and t.saved_usd == Decimal("0.35")
    assert t.failures == {"timeout": 1, "malformed": 1, "connection": 1}
    image = t.groups[("fake", "m1", "image_embedding")]
    assert (image.requests, image.items, image.cache_hits) == (4, 8, 7)
    assert image.spent_usd == Decimal("0.45")
    assert image.failures == {"timeout": 1, "malformed": 1}
    assert t.groups[("other", "m2", "answer")].failures == {"connection": 1}
    summary = t.as_dict()
    assert summary["spent_usd"] == "0.953" and len(summary["groups"]) == 3
    models = by_model(t.groups)
    assert [(m["provider"], m["model"], m["spent_usd"]) for m in models] == [
        ("fake", "m1", "0.453"), ("other", "m2", "0.5")]
    assert totals([]).spent_usd == Decimal(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fallocate KEEP_SIZE is Linux")
def test_space_for_records_is_reserved_past_the_end(tmp_path: Path) -> None:
    from cache.ledger import RESERVE_BYTES

    path = tmp_path / "ledger.jsonl"
    with SpendLedger(path) as ledger:
        ledger.record(LedgerRecord("cohere", "embed-v4.0", "text", 1, "0.0001"))
        st = os.stat(path)
        # the file is one short line, yet its blocks already hold a full disk's records
        assert st.st_size < 1000 and st.st_blocks * 512 >= RESERVE_BYTES


@pytest.mark.parametrize(("field", "value"), [
    ("cost_usd", "-5"), ("cost_usd", "NaN"), ("cost_usd", "abc"), ("cost_usd", 0.1),
    ("cost_usd", None), ("saved_usd", "Infinity"), ("reserved_usd", "1e30"), ("items", -1),
])
def test_a_record_its_readers_would_skip_is_refused_before_writing(
    tmp_path: Path, field: str, value: object
) -> None:
    """Before: written as given, then skipped by read_ledger as an unreadable line, so that
    spend counted as $0 in totals, report and the budget's seed."""
    path = tmp_path / "ledger.jsonl"
    with SpendLedger(path) as ledger:
        good = LedgerRecord("local", "hash", "image_embedding", 2, "0.0002")
        ledger.record(good)
        with pytest.raises(ValueError):
            ledger.record(dataclasses.replace(good, **{field: value}))
    contents = read_ledger(path)
    assert contents.problems == [] and len(contents.records) == 1


def test_a_ledger_that_cannot_be_opened_is_a_ledger_write_error(tmp_path: Path) -> None:
    """Before: a bare OSError (NotADirectoryError, PermissionError) from the constructor."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(LedgerWriteError, match="cannot open the spend ledger"):
        SpendLedger(tmp_path / "file" / "ledger.jsonl")


def test_a_file_none_of_whose_lines_is_a_record_is_not_appended_to(tmp_path: Path) -> None:
    """A user's own `ledger.jsonl` (JSON lines, but not ours) in the folder given as the
    cache: records were appended to it without a word. A ledger whose lines are ours,
    torn or damaged in part, an empty one or one cut at its first write, is kept on."""
    from cache import CacheLayoutError

    theirs = tmp_path / "theirs.jsonl"
    theirs.write_text('{"date": "2026-01-03", "item": "coffee", "amount": 3.5}\nrent 900\n')
    with pytest.raises(CacheLayoutError, match=f"{theirs} is not a spend ledger"):
        SpendLedger(theirs)
    assert theirs.read_text().endswith("rent 900\n")
    ours = tmp_path / "ours.jsonl"
    with SpendLedger(ours) as ledger:
        ledger.record(_rec(1))
    line = ours.read_bytes()
    for name, text in [("damaged-first.jsonl", b"\x00\x00garbage\n" + line),
                       ("torn-first.jsonl", line[:37]), ("blank.jsonl", b"\n")]:  # fmt: skip
        path = tmp_path / name
        path.write_bytes(text)
        with SpendLedger(path) as ledger:
            ledger.record(_rec(2))
        assert read_ledger(path).records[-1].request_id == "req-2"

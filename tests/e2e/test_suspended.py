"""A harvest suspended for longer than its --timeout (Ctrl-Z, a paused VM) and resumed keeps
the answers that arrived while it was stopped: nothing is bought twice. Nor by another
harvest of the same cache started while it is stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cache import SpendLedger
from cache.coordination_db import pid_stopped
from distill.data import scan
from tests.cache.test_coordination import LOCK_HOLDER
from tests.e2e.conftest import LocalTeacher, local_teacher
from tests.e2e.test_kill9 import BATCH, CONCURRENCY, ROOT, harvest_cmd


@pytest.fixture
def slow_teacher(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalTeacher]:
    with local_teacher(monkeypatch, latency_ms=300) as teacher:
        yield teacher


@pytest.mark.slow
def test_a_harvest_stopped_longer_than_its_timeout_pays_nothing_twice(
    slow_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    """Before: on SIGCONT the timeout watchdog ran before the loop read the answers waiting
    in the sockets, failed the requests in flight as timeouts (charged), and the retries
    bought the same images again (6 runs of 8 in the audit)."""
    cache = tmp_path / "cache"
    n_images = len(scan(digits_data).samples)
    argv = harvest_cmd(slow_teacher, digits_data, cache)
    # 6 images a request, not 2: still 4 requests in flight at the stop, 20 in all (not
    # 60) at 300 ms each
    code = argv[-1].replace(f"'--batch-size', '{BATCH}'", "'--timeout', '2', '--batch-size', '6'")
    assert code != argv[-1]
    proc = subprocess.Popen(
        [*argv[:-1], code],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    while slow_teacher.billing()["requests"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # requests are in flight (300 ms each)
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(4.0)  # twice the timeout: every answer is back, unread
    os.kill(proc.pid, signal.SIGCONT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    bill = slow_teacher.billing()
    assert bill["images"] == n_images, out  # every image bought once
    records = SpendLedger.read(cache / "ledger.jsonl")
    assert not [r for r in records if r.outcome == "timeout"]


class HeldImages:
    """The teacher app behind a gate: a request carrying images waits at the server (sent,
    unanswered, not billed yet) until :meth:`open`; then it is answered and billed."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state  # ServerThread reads the teacher's settings there
        self.held = 0  # image requests that have arrived while closed
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._open.is_set():
            await self.app(scope, receive, send)
            return
        messages = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        if b'"images"' in b"".join(m.get("body", b"") for m in messages):
            self.held += 1
            while not self._open.is_set():
                await asyncio.sleep(0.01)
        replay = iter(messages)

        async def again() -> Any:
            message = next(replay, None)
            return message if message is not None else await receive()

        await self.app(scope, again, send)


LEASE_S = 1.0  # the stopped harvest's lease time (60 s in a real run), so the test is short
SHORT_LEASES = (
    "import cache.coordination as co, vlmclient.pipeline as pl\n"
    f"co.LEASE_TTL_S = {LEASE_S}\n"
    f"co.Coordinator.__init__.__kwdefaults__['heartbeat_s'] = {LEASE_S / 10}\n"
    f"pl.RECLAIM_AFTER_S = {LEASE_S / 2}\n"
)


def until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 120
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.01)


def leases_lapsed(cache: Path) -> Callable[[], bool]:
    db = sqlite3.connect(cache / "coordination.db", timeout=30)
    try:
        (latest,) = db.execute("SELECT MAX(expires) FROM leases").fetchone()
    finally:
        db.close()
    assert latest is not None  # the stopped harvest holds leases
    return lambda: time.time() > latest


def lines_of(proc: subprocess.Popen[str], seen: list[str], said: threading.Event) -> None:
    """Collect ``proc``'s output; ``said`` once it says a process is stopped, or ends."""
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "is stopped" in line:
            said.set()
    said.set()


@pytest.mark.slow
def test_a_harvest_stopped_with_requests_on_the_wire_is_waited_for_not_bought_twice(
    monkeypatch: pytest.MonkeyPatch, digits_data: Path, tmp_path: Path
) -> None:
    """Two harvests of one cache: the first stopped (Ctrl-Z, SIGSTOP) past its lease time
    with requests on the wire, whose answers the provider bills while it is stopped.
    Before: its leases lapsed, the second harvest bought those items too, and the stopped
    one read its answers on resume: every item it had on the wire paid twice."""
    gates: list[HeldImages] = []

    def gated(app: Any) -> HeldImages:
        gates.append(HeldImages(app))
        return gates[-1]

    cache = tmp_path / "cache"
    n_images = len(scan(digits_data).samples)
    with local_teacher(monkeypatch, wrap=gated) as teacher:
        [gate] = gates
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # with the teacher's token
        python, flag, code = harvest_cmd(teacher, digits_data, cache)
        stopped = subprocess.Popen(
            [python, flag, SHORT_LEASES + code], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        other: subprocess.Popen[str] | None = None
        try:
            until(lambda: gate.held >= CONCURRENCY or stopped.poll() is not None,
                  "the first harvest's image requests")  # fmt: skip
            assert stopped.poll() is None, stopped.communicate()[0]
            os.kill(stopped.pid, signal.SIGSTOP)
            until(lambda: pid_stopped(stopped.pid, ""), "the stop")
            until(leases_lapsed(cache), "its leases' time")
            gate.open()
            on_the_wire = CONCURRENCY * BATCH
            until(lambda: teacher.billing()["images"] == on_the_wire, "the held answers")

            other = subprocess.Popen(
                harvest_cmd(teacher, digits_data, cache), cwd=ROOT, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            seen: list[str] = []
            said = threading.Event()
            reader = threading.Thread(target=lines_of, args=(other, seen, said), daemon=True)
            reader.start()
            said.wait(timeout=120)  # it waits for the stopped one (before: it finished)
            os.kill(stopped.pid, signal.SIGCONT)
            first_out = stopped.communicate(timeout=120)[0]
            other.wait(timeout=120)
            reader.join(timeout=60)
        finally:
            for proc in (stopped, other):
                if proc is not None:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    if proc.stdout is not None:
                        proc.stdout.close()
        out = "".join(seen)
        bill = teacher.billing()
    assert other is not None
    assert (stopped.returncode, other.returncode) == (0, 0), (first_out, out)
    assert bill["images"] == n_images, (bill["images"], out)  # each image bought once
    warned = [line for line in seen if "is stopped" in line]
    assert len(warned) == 1, out  # said once
    assert f"process {stopped.pid} on this host is stopped" in warned[0]
    assert f"kill -CONT {stopped.pid}" in warned[0]


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before", "during"])
def test_a_harvest_stopped_in_the_middle_of_a_write_is_waited_for_by_another(
    monkeypatch: pytest.MonkeyPatch, digits_data: Path, tmp_path: Path, when: str
) -> None:
    """A harvest stopped (Ctrl-Z) in the middle of a write to ``coordination.db`` keeps it
    locked. Before: another harvest of the cache, started then (``before``) or with
    requests on the wire (``during``), gave up on each of its writes after the busy
    timeout (30 s; 1 s here): it ended at its start ("database is locked"), or its claims
    failed open ("buying without them") and its settles missed the shared total ("shared
    budget not updated"). Now it waits, says once which process and what to do, and runs
    on when that process does: every image bought once, the shared total the ledger's."""
    gates: list[HeldImages] = []

    def gated(app: Any) -> HeldImages:
        gates.append(HeldImages(app))
        return gates[-1]

    cache = tmp_path / "cache"
    cache.mkdir()
    seen: list[str] = []
    said = threading.Event()
    with local_teacher(monkeypatch, wrap=gated) as teacher:
        [gate] = gates
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # with the teacher's token
        python, flag, code = harvest_cmd(teacher, digits_data, cache)
        short = "import cache.coordination_db as d; d.BUSY_TIMEOUT_MS = 1000\n"
        other = holder = reader = None
        try:
            if when == "during":
                other = running = subprocess.Popen(
                    [python, flag, short + code], cwd=ROOT, env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )  # fmt: skip
                until(lambda: gate.held >= 1 or running.poll() is not None, "its requests")
            holder = subprocess.Popen(
                [sys.executable, "-c", LOCK_HOLDER, str(cache / "coordination.db"),
                 str(cache / "ledger.jsonl"), "IMMEDIATE"],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            until(lambda: pid_stopped(holder.pid, ""), "the stop")
            if other is None:
                other = subprocess.Popen(
                    [python, flag, short + code], cwd=ROOT, env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )  # fmt: skip
            reader = threading.Thread(target=lines_of, args=(other, seen, said), daemon=True)
            reader.start()
            gate.open()  # answered and billed: settled while the database is locked
            said.wait(timeout=120)
            assert other.poll() is None, "".join(seen)  # waiting, not given up
            os.kill(holder.pid, signal.SIGCONT)
            other.wait(timeout=120)
            reader.join(timeout=60)
        finally:
            if holder is not None:
                holder.kill()
                holder.communicate()
            if other is not None:
                if other.poll() is None:
                    other.kill()
                    other.wait()
                if reader is not None:
                    reader.join(timeout=60)
                assert other.stdout is not None
                other.stdout.close()
        bill = teacher.billing()
    out = "".join(seen)
    assert other.returncode == 0, out
    assert bill["images"] == len(scan(digits_data).samples), out  # each bought once
    warned = [line for line in seen if "is stopped" in line]
    assert len(warned) == 1, out  # said once
    assert f"process {holder.pid} on this host is stopped" in warned[0], out
    assert f"kill -CONT {holder.pid}" in warned[0]
    assert "without them" not in out and "not updated" not in out, out
    billed = sum(Decimal(r.cost_usd) for r in SpendLedger.read(cache / "ledger.jsonl"))
    db = sqlite3.connect(cache / "coordination.db")
    try:
        (settled,) = db.execute("SELECT settled FROM spend").fetchone()
    finally:
        db.close()
    assert Decimal(settled) == billed > 0, out  # no settle missed the shared total


@pytest.mark.slow
# SIGINT only: SIGTERM takes the same handler (run_paid installs one for both), and each
# case costs the suite about 12 s
@pytest.mark.parametrize("signum", [signal.SIGINT])
def test_a_harvest_waiting_for_a_stopped_lock_holder_acts_on_its_own_stop_signal(
    monkeypatch: pytest.MonkeyPatch, digits_data: Path, tmp_path: Path, signum: int
) -> None:
    """A running harvest waiting for ``coordination.db``, locked by a harvest stopped
    (Ctrl-Z) in the middle of a write, and itself sent Ctrl-C (or SIGTERM). Before: its
    event loop waited with it, so the signal was acted on only once the stopped process
    ran on or ended. Now it stops within a second or so, exit 128 + N; what it bought
    is cached, and once the lock holder runs on every request it sent is in the ledger
    once: the bill, no more and no less."""
    gates: list[HeldImages] = []

    def gated(app: Any) -> HeldImages:
        gates.append(HeldImages(app))
        return gates[-1]

    cache = tmp_path / "cache"
    cache.mkdir()
    seen: list[str] = []
    said = threading.Event()
    with local_teacher(monkeypatch, wrap=gated) as teacher:
        [gate] = gates
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # with the teacher's token
        python, flag, code = harvest_cmd(teacher, digits_data, cache)
        running = subprocess.Popen(
            [python, flag, code], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        holder = reader = None
        try:
            until(lambda: gate.held >= 1 or running.poll() is not None, "its requests")
            holder = subprocess.Popen(
                [sys.executable, "-c", LOCK_HOLDER, str(cache / "coordination.db"),
                 str(cache / "ledger.jsonl"), "IMMEDIATE"],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            until(lambda: pid_stopped(holder.pid, ""), "the stop")
            reader = threading.Thread(target=lines_of, args=(running, seen, said), daemon=True)
            reader.start()
            gate.open()  # answered and billed: settled while the database is locked
            said.wait(timeout=120)
            assert running.poll() is None, "".join(seen)  # waiting for the stopped one
            os.kill(running.pid, signum)
            sent = time.monotonic()
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.wait(timeout=5)
            took = time.monotonic() - sent
            ended_while_stopped = running.poll() is not None
            os.kill(holder.pid, signal.SIGCONT)  # runs on: commits, frees the lock
            running.wait(timeout=120)
            reader.join(timeout=60)
        finally:
            if holder is not None:
                holder.kill()
                holder.communicate()
            if running.poll() is None:
                running.kill()
                running.wait()
            if reader is not None:
                reader.join(timeout=60)
            assert running.stdout is not None
            running.stdout.close()
        out = "".join(seen)
        assert ended_while_stopped, f"ended {took:.1f} s after the signal, once resumed\n{out}"
        assert took < 3, out
        assert running.returncode == 128 + signum, out
        assert f"while process {holder.pid} on this host, stopped" in out, out
        [noted] = [json.loads(line) for line in (cache / "runs.jsonl").read_text().splitlines()]
        assert noted["stopped"] == signal.Signals(signum).name, noted  # report's last run
        # the next run of the cache charges what the stopped one left open (orphaned),
        # buys what it lost (its requests in flight) and nothing it cached
        rerun = subprocess.run(
            harvest_cmd(teacher, digits_data, cache), cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        bill = teacher.billing()
    records = SpendLedger.read(cache / "ledger.jsonl")
    images = [r for r in records if r.outcome != "cache_hit" and r.kind != "text_embedding"]
    orphaned = [r for r in images if r.outcome == "orphaned"]
    lost = sum(r.items for r in orphaned)  # in flight at the stop: their answers lost
    n_images = len(scan(digits_data).samples)
    assert bill["images"] <= n_images + lost, (out, bill)  # nothing cached bought again
    # never below the bill; above it by at most the answer whose settle was waiting when
    # the signal came (its line is written first: charged as orphaned too)
    in_ledger = sum(r.items for r in images)
    assert bill["images"] <= in_ledger <= bill["images"] + BATCH, (out, images, bill)
    assert sum(Decimal(r.cost_usd) for r in records) >= Decimal(bill["usd"]), (records, bill)

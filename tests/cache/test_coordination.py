"""The coordination database of a cache folder: leases, one budget, dead owners' leftovers.

Two owners are two :class:`Coordinator` objects (leases and reservations are per owner),
and a dead owner is a real process killed with SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

import cache.coordination_db as coordination_db
from cache import LedgerRecord, SpendLedger
from cache.coordination import (
    LEASE_TTL_S,
    ORPHANED,
    CoordinationError,
    Coordinator,
    live_owners,
)

ROOT = Path(__file__).resolve().parents[2]
TEACHER = "local:hash"


def coordinator(tmp_path: Path) -> Coordinator:
    return Coordinator(tmp_path / "coordination.db", ledger_path=tmp_path / "ledger.jsonl")


def test_a_key_leased_by_one_owner_is_not_leased_to_another(tmp_path: Path) -> None:
    with coordinator(tmp_path) as a, coordinator(tmp_path) as b:
        assert a.claim(["k1", "k2"]) == {"k1", "k2"}
        assert b.claim(["k1", "k2", "k3"]) == {"k3"}
        assert b.held_elsewhere(["k1", "k2", "k3"]) == {"k1", "k2"}
        a.release(["k1"])
        assert b.claim(["k1", "k2"]) == {"k1"}
    with coordinator(tmp_path) as c:  # closing released everything
        assert c.claim(["k1", "k2", "k3"]) == {"k1", "k2", "k3"}


def test_partners_counts_the_other_live_owners_buying_in_the_folder(tmp_path: Path) -> None:
    with coordinator(tmp_path) as a:
        assert a.partners() == 0
        with coordinator(tmp_path) as b, coordinator(tmp_path) as c:
            assert (a.partners(), b.partners(), c.partners()) == (0, 0, 0)  # none buying
            b.claim(["k1", "k2"])
            c.claim(["k3"])
            assert (a.partners(), b.partners(), c.partners()) == (2, 1, 1)
            b.release(["k1", "k2"])
            assert (a.partners(), b.partners(), c.partners()) == (1, 1, 0)
        assert a.partners() == 0  # closed owners leave
    assert a.partners() == 0  # closed: nothing known


def test_leases_on_more_keys_than_one_query_takes(tmp_path: Path) -> None:
    # claims read and write leases in chunks of keys: every chunk counts, repeats too
    first = [f"a{i}" for i in range(1200)]
    second = [f"a{i}" for i in range(600, 1200)] + [f"b{i}" for i in range(700)]
    with coordinator(tmp_path) as a, coordinator(tmp_path) as b:
        assert a.claim(first + first[:50]) == set(first)
        assert b.claim(second) == {f"b{i}" for i in range(700)}
        assert b.held_elsewhere([*second, "nobody"]) == {f"a{i}" for i in range(600, 1200)}
        assert a.claim(first) == set(first)  # our own leases are ours again


def test_reservations_of_all_owners_count_against_one_cap(tmp_path: Path) -> None:
    cap = Decimal("1")
    with coordinator(tmp_path) as a, coordinator(tmp_path) as b:
        rid, _ = a.try_reserve(TEACHER, Decimal("0.6"), 1, cap)
        assert rid is not None
        refused, seen = b.try_reserve(TEACHER, Decimal("0.5"), 1, cap)
        assert refused is None and seen.reserved == Decimal("0.6")
        a.settle(rid, TEACHER, Decimal("0.3"))
        ok, seen = b.try_reserve(TEACHER, Decimal("0.5"), 1, cap)
        assert ok is not None and seen.settled == Decimal("0.3")
        b.release_reservation(ok)
        assert b.spend(TEACHER).committed == Decimal("0.3")
    with coordinator(tmp_path) as c:  # a later run sees what earlier runs settled
        assert c.spend(TEACHER).settled == Decimal("0.3")


def test_the_spend_total_starts_from_the_ledger(tmp_path: Path) -> None:
    with SpendLedger(tmp_path / "ledger.jsonl") as ledger:
        ledger.record(LedgerRecord("local", "hash", "image_embedding", 4, "0.25"))
        ledger.record(LedgerRecord("local", "hash", "text_embedding", 2, "0.05"))
        ledger.record(LedgerRecord("local", "pseudo-clip", "image_embedding", 4, "9"))
    with coordinator(tmp_path) as c:
        assert c.spend(TEACHER).settled == Decimal("0.30")
        rid, _ = c.try_reserve(TEACHER, Decimal("0.71"), 1, Decimal("1"))
        assert rid is None  # 0.30 + 0.71 > 1


OWNER = """
import sys
from decimal import Decimal
from cache.coordination import Coordinator
c = Coordinator(sys.argv[1], ledger_path=sys.argv[2], **(
    {"heartbeat_s": float(sys.argv[3])} if len(sys.argv) > 3 else {}))
assert c.claim(["k"]) == {"k"}
rid, _ = c.try_reserve("local:hash", Decimal("0.5"), 3, Decimal("1"))
assert rid is not None
print("ready", flush=True)
sys.stdin.read()  # hold the lease and the reservation until killed
"""


def owner_process(
    tmp_path: Path, prefix: Sequence[str] = (), heartbeat_s: float | None = None
) -> subprocess.Popen[str]:
    """Another process (run under ``prefix``) holding a lease on "k" and an open $0.5
    reservation in the coordination database of ``tmp_path``, once it has said so."""
    beat = [] if heartbeat_s is None else [str(heartbeat_s)]
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-c", OWNER, str(tmp_path / "coordination.db"),
         str(tmp_path / "ledger.jsonl"), *beat],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_a_killed_owner_leaves_its_leases_and_its_in_flight_money_is_charged(
    tmp_path: Path,
) -> None:
    proc = owner_process(tmp_path)
    try:
        with coordinator(tmp_path) as c:
            assert c.claim(["k"]) == set()  # alive: its lease holds
            assert c.spend(TEACHER).reserved == Decimal("0.5")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert c.claim(["k"]) == {"k"}  # dead: its lease is void
            view = c.spend(TEACHER)
            # the request it may have had on the wire is charged at its reservation
            assert (view.settled, view.reserved) == (Decimal("0.5"), Decimal(0))
    finally:
        proc.kill()
        proc.communicate()
    [orphan] = SpendLedger.read(tmp_path / "ledger.jsonl")
    assert (orphan.outcome, orphan.cost_usd, orphan.items) == (ORPHANED, "0.5", 3)
    with coordinator(tmp_path) as c:  # charged once, not again by the next run
        assert c.spend(TEACHER).settled == Decimal("0.5")


def test_a_database_made_before_reservations_kept_their_kind_still_opens(
    tmp_path: Path,
) -> None:
    """Reservations keep their kind and base URL for the ledger's orphaned line (since
    2026-12-07). A database made before (no such columns) opens and gets them; its open
    rows, and rows an older version still writes, are charged as before: kind "unknown",
    no endpoint."""
    with sqlite3.connect(tmp_path / "coordination.db") as db:
        db.execute(
            "CREATE TABLE reservations(id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT "
            "NULL, teacher TEXT NOT NULL, usd TEXT NOT NULL, items INTEGER NOT NULL)"
        )
        db.execute("INSERT INTO reservations(owner, teacher, usd, items) "
                   "VALUES ('gone', 'local:hash', '0.5', 3)")  # fmt: skip
    db.close()
    with coordinator(tmp_path) as c:
        assert c.spend(TEACHER).settled == Decimal("0.5")  # the dead owner's, charged
        rid, _ = c.try_reserve(TEACHER, Decimal("0.25"), 2, None, kind="answer",
                               endpoint="http://gpu-box:8000/v1")  # fmt: skip
        assert rid is not None  # left open: closing charges it as orphaned
    with coordinator(tmp_path) as c, sqlite3.connect(tmp_path / "coordination.db") as db:
        db.execute(  # as an older version writes it
            "INSERT INTO reservations(owner, teacher, usd, items) "
            "VALUES ('gone too', 'local:hash', '0.125', 1)"
        )
        db.commit()
        assert c.spend(TEACHER).settled == Decimal("0.875")
    db.close()
    charged = [(r.outcome, r.kind, r.endpoint, r.cost_usd)
               for r in SpendLedger.read(tmp_path / "ledger.jsonl")]  # fmt: skip
    assert charged == [
        (ORPHANED, "unknown", None, "0.5"),
        (ORPHANED, "answer", "http://gpu-box:8000/v1", "0.25"),
        (ORPHANED, "unknown", None, "0.125"),
    ]


def stopped(pid: int) -> None:
    """Wait until ``pid`` is stopped (SIGSTOP is delivered after ``kill`` returns)."""
    from cache.coordination_db import pid_stopped

    deadline = time.monotonic() + 30
    while not pid_stopped(pid, "") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pid_stopped(pid, "")


def test_a_stopped_owner_s_leases_hold_past_their_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An owner stopped (Ctrl-Z, SIGSTOP) past the lease time may have requests on the
    wire: billed while it is stopped, read when it runs on. Before: its leases lapsed and
    the other process took them and bought the items too (paid twice)."""
    proc = owner_process(tmp_path)
    try:
        with coordinator(tmp_path) as c:
            os.kill(proc.pid, signal.SIGSTOP)
            stopped(proc.pid)
            db = sqlite3.connect(tmp_path / "coordination.db", isolation_level=None)
            # what a stop longer than the lease time leaves: no heartbeat renewed them
            db.execute("UPDATE leases SET expires=?", (time.time() - 1,))
            db.close()
            with caplog.at_level(logging.WARNING, logger="cache.coordination"):
                assert c.claim(["k"]) == set()
                assert c.held_elsewhere(["k", "free"]) == {"k"}
                assert c.claim(["k"]) == set()
            said = [r.getMessage() for r in caplog.records if "stopped" in r.getMessage()]
            assert len(said) == 1, said  # once
            assert said[0].startswith(f"process {proc.pid} on this host is stopped"), said
            assert "holding 1 item of the cache" in said[0]
            assert f"kill -CONT {proc.pid}" in said[0]
            assert c.spend(TEACHER).reserved == Decimal("0.5")  # alive: not charged
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert c.claim(["k"]) == {"k"}  # killed: its leases end as before
            assert c.spend(TEACHER).settled == Decimal("0.5")
    finally:
        proc.kill()
        proc.communicate()


def test_a_live_owner_that_stopped_renewing_its_leases_is_named_while_it_is_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A live, running owner on this host whose leases are long past their time (hung, or
    its heartbeat thread died) is waited for as a stopped one is; the waiting run says so
    once and how to end the wait, instead of waiting without a word."""
    proc = owner_process(tmp_path, heartbeat_s=3600.0)  # its heartbeat renews nothing
    try:
        with coordinator(tmp_path) as c:
            db = sqlite3.connect(tmp_path / "coordination.db", isolation_level=None)
            db.execute("UPDATE leases SET expires=?", (time.time() - LEASE_TTL_S - 1,))
            db.close()
            with caplog.at_level(logging.WARNING, logger="cache.coordination"):
                assert c.claim(["k"]) == set()
                assert c.claim(["k"]) == set()
            said = [r.getMessage() for r in caplog.records if "renewed" in r.getMessage()]
            assert len(said) == 1, said
            assert said[0].startswith(f"process {proc.pid} on this host holds 1 item"), said
            assert f"kill {proc.pid}" in said[0]
            assert not [r for r in caplog.records if "is stopped" in r.getMessage()]
    finally:
        proc.kill()
        proc.communicate()


def test_a_stopped_owner_on_another_host_is_judged_by_its_heartbeat(tmp_path: Path) -> None:
    """Its pid cannot be looked at from here: a lease past its time lapses, as before."""
    with coordinator(tmp_path) as c:
        db = sqlite3.connect(tmp_path / "coordination.db", isolation_level=None)
        now = time.time()
        db.execute("INSERT INTO owners VALUES ('far:1:a', 'far', ?, '', ?)",
                   (os.getpid(), now))  # fmt: skip
        db.execute("INSERT INTO leases VALUES ('k', 'far:1:a', ?)", (now - 1,))
        db.close()
        assert c.held_elsewhere(["k"]) == set()
        assert c.claim(["k"]) == {"k"}


def test_an_owner_in_another_pid_namespace_is_not_taken_for_dead(tmp_path: Path) -> None:
    """Two containers sharing the cache folder and the hostname (host networking) but not
    the pids. Before: this process looked the other's pid (1 in its namespace) up in its
    own /proc, found a process with another start time, took the owner for dead, leased
    its keys and charged its open reservation as 'orphaned' (the audit's two harvests
    bought 1,591 of 1,723 images twice)."""
    namespace = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    probe = subprocess.run([*namespace, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare --pid needs root (or user namespaces) on this machine")
    proc = owner_process(tmp_path, prefix=namespace)
    try:
        with coordinator(tmp_path) as c:
            assert c.claim(["k"]) == set()  # alive: its lease holds
            view = c.spend(TEACHER)
            assert (view.settled, view.reserved) == (Decimal(0), Decimal("0.5"))
    finally:
        proc.kill()
        proc.communicate()
    assert not (tmp_path / "ledger.jsonl").exists() or SpendLedger.read(
        tmp_path / "ledger.jsonl") == []


def test_an_owner_on_another_host_is_dead_when_its_heartbeat_stops(tmp_path: Path) -> None:
    """Another machine's pid cannot be checked: its heartbeat decides (stale after 60 s)."""
    from cache.coordination import OWNER_TTL_S

    with coordinator(tmp_path) as c:
        db = sqlite3.connect(tmp_path / "coordination.db", isolation_level=None)
        now = time.time()
        # what a process on machine "far" leaves in the shared folder
        db.execute("INSERT INTO owners VALUES ('far:1:a', 'far', 1, '', ?)", (now,))
        db.execute(
            "INSERT INTO owners VALUES ('far:2:b', 'far', 2, '', ?)", (now - OWNER_TTL_S - 1,)
        )
        db.execute("INSERT INTO leases VALUES ('live', 'far:1:a', ?)", (now + 60,))
        db.execute("INSERT INTO leases VALUES ('stale', 'far:2:b', ?)", (now + 60,))
        db.close()
        assert c.claim(["live", "stale"]) == {"stale"}
        assert c.held_elsewhere(["live", "stale"]) == {"live"}


def test_a_reservation_left_open_at_close_is_charged_in_the_ledger_too(tmp_path: Path) -> None:
    with coordinator(tmp_path) as c:
        rid, _ = c.try_reserve(TEACHER, Decimal("0.2"), 2, None)
        assert rid is not None
    [rec] = SpendLedger.read(tmp_path / "ledger.jsonl")
    assert (rec.outcome, rec.cost_usd) == (ORPHANED, "0.2")
    with coordinator(tmp_path) as c:
        assert c.spend(TEACHER).settled == Decimal("0.2")


def test_a_damaged_database_is_moved_aside_and_rebuilt_from_the_ledger(tmp_path: Path) -> None:
    with SpendLedger(tmp_path / "ledger.jsonl") as ledger:
        ledger.record(LedgerRecord("local", "hash", "image_embedding", 4, "0.25"))
    (tmp_path / "coordination.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    with coordinator(tmp_path) as c:
        assert c.spend(TEACHER).settled == Decimal("0.25")
        assert c.claim(["k"]) == {"k"}
    assert list(tmp_path.glob("coordination.db.damaged-*"))


def test_the_database_and_its_journal_are_private(tmp_path: Path) -> None:
    import stat

    with coordinator(tmp_path) as c:
        c.claim(["k"])
    for name in ("coordination.db", "coordination.db-journal"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


LOCK_HOLDER = """
import os, signal, sys
from cache.coordination import Coordinator
c = Coordinator(sys.argv[1], ledger_path=sys.argv[2])
assert c.claim(["k"]) == {"k"}
with c._lock:  # as Coordinator._write does (its heartbeat thread waits meanwhile)
    c._db.execute("BEGIN " + sys.argv[3])  # a write it is stopped in the middle of (Ctrl-Z)
    c._db.execute("UPDATE owners SET heartbeat=heartbeat")
    print("locked", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    c._db.execute("COMMIT")
sys.stdin.read()  # runs on, holding its lease on "k"
"""


@pytest.mark.parametrize("lock", ["IMMEDIATE", "EXCLUSIVE"])
def test_a_process_stopped_holding_the_database_locked_is_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, lock: str
) -> None:
    """A harvest stopped (Ctrl-Z) in the middle of a write keeps ``coordination.db`` locked.
    Before: another process's writes gave up after the busy timeout: its claims failed
    open ("buying without them": the stopped run's items paid twice), its settles missed
    the shared total, and an exclusive lock at open was taken for damage: the database
    moved aside and a fresh one made (the stopped run's leases and reservations lost)."""
    monkeypatch.setattr(coordination_db, "BUSY_TIMEOUT_MS", 500)  # for a running holder
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "coordination.db"),
         str(tmp_path / "ledger.jsonl"), lock],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    done: list[object] = []

    def other_run() -> None:
        with coordinator(tmp_path) as c:
            claimed = c.claim(["k", "free"])
            rid, _ = c.try_reserve(TEACHER, Decimal("0.25"), 1, Decimal("1"))
            assert rid is not None
            c.settle(rid, TEACHER, Decimal("0.25"))
            done.append((claimed, c.spend(TEACHER).settled))

    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        stopped(proc.pid)
        with caplog.at_level(logging.WARNING, logger="cache"):
            thread = threading.Thread(target=other_run, daemon=True)
            thread.start()
            deadline = time.monotonic() + 60
            while thread.is_alive() and time.monotonic() < deadline:
                if [r for r in caplog.records if "holding a lock on" in r.getMessage()]:
                    break
                time.sleep(0.01)
            assert thread.is_alive(), (done, [r.getMessage() for r in caplog.records])
            assert not done  # it waits: nothing claimed, reserved or settled meanwhile
            os.kill(proc.pid, signal.SIGCONT)
            thread.join(timeout=60)
        assert done == [({"free"}, Decimal("0.25"))]  # "k" stays the stopped run's
        said = [r.getMessage() for r in caplog.records if "holding a lock on" in r.getMessage()]
        assert len(said) == 1, said  # once
        assert said[0].startswith(f"process {proc.pid} on this host is stopped"), said
        assert f"kill -CONT {proc.pid}" in said[0]
        assert not [r for r in caplog.records if "without them" in r.getMessage()]
        assert sorted(p.name for p in tmp_path.iterdir() if "damaged" in p.name) == []
    finally:
        proc.kill()
        proc.communicate()


def test_a_stop_signal_ends_the_wait_for_a_process_stopped_holding_the_database_locked(
    tmp_path: Path,
) -> None:
    """The wait above, once this process got a stop signal (``stop_waiting``, from the
    CLI's signal handler: its event loop is the one waiting). Before: it went on waiting
    until the stopped process ran on or ended, and so did the signal. Now each write
    gives up at once (claims fail open, money fails closed), and the process holding the
    lock is named for the stop's message."""
    ended: list[float] = []
    with coordinator(tmp_path) as c:
        proc = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "coordination.db"),
             str(tmp_path / "ledger.jsonl"), "IMMEDIATE"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
            stopped(proc.pid)
            assert not c.given_up()
            threading.Timer(0.3, coordination_db.stop_waiting).start()
            watchdog = threading.Timer(10, os.kill, (proc.pid, signal.SIGCONT))
            watchdog.start()  # a wait that does not give up fails the test, not hangs it
            started = time.monotonic()
            assert c.claim(["free"]) == {"free"}  # given up: failed open
            ended.append(time.monotonic() - started)
            assert c.given_up() and coordination_db.given_up_on() == proc.pid
            started = time.monotonic()
            with pytest.raises(CoordinationError):
                c.try_reserve(TEACHER, Decimal("0.25"), 1, Decimal("1"))  # fails closed
            ended.append(time.monotonic() - started)
            watchdog.cancel()
        finally:
            coordination_db.stop_waiting(False)
            proc.kill()
            proc.communicate()
    assert ended[0] < 2 and ended[1] < 0.5, ended


def test_a_process_stopped_holding_the_database_locked_is_a_user_of_the_cache(
    tmp_path: Path,
) -> None:
    """``cache recover`` refuses while the cache is in use (``live_owners``). Before: a
    database locked by a harvest stopped in the middle of a write could not be read, and
    was read as nobody using the cache: recover would move the response database aside
    under it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "coordination.db"),
         str(tmp_path / "ledger.jsonl"), "EXCLUSIVE"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        stopped(proc.pid)
        assert live_owners(tmp_path / "coordination.db") == [f"pid {proc.pid} on this host"]
        os.kill(proc.pid, signal.SIGCONT)
        until_unlocked = time.monotonic() + 60
        while coordination_db.lock_holders(tmp_path / "coordination.db"):
            assert time.monotonic() < until_unlocked
            time.sleep(0.01)
        assert live_owners(tmp_path / "coordination.db") == [f"pid {proc.pid} on this host"]
    finally:
        proc.kill()
        proc.communicate()

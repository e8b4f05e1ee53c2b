"""Coordination of the processes that share one cache folder: item leases and one budget.

A small SQLite database beside the response cache (``DIR/coordination.db``) holds:

- ``owners``: every live :class:`Coordinator` (host, pid, the pid's start time and a
  heartbeat). An owner is dead when, on this host, its pid is gone (or is a zombie, or
  was reused by another program), and on another host when its heartbeat is older
  than :data:`OWNER_TTL_S`. "This host" is the hostname, the boot and the pid namespace
  (:func:`cache.coordination_db.machine_identity`): a container sharing the hostname
  but not the pids counts as another host.
- ``leases``: a claim on a cache key that its owner is about to buy. Other owners wait
  for the key to appear in the cache instead of buying it too. A lease ends when its
  owner releases it (after caching the result) or dies; on another host also when it
  stops renewing it (:data:`LEASE_TTL_S`). On this host a lease holds past its time for
  as long as its owner lives: a live owner that does not renew it is stopped (Ctrl-Z,
  SIGSTOP; named once, in a warning, to whoever waits on it) or was just continued, and
  what it has on the wire is billed and read when it runs on.
- ``spend`` and ``reservations``: per teacher (``provider:model``), what has been
  settled so far (seeded from, and never below, the spend ledger's total for that
  teacher) and every open reservation of every process. A reservation is checked
  against the cap and inserted in one write transaction, so no number of processes
  can pass the cap together.
- ``overruns``: every request a provider billed above its reservation, per teacher and
  budget. A budget that started before another budget's overrun is refused its next
  reservation (same transaction), so an overrun stops every process buying from that
  teacher, not only the one that saw it.

An open reservation of a dead owner (a request in flight when it was killed) is charged
at its reserved amount: added to ``spend`` and appended to the spend ledger with outcome
``orphaned``, so the ledger is never below what the provider may have billed.

Every transaction is short (no network call inside one) and never fsynced: the ledger
is the durable record, and the database keeps space reserved so a full disk does not
stop it. Imports nothing else of vlm-distill but :mod:`cache.ledger`.

Why leases and money are one class of about 400 lines: they share one connection, one lock,
one owner row and one reaper (a dead owner's leases are freed and its reservations charged
in the same transaction), so two classes would have to share all of that state. How the
database is opened (schema, damage, reserved space) and how a process is judged alive live
in cache/coordination_db.py.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final, TypeVar

from .coordination_db import (
    LOCK_STEP_S,
    given_up_on,
    is_locked,
    lock_holders,
    machine_identity,
    open_coordination_db,
    pid_alive,
    pid_start,
    pid_stopped,
    stopped_holder,
    stopping,
    while_stopped,
)
from .ledger import LedgerWriteError, SpendLedger, iter_ledger
from .money import money_context
from .protocols import LedgerRecord

__all__ = [
    "LEASE_TTL_S",
    "ORPHANED",
    "OWNER_TTL_S",
    "CoordinationError",
    "Coordinator",
    "Overrun",
    "SpendView",
    "live_owners",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def live_owners(path: str | os.PathLike[str]) -> list[str]:
    """The processes registered in the coordination database at ``path`` that still run
    (on this host judged by pid, elsewhere by a heartbeat younger than
    :data:`OWNER_TTL_S`), as "pid N on this host" or "pid N on HOST": who is using the
    cache now. Read only; [] when there is no database or it cannot be read, but the
    processes holding it locked when it is (in the middle of a write, or stopped there).

    >>> live_owners("no-such-folder/coordination.db")
    []
    """
    db = Path(path).absolute()
    if not db.is_file():
        return []
    try:
        uri = db.as_uri() + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=LOCK_STEP_S)) as con:
            rows = con.execute("SELECT host, pid, pid_start, heartbeat FROM owners").fetchall()
    except sqlite3.Error as exc:
        if not is_locked(exc):
            return []
        # a harvest stopped (Ctrl-Z) in the middle of a write keeps it locked: a user
        holders = dict.fromkeys(lock_holders(db))
        return [f"pid {pid} on this host" for pid in holders] or [f"a process locking {db}"]
    machine = machine_identity(socket.gethostname())
    now = time.time()
    out = []
    for host, pid, start, beat in rows:
        if host == machine:
            if pid_alive(int(pid), str(start)):
                out.append(f"pid {pid} on this host")
        elif now - float(beat) < OWNER_TTL_S:
            out.append(f"pid {pid} on {str(host).split()[0]}")
    return out


class CoordinationError(RuntimeError):
    """The coordination database cannot be read or written (closed, locked too long, full).

    Leases fail open (a process that cannot claim buys anyway: at worst a duplicate);
    money fails closed (:class:`vlmclient.SharedBudget` refuses to reserve). Not raised
    while the process keeping the database locked is stopped on this host (Ctrl-Z): that
    is waited for (:func:`cache.coordination_db.while_stopped`).
    """


LEASE_TTL_S: Final = 60.0  # a lease not renewed for this long is void
OWNER_TTL_S: Final = 60.0  # an owner on another host is dead after this long without a heartbeat
HEARTBEAT_S: Final = 5.0  # how often an owner renews its heartbeat and its leases
REAP_EVERY_S: Final = 1.0  # look for dead owners' leftovers this often (sooner if one is seen)
ORPHANED: Final = "orphaned"  # ledger outcome of a dead owner's in-flight reservation


@dataclass(frozen=True)
class Overrun:
    """A request some budget's provider billed above its reservation (``overruns`` row)."""

    id: int
    host: str
    pid: int
    billed: Decimal
    reserved: Decimal


@dataclass(frozen=True)
class SpendView:
    """One teacher's money as all processes see it: settled (ledger) and reserved (in flight).

    ``overrun``: set when a reservation was refused because another budget overran."""

    settled: Decimal
    reserved: Decimal
    overrun: Overrun | None = None

    @property
    def committed(self) -> Decimal:
        return self.settled + self.reserved


LEASE_QUERY_CHUNK: Final = 500  # keys per SELECT ... IN (SQLite takes 999 parameters)


def _leases(db: sqlite3.Connection, keys: Sequence[str]) -> dict[str, tuple[str, float]]:
    """(owner, expires) of the lease on each of ``keys`` that has one."""
    out: dict[str, tuple[str, float]] = {}
    for start in range(0, len(keys), LEASE_QUERY_CHUNK):
        chunk = keys[start : start + LEASE_QUERY_CHUNK]
        marks = ",".join("?" * len(chunk))
        for key, owner, expires in db.execute(
            f"SELECT key, owner, expires FROM leases WHERE key IN ({marks})", tuple(chunk)
        ):
            out[key] = (owner, expires)
    return out


class Coordinator:
    """This process's seat in a cache folder's coordination database.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with Coordinator(os.path.join(d, "c.db"), ledger_path=os.path.join(d, "l.jsonl")) as c:
    ...         sorted(c.claim(["k1", "k2"]))
    ['k1', 'k2']
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ledger_path: str | os.PathLike[str],
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        # absolute once: after a chdir the spend seed and orphan records must still find
        # this folder's ledger (a relative one read as missing: a cap seeded at $0)
        self.path = Path(path).absolute()
        self.ledger_path = Path(ledger_path).absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # what "on this host" means for the pid check (_alive): the hostname alone let
        # two containers sharing one (host networking) read each other's pids in their
        # own pid namespace, take each other for dead and buy each other's leases
        self.machine = machine_identity(self.host)
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()  # one connection, used from several threads
        # processes said to be stopped holding the database's lock (cache.coordination_db)
        self._told_locked: set[int] = set()
        try:
            self._db: sqlite3.Connection | None = open_coordination_db(self.path, self._told_locked)
        except sqlite3.Error as exc:  # locked past the busy timeout by a running process
            raise CoordinationError(f"coordination database {self.path}: {exc}") from exc
        self._open: dict[int, Decimal] = {}  # our reservations not yet settled or released
        self._dead: set[str] = set()  # owners seen dead (a dead owner never comes back)
        # owners on this host named in a warning already (stopped, or renewing nothing)
        self._told_stopped: set[str] = set()
        self._reaped: set[str] = set()
        self._last_reap = float("-inf")
        self._reconciled: set[str] = set()
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO owners VALUES (?, ?, ?, ?, ?)",
                (self.owner, self.machine, self.pid, pid_start(self.pid), now),
            )
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat, args=(heartbeat_s,), name="vlm-distill-heartbeat", daemon=True
        )
        self._heartbeat.start()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the check and the change are atomic).
        It waits for the database's lock while its holder on this host is stopped
        (Ctrl-Z), saying so once: given up, a claim would buy unclaimed, a settle miss the
        shared total."""
        with self._lock, money_context():  # its totals in dollars too
            db = self._db
            if db is None:
                raise CoordinationError(f"coordination database {self.path} is closed")
            try:
                self._waiting(lambda: db.execute("BEGIN IMMEDIATE"))
                try:
                    yield db
                    self._waiting(lambda: db.execute("COMMIT"))
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise CoordinationError(f"coordination database {self.path}: {exc}") from exc

    def given_up(self) -> bool:
        """Has this process got a stop signal while a stopped process (Ctrl-Z) holds the
        database locked? Its writes then fail at once (:func:`while_stopped`): a
        reservation it cannot close is left open, for the next process to charge as
        orphaned (written to the ledger too, it would be charged twice)."""
        return stopping() and stopped_holder(self.path) is not None

    def _waiting(self, run: Callable[[], _T]) -> _T:
        """``run()``, waiting for the database's lock (see :func:`while_stopped`)."""
        return while_stopped(self.path, run, self._told_locked)

    # -- liveness -------------------------------------------------------------------------

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                now = time.time()
                with self._write() as db:
                    db.execute("UPDATE owners SET heartbeat=? WHERE owner=?", (now, self.owner))
                    db.execute(
                        "UPDATE leases SET expires=? WHERE owner=?", (now + LEASE_TTL_S, self.owner)
                    )
            except CoordinationError:
                return  # closed or broken: leases then expire, which only costs duplicates

    def _alive(self, db: sqlite3.Connection, owner: str, memo: dict[str, bool]) -> bool:
        """Is ``owner`` alive? ``memo`` holds verdicts for one call; death is remembered."""
        if owner == self.owner:
            return True
        if owner in self._dead:
            return False
        if owner in memo:
            return memo[owner]
        row = db.execute(
            "SELECT host, pid, pid_start, heartbeat FROM owners WHERE owner=?", (owner,)
        ).fetchone()
        if row is None:
            alive = False
        elif row[0] == self.machine:
            alive = pid_alive(int(row[1]), str(row[2]))
        else:
            alive = time.time() - float(row[3]) < OWNER_TTL_S
        memo[owner] = alive
        if not alive:
            self._dead.add(owner)
        return alive

    def _holds(
        self, db: sqlite3.Connection, owner: str, expires: float, now: float,
        memo: dict[str, bool], here: dict[str, bool],
    ) -> bool:  # fmt: skip
        """Does ``owner``'s lease (valid until ``expires``) keep its key from us? ``memo``
        and ``here`` hold the verdicts of one call."""
        if owner == self.owner or not self._alive(db, owner, memo):
            return False
        if expires > now:
            return True
        # Past its time. On this host the pid alone judges: a live owner's heartbeat
        # renews its leases unless it is stopped (Ctrl-Z, SIGSTOP) or was just continued,
        # and what it has on the wire is billed either way (its answers are read when it
        # runs on): buying its items now pays for them twice. On another host a stopped
        # owner cannot be told from a dead one: its lease lapses.
        if owner not in here:
            here[owner] = self._on_this_host(db, owner, now - expires)
        return here[owner]

    def _on_this_host(self, db: sqlite3.Connection, owner: str, late: float) -> bool:
        """Is ``owner`` a process on this host? When it is stopped, or has not renewed
        its leases for ``late`` seconds past their time (longer than a lease lasts), say
        so once."""
        row = db.execute(
            "SELECT host, pid, pid_start FROM owners WHERE owner=?", (owner,)
        ).fetchone()
        if row is None or row[0] != self.machine:
            return False
        pid = int(row[1])
        if owner in self._told_stopped:
            return True
        stopped = pid_stopped(pid, str(row[2]))
        if stopped or late > LEASE_TTL_S:
            self._told_stopped.add(owner)
            (held,) = db.execute("SELECT COUNT(*) FROM leases WHERE owner=?", (owner,)).fetchone()
        if not stopped and late > LEASE_TTL_S:  # running, but renewing nothing: hung?
            log.warning(
                "process %d on this host holds %d item%s of the cache %s but has not "
                "renewed its leases for %.0f s (hung, or its heartbeat failed): waiting for "
                "it rather than buying them twice; end it (kill %d) to release them",
                pid, held, "" if held == 1 else "s", self.path.parent, late + LEASE_TTL_S,
                pid,
            )  # fmt: skip
        elif stopped:
            log.warning(
                "process %d on this host is stopped (Ctrl-Z or SIGSTOP) holding %d item%s "
                "of the cache %s: waiting for it rather than buying them twice (what it has "
                "on the wire is billed whether it runs on or not). Resume it (fg, or kill "
                "-CONT %d), or end it (kill %d; kill -CONT %d: a stopped process acts on "
                "kill only once continued)",
                pid, held, "" if held == 1 else "s", self.path.parent, pid, pid, pid,
            )  # fmt: skip
        return True

    def _reap(self, db: sqlite3.Connection) -> None:
        """Free the leases and charge the open reservations of every dead owner.

        Runs at most every REAP_EVERY_S, or at once after a dead owner was seen: until
        then a dead owner's reservations only hold money back, which errs on the safe side.
        """
        now = time.monotonic()
        if now - self._last_reap < REAP_EVERY_S and self._dead <= self._reaped:
            return
        self._last_reap = now
        owners = {r[0] for r in db.execute("SELECT owner FROM owners")}
        owners |= {r[0] for r in db.execute("SELECT DISTINCT owner FROM reservations")}
        memo: dict[str, bool] = {}
        for owner in owners:
            if self._alive(db, owner, memo):
                continue
            rows = db.execute(
                "SELECT teacher, usd, items, kind, endpoint FROM reservations WHERE owner=?",
                (owner,),
            ).fetchall()
            for teacher, usd, items, kind, endpoint in rows:
                self._add_settled(db, teacher, Decimal(usd))
                self._ledger_orphan(teacher, Decimal(usd), int(items), kind, endpoint)
            db.execute("DELETE FROM reservations WHERE owner=?", (owner,))
            db.execute("DELETE FROM leases WHERE owner=?", (owner,))
            db.execute("DELETE FROM owners WHERE owner=?", (owner,))
            self._reaped.add(owner)
        self._reaped |= self._dead  # dead owners with nothing left to reap

    def _ledger_orphan(
        self, teacher: str, usd: Decimal, items: int, kind: str | None, endpoint: str | None
    ) -> None:
        provider, _, model = teacher.partition(":")
        try:
            with SpendLedger(self.ledger_path) as ledger:
                # charged at its worst case, not at a bill: estimated (before 2026-12-07
                # not marked, so the report's estimated_requests left it out). Its kind and
                # endpoint as reserved (before 2026-12-07, and for a reservation an older
                # version made: "unknown" and None, the provider's default URL)
                orphan = LedgerRecord(
                    provider, model, kind or "unknown", items, str(usd), outcome=ORPHANED,
                    reserved_usd=str(usd), estimated=True, endpoint=endpoint,
                )  # fmt: skip
                ledger.record(orphan)
        except (LedgerWriteError, OSError):
            pass  # still counted in the spend table: the cap holds either way

    # -- leases ---------------------------------------------------------------------------

    def claim(self, keys: Sequence[str]) -> set[str]:
        """Lease every key not leased by a live owner; return the keys now ours."""
        mine: set[str] = set()
        if not keys:
            return mine
        try:
            return self._claim(keys)
        except CoordinationError as exc:
            if given_up_on() is None:  # else stopping: nothing more is bought
                log.warning("cannot take leases (%s): buying without them", exc)
            return set(keys)

    def _claim(self, keys: Sequence[str]) -> set[str]:
        mine: set[str] = set()
        now = time.time()
        memo: dict[str, bool] = {}
        here: dict[str, bool] = {}
        with self._write() as db:
            # the leases read with one query per chunk and written with one executemany:
            # the same check and change as key by key, inside the one write transaction
            unique = list(dict.fromkeys(keys))
            held = _leases(db, unique)
            rows = []
            for key in unique:
                row = held.get(key)
                if row is not None and self._holds(db, row[0], row[1], now, memo, here):
                    continue  # another live owner holds it
                rows.append((key, self.owner, now + LEASE_TTL_S))
                mine.add(key)
            db.executemany("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", rows)
        return mine

    def release(self, keys: Iterable[str]) -> None:
        """End our leases on ``keys`` (call after their results are cached, or on failure)."""
        keys = list(keys)
        if not keys:
            return
        try:
            with self._write() as db:
                db.executemany(
                    "DELETE FROM leases WHERE key=? AND owner=?", [(k, self.owner) for k in keys]
                )
        except CoordinationError as exc:  # the lease expires on its own
            if given_up_on() is None:  # else stopping: they end with this process
                log.warning("cannot release leases (%s)", exc)

    def held_elsewhere(self, keys: Iterable[str]) -> set[str]:
        """The keys another live owner holds a lease on."""
        now = time.time()
        held: set[str] = set()
        memo: dict[str, bool] = {}
        here: dict[str, bool] = {}
        with self._lock:
            if self._db is None:
                return held
            db = self._db
            unique = list(dict.fromkeys(keys))

            def look() -> set[str]:
                leases = _leases(db, unique)
                return {k for k, row in leases.items() if self._holds(db, *row, now, memo, here)}

            try:
                held = self._waiting(look)
            except sqlite3.Error as exc:
                if given_up_on() is None:  # else stopping: nothing more is bought
                    log.warning("cannot read leases (%s): buying without them", exc)
                return set()
        return held

    def partners(self) -> int:
        """How many other live processes of this cache folder are buying now: hold a lease
        (claimed, not yet cached and released). 0 when the database cannot be read:
        nothing is known of them. A process that only looks (``--dry-run``) or is between
        rounds holds none."""
        now = time.time()
        memo: dict[str, bool] = {}
        here: dict[str, bool] = {}
        with self._lock:
            db = self._db
            if db is None:
                return 0
            try:
                rows = db.execute(
                    "SELECT owner, MAX(expires) FROM leases WHERE owner != ? GROUP BY owner",
                    (self.owner,),
                ).fetchall()
                return sum(self._holds(db, o, e, now, memo, here) for o, e in rows)
            except sqlite3.Error:
                return 0

    # -- money ----------------------------------------------------------------------------

    def _add_settled(self, db: sqlite3.Connection, teacher: str, usd: Decimal) -> None:
        row = db.execute("SELECT settled FROM spend WHERE teacher=?", (teacher,)).fetchone()
        settled = Decimal(row[0]) if row else Decimal(0)
        db.execute("INSERT OR REPLACE INTO spend VALUES (?, ?)", (teacher, str(settled + usd)))

    def _reconcile(self, db: sqlite3.Connection, teacher: str) -> None:
        """Once per process and teacher: raise the settled total to the ledger's, if below.

        Below means the database is new (or was deleted) or someone wrote the ledger
        without this database; a total above the ledger's is spend settled in the
        database whose ledger line is being written (or was lost in a crash). Lines whose
        reservation is open here are left out: their settle adds them.
        """
        if teacher in self._reconciled:
            return
        provider, _, model = teacher.partition(":")
        # a line whose reservation is still open is being settled by its process, which
        # adds it (counted here too, it was counted twice)
        open_ = {
            f"{owner}:{rid}"
            for owner, rid in db.execute(
                "SELECT owner, id FROM reservations WHERE teacher=?", (teacher,)
            )
        }
        in_ledger = sum(
            (
                Decimal(r.cost_usd)
                for r in iter_ledger(self.ledger_path)
                if r.provider == provider and r.model == model and r.reservation not in open_
            ),
            Decimal(0),
        )
        row = db.execute("SELECT settled FROM spend WHERE teacher=?", (teacher,)).fetchone()
        if row is None or Decimal(row[0]) < in_ledger:
            db.execute("INSERT OR REPLACE INTO spend VALUES (?, ?)", (teacher, str(in_ledger)))
        self._reconciled.add(teacher)

    def _view(self, db: sqlite3.Connection, teacher: str) -> SpendView:
        row = db.execute("SELECT settled FROM spend WHERE teacher=?", (teacher,)).fetchone()
        reserved = sum(
            (
                Decimal(r[0])
                for r in db.execute("SELECT usd FROM reservations WHERE teacher=?", (teacher,))
            ),
            Decimal(0),
        )
        return SpendView(Decimal(row[0]) if row else Decimal(0), reserved)

    def spend(self, teacher: str) -> SpendView:
        """What this cache's ledger records for ``teacher`` (``provider:model``), and what is
        reserved by requests in flight in every process."""
        if teacher in self._reconciled and self._dead <= self._reaped:
            with self._lock, money_context():  # nothing to write: one read snapshot
                if self._db is not None:
                    db = self._db
                    try:
                        db.execute("BEGIN")
                        try:
                            return self._waiting(lambda: self._view(db, teacher))
                        finally:
                            db.execute("COMMIT")
                    except sqlite3.Error as exc:
                        why = f"coordination database {self.path}: {exc}"
                        raise CoordinationError(why) from exc
        with self._write() as db:
            self._reap(db)
            self._reconcile(db, teacher)
            return self._view(db, teacher)

    def last_overrun(self, teacher: str) -> int:
        """The id of the newest overrun recorded for ``teacher`` (0: none)."""
        with self._write() as db:
            row = db.execute("SELECT MAX(id) FROM overruns WHERE teacher=?", (teacher,))
            return int(row.fetchone()[0] or 0)

    def try_reserve(
        self,
        teacher: str,
        usd: Decimal,
        items: int,
        cap: Decimal | None,
        *,
        budget: str = "",
        overruns_after: int | None = None,
        kind: str | None = None,
        endpoint: str | None = None,
    ) -> tuple[int | None, SpendView]:
        """Reserve ``usd`` if settled + reserved + usd stays within ``cap`` (None: no cap)
        and, with ``overruns_after``, no other budget than ``budget`` has recorded an
        overrun for ``teacher`` after that id (:meth:`last_overrun`). ``kind`` and
        ``endpoint`` (the base URL, None for the provider's default) go on the ledger's
        ``orphaned`` line if the reservation is left open by a process that dies.

        Returns (reservation id or None when refused, the totals it was checked against,
        with the overrun that refused it).
        """
        with self._write() as db:
            self._reap(db)
            self._reconcile(db, teacher)
            view = self._view(db, teacher)
            if overruns_after is not None:
                row = db.execute(
                    "SELECT id, host, pid, billed, reserved FROM overruns "
                    "WHERE teacher=? AND id>? AND budget!=? ORDER BY id LIMIT 1",
                    (teacher, overruns_after, budget),
                ).fetchone()
                if row is not None:
                    seen = Overrun(row[0], row[1], row[2], Decimal(row[3]), Decimal(row[4]))
                    return None, SpendView(view.settled, view.reserved, seen)
            if cap is not None and view.committed + usd > cap:
                return None, view
            cur = db.execute(
                "INSERT INTO reservations(owner, teacher, usd, items, kind, endpoint) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self.owner, teacher, str(usd), items, kind, endpoint),
            )
            rid = int(cur.lastrowid or 0)
            self._open[rid] = usd
            return rid, view

    def settle(
        self, reservation_id: int, teacher: str, actual: Decimal, *, overran_in: str = ""
    ) -> None:
        """The request was billed ``actual``: close the reservation, add to the total.
        ``overran_in``: the budget whose reservation ``actual`` exceeded (an overrun)."""
        with self._write() as db:
            row = db.execute(
                "SELECT usd FROM reservations WHERE id=?", (reservation_id,)
            ).fetchone()
            reserved = self._open.pop(reservation_id, Decimal(0))
            # No row: we were taken for dead and the reservation was charged already.
            already = reserved if row is None else Decimal(0)
            db.execute("DELETE FROM reservations WHERE id=?", (reservation_id,))
            if actual > already:
                self._add_settled(db, teacher, actual - already)
            if overran_in:
                db.execute(
                    "INSERT INTO overruns(teacher, budget, host, pid, billed, reserved) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (teacher, overran_in, self.host, self.pid, str(actual), str(reserved)),
                )

    def release_reservation(self, reservation_id: int) -> None:
        """The provider surely did not bill it: drop the reservation."""
        self._open.pop(reservation_id, None)
        with self._write() as db:
            db.execute("DELETE FROM reservations WHERE id=?", (reservation_id,))

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Release our leases, charge any reservation still open, leave (idempotent)."""
        self._stop.set()
        if self._heartbeat.is_alive() and threading.current_thread() is not self._heartbeat:
            self._heartbeat.join(timeout=HEARTBEAT_S + 1)
        if self._db is None:
            return
        try:
            self._leave()
        except CoordinationError as exc:  # dead owners' rows are reaped by the next process
            if given_up_on() is None:  # else the stop says what it leaves
                log.warning("could not leave the coordination database cleanly: %s", exc)
        finally:
            with self._lock:
                db, self._db = self._db, None
                if db is not None:
                    db.close()

    def _leave(self) -> None:
        with self._write() as db:
            rows = db.execute(
                "SELECT teacher, usd, items, kind, endpoint FROM reservations WHERE owner=?",
                (self.owner,),
            ).fetchall()
            for teacher, usd, items, kind, endpoint in rows:  # never settled: assume billed
                self._add_settled(db, teacher, Decimal(usd))
                self._ledger_orphan(teacher, Decimal(usd), int(items), kind, endpoint)
            db.execute("DELETE FROM reservations WHERE owner=?", (self.owner,))
            db.execute("DELETE FROM leases WHERE owner=?", (self.owner,))
            db.execute("DELETE FROM owners WHERE owner=?", (self.owner,))

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Coordinator({str(self.path)!r}, owner={self.owner!r})"

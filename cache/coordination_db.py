"""The coordination database's file and the liveness of the processes it records.

How ``DIR/coordination.db`` (cache/coordination.py) is opened: its schema, a journal that
keeps working on a full disk, a damaged file moved aside and rebuilt; and how an owner's
pid is judged alive on this host (gone, a zombie, or reused by another program: dead) or
stopped (Ctrl-Z, SIGSTOP: alive, and named to whoever waits on its leases); and how a
process waits for the database's lock while the process holding it on this host is
stopped (:func:`while_stopped`), until a stop signal of its own (:func:`stop_waiting`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Final, TypeVar

from .ledger import reserve_tail

__all__ = [
    "BUSY_TIMEOUT_MS",
    "LOCK_STEP_S",
    "RESERVE_BYTES",
    "given_up_on",
    "is_locked",
    "lock_holders",
    "machine_identity",
    "open_coordination_db",
    "open_reservations",
    "pid_alive",
    "pid_start",
    "pid_stopped",
    "stop_waiting",
    "stopped_holder",
    "stopping",
    "while_stopped",
]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 30_000  # wait this long for another process's transaction
# ... looking this often whether the process holding the lock is stopped (then: no limit)
LOCK_STEP_S: Final = 0.25
# Blocks kept allocated past the end of the database and of its journal, so that it keeps
# working on a full disk (it holds a few hundred bytes per lease and reservation).
RESERVE_BYTES: Final = 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS owners(
    owner TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,
    pid_start TEXT NOT NULL, heartbeat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS leases(
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leases_owner ON leases(owner);
CREATE TABLE IF NOT EXISTS spend(teacher TEXT PRIMARY KEY, settled TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reservations(
    id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, teacher TEXT NOT NULL,
    usd TEXT NOT NULL, items INTEGER NOT NULL, kind TEXT, endpoint TEXT);
CREATE INDEX IF NOT EXISTS reservations_teacher ON reservations(teacher);
CREATE TABLE IF NOT EXISTS overruns(
    id INTEGER PRIMARY KEY AUTOINCREMENT, teacher TEXT NOT NULL, budget TEXT NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, billed TEXT NOT NULL, reserved TEXT NOT NULL);
"""

# Columns added to a table since its first version, with their type: a database made
# before gets them (NULL in the rows it holds), so an older cache opens; an older
# version's INSERTs name their columns, so it still writes a newer cache (NULL here).
_ADDED_COLUMNS: Final = (
    ("reservations", "kind", "TEXT"),  # 2026-12-07: what an orphaned line was for ...
    ("reservations", "endpoint", "TEXT"),  # ... and where it was sent
)


def open_coordination_db(path: Path, told: set[int] | None = None) -> sqlite3.Connection:
    """A connection to the database at ``path`` (autocommit; the caller begins its own
    transactions), created if missing; a damaged file is moved aside and a fresh one made.
    Its busy timeout is :data:`LOCK_STEP_S`: run statements that may wait for another
    process's lock through :func:`while_stopped` (``told``: its pids named already)."""
    try:
        return while_stopped(path, lambda: _open_db(path), set() if told is None else told)
    except sqlite3.DatabaseError as exc:
        if is_locked(exc):  # locked, not damaged: moving it aside would split the cache
            raise
        # Damaged (synchronous=OFF and an OS crash or power cut mid-commit). Everything
        # in it can be rebuilt: spend from the ledger, leases by the running processes.
        aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        log.warning("coordination database %s is damaged (%s); moved to %s", path,
                    exc, aside)  # fmt: skip
        for suffix in ("", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        return _open_db(path)


def open_reservations(path: Path) -> dict[str, Decimal]:
    """Per teacher (``provider:model``), the dollars held by the open reservations of the
    database at ``path``, read without writing anything ({} when there is none):
    requests on the wire in a running process, or left open by one that was killed,
    which the next process charges to the ledger as ``orphaned``. ``sqlite3.Error``
    when it cannot be read (damaged, locked past the busy timeout, or at once when the
    process holding it locked on this host is stopped: it names that process)."""
    if not path.exists():
        return {}
    uri = path.absolute().as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=LOCK_STEP_S)
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    try:
        while True:
            try:
                rows = db.execute("SELECT teacher, usd FROM reservations").fetchall()
                break
            except sqlite3.OperationalError as exc:
                if not is_locked(exc):
                    raise
                pid = stopped_holder(path)
                if pid is not None:  # locked until it runs on: before 2026-12-07, 30 s
                    raise sqlite3.OperationalError(
                        f"process {pid} on this host is stopped (Ctrl-Z or SIGSTOP) holding "
                        f"it locked: resume it (fg, or kill -CONT {pid}), or end it (kill "
                        f"{pid}; kill -CONT {pid})"
                    ) from exc
                if time.monotonic() >= deadline:
                    raise
    finally:
        db.close()
    held: dict[str, Decimal] = {}
    for teacher, usd in rows:
        held[str(teacher)] = held.get(str(teacher), Decimal(0)) + Decimal(str(usd))
    return held


def _open_db(path: Path) -> sqlite3.Connection:
    for file in (path, Path(f"{path}-journal")):
        # private like the ledger and cache.db: created 0600 before sqlite would (umask)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    db = sqlite3.connect(
        path, timeout=LOCK_STEP_S, isolation_level=None, check_same_thread=False,
    )  # fmt: skip
    try:
        # A rollback journal kept between transactions (PERSIST) and never synced (OFF):
        # both files then only grow into blocks reserved below, so the database keeps
        # working on a full disk (WAL would recreate its files on every open). A power
        # cut may lose or damage it; the ledger (fsynced) is the floor every spend total
        # is raised back to, and a damaged file is moved aside (above).
        db.execute("PRAGMA journal_mode=PERSIST")
        db.execute("PRAGMA synchronous=OFF")
        db.executescript(_SCHEMA)
        _add_columns(db)
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
    except BaseException:
        db.close()
        raise
    _reserve_space(path)
    return db


def _add_columns(db: sqlite3.Connection) -> None:
    """Add the :data:`_ADDED_COLUMNS` a database made by an older version lacks."""
    for table, column, kind in _ADDED_COLUMNS:
        if any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})")):
            continue
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # that: another process added it meanwhile
                raise


def _reserve_space(path: Path) -> None:
    """Keep RESERVE_BYTES allocated past the end of the database and its journal."""
    for file in (path, Path(f"{path}-journal")):
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            continue
        try:
            reserve_tail(fd, RESERVE_BYTES)  # best effort: a full disk has no room left
        finally:
            os.close(fd)


def machine_identity(hostname: str) -> str:
    """Where a pid means the same process: the hostname, and on Linux the boot id and the
    pid namespace. Two containers sharing a hostname (host networking) each have their own
    pid 1; a reboot reuses every pid.

    >>> machine_identity("box").startswith("box")
    True
    """
    parts = [hostname]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return " ".join(parts)


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), None when
    there is no such file (no such process, or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    return stat.rsplit(")", 1)[1].split()


def pid_start(pid: int) -> str:
    """The start time of ``pid`` (clock ticks since boot) on Linux, else ''."""
    fields = _stat(pid)
    return "" if fields is None else fields[19]


def pid_alive(pid: int, start: str) -> bool:
    """Is ``pid`` (started at ``start``, from :func:`pid_start`) still running on this host?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _stat(pid)
    if fields is None:
        return True  # no /proc: trust the signal check
    if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    return not start or fields[19] == start  # a different start time: the pid was reused


def pid_stopped(pid: int, start: str) -> bool:
    """Is ``pid`` (started at ``start``) on this host stopped: Ctrl-Z, SIGSTOP, or held
    by a debugger (state ``T`` or ``t``)? It runs on once continued (or ends if killed).

    >>> pid_stopped(os.getpid(), pid_start(os.getpid()))
    False
    """
    fields = _stat(pid)
    return fields is not None and fields[0] in ("T", "t") and (not start or fields[19] == start)


def is_locked(exc: sqlite3.Error) -> bool:
    """Did ``exc`` end a wait for another connection's lock (SQLITE_BUSY, SQLITE_LOCKED)?"""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (5, 6)
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def lock_holders(path: Path) -> list[int]:
    """The pids (in our pid namespace) holding SQLite's locks on the database at ``path``,
    from ``/proc/locks`` ([] where there is none, or the file cannot be read)."""
    try:
        inode = os.stat(path).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        # "1: POSIX  ADVISORY  WRITE 7848 fe:00:2179681 1073741825 1073741825"
        fields = line.split()
        if len(fields) < 8 or fields[1] != "POSIX" or "->" in fields[0]:
            continue  # a lock waiting ("->") holds nothing
        with contextlib.suppress(ValueError):
            # SQLite locks bytes from 2**30 (its PENDING byte) on: not another program's
            if int(fields[5].rsplit(":", 1)[1]) == inode and int(fields[6]) >= 1 << 30:
                pids.append(int(fields[4]))
    return pids


def stopped_holder(path: Path) -> int | None:
    """A process on this host holding a lock on the database at ``path`` while stopped
    (Ctrl-Z, SIGSTOP): it keeps it locked until it runs on or ends. None when there is
    none (or it cannot be told: no /proc).

    >>> stopped_holder(Path("no-such-folder/coordination.db")) is None
    True
    """
    for pid in lock_holders(path):
        if pid != os.getpid() and pid_stopped(pid, ""):
            return pid
    return None


_T = TypeVar("_T")


class _Stop:
    """A stop signal came (:func:`stop_waiting`), and the stopped process a wait for the
    database's lock was given up on then (None: none yet). Plain attributes: set from a
    signal handler, where taking a lock (a ``threading.Event``'s) could deadlock."""

    requested = False
    holder: int | None = None


_STOP = _Stop()


def stop_waiting(requested: bool = True) -> None:
    """A stop signal (Ctrl-C, SIGTERM) came to this process (``requested``; False: a new
    run, nothing stopped): from then on a wait for the lock of a database held by a
    stopped process (:func:`while_stopped`) gives up at once, in every thread. Set from the
    signal handler, since the event loop that would act on the signal is the one waiting.
    Safe in a signal handler."""
    _STOP.requested = requested
    if not requested:
        _STOP.holder = None


def stopping() -> bool:
    """Has a stop signal come (:func:`stop_waiting`)?"""
    return _STOP.requested


def given_up_on() -> int | None:
    """The pid of the stopped process whose lock a wait gave up on after a stop signal
    (None: no wait was given up)."""
    return _STOP.holder


def while_stopped(path: Path, run: Callable[[], _T], told: set[int]) -> _T:
    """``run()`` (statements on the database at ``path``, with a busy timeout of
    :data:`LOCK_STEP_S`), again while it finds the database locked: up to
    :data:`BUSY_TIMEOUT_MS` by a running process, and for as long as the process holding
    the lock on this host is stopped: a write given up then would buy items unclaimed
    (paid twice) or leave a bill out of the shared total. Says once per such process
    (``told``: the pids said already) which it is and what to do. Once this process got a
    stop signal (:func:`stop_waiting`), a lock held by a stopped process is given up on
    at once (the error raised as on a timeout): before 2026-12-07 the event loop waited
    here, and the signal was acted on only once that process ran on or ended."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        started = time.monotonic()
        if _STOP.requested and _STOP.holder is not None and pid_stopped(_STOP.holder, ""):
            # given up on already: not LOCK_STEP_S more for each write on the way out
            raise sqlite3.OperationalError("database is locked")
        try:
            return run()
        except sqlite3.OperationalError as exc:
            if not is_locked(exc):
                raise
            pid = stopped_holder(path)
            if pid is None:
                if time.monotonic() >= deadline:
                    raise
            elif _STOP.requested:
                _STOP.holder = pid
                raise
            else:
                # the wait for a running holder starts again when this one runs on
                deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
                if pid not in told:
                    told.add(pid)
                    log.warning(
                        "process %d on this host is stopped (Ctrl-Z or SIGSTOP) holding a lock "
                        "on %s, which stays locked until it runs on or ends: "
                        "waiting for it rather than buying items unclaimed (paid twice) or "
                        "leaving bills out of the shared budget. Resume it (fg, or kill -CONT "
                        "%d), or end it (kill %d; kill -CONT %d: a stopped process acts on "
                        "kill only once continued)",
                        pid, path, pid, pid, pid,
                    )  # fmt: skip
            # the busy handler waited LOCK_STEP_S, unless SQLite gave up at once
            time.sleep(max(0.0, LOCK_STEP_S - (time.monotonic() - started)))

"""The coordination database's file and the liveness of the processes it records.

How ``DIR/coordination.db`` (cache/coordination.py) is opened: its schema, a journal that
keeps working on a full disk, a damaged file moved aside and rebuilt; and how an owner's
pid is judged alive on this host (gone, a zombie, or reused by another program: dead) or
stopped (Ctrl-Z, SIGSTOP: alive, and named to whoever waits on its leases).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from typing import Final

from .ledger import reserve_tail

__all__ = [
    "BUSY_TIMEOUT_MS",
    "RESERVE_BYTES",
    "machine_identity",
    "open_coordination_db",
    "open_reservations",
    "pid_alive",
    "pid_start",
    "pid_stopped",
]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 30_000  # wait this long for another process's transaction
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
    usd TEXT NOT NULL, items INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS reservations_teacher ON reservations(teacher);
CREATE TABLE IF NOT EXISTS overruns(
    id INTEGER PRIMARY KEY AUTOINCREMENT, teacher TEXT NOT NULL, budget TEXT NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, billed TEXT NOT NULL, reserved TEXT NOT NULL);
"""


def open_coordination_db(path: Path) -> sqlite3.Connection:
    """A connection to the database at ``path`` (autocommit; the caller begins its own
    transactions), created if missing; a damaged file is moved aside and a fresh one made."""
    try:
        return _open_db(path)
    except sqlite3.DatabaseError as exc:
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
    when it cannot be read (damaged, locked past the busy timeout)."""
    if not path.exists():
        return {}
    uri = path.absolute().as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        rows = db.execute("SELECT teacher, usd FROM reservations").fetchall()
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
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
        check_same_thread=False,
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
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
    except BaseException:
        db.close()
        raise
    _reserve_space(path)
    return db


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

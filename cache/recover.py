"""Recover a damaged response cache: copy every readable entry into a fresh database.

A damaged page in ``cache.db`` makes some rows unreadable, and SQLite may accept writes
it cannot give back (see :meth:`cache.ResponseCache.set_many`). Repairing in place is
not possible, so :func:`recover_cache` reads the old database row by row range, skipping
what cannot be read, writes every entry that decodes into a new database beside it, adds
the entries waiting in the spill file, and then swaps the directories, keeping the old
one aside (``responses.damaged-<time>``) for a later look.

SQLite is asked to ignore a damaged schema (``writable_schema``, read only); when it
still cannot give every entry back (a file cut short, an overwritten header or first
page), the rows left on the file's own pages are read without SQLite
(:mod:`cache.sqlite_pages`) and every one whose entry passes its checksum is kept.

Run it while no other process uses the cache. Two recoveries of one cache at once are
not possible: each holds an exclusive ``flock`` on ``responses.recover.lock`` beside the
directory, and a second one is refused (:class:`RecoverBusyError`) without changing
anything.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import diskcache

from .cache_errors import CacheError
from .response_cache import SPILL_NAME, CacheCorruptError, ResponseCache, decode_entry
from .spill import SpillFile
from .sqlite_pages import table_rows
from .swap import exchange

__all__ = ["RecoverBusyError", "RecoverResult", "recover_cache"]

log = logging.getLogger(__name__)

_BATCH: Final = 1000  # rows read, and entries written, at a time
_CACHE_COLUMNS: Final = 12  # diskcache's Cache table: rowid, key, raw, ..., mode, filename, value


class RecoverBusyError(CacheError):
    """Another recovery of the same cache directory is running; nothing was changed."""


@contextmanager
def _only_recovery(directory: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``directory``'s recoveries, or raise RecoverBusyError.

    Without it a second recovery removed the first one's half-built ``.recovering``
    directory as a leftover, and one of the two failed in the swap ("No such file")."""
    lock = directory.with_name(directory.name + ".recover.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RecoverBusyError(
                f"another recovery of {directory} is running; let it finish (nothing was "
                "changed)"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass(frozen=True)
class RecoverResult:
    """What :func:`recover_cache` did.

    ``copied``: entries now in the fresh database (spilled ones included);
    ``from_spill``: of those, entries taken from the spill file; ``unreadable``: entries
    of the old database that could not be read or decoded (they are missing and will be
    bought again; when the old count is unreadable, the row ids that failed, an upper bound;
    None when the old database cannot be read at all);
    ``expected``: the old database's own entry count, when it could still be read;
    ``kept_at``: where the old directory was moved.
    """

    copied: int
    from_spill: int
    unreadable: int | None
    expected: int | None
    kept_at: Path


def _max_rowid(con: sqlite3.Connection, expected: int | None) -> int | None:
    """The highest row id, or a generous bound; None when not even the schema reads."""
    try:
        con.execute("SELECT 1 FROM Cache LIMIT 0").fetchall()
    except sqlite3.DatabaseError:
        return None  # not a database, or its schema page is gone: nothing to copy
    for sql in (
        "SELECT max(rowid) FROM Cache",
        "SELECT max(rowid) FROM Cache INDEXED BY Cache_key_raw",
    ):
        try:
            value = con.execute(sql).fetchone()[0]
            return int(value or 0)
        except sqlite3.DatabaseError:
            continue
    # Neither the table's nor the index's right edge reads: probe well past the count.
    return (expected or 0) * 4 + 100_000


def _rows(con: sqlite3.Connection, lo: int, hi: int) -> Iterator[tuple[Any, ...] | None]:
    """Rows with ``lo <= rowid <= hi``; None for each row id that cannot be read."""
    try:
        rows = con.execute(
            "SELECT rowid, key, raw, mode, filename, value FROM Cache "
            "WHERE rowid BETWEEN ? AND ? ORDER BY rowid",
            (lo, hi),
        ).fetchall()
    except sqlite3.DatabaseError:
        if lo == hi:
            yield None  # this row id sits on a damaged page (or does not exist there)
            return
        mid = (lo + hi) // 2  # halve until the damage is cornered
        yield from _rows(con, lo, mid)
        yield from _rows(con, mid + 1, hi)
        return
    yield from rows


def _value(directory: Path, mode: int, filename: str | None, value: Any) -> bytes | None:
    if mode == diskcache.core.MODE_RAW and isinstance(value, bytes):
        return value
    if mode == diskcache.core.MODE_BINARY and isinstance(filename, str):
        try:
            return (directory / filename).read_bytes()
        except OSError:
            return None
    return None  # pickles and anything else we never wrote


def _candidate(directory: Path, row: tuple[Any, ...] | list[Any]) -> tuple[str, bytes] | None:
    """``(key, encoded entry)`` of a Cache row whose entry decodes; None otherwise."""
    key, raw, mode, filename, value = row[1], row[2], row[-3], row[-2], row[-1]
    data = _value(directory, mode, filename, value)
    if not (raw and isinstance(key, str)) or data is None:
        return None
    try:
        decode_entry(data)
    except CacheCorruptError:
        return None
    return key, data


def _expected(con: sqlite3.Connection) -> int | None:
    try:
        row = con.execute("SELECT value FROM Settings WHERE key = 'count'").fetchone()
        return None if row is None else int(row[0])
    except (sqlite3.DatabaseError, TypeError, ValueError):
        return None


def _ignore_damaged_schema(con: sqlite3.Connection) -> None:
    """Let SQLite read tables whose schema entry or index it cannot parse (a file cut
    short made every query fail with "malformed"); nothing is written to this file."""
    try:
        con.execute("PRAGMA writable_schema = ON")
        con.execute("PRAGMA query_only = ON")
    except sqlite3.DatabaseError:
        pass


def _from_pages(directory: Path, keys: set[str], fresh: ResponseCache) -> int:
    """Entries found on the pages of the old cache.db that are not in ``keys`` yet,
    written into ``fresh``; returns how many."""
    added = 0
    batch: list[tuple[str, bytes]] = []
    try:
        for row in table_rows(directory / "cache.db", _CACHE_COLUMNS):
            found = _candidate(directory, row)
            if found is None or found[0] in keys:
                continue
            keys.add(found[0])
            batch.append(found)
            if len(batch) >= _BATCH:
                fresh.store_encoded(batch)
                added += len(batch)
                batch = []
    except OSError as exc:
        log.warning("cannot read the pages of %s: %s", directory / "cache.db", exc)
    if batch:
        fresh.store_encoded(batch)
        added += len(batch)
    return added


def recover_cache(directory: str | os.PathLike[str]) -> RecoverResult:
    """Copy every readable entry of the cache in ``directory`` into a fresh one in its place.

    Raises :class:`CacheCorruptError` if ``directory`` is not a cache directory, and
    :class:`RecoverBusyError` if another recovery of it is running.
    """
    directory = Path(directory)
    if not (directory / "cache.db").is_file():
        raise CacheCorruptError(f"{directory} holds no cache.db")
    with _only_recovery(directory):
        return _recover(directory)


def _recover(directory: Path) -> RecoverResult:
    fresh_dir = directory.with_name(directory.name + ".recovering")
    if fresh_dir.exists():
        shutil.rmtree(fresh_dir)  # left by an interrupted recovery
    copied = failed = 0
    expected: int | None = None
    keys: set[str] = set()
    with ResponseCache(fresh_dir, spill=False) as fresh:
        try:
            con = sqlite3.connect(directory / "cache.db", isolation_level=None)
        except sqlite3.DatabaseError as exc:
            log.warning("cannot open %s at all: %s", directory / "cache.db", exc)
        else:
            with closing(con):
                _ignore_damaged_schema(con)
                expected = _expected(con)
                top = _max_rowid(con, expected)
                if top is None:
                    failed, top = -1, 0  # unknown: the old database cannot even be read
                batch: list[tuple[str, bytes]] = []
                for lo in range(1, top + 1, _BATCH):
                    for row in _rows(con, lo, min(lo + _BATCH - 1, top)):
                        found = None if row is None else _candidate(directory, row)
                        if found is None:
                            failed += 1
                            continue
                        batch.append(found)
                        keys.add(found[0])
                    if len(batch) >= _BATCH:
                        fresh.store_encoded(batch)
                        copied += len(batch)
                        batch = []
                if batch:
                    fresh.store_encoded(batch)
                    copied += len(batch)
        if failed or expected is None or copied < expected:
            # SQLite could not give everything back: read the rows left on the pages
            from_pages = _from_pages(directory, keys, fresh)
            copied += from_pages
            if failed > 0:
                failed = max(0, failed - from_pages)
        # a damaged page can hide row ids that never existed: trust the old count if known
        # (when even the schema was unreadable, how many were lost is unknown: None)
        unreadable: int | None = failed if expected is None else max(0, expected - copied)
        if failed < 0:
            unreadable = None
        spilled = SpillFile(directory / SPILL_NAME).read()
        if spilled:
            fresh.store_encoded(spilled)
        copied = len(fresh)
    kept_at = directory.with_name(f"{directory.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    if exchange(fresh_dir, directory):
        # one atomic step puts the recovered cache in place: a crash after it leaves the
        # old one under the .recovering name, never a cache folder without responses/
        os.replace(fresh_dir, kept_at)
    else:  # no RENAME_EXCHANGE here: two renames (a crash between them leaves no responses/)
        os.replace(directory, kept_at)
        os.replace(fresh_dir, directory)
    return RecoverResult(
        copied=copied,
        from_spill=len(spilled),
        unreadable=unreadable,
        expected=expected,
        kept_at=kept_at,
    )

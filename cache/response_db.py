"""The response cache's SQLite database, through diskcache: the bytes-only ``Disk``, the
settings that keep paid data (no eviction), the file mode, read-only detection,
listing rows without decoding their keys (for stats, verify and prune), and checking them.

Only cache/response_cache.py opens the database to write it; this module holds what it
opens it with, how it reads every row, and (:class:`ReadOnlyRows`) how a database in a
folder that may not be written is read for a verify.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

import diskcache

from .cache_errors import CacheCorruptError, CacheReadOnlyError
from .entry_codec import decode_with_header
from .protocols import CacheEntry

__all__ = [
    "CACHE_SETTINGS",
    "DATABASE_KEY",
    "NO_SIZE_LIMIT",
    "BytesOnlyDisk",
    "ReadOnlyRows",
    "ScannedEntry",
    "create_private_db",
    "execute_many",
    "is_read_only",
    "key_rows",
    "query",
    "read_only_error",
    "row_problems",
    "scan_entries",
]

log = logging.getLogger(__name__)

DATABASE_KEY: Final = "<database>"  # the "key" verify reports database-wide problems under

# diskcache culls when the volume passes size_limit; with eviction "none" it never culls,
# and the huge limit keeps that true even if someone re-enables a policy by accident.
NO_SIZE_LIMIT: Final = 2**62
CACHE_SETTINGS: Final[Mapping[str, Any]] = {
    "eviction_policy": "none",
    "size_limit": NO_SIZE_LIMIT,
    "cull_limit": 0,
    "statistics": 0,
    # diskcache's defaults (a 32 MB page cache and a 64 MB memory map of the database) are
    # filled as the database grows: about 100 MB more resident memory at 100k images than
    # at 10k (benchmarks/harvest_scale.py). Each get reads a few pages the OS caches
    # anyway, so a small page cache and plain reads keep memory flat at little cost.
    "sqlite_cache_size": 1024,  # pages (4 MB)
    "sqlite_mmap_size": 0,
}


def is_read_only(directory: Path) -> bool:
    """True when sqlite cannot write in ``directory``: a read-only mount or no write
    permission on the folder or its database (sqlite needs both, for its -wal/-shm files)."""
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    db = directory / "cache.db"
    return not os.access(directory, os.W_OK) or (db.exists() and not os.access(db, os.W_OK))


def read_only_error(directory: Path, exc: Exception) -> CacheReadOnlyError:
    # Not damage: "move it aside" would make someone throw away a paid cache.
    return CacheReadOnlyError(
        f"cache database in {directory} is read-only ({exc}); it is not corrupt: make the "
        "folder writable (or copy it somewhere writable) and run again"
    )


class BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache ``Disk`` that stores str keys and bytes values only, and never unpickles.

    diskcache's default ``Disk`` pickles other types on write and unpickles rows marked as
    pickles on read; a crafted database would then run code (CVE-2025-69872).
    """

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError(f"cache keys must be str, got {type(key).__name__}")
        return super().put(key)  # type: ignore[no-any-return]

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise CacheCorruptError("refusing to unpickle a cache key")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if type(value) is not bytes or read:
            raise TypeError(f"cache values must be bytes, got {type(value).__name__}")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode not in (diskcache.core.MODE_RAW, diskcache.core.MODE_BINARY):
            raise CacheCorruptError(f"refusing to decode a cache value stored in mode {mode}")
        return super().fetch(mode, filename, value, read)


def create_private_db(path: Path) -> None:
    """Create the database file 0600 before sqlite does (it would use the umask, often
    0644); sqlite gives its -wal and -shm files the same mode. Paid data is private."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # an existing cache keeps the mode its owner chose
    except OSError:
        return  # read-only or missing folder: opening the cache reports it
    os.close(fd)


class ScannedEntry(NamedTuple):
    """One row of the database, decoded where possible (``problem`` is "" when sound)."""

    key: str
    entry: CacheEntry | None
    header: dict[str, Any]
    problem: str
    size: int
    deletable: bool = True  # False for rows whose key we refuse to decode


def query(
    db: diskcache.Cache | ReadOnlyRows, statement: str, params: tuple[Any, ...] = ()
) -> list[Any]:
    """Rows of one SQL statement on diskcache's own connection.

    diskcache has no public API for what this is used for: listing rows without
    decoding their keys (a key marked as a pickle must be reported, never unpickled)
    and SQLite's ``quick_check``. So this calls its private ``Cache._sql`` and reads its
    table ``Cache(rowid, key, raw, ...)``; pyproject pins diskcache's major version and
    tests/cache/test_diskcache_assumptions.py fails if either changes.
    """
    return db._sql(statement, params).fetchall()


def execute_many(db: diskcache.Cache, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """One statement for many rows on diskcache's own connection (its private ``_con``,
    as :func:`query` uses ``_sql``), inside the transaction the caller holds."""
    db._con.executemany(statement, rows)


def key_rows(db: diskcache.Cache | ReadOnlyRows, directory: Path) -> Iterator[tuple[int, Any, int]]:
    """(rowid, stored key, raw flag) of every row, in pages, without decoding keys.

    CacheCorruptError when the database cannot be listed (a damaged page)."""
    last = 0
    while True:
        try:
            rows = query(
                db,
                "SELECT rowid, key, raw FROM Cache WHERE rowid > ? ORDER BY rowid LIMIT 1000",
                (last,),
            )
        except sqlite3.DatabaseError as exc:
            raise CacheCorruptError(
                f"cache database in {directory} cannot be listed after row {last} "
                f"({exc})"
            ) from exc
        if not rows:
            return
        yield from rows
        last = rows[-1][0]


def scan_entries(db: diskcache.Cache | ReadOnlyRows, directory: Path) -> Iterator[ScannedEntry]:
    """Every entry, decoded where possible (``problem`` is "" for a sound entry)."""
    for rowid, key, raw in key_rows(db, directory):
        if not (raw and isinstance(key, str)):
            # never unpickle: a non-str key was not written by us
            yield ScannedEntry(f"<row {rowid}>", None, {}, "key is not a plain str", 0, False)
            continue
        try:
            data = db.get(key, default=None, retry=False)
        except (sqlite3.DatabaseError, OSError, CacheCorruptError, diskcache.Timeout) as exc:
            yield ScannedEntry(key, None, {}, f"unreadable: {exc}", 0)
            continue
        if data is None:
            # diskcache reads a missing value file as a miss; the row tells them apart
            # from an entry another process deleted while we iterated
            if _has_row(db, key):
                yield ScannedEntry(key, None, {}, "value file missing or unreadable", 0)
            continue
        try:
            entry, header = decode_with_header(data)
        except CacheCorruptError as exc:
            yield ScannedEntry(key, None, {}, str(exc), len(data))
            continue
        yield ScannedEntry(key, entry, header, "", len(data))


def _has_row(db: diskcache.Cache | ReadOnlyRows, key: str) -> bool:
    try:
        return key in db
    except sqlite3.DatabaseError:
        return True  # its row exists but cannot be read: count it as a problem


def row_problems(db: diskcache.Cache | ReadOnlyRows, directory: Path) -> list[tuple[str, str]]:
    """(key, problem) for every entry that does not read back; ``DATABASE_KEY`` for damage
    SQLite's ``quick_check`` finds, or a listing that breaks off."""
    problems: list[tuple[str, str]] = []
    try:
        bad = [str(row[0]) for row in query(db, "PRAGMA quick_check") if row[0] != "ok"]
        if bad:
            problems.append((DATABASE_KEY, "; ".join(bad[:5])))
    except sqlite3.DatabaseError as exc:
        problems.append((DATABASE_KEY, f"integrity check failed: {exc}"))
    try:
        problems.extend(
            (item.key, item.problem) for item in scan_entries(db, directory) if item.problem
        )
    except CacheCorruptError as exc:
        problems.append((DATABASE_KEY, f"cannot list entries: {exc}"))
    return problems


def _connect(uri: str) -> sqlite3.Connection:
    """A connection to ``uri`` that has read the schema; OperationalError when the file
    cannot be opened so (a damaged file opens: reading it reports the damage)."""
    con = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except sqlite3.OperationalError:
        con.close()
        raise
    except sqlite3.DatabaseError:
        pass
    return con


class ReadOnlyRows:
    """The rows of a ``cache.db`` in a folder this process may not write (a read-only
    mount, ``chmod a-w``), for :func:`row_problems`: read as :func:`scan_entries` reads
    diskcache's ``Cache``, which cannot open such a database (it writes its settings on
    every open). Nothing is written. SQLite opens the file read-only, or ``immutable``
    when the WAL index it needs (``cache.db-shm``) is missing and cannot be made: a
    cleanly closed cache has none. :class:`CacheReadOnlyError` if neither opens it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._disk = BytesOnlyDisk(str(directory))
        uri = (directory / "cache.db").absolute().as_uri()
        try:
            self._con = _connect(uri + "?mode=ro")
        except sqlite3.OperationalError:
            try:
                self._con = _connect(uri + "?immutable=1")
            except sqlite3.OperationalError as exc:
                raise read_only_error(directory, exc) from exc
            wal = directory / "cache.db-wal"
            if wal.is_file() and wal.stat().st_size:
                log.warning(
                    "%s: the entries still in %s are not read (no cache.db-shm, and "
                    "none can be made in a read-only folder)",
                    directory,
                    wal.name,
                )

    def _sql(self, statement: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._con.execute(statement, params)

    def get(self, key: str, default: Any = None, retry: bool = False) -> Any:
        """The value stored under ``key``, as diskcache's ``Cache.get`` returns it (a
        value file that cannot be read is a miss)."""
        row = self._sql(
            "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1", (key,)
        ).fetchone()
        if row is None:
            return default
        try:
            return self._disk.fetch(row[0], row[1], row[2], False)
        except OSError:
            return default

    def __contains__(self, key: str) -> bool:
        row = self._sql("SELECT 1 FROM Cache WHERE key = ? AND raw = 1", (key,)).fetchone()
        return row is not None

    def close(self) -> None:
        self._con.close()

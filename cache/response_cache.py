"""ResponseCache: paid teacher responses on disk (diskcache/SQLite), bytes only, never evicted.

Why these choices (figures measured on this machine):

* Values are bytes we encode ourselves, never pickles. diskcache pickles anything that
  is not str/bytes/int/float and unpickles whatever a row says is a pickle
  (CVE-2025-69872); :class:`BytesOnlyDisk` refuses both directions.
* Vectors are compact codec bytes (float16 by default): a JSON float list reads 13x
  slower and takes 8x the disk.
* Eviction is off and the size limit is effectively infinite: diskcache's default 1 GB
  cull would silently delete data the user paid for.
* Bulk writes go inside one ``transact()`` (2.7x faster than a commit per set, and all
  or nothing).

Each value is a checksummed encoding of a :class:`CacheEntry` (cache/entry_codec.py holds
the layout). The CRC catches garbled values: such an entry reads as a miss (logged), and
:meth:`ResponseCache.verify` lists it.

Paid data survives a database that cannot store it: every :meth:`ResponseCache.set_many`
reads its entries back after the commit, and when the write or the read-back fails (disk
full, a damaged page) the transaction is rolled back, the values are appended to a
preallocated spill file (:mod:`cache.spill`, ``spill.vdc`` in the cache directory) and
:class:`CacheWriteError` is raised. The next open imports the spill into the database;
until that succeeds, :meth:`ResponseCache.get` still serves spilled entries and
:attr:`ResponseCache.spill_problem` says why they wait (or that the disk had no room to
reserve the spill file when the cache was opened: a buyer then sends nothing). A read
that fails because the database itself is damaged raises :class:`CacheCorruptError` (a
damaged *value* is a miss).

Caveats: SQLite locking is unreliable on network file systems, so keep the cache on a
local disk.

The pieces live apart: the errors in cache/cache_errors.py, the value encoding in
cache/entry_codec.py, the diskcache ``Disk``, settings and row listing in
cache/response_db.py, the stats types in cache/cache_stats.py; this module is the class
that ties them together (and re-exports their public names).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Final

import diskcache

from .cache_errors import CacheCorruptError, CacheError, CacheReadOnlyError, CacheWriteError
from .cache_stats import CacheStats, KindStats, directory_bytes, kind_of
from .codecs import VectorFormat, check_format
from .entry_codec import (
    decode_entry,
    decode_with_header,
    encode_entries,
    encode_entry,
    teacher_in,
    teacher_of,
)
from .origin import Origin, TeacherOrigin, create_table, mark, note_held, read, read_teacher
from .protocols import CacheEntry
from .response_db import (
    CACHE_SETTINGS,
    DATABASE_KEY,
    BytesOnlyDisk,
    ReadOnlyRows,
    ScannedEntry,
    create_private_db,
    execute_many,
    is_read_only,
    key_rows,
    query,
    read_only_error,
    row_problems,
    scan_entries,
)
from .spill import SpillFile

__all__ = [
    "SPILL_NAME",
    "BytesOnlyDisk",
    "CacheCorruptError",
    "CacheError",
    "CacheReadOnlyError",
    "CacheStats",
    "CacheWriteError",
    "KindStats",
    "ResponseCache",
    "decode_entry",
    "encode_entry",
    "read_cache_stats",
    "verify_cache",
]

log = logging.getLogger(__name__)

_DATABASE: Final = DATABASE_KEY
# Seconds SQLite waits for another process's write lock before a write gives up with
# CacheWriteError (diskcache's retry=True would instead wait forever).
DEFAULT_TIMEOUT: Final = 60.0
SPILL_NAME: Final = "spill.vdc"
# Keys read back per query after a write (SQLite allows 999 parameters at least).
READ_BACK_CHUNK: Final = 500


class ResponseCache:
    """A durable, process-safe cache of paid responses, keyed by :func:`cache.make_key`.

    Implements :class:`cache.CacheLike`. A corrupt or undecodable entry is logged and
    read as a miss; failed writes raise :class:`CacheWriteError`. ``vector_format`` is
    how new vectors are stored (entries remember their own format; ``"float8_e4m3"`` has
    no scale and suits unit-normalised vectors only, see docs/vector-formats.md);
    ``timeout`` is how long a write waits for another process's lock. ``spill=False``
    turns the spill file off (read-only tools that must not create files).

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d, ResponseCache(d + "/c") as c:
    ...     c.set_many([("k", CacheEntry(vector=np.ones(4, np.float32), meta={"kind": "t"}))])
    ...     c.get("k").vector.tolist(), c.get("other")
    ([1.0, 1.0, 1.0, 1.0], None)
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        vector_format: str = "float16",
        timeout: float = DEFAULT_TIMEOUT,
        spill: bool = True,
    ):
        # absolute once: a chdir later must not send files (or diskcache's large values)
        # to another folder
        self.directory = Path(directory).absolute()
        self.vector_format: VectorFormat = check_format(vector_format)
        if not self.directory.exists():
            # 0o700: responses may include private images' descriptions
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        create_private_db(self.directory / "cache.db")
        try:
            self._cache = diskcache.Cache(
                str(self.directory), timeout=timeout, disk=BytesOnlyDisk, **CACHE_SETTINGS
            )
            create_table(self._cache, empty=len(self._cache) == 0)
        except sqlite3.OperationalError as exc:
            if is_read_only(self.directory):
                raise read_only_error(self.directory, exc) from exc
            # a full disk or a lock, not damage: moving a sound database aside would be wrong
            raise CacheError(
                f"cache database in {self.directory} cannot be opened ({exc}); if the disk "
                "is full, free space and run again"
            ) from exc
        except sqlite3.DatabaseError as exc:
            if is_read_only(self.directory):
                raise read_only_error(self.directory, exc) from exc
            raise CacheCorruptError(
                f"cache database in {self.directory} cannot be opened ({exc}); "
                "recover what is readable into a fresh database (vlm-distill cache recover), "
                "or move it aside (or restore a backup), and run again"
            ) from exc
        self._closed = False
        self._held = False  # known to have recorded (cache.origin) that it held an entry
        self._held_teachers: set[str] = set()  # ... and one of each of these teachers
        self._spill = SpillFile(self.directory / SPILL_NAME) if spill else None
        # entries kept in the spill file that the database has not taken yet
        self._spilled: dict[str, bytes] = {}
        self.spill_problem: str | None = None
        """Why paid entries wait in the spill file (None when nothing waits)."""
        if self._spill is not None:
            no_room = self._spill.reserve()
            self._import_spill()
            if no_room is not None and self.spill_problem is None:
                # a buyer refuses to send (vlmclient's Storage.check), before paid results
                # could be lost to a disk that fills
                self.spill_problem = no_room
                log.error("cache %s: %s", self.directory, no_room)

    @property
    def spill_path(self) -> Path | None:
        """The spill file (see the module docstring), or None when spilling is off."""
        return None if self._spill is None else self._spill.path

    def _import_spill(self) -> None:
        """Move entries a previous run could not store from the spill file into the database."""
        assert self._spill is not None
        try:
            n = self._spill.drain(self.store_encoded)
        except (CacheWriteError, OSError) as exc:
            waiting = self._spill.read()
            self._spilled = dict(waiting)
            self.spill_problem = (
                f"{len(waiting)} paid entries wait in {self._spill.path} because the cache "
                f"database cannot take them: {exc}"
            )
            log.error("cache %s: %s", self.directory, self.spill_problem)
            return
        if n:
            log.warning("cache %s: imported %d paid entries from %s", self.directory, n,
                        self._spill.path)

    def mark_origin(
        self, *, before_purchases: bool, teacher: str | None = None, teacher_before: bool = False
    ) -> None:
        """Record, once, whether the ledger beside this database recorded any purchase when
        a buyer first opened it (``before_purchases``), and that it holds entries if it
        does; once for ``teacher`` (``provider:model``), whether the ledger recorded a
        purchase of it (``teacher_before``: none): see :mod:`cache.origin`.
        CacheWriteError when it cannot be written."""
        try:
            mark(
                self._cache, before_purchases=before_purchases, holding=len(self) > 0,
                teacher=teacher, teacher_before=teacher_before,
            )  # fmt: skip
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise CacheWriteError(f"could not mark cache {self.directory}: {exc}") from exc

    def origin(self) -> Origin | None:
        """What :meth:`mark_origin` and the stores since recorded (None: never marked)."""
        return read(self._cache)

    def teacher_origin(self, teacher: str) -> TeacherOrigin:
        """What this database records of ``teacher``'s (``provider:model``) entries."""
        return read_teacher(self._cache, teacher)

    # -- CacheLike -----------------------------------------------------------------------
    def get(self, key: str) -> CacheEntry | None:
        """The entry under ``key``, or None on a miss or a corrupt entry (logged)."""
        if not isinstance(key, str):
            raise TypeError(f"cache keys must be str, got {type(key).__name__}")
        key = str(key)  # plain str, also for subclasses such as numpy.str_
        # A value the database refused (or garbled) waits in the spill file: it wins.
        data = self._spilled.get(key)
        if data is None:
            try:
                data = self._cache.get(key, default=None, retry=False)
            except sqlite3.DatabaseError as exc:
                # A damaged database, not a damaged value: buying the item again would not
                # help (the write lands on the same broken pages), so say it instead.
                raise CacheCorruptError(
                    f"cache database in {self.directory} cannot be read ({exc}); "
                    "recover it into a fresh database before buying more"
                ) from exc
            except (OSError, CacheCorruptError, diskcache.Timeout) as exc:
                log.warning("cache %s: entry %s unreadable, treated as a miss: %s",
                            self.directory, key, exc)
                return None
        if data is None:
            return None
        try:
            return decode_entry(data)
        except CacheCorruptError as exc:
            log.warning("cache %s: entry %s corrupt, treated as a miss: %s", self.directory,
                        key, exc)
            return None

    def set_many(self, items: Iterable[tuple[str, CacheEntry]]) -> None:
        """Store all ``items`` in one transaction (all or nothing); CacheWriteError on failure."""
        pairs = list(items)
        try:
            if not all(isinstance(key, str) for key, _ in pairs):
                raise TypeError("a key is not a str")
            values = encode_entries([entry for _, entry in pairs], self.vector_format)
            encoded = [(str(key), value) for (key, _), value in zip(pairs, values, strict=True)]
        except (ValueError, TypeError):
            encoded = []  # one by one, to say which entry cannot be stored, and why
            for key, entry in pairs:
                if not isinstance(key, str):
                    raise CacheWriteError(
                        f"cache keys must be str, got {type(key).__name__}"
                    ) from None
                try:
                    encoded.append((str(key), encode_entry(entry, self.vector_format)))
                except (ValueError, TypeError) as exc:
                    raise CacheWriteError(f"cannot encode cache entry {key}: {exc}") from exc
        if not encoded:
            return
        teachers = {t for _, entry in pairs if (t := teacher_of(entry.meta)) is not None}
        try:
            self.store_encoded(encoded, teachers)
        except CacheWriteError as exc:
            raise CacheWriteError(f"{exc}; {self._spill_out(encoded)}") from exc

    def store_encoded(
        self, encoded: Sequence[tuple[str, bytes]], teachers: Iterable[str] | None = None
    ) -> None:
        """Write encoded values in one transaction, then read each back; CacheWriteError
        if either fails (a damaged page can take a write and still not give it back).
        ``teachers``: the ``provider:model`` of the entries (None: read from each value)."""
        if teachers is None:
            teachers = {t for _, value in encoded if (t := teacher_in(value)) is not None}
        new = set(teachers) - self._held_teachers
        try:
            with self._cache.transact(retry=False):
                for key, value in self._insert_new(encoded):
                    self._cache.set(key, value, retry=False)
                if not self._held or new:
                    note_held(self._cache, new)
        except (sqlite3.Error, OSError, diskcache.Timeout, TypeError) as exc:
            raise CacheWriteError(
                f"could not store {len(encoded)} entries in cache {self.directory}: {exc}"
            ) from exc
        try:
            unreadable = self._unreadable(encoded)
        except (sqlite3.Error, OSError, diskcache.Timeout, CacheCorruptError) as exc:
            raise CacheWriteError(
                f"entries just stored in cache {self.directory} cannot be read back: {exc}"
            ) from exc
        if unreadable:
            raise CacheWriteError(
                f"{len(unreadable)} entries just stored in cache {self.directory} do not read "
                "back (damaged database)"
            )
        self._held = True
        self._held_teachers |= new
        for key, _ in encoded:
            self._spilled.pop(key, None)

    def _insert_new(self, encoded: Sequence[tuple[str, bytes]]) -> Sequence[tuple[str, bytes]]:
        """Insert the entries whose keys are new with one ``executemany`` (inside the
        caller's transaction); return the rest, for ``Cache.set`` (replacing a row).

        The rows are those ``diskcache.Cache.set`` writes for a new key and a value it
        keeps in the database (``Disk.store``'s columns, no expiry, no tag; its triggers
        keep the count and size), at about half its cost per entry; values it keeps in
        files, and repeated keys, all go through ``Cache.set``.
        tests/cache/test_diskcache_assumptions.py checks the rows are the same.
        """
        disk = self._cache.disk
        keys = [key for key, _ in encoded]
        if len(set(keys)) != len(keys) or any(
            len(value) >= disk.min_file_size for _, value in encoded
        ):
            return encoded
        existing: set[str] = set()
        for start in range(0, len(keys), READ_BACK_CHUNK):
            chunk = keys[start : start + READ_BACK_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = query(
                self._cache, f"SELECT key FROM Cache WHERE raw = 1 AND key IN ({marks})",
                tuple(chunk),
            )
            existing.update(row[0] for row in rows)
        now = time.time()
        fresh = []
        for key, value in encoded:
            if key not in existing:
                db_key, raw = disk.put(key)
                size, mode, filename, db_value = disk.store(value, False, key=key)
                fresh.append(
                    (db_key, raw, now, None, now, 0, None, size, mode, filename, db_value)
                )
        if fresh:
            execute_many(
                self._cache,
                "INSERT INTO Cache(key, raw, store_time, expire_time, access_time,"
                " access_count, tag, size, mode, filename, value)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                fresh,
            )
        return [(key, value) for key, value in encoded if key in existing]

    def _unreadable(self, encoded: Sequence[tuple[str, bytes]]) -> list[str]:
        """The keys whose stored value does not read back as written.

        Read with one query per chunk of keys instead of one ``get`` per key (a third
        of the statements a write costs); each value is fetched as ``get`` fetches it.
        """
        disk = self._cache.disk
        found: dict[str, bytes | None] = {}
        for start in range(0, len(encoded), READ_BACK_CHUNK):
            keys = [key for key, _ in encoded[start : start + READ_BACK_CHUNK]]
            marks = ",".join("?" * len(keys))
            rows = query(
                self._cache,
                "SELECT key, mode, filename, value FROM Cache "
                f"WHERE raw = 1 AND key IN ({marks})",
                tuple(keys),
            )
            for key, mode, filename, value in rows:
                try:
                    found[key] = disk.fetch(mode, filename, value, False)
                except OSError:  # a value file gone: what get reads as a miss
                    found[key] = None
        return [key for key, value in encoded if found.get(key) != value]

    def _spill_out(self, encoded: Sequence[tuple[str, bytes]]) -> str:
        """Keep values the database refused in the spill file; say where they went."""
        if self._spill is None:
            return "these paid entries are not kept anywhere"
        try:
            self._spill.append(encoded)
        except OSError as exc:
            log.critical("cache %s: could not spill %d paid entries to %s either: %s",
                         self.directory, len(encoded), self._spill.path, exc)
            return f"keeping them in {self._spill.path} failed too ({exc}): they are lost"
        self._spilled.update(encoded)
        self.spill_problem = self.spill_problem or (
            f"paid entries wait in {self._spill.path} because the cache database cannot take "
            "them"
        )
        return (
            f"they are kept in {self._spill.path} and imported the next time the cache is "
            "opened"
        )

    # -- more ---------------------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> list[CacheEntry | None]:
        """:meth:`get` for each key, in order (None for misses), with one query per 500
        keys instead of one per key (what a harvest asks before buying a request)."""
        for key in keys:
            if not isinstance(key, str):
                raise TypeError(f"cache keys must be str, got {type(key).__name__}")
        keys = [str(key) for key in keys]
        data: dict[str, bytes | None] = {k: self._spilled[k] for k in keys if k in self._spilled}
        ask = list(dict.fromkeys(k for k in keys if k not in data))
        disk = self._cache.disk
        for start in range(0, len(ask), READ_BACK_CHUNK):
            chunk = ask[start : start + READ_BACK_CHUNK]
            marks = ",".join("?" * len(chunk))
            try:
                rows = query(
                    self._cache,
                    "SELECT key, mode, filename, value FROM Cache "
                    f"WHERE raw = 1 AND key IN ({marks})",
                    tuple(chunk),
                )
            except sqlite3.DatabaseError as exc:
                raise CacheCorruptError(
                    f"cache database in {self.directory} cannot be read ({exc}); "
                    "recover it into a fresh database before buying more"
                ) from exc
            except (OSError, diskcache.Timeout) as exc:
                log.warning("cache %s: %d entries unreadable, treated as misses: %s",
                            self.directory, len(chunk), exc)
                continue
            for key, mode, filename, value in rows:
                try:
                    data[key] = disk.fetch(mode, filename, value, False)
                except CacheCorruptError as exc:
                    log.warning("cache %s: entry %s unreadable, treated as a miss: %s",
                                self.directory, key, exc)
                except OSError:
                    pass  # its value file is gone: a miss, as get reads it
        out: list[CacheEntry | None] = []
        for key in keys:
            raw = data.get(key)
            entry = None
            if raw is not None:
                try:
                    entry = decode_entry(raw)
                except CacheCorruptError as exc:
                    log.warning("cache %s: entry %s corrupt, treated as a miss: %s",
                                self.directory, key, exc)
            out.append(entry)
        return out

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and str(key) in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    def iterkeys(self) -> Iterator[str]:
        """All keys, in insertion order. Rows whose key is not a plain str are skipped
        (:meth:`verify` reports them)."""
        for _rowid, key, raw in key_rows(self._cache, self.directory):
            if raw and isinstance(key, str):
                yield key

    def _scan(self) -> Iterator[ScannedEntry]:
        """Every entry, decoded where possible (``problem`` is "" for a sound entry)."""
        return scan_entries(self._cache, self.directory)

    def stats(self) -> CacheStats:
        """Entries, bytes on disk (database, WAL and value files), and entries and value
        bytes by kind (``meta["kind"]``; corrupt entries are counted apart)."""
        return _stats(self._cache, self.directory)

    def verify(self) -> list[tuple[str, str]]:
        """(key, problem) for every corrupt entry; ``"<database>"`` for database damage."""
        problems = row_problems(self._cache, self.directory)
        if self._spilled:
            problems.append((_DATABASE, self.spill_problem or "paid entries wait in the spill"))
        return problems

    def prune(
        self,
        predicate: Callable[[str, CacheEntry], bool] | None = None,
        *,
        older_than: float | None = None,
        corrupt: bool = False,
        dry_run: bool = False,
    ) -> int:
        """Delete entries for which ``predicate(key, entry)`` is true, or stored more than
        ``older_than`` seconds ago, or (``corrupt=True``) that cannot be decoded.

        Returns how many were deleted (``dry_run=True``: would be; nothing is deleted).
        Entries matching none of the given conditions stay;
        so do rows whose key is not a plain str (move the cache aside to be rid of them).
        Each entry found is looked at again (``predicate`` asked again) when it is deleted:
        one another process stored again meanwhile stays unless it matches too.
        """
        now = time.time()

        def doomed_value(key: str, data: bytes) -> bool:
            try:
                entry, header = decode_with_header(data)
            except CacheCorruptError:
                return corrupt
            stored = header.get("stored")
            return (
                older_than is not None
                and isinstance(stored, (int, float))
                and now - stored > older_than
            ) or (predicate is not None and predicate(key, entry))

        doomed: list[str] = []
        for item in self._scan():
            if item.entry is None:
                if corrupt and item.deletable:
                    doomed.append(item.key)
                continue
            stored = item.header.get("stored")
            if (
                older_than is not None
                and isinstance(stored, (int, float))
                and now - stored > older_than
            ) or (predicate is not None and predicate(item.key, item.entry)):
                doomed.append(item.key)
        if dry_run:
            return len(doomed)
        deleted = 0
        try:
            with self._cache.transact(retry=False):
                for key in doomed:
                    # Looked at again under the write lock: another process (a harvest
                    # buying a corrupt entry again) may have stored it since the scan.
                    try:
                        data = self._cache.get(key, default=None, retry=False)
                    except CacheCorruptError:
                        data = None  # a row we refuse to read: as the scan found it
                    if isinstance(data, bytes) and not doomed_value(key, data):
                        continue
                    deleted += bool(self._cache.delete(key, retry=False))
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise CacheWriteError(f"could not prune cache {self.directory}: {exc}") from exc
        return deleted

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        if not self._closed:
            self._cache.close()
            self._closed = True

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r}, vector_format={self.vector_format!r})"


def _stats(db: diskcache.Cache | ReadOnlyRows, directory: Path) -> CacheStats:
    by_kind: dict[str, KindStats] = {}
    entries = corrupt = 0
    for item in scan_entries(db, directory):
        entries += 1
        if item.entry is None:
            corrupt += 1
            continue
        kind = kind_of(item.entry)
        old = by_kind.get(kind, KindStats())
        by_kind[kind] = KindStats(old.entries + 1, old.value_bytes + item.size)
    return CacheStats(
        entries=entries,
        bytes_on_disk=directory_bytes(directory),
        by_kind=by_kind,
        corrupt=corrupt,
    )


def read_cache_stats(directory: str | os.PathLike[str]) -> CacheStats:
    """:meth:`ResponseCache.stats` for a directory holding a response cache.

    A cache in a folder it may not write (a read-only mount, ``chmod -R a-w``) is read
    as :func:`verify_cache` reads it, writing nothing (entries waiting in its spill file
    are not counted); :class:`CacheReadOnlyError` only when SQLite cannot read it at all,
    :class:`CacheCorruptError` when the database cannot be listed; :class:`CacheError`
    when it is missing or empty (opening it would create an empty one, which a later
    :func:`verify_cache` would call healthy)."""
    path = Path(directory)
    db = path / "cache.db"
    if not db.is_file() or db.stat().st_size == 0:
        raise CacheError(f"{db} is missing or empty: no cached entry can be read")
    if is_read_only(path):
        with closing(ReadOnlyRows(path)) as rows:
            return _stats(rows, path.absolute())
    with ResponseCache(path) as cache:
        return cache.stats()


def verify_cache(directory: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """:meth:`ResponseCache.verify` for a directory, reporting (not raising) when the
    database is missing, empty or damaged. An empty list means everything reads back.

    A cache in a folder it may not write (a read-only mount, ``chmod -R a-w``: an archived
    or shared copy) is read without writing anything (:class:`ReadOnlyRows`); paid
    entries waiting in its spill file stay there, for the next writable open to import.
    :class:`CacheReadOnlyError` only when SQLite cannot read the database at all."""
    if not Path(directory).is_dir():
        return [(_DATABASE, f"{directory} is not a directory")]
    db = Path(directory) / "cache.db"
    if not db.is_file() or db.stat().st_size == 0:
        # opening would create an empty database and call it healthy: a verify reads only
        return [(_DATABASE, f"{db} is missing or empty: no cached entry can be read")]
    if is_read_only(Path(directory)):
        # diskcache writes its settings on every open: it cannot open this one at all
        with closing(ReadOnlyRows(Path(directory))) as rows:
            return row_problems(rows, Path(directory))
    try:
        cache = ResponseCache(directory)
    except CacheCorruptError as exc:
        return [(_DATABASE, str(exc))]
    with cache:
        return cache.verify()

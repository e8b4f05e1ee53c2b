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

Value layout (little-endian)::

    b"VDC1" | crc32 of the rest (u32) | header length (u32) | header JSON | vector bytes

The header holds ``meta``, ``text``, the vector format and dimension, and the time the
entry was stored. The CRC catches garbled values: such an entry reads as a miss (logged),
and :meth:`ResponseCache.verify` lists it.

Paid data survives a database that cannot store it: every :meth:`ResponseCache.set_many`
reads its entries back after the commit, and when the write or the read-back fails (disk
full, a damaged page) the transaction is rolled back, the values are appended to a
preallocated spill file (:mod:`cache.spill`, ``spill.vdc`` in the cache directory) and
:class:`CacheWriteError` is raised. The next open imports the spill into the database;
until that succeeds, :meth:`ResponseCache.get` still serves spilled entries and
:attr:`ResponseCache.spill_problem` says why they wait. A read that fails because the
database itself is damaged raises :class:`CacheCorruptError` (a damaged *value* is a miss).

Caveats: SQLite locking is unreliable on network file systems, so keep the cache on a
local disk.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple

import diskcache
import numpy as np

from .codecs import VectorFormat, check_format, decode_vector, encode_vector
from .protocols import CacheEntry
from .spill import SpillFile

__all__ = [
    "BytesOnlyDisk",
    "CacheCorruptError",
    "CacheError",
    "CacheStats",
    "CacheWriteError",
    "KindStats",
    "ResponseCache",
    "decode_entry",
    "encode_entry",
    "verify_cache",
]

log = logging.getLogger(__name__)

MAGIC: Final = b"VDC1"
_PREFIX: Final = struct.Struct("<4sII")  # magic, crc32 of the rest, header length
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
# Metadata keys that would mean a credential is about to be written to disk.
_SECRET_META_KEYS: Final = frozenset(
    {"api_key", "apikey", "api-key", "x-api-key", "authorization", "password", "secret"}
)
_DATABASE: Final = "<database>"
# Seconds SQLite waits for another process's write lock before a write gives up with
# CacheWriteError (diskcache's retry=True would instead wait forever).
DEFAULT_TIMEOUT: Final = 60.0
SPILL_NAME: Final = "spill.vdc"


class CacheError(Exception):
    """Base class of the cache's own errors."""


class CacheWriteError(CacheError):
    """Storing entries failed (disk full, database locked for too long, bad entry...).

    Nothing of the failed batch is stored: the transaction is rolled back.
    """


class CacheCorruptError(CacheError):
    """A value or the cache database cannot be read back."""


class CacheReadOnlyError(CacheError):
    """The cache cannot be opened because it is read-only (not because it is damaged)."""


def _read_only(directory: Path) -> bool:
    """True when sqlite cannot write in ``directory``: a read-only mount or no write
    permission on the folder or its database (sqlite needs both, for its -wal/-shm files)."""
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    db = directory / "cache.db"
    return not os.access(directory, os.W_OK) or (db.exists() and not os.access(db, os.W_OK))


def _read_only_error(directory: Path, exc: Exception) -> CacheReadOnlyError:
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


def _json_default(obj: object) -> str:
    if isinstance(obj, Decimal):
        return str(obj)  # money stays exact as a decimal string
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def encode_entry(
    entry: CacheEntry, fmt: VectorFormat = "float16", *, stored: float | None = None
) -> bytes:
    """A :class:`CacheEntry` as the bytes the cache stores (see the module docstring)."""
    for name in entry.meta:
        if str(name).lower() in _SECRET_META_KEYS:
            raise ValueError(f"refusing to cache metadata key {name!r}: it looks like a secret")
    vec_bytes = b""
    vec_header: dict[str, Any] | None = None
    if entry.vector is not None:
        vector = np.asarray(entry.vector, dtype=np.float32)
        vec_bytes = encode_vector(vector, fmt)
        vec_header = {"format": fmt, "dim": int(vector.shape[0])}
    header = {
        "meta": dict(entry.meta),
        "text": entry.text,
        "vector": vec_header,
        "stored": time.time() if stored is None else stored,
    }
    header_bytes = json.dumps(
        header, default=_json_default, allow_nan=False, separators=(",", ":")
    ).encode()
    rest = struct.pack("<I", len(header_bytes)) + header_bytes + vec_bytes
    return MAGIC + struct.pack("<I", zlib.crc32(rest)) + rest


def _decode(data: bytes) -> tuple[CacheEntry, dict[str, Any]]:
    if type(data) is not bytes:
        raise CacheCorruptError(f"value is {type(data).__name__}, not bytes")
    if len(data) < _PREFIX.size:
        raise CacheCorruptError(f"value is {len(data)} bytes, shorter than its header")
    magic, crc, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CacheCorruptError(f"bad magic {magic!r}")
    if zlib.crc32(data[8:]) != crc:
        raise CacheCorruptError("checksum mismatch (garbled value)")
    end = _PREFIX.size + header_len
    if end > len(data):
        raise CacheCorruptError("header longer than the value (truncated value)")
    try:
        header = json.loads(data[_PREFIX.size : end])
        meta = header["meta"]
        text = header["text"]
        vec_header = header["vector"]
        vector = None
        if vec_header is not None:
            fmt = check_format(vec_header["format"])
            vector = decode_vector(data[end:], fmt, int(vec_header["dim"]))
        elif end != len(data):
            raise ValueError("trailing bytes after a vector-less entry")
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheCorruptError(f"undecodable value: {exc}") from exc
    if not isinstance(meta, dict) or not (text is None or isinstance(text, str)):
        raise CacheCorruptError("header has the wrong types")
    return CacheEntry(vector=vector, text=text, meta=meta), header


def decode_entry(data: bytes) -> CacheEntry:
    """Inverse of :func:`encode_entry`; :class:`CacheCorruptError` if ``data`` is damaged."""
    return _decode(data)[0]


def _kind_of(entry: CacheEntry) -> str:
    kind = entry.meta.get("kind")
    if isinstance(kind, str) and kind:
        return kind
    return "vector" if entry.vector is not None else "text"


@dataclass(frozen=True)
class KindStats:
    """Entries of one kind (``meta["kind"]``) and the bytes of their values."""

    entries: int = 0
    value_bytes: int = 0


@dataclass(frozen=True)
class CacheStats:
    """What :meth:`ResponseCache.stats` counts."""

    entries: int
    bytes_on_disk: int
    by_kind: Mapping[str, KindStats] = field(default_factory=dict)
    corrupt: int = 0


class _Scanned(NamedTuple):
    key: str
    entry: CacheEntry | None
    header: dict[str, Any]
    problem: str
    size: int
    deletable: bool = True  # False for rows whose key we refuse to decode


def _directory_bytes(directory: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # another process removed it meanwhile
                continue
    return total


def _private_db(path: Path) -> None:
    """Create the database file 0600 before sqlite does (it would use the umask, often
    0644); sqlite gives its -wal and -shm files the same mode. Paid data is private."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # an existing cache keeps the mode its owner chose
    except OSError:
        return  # read-only or missing folder: opening the cache reports it
    os.close(fd)


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
        self.directory = Path(directory)
        self.vector_format: VectorFormat = check_format(vector_format)
        if not self.directory.exists():
            # 0o700: responses may include private images' descriptions
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        _private_db(self.directory / "cache.db")
        try:
            self._cache = diskcache.Cache(
                str(self.directory), timeout=timeout, disk=BytesOnlyDisk, **CACHE_SETTINGS
            )
        except sqlite3.OperationalError as exc:
            if _read_only(self.directory):
                raise _read_only_error(self.directory, exc) from exc
            # a full disk or a lock, not damage: moving a sound database aside would be wrong
            raise CacheError(
                f"cache database in {self.directory} cannot be opened ({exc}); if the disk "
                "is full, free space and run again"
            ) from exc
        except sqlite3.DatabaseError as exc:
            if _read_only(self.directory):
                raise _read_only_error(self.directory, exc) from exc
            raise CacheCorruptError(
                f"cache database in {self.directory} cannot be opened ({exc}); "
                "recover what is readable into a fresh database (vlm-distill cache recover), "
                "or move it aside (or restore a backup), and run again"
            ) from exc
        self._closed = False
        self._spill = SpillFile(self.directory / SPILL_NAME) if spill else None
        # entries kept in the spill file that the database has not taken yet
        self._spilled: dict[str, bytes] = {}
        self.spill_problem: str | None = None
        """Why paid entries wait in the spill file (None when nothing waits)."""
        if self._spill is not None:
            self._spill.reserve()
            self._import_spill()

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
        encoded: list[tuple[str, bytes]] = []
        for key, entry in items:
            if not isinstance(key, str):
                raise CacheWriteError(f"cache keys must be str, got {type(key).__name__}")
            try:
                encoded.append((str(key), encode_entry(entry, self.vector_format)))
            except (ValueError, TypeError) as exc:
                raise CacheWriteError(f"cannot encode cache entry {key}: {exc}") from exc
        if not encoded:
            return
        try:
            self.store_encoded(encoded)
        except CacheWriteError as exc:
            raise CacheWriteError(f"{exc}; {self._spill_out(encoded)}") from exc

    def store_encoded(self, encoded: Sequence[tuple[str, bytes]]) -> None:
        """Write encoded values in one transaction, then read each back; CacheWriteError
        if either fails (a damaged page can take a write and still not give it back)."""
        try:
            with self._cache.transact(retry=False):
                for key, value in encoded:
                    self._cache.set(key, value, retry=False)
        except (sqlite3.Error, OSError, diskcache.Timeout, TypeError) as exc:
            raise CacheWriteError(
                f"could not store {len(encoded)} entries in cache {self.directory}: {exc}"
            ) from exc
        try:
            unreadable = [
                key for key, value in encoded
                if self._cache.get(key, default=None, retry=False) != value
            ]
        except (sqlite3.Error, OSError, diskcache.Timeout, CacheCorruptError) as exc:
            raise CacheWriteError(
                f"entries just stored in cache {self.directory} cannot be read back: {exc}"
            ) from exc
        if unreadable:
            raise CacheWriteError(
                f"{len(unreadable)} entries just stored in cache {self.directory} do not read "
                "back (damaged database)"
            )
        for key, _ in encoded:
            self._spilled.pop(key, None)

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
        """:meth:`get` for each key, in order (None for misses)."""
        return [self.get(key) for key in keys]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and str(key) in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    def _query(self, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of one SQL statement on diskcache's own connection.

        diskcache has no public API for what this is used for: listing rows without
        decoding their keys (a key marked as a pickle must be reported, never unpickled)
        and SQLite's ``quick_check``. So this calls its private ``Cache._sql`` and reads its
        table ``Cache(rowid, key, raw, ...)``; pyproject pins diskcache's major version and
        tests/cache/test_diskcache_assumptions.py fails if either changes.
        """
        return self._cache._sql(statement, params).fetchall()  # type: ignore[no-any-return]

    def _key_rows(self) -> Iterator[tuple[int, Any, int]]:
        """(rowid, stored key, raw flag) of every row, in pages, without decoding keys.

        CacheCorruptError when the database cannot be listed (a damaged page)."""
        last = 0
        while True:
            try:
                rows = self._query(
                    "SELECT rowid, key, raw FROM Cache WHERE rowid > ? ORDER BY rowid LIMIT 1000",
                    (last,),
                )
            except sqlite3.DatabaseError as exc:
                raise CacheCorruptError(
                    f"cache database in {self.directory} cannot be listed after row {last} "
                    f"({exc})"
                ) from exc
            if not rows:
                return
            yield from rows
            last = rows[-1][0]

    def iterkeys(self) -> Iterator[str]:
        """All keys, in insertion order. Rows whose key is not a plain str are skipped
        (:meth:`verify` reports them)."""
        for _rowid, key, raw in self._key_rows():
            if raw and isinstance(key, str):
                yield key

    def _scan(self) -> Iterator[_Scanned]:
        """Every entry, decoded where possible (``problem`` is "" for a sound entry)."""
        for rowid, key, raw in self._key_rows():
            if not (raw and isinstance(key, str)):
                # never unpickle: a non-str key was not written by us
                yield _Scanned(f"<row {rowid}>", None, {}, "key is not a plain str", 0, False)
                continue
            try:
                data = self._cache.get(key, default=None, retry=False)
            except (sqlite3.DatabaseError, OSError, CacheCorruptError, diskcache.Timeout) as exc:
                yield _Scanned(key, None, {}, f"unreadable: {exc}", 0)
                continue
            if data is None:
                # diskcache reads a missing value file as a miss; the row tells them apart
                # from an entry another process deleted while we iterated
                if self._has_row(key):
                    yield _Scanned(key, None, {}, "value file missing or unreadable", 0)
                continue
            try:
                entry, header = _decode(data)
            except CacheCorruptError as exc:
                yield _Scanned(key, None, {}, str(exc), len(data))
                continue
            yield _Scanned(key, entry, header, "", len(data))

    def _has_row(self, key: str) -> bool:
        try:
            return key in self._cache
        except sqlite3.DatabaseError:
            return True  # its row exists but cannot be read: count it as a problem

    def stats(self) -> CacheStats:
        """Entries, bytes on disk (database, WAL and value files), and entries and value
        bytes by kind (``meta["kind"]``; corrupt entries are counted apart)."""
        by_kind: dict[str, KindStats] = {}
        entries = corrupt = 0
        for item in self._scan():
            entries += 1
            if item.entry is None:
                corrupt += 1
                continue
            kind = _kind_of(item.entry)
            old = by_kind.get(kind, KindStats())
            by_kind[kind] = KindStats(old.entries + 1, old.value_bytes + item.size)
        return CacheStats(
            entries=entries,
            bytes_on_disk=_directory_bytes(self.directory),
            by_kind=by_kind,
            corrupt=corrupt,
        )

    def verify(self) -> list[tuple[str, str]]:
        """(key, problem) for every corrupt entry; ``"<database>"`` for database damage."""
        problems: list[tuple[str, str]] = []
        try:
            rows = self._query("PRAGMA quick_check")
            bad = [str(row[0]) for row in rows if row[0] != "ok"]
            if bad:
                problems.append((_DATABASE, "; ".join(bad[:5])))
        except sqlite3.DatabaseError as exc:
            problems.append((_DATABASE, f"integrity check failed: {exc}"))
        try:
            problems.extend((item.key, item.problem) for item in self._scan() if item.problem)
        except CacheCorruptError as exc:
            problems.append((_DATABASE, f"cannot list entries: {exc}"))
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
        """
        now = time.time()
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
        try:
            with self._cache.transact(retry=False):
                for key in doomed:
                    self._cache.delete(key, retry=False)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise CacheWriteError(f"could not prune cache {self.directory}: {exc}") from exc
        return len(doomed)

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


def verify_cache(directory: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """:meth:`ResponseCache.verify` for a directory, reporting (not raising) when the
    database itself cannot be opened. An empty list means everything reads back."""
    if not Path(directory).is_dir():
        return [(_DATABASE, f"{directory} is not a directory")]
    try:
        cache = ResponseCache(directory)
    except CacheCorruptError as exc:
        return [(_DATABASE, str(exc))]
    with cache:
        return cache.verify()

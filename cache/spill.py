"""SpillFile: paid cache entries the database could not store, kept until it can.

When the response cache's database refuses a write (disk full, a damaged page), the
paid values must not be lost with the process. :class:`ResponseCache` appends them
here instead, and imports them into the database the next time it is opened.

Why a preallocated file: a full disk refuses the spill write too, unless its blocks
were reserved before the disk filled. The file is reserved (``posix_fallocate``,
``RESERVE_BYTES``) when the cache is opened, and records are written *into* that
reserved space, so the first few megabytes of spilled vectors need no new blocks.
A record past the reserve may still fail with the disk full; that failure is reported.

Record layout (little-endian), written at the end of the valid records::

    b"SPL1" | key length (u32) | value length (u32) | crc32 of key+value (u32) | key | value

The reserved tail reads as zeros, which ends the scan; a torn record (crash mid-write)
fails its CRC, ends the scan too, and is overwritten by the next append.
Several processes may append: each append holds an exclusive ``flock`` on the file.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

__all__ = ["RESERVE_BYTES", "SpillFile"]

log = logging.getLogger(__name__)

MAGIC: Final = b"SPL1"
_HEAD: Final = struct.Struct("<4sIII")  # magic, key length, value length, crc32
# Room for ~8 MB of vectors: the results a harvest has in flight when the disk fills
# (e.g. 16 requests x 96 items x 1536 dims x 2 bytes = 4.7 MB).
RESERVE_BYTES: Final = 8 * 1024 * 1024


class SpillFile:
    """An append-only, crash-safe file of ``(key, value bytes)`` records.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     spill = SpillFile(d + "/spill", reserve=4096)
    ...     spill.append([("k", b"value")])
    ...     spill.read()
    [('k', b'value')]
    """

    def __init__(self, path: str | os.PathLike[str], *, reserve: int = RESERVE_BYTES) -> None:
        self.path = Path(path).absolute()  # a chdir later must not move it
        self.reserve_bytes = reserve

    @contextmanager
    def _locked(self, flags: int) -> Iterator[int]:
        fd = os.open(self.path, flags | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def reserve(self) -> str | None:
        """Reserve the file's blocks now, while the disk has room. Returns why the disk
        has no room for them (None when reserved, or when the file system cannot
        reserve: spilling is then best effort)."""
        try:
            with self._locked(os.O_RDWR) as fd:
                if os.fstat(fd).st_size < self.reserve_bytes:
                    os.posix_fallocate(fd, 0, self.reserve_bytes)
                    os.fsync(fd)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                return (
                    f"no space left to reserve {self.reserve_bytes // 2**20} MB for {self.path}, "
                    "where paid results are kept if the disk fills: free disk space and run "
                    "again (nothing more is bought until then)"
                )
            log.debug("could not reserve spill space in %s: %s", self.path, exc)
        return None

    @staticmethod
    def _scan(data: bytes) -> tuple[list[tuple[str, bytes]], int]:
        """The valid records and the offset just after the last one."""
        records: list[tuple[str, bytes]] = []
        offset = 0
        while offset + _HEAD.size <= len(data):
            magic, key_len, value_len, crc = _HEAD.unpack_from(data, offset)
            start = offset + _HEAD.size
            end = start + key_len + value_len
            if magic != MAGIC or end > len(data) or zlib.crc32(data[start:end]) != crc:
                break  # the reserved zeros, or a record torn by a crash
            try:
                key = data[start : start + key_len].decode()
            except UnicodeDecodeError:
                break
            records.append((key, data[start + key_len : end]))
            offset = end
        return records, offset

    def read(self) -> list[tuple[str, bytes]]:
        """Every complete record, oldest first (none if the file does not exist)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return self._scan(data)[0]

    def append(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write ``items`` durably (fsync) after the last valid record; OSError on failure."""
        blob = b"".join(
            _HEAD.pack(MAGIC, len(k.encode()), len(v), zlib.crc32(k.encode() + v)) + k.encode() + v
            for k, v in items
        )
        with self._locked(os.O_RDWR) as fd:
            with open(fd, "rb", closefd=False) as f:
                _records, end = self._scan(f.read())
            view = memoryview(blob)
            offset = end
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            os.fsync(fd)

    def drain(self, consume: Callable[[list[tuple[str, bytes]]], None]) -> int:
        """Pass every record to ``consume``; forget them once it returns (not if it raises).

        Holds the file's lock throughout, so a record another process appends meanwhile
        is neither lost nor consumed twice. Returns how many records were consumed.
        """
        if not self.path.exists():
            return 0
        with self._locked(os.O_RDWR) as fd:
            with open(fd, "rb", closefd=False) as f:
                records, end = self._scan(f.read())
            if not records:
                return 0
            consume(records)
            # Zeros over the records (not a truncate): the reserved blocks stay allocated.
            os.pwrite(fd, bytes(end + _HEAD.size), 0)
            os.fsync(fd)
        return len(records)

"""Read table rows straight from the pages of a damaged SQLite file.

When SQLite refuses a database (``file is not a database`` after its header was
overwritten, ``malformed`` when a page it needs is gone), the rows on the pages that
survive are still there. :func:`table_rows` walks the file page by page, reads every
cell of every table leaf page (following overflow chains) and yields each row's
columns, without the schema and without SQLite. It never writes.

What it yields is unchecked: the caller validates every row (the response cache checks
each entry's CRC). Pages on the free list are skipped when the header can be read (their
rows were deleted); when it cannot, deleted rows on freed pages may come back too.
The format is SQLite's (https://www.sqlite.org/fileformat2.html): b-tree pages,
varints, record serial types and overflow chains.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["table_rows"]

_MAGIC: Final = b"SQLite format 3\x00"
_LEAF_TABLE: Final = 0x0D
# the usual page sizes, most likely first, tried when the header cannot tell
_PAGE_SIZES: Final = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)
_INT_SIZES: Final = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}

Value = int | float | bytes | str | None


class _Bad(Exception):
    """A cell or record that does not parse: skipped."""


def _varint(buf: bytes | mmap.mmap, i: int, end: int) -> tuple[int, int]:
    value = 0
    for k in range(8):
        if i + k >= end:
            raise _Bad
        byte = buf[i + k]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, i + k + 1
    if i + 8 >= end:
        raise _Bad
    return (value << 8) | buf[i + 8], i + 9


def _record(payload: bytes) -> list[Value]:
    header_size, i = _varint(payload, 0, len(payload))
    if not 0 < header_size <= len(payload):
        raise _Bad
    types = []
    while i < header_size:
        serial, i = _varint(payload, i, header_size)
        types.append(serial)
    pos = header_size
    row: list[Value] = []
    for serial in types:
        if serial in (0, 8, 9):
            row.append(None if serial == 0 else serial - 8)
        elif serial in _INT_SIZES:
            size = _INT_SIZES[serial]
            row.append(int.from_bytes(payload[pos : pos + size], "big", signed=True))
            pos += size
        elif serial == 7:
            row.append(struct.unpack_from(">d", payload, pos)[0])
            pos += 8
        elif serial >= 12:
            size = (serial - 12) // 2
            chunk = payload[pos : pos + size]
            if serial % 2:
                try:
                    row.append(chunk.decode("utf-8"))
                except UnicodeDecodeError:
                    raise _Bad from None
            else:
                row.append(bytes(chunk))
            pos += size
        else:
            raise _Bad  # 10 and 11 are reserved
        if pos > len(payload):
            raise _Bad
    return row


class _File:
    def __init__(self, data: mmap.mmap, page_size: int, reserved: int) -> None:
        self.data = data
        self.page_size = page_size
        self.usable = page_size - reserved
        self.pages = len(data) // page_size

    def page_start(self, number: int) -> int:
        return (number - 1) * self.page_size

    def payload(self, at: int, end: int) -> bytes:
        """The payload of the table-leaf cell at ``at`` (overflow pages appended)."""
        size, i = _varint(self.data, at, end)
        _rowid, i = _varint(self.data, i, end)
        usable = self.usable
        most_local = usable - 35
        if size <= most_local:
            if i + size > end:
                raise _Bad
            return bytes(self.data[i : i + size])
        least = (usable - 12) * 32 // 255 - 23
        local = least + (size - least) % (usable - 4)
        if local > most_local:
            local = least
        if i + local + 4 > end:
            raise _Bad
        parts = [bytes(self.data[i : i + local])]
        got = local
        (page,) = struct.unpack_from(">I", self.data, i + local)
        seen: set[int] = set()
        while got < size:
            if not 1 <= page <= self.pages or page in seen:
                raise _Bad
            seen.add(page)
            start = self.page_start(page)
            take = min(usable - 4, size - got)
            parts.append(bytes(self.data[start + 4 : start + 4 + take]))
            got += take
            (page,) = struct.unpack_from(">I", self.data, start)
        return b"".join(parts)

    def leaf_rows(self, number: int) -> Iterator[list[Value]]:
        start = self.page_start(number)
        head = start + (100 if number == 1 else 0)
        end = start + self.usable
        if self.data[head] != _LEAF_TABLE:
            return
        (cells,) = struct.unpack_from(">H", self.data, head + 3)
        if head + 8 + 2 * cells > end:
            return
        for c in range(cells):
            (offset,) = struct.unpack_from(">H", self.data, head + 8 + 2 * c)
            if not head + 8 + 2 * cells <= start + offset < end:
                continue
            try:
                yield _record(self.payload(start + offset, end))
            except (_Bad, struct.error, IndexError, ValueError):
                continue

    def free_pages(self) -> set[int]:
        """Pages on the free list (from the header's trunk chain); empty if unreadable."""
        (trunk,) = struct.unpack_from(">I", self.data, 32)
        free: set[int] = set()
        while 1 <= trunk <= self.pages and trunk not in free:
            free.add(trunk)
            start = self.page_start(trunk)
            nxt, count = struct.unpack_from(">II", self.data, start)
            count = min(count, (self.usable - 8) // 4)
            free.update(struct.unpack_from(f">{count}I", self.data, start + 8))
            trunk = nxt
        return free


def _geometry(data: mmap.mmap) -> tuple[tuple[int, ...], int, bool]:
    """Page sizes to try, reserved bytes per page, and whether the header reads."""
    if len(data) >= 100 and data[:16] == _MAGIC:
        (size,) = struct.unpack_from(">H", data, 16)
        size = 65536 if size == 1 else size
        reserved = data[20]
        if 512 <= size <= 65536 and size & (size - 1) == 0 and reserved < size - 480:
            return (size,), reserved, True
    return _PAGE_SIZES, 0, False


def table_rows(path: str | os.PathLike[str], columns: int) -> Iterator[list[Value]]:
    """Every row with ``columns`` columns on the table leaf pages of the SQLite file at
    ``path`` (the rowid alias column reads as None). Stops at the first page size that
    yields any such row when the header cannot say which one the file uses."""
    with open(Path(path), "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            sizes, reserved, header_ok = _geometry(data)
            for page_size in sizes:
                file = _File(data, page_size, reserved)
                skip = set()
                if header_ok:
                    try:
                        skip = file.free_pages()
                    except struct.error:
                        skip = set()
                found = False
                for number in range(1, file.pages + 1):
                    if number in skip:
                        continue
                    for row in file.leaf_rows(number):
                        if len(row) == columns:
                            found = True
                            yield row
                if found:
                    return

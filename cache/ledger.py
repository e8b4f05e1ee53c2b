"""SpendLedger: an append-only JSON-lines record of every billed call, durable before return.

Each :meth:`SpendLedger.record` is one ``os.write`` of one line to a file opened with
``O_APPEND``, followed by ``os.fsync`` (cache-hit records skip the fsync: nothing was
billed, so losing one costs nothing but a statistic). So after ``kill -9`` the file
holds every record whose ``record()`` call returned, and at most one torn last line,
which the reader skips and reports. Several processes may append to one ledger: each
line is written by a single ``write`` to an append-mode descriptor.

A full disk must not cost the record of a call that was paid: on Linux the ledger keeps
``RESERVE_BYTES`` of blocks allocated past its end (``fallocate`` with KEEP_SIZE, renewed
as it grows), so appends land in space reserved while the disk still had room.

Caveats: an fsync on a network file system or a disk that lies about its write cache
guarantees less; once the reserve is used up on a full disk (thousands of records), or
where it cannot be made, ``record`` raises :class:`LedgerWriteError`.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from .atomic import fsync_directory
from .layout import CacheLayoutError
from .protocols import LedgerRecord

__all__ = [
    "CACHE_HIT",
    "MAX_RECORD_USD",
    "GroupTotals",
    "LedgerContents",
    "LedgerWriteError",
    "SpendLedger",
    "Totals",
    "by_model",
    "is_overrun",
    "iter_ledger",
    "maybe_billed",
    "plain",
    "read_ledger",
    "refuse_foreign_ledger",
    "reserve_tail",
    "totals",
]

log = logging.getLogger(__name__)

CACHE_HIT: Final = "cache_hit"
OK: Final = "ok"
ORPHANED: Final = "orphaned"  # see cache.coordination
# Blocks kept allocated past the ledger's end: ~3,000 records written on a full disk.
RESERVE_BYTES: Final = 1024 * 1024
_FALLOC_FL_KEEP_SIZE: Final = 1


def reserve_tail(fd: int, nbytes: int) -> bool:
    """Allocate ``nbytes`` past the end of ``fd`` without changing its size (Linux only).

    Appends then write into blocks that already exist, so they succeed on a full disk.
    """
    return _reserve(fd, nbytes) == 0


def _reserve(fd: int, nbytes: int) -> int | None:
    """:func:`reserve_tail`'s outcome: 0 done, an errno when it failed, None when the
    platform cannot reserve."""
    fallocate = _fallocate()
    if fallocate is None:
        return None
    try:
        size = os.fstat(fd).st_size
    except OSError as exc:
        return exc.errno or errno.EIO
    if fallocate(fd, _FALLOC_FL_KEEP_SIZE, size, nbytes) == 0:
        return 0
    return ctypes.get_errno() or errno.EIO


@functools.cache
def _fallocate() -> Any:
    """libc's ``fallocate`` (Linux), looked up once; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate  # symbols already loaded
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    return fallocate


class LedgerWriteError(RuntimeError):
    """A record could not be written durably (disk full, file system error, closed)."""


def _record_to_line(rec: LedgerRecord) -> bytes:
    fields = {
        "time": rec.time,
        "provider": rec.provider,
        "model": rec.model,
        "kind": rec.kind,
        "items": rec.items,
        "cost_usd": str(rec.cost_usd),
        "outcome": rec.outcome,
        "usage": dict(rec.usage),
        "request_id": rec.request_id,
        "saved_usd": str(rec.saved_usd),
        "reserved_usd": str(rec.reserved_usd),
        "estimated": rec.estimated,
        "provider_usage": dict(rec.provider_usage),
    }
    if rec.endpoint is not None:  # the provider's default endpoint: the line as before
        fields["endpoint"] = rec.endpoint
    if rec.reservation is not None:
        fields["reservation"] = rec.reservation
    # ensure_ascii keeps every line valid UTF-8 even if it is cut mid-character
    return (json.dumps(fields, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


def _record_from_json(obj: Any) -> LedgerRecord:
    if not isinstance(obj, dict):
        raise ValueError("line is not a JSON object")
    try:
        rec = LedgerRecord(
            provider=str(obj["provider"]),
            model=str(obj["model"]),
            kind=str(obj["kind"]),
            items=int(obj["items"]),
            cost_usd=str(obj["cost_usd"]),
            outcome=str(obj.get("outcome", OK)),
            usage=_counts(obj.get("usage")),
            request_id=None if obj.get("request_id") is None else str(obj["request_id"]),
            saved_usd=str(obj.get("saved_usd", "0")),
            time=_finite_time(obj.get("time", 0.0)),
            # absent in ledgers written before these fields existed
            reserved_usd=str(obj.get("reserved_usd", "0")),
            estimated=obj.get("estimated") is True,
            provider_usage=_mapping(obj.get("provider_usage")),
            endpoint=obj["endpoint"] if isinstance(obj.get("endpoint"), str) else None,
            reservation=r if isinstance(r := obj.get("reservation"), str) else None,
        )
        for name in ("cost_usd", "saved_usd", "reserved_usd"):
            _check_amount(name, Decimal(getattr(rec, name)))
        if rec.items < 0:
            raise ValueError("negative item count")
    except (
        KeyError, TypeError, ValueError, AttributeError, InvalidOperation, OverflowError
    ) as exc:  # fmt: skip
        raise ValueError(f"not a ledger record: {exc}") from exc
    return rec


def _finite_time(value: Any) -> float:
    """A record's time; 0.0 (unknown, as in ledgers written before it existed) for NaN or
    an overflow, or what is not a number (another version's date string): not a reason to
    drop the line's money, and never echoed into a report's JSON (``NaN`` and ``Infinity``
    are not JSON)."""
    try:
        when = float(value)
    except (TypeError, ValueError):
        return 0.0
    return when if math.isfinite(when) else 0.0


def _counts(value: Any) -> dict[str, int]:
    """A line's usage: its whole, non-negative counts. Anything else in it (another
    version's nested block, a null, a negative number) is left out, never a reason to
    drop the line's money (before 2026-12-07 it was: $0 in every total and budget)."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, int] = {}
    for key, count in value.items():
        try:
            number = int(count)
        except (TypeError, ValueError, OverflowError):
            continue
        if number >= 0:
            out[str(key)] = number
    return out


def _mapping(value: Any) -> dict[str, Any]:
    """The provider's usage block of a line; {} if it is not an object, or holds NaN or an
    overflow (reports echo it as JSON, which has neither)."""
    if not isinstance(value, dict):
        return {}
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return {}
    return dict(value)


def is_overrun(rec: LedgerRecord) -> bool:
    """The provider billed more than was reserved for this call (records of old
    ledgers, without a reservation, never count)."""
    reserved = Decimal(rec.reserved_usd)
    return reserved > 0 and Decimal(rec.cost_usd) > reserved


# No single call costs this much: a larger amount on a line is damage, not a bill.
MAX_RECORD_USD: Final = Decimal(1_000_000)


def _check_amount(name: str, value: Decimal) -> None:
    """A record's dollar amount must be finite, >= 0 and below :data:`MAX_RECORD_USD`;
    otherwise the line is skipped and listed (it must neither lower nor explode a total)."""
    if not value.is_finite() or value < 0 or value > MAX_RECORD_USD:
        raise ValueError(f"{name} {value} is not a plausible amount (0 to ${MAX_RECORD_USD})")


@dataclass(frozen=True)
class LedgerContents:
    """The records that parsed, and (line number, reason) for each line that did not."""

    records: list[LedgerRecord]
    problems: list[tuple[int, str]] = field(default_factory=list)


def read_ledger(path: str | os.PathLike[str]) -> LedgerContents:
    """Parse a ledger file, skipping (and listing) lines that do not parse.

    A missing file is an empty ledger. A last line without its newline is what ``kill -9``
    during a write leaves; it is reported as torn. Holds every record: to sum a large
    ledger, use :func:`iter_ledger`.
    """
    problems: list[tuple[int, str]] = []
    return LedgerContents(list(iter_ledger(path, problems)), problems)


def iter_ledger(
    path: str | os.PathLike[str], problems: list[tuple[int, str]] | None = None
) -> Iterator[LedgerRecord]:
    """The records of the ledger at ``path``, read one line at a time (what is held does
    not grow with the ledger: before 2026-12-07 every reader held it whole, 1 GB for
    500,000 requests); each line that does not parse is skipped and its (line number,
    reason) appended to ``problems``, as :func:`read_ledger` lists them.

    >>> list(iter_ledger("no-such-folder/ledger.jsonl"))  # a missing file: no records
    []
    """
    try:
        with open(path, "rb") as f:
            yield from _parse_lines(f, problems)
    except FileNotFoundError:
        return


def _parse_lines(
    lines: Iterable[bytes], problems: list[tuple[int, str]] | None
) -> Iterator[LedgerRecord]:
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rec = _record_from_json(json.loads(raw))
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; RecursionError: a line
        # nested too deep for json (damage)
        except (ValueError, RecursionError) as exc:
            if problems is not None:
                torn = not raw.endswith(b"\n")  # the write never finished
                why = "torn last line (interrupted write)" if torn else "unreadable line"
                problems.append((number, why if torn else f"{why}: {exc}"))
            continue
        yield rec


def refuse_foreign_ledger(
    path: str | os.PathLike[str],
    refusing: str = "refusing to add records to it; nothing was bought",
) -> None:
    """CacheLayoutError when ``path`` holds whole lines and not one of them is a record:
    a file of someone else's (a user's own ``ledger.jsonl`` in the folder given as the
    cache), which the readers would skip line by line as damage while records were added
    to it. Reads up to the first record, so a ledger of ours costs one line; one cut at
    its first write (a torn line only) is ours. ``refusing`` says what is not done."""
    problems: list[tuple[int, str]] = []
    try:
        with open(path, "rb") as f:
            for _ in _parse_lines(f, problems):
                return
    except OSError:  # said by the open for appending, in its words
        return
    if any(not why.startswith("torn") for _, why in problems):
        raise CacheLayoutError(
            f"{path} is not a spend ledger (not one of its lines is a record of vlm-distill's): "
            f"{refusing}. Move it aside, or give another cache folder"
        )


class SpendLedger:
    """Append-only, durable spend record; implements :class:`cache.LedgerLike`.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with SpendLedger(os.path.join(d, "ledger.jsonl")) as ledger:
    ...         ledger.record(LedgerRecord("cohere", "embed-v4.0", "text", 3, "0.0001"))
    ...     [r.items for r in SpendLedger.read(os.path.join(d, "ledger.jsonl"))]
    [3]
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).absolute()  # a chdir later must not move it
        self._lock = threading.Lock()
        created = not self.path.exists()
        if not created:
            refuse_foreign_ledger(self.path)
        try:
            if created:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd: int | None = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if created:
                fsync_directory(self.path.parent)  # the new file's name is durable too
        except OSError as exc:  # a read-only folder, a file where a folder goes, ...
            raise LedgerWriteError(
                f"cannot open the spend ledger {self.path} for appending: "
                f"{exc.strerror or exc}") from exc
        self._since_reserve = 0
        self._end_torn_line()
        if _reserve(self._fd, RESERVE_BYTES) == errno.ENOSPC:
            # no room for the records of what is about to be bought: refuse now, before
            # anything is sent, not after the first billed call could not be recorded
            os.close(self._fd)
            self._fd = None
            raise LedgerWriteError(
                f"no space left for the spend ledger {self.path} (it keeps "
                f"{RESERVE_BYTES // 2**20} MB reserved so every billed call can be "
                "recorded): free disk space and run again; nothing was bought"
            )

    def _end_torn_line(self) -> None:
        """After a crash mid-write, start our records on a fresh line."""
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
        self._write(b"\n", sync=True)

    def _write(self, data: bytes, *, sync: bool) -> None:
        if self._fd is None:
            raise LedgerWriteError(f"ledger {self.path} is closed")
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if sync:
                os.fsync(self._fd)
        except OSError as exc:
            raise LedgerWriteError(f"could not record spend in {self.path}: {exc}") from exc
        self._since_reserve += len(data)
        if self._since_reserve > RESERVE_BYTES // 2:
            # renew while half the reserve is left, so a disk that fills now finds it there
            self._since_reserve = 0
            reserve_tail(self._fd, RESERVE_BYTES)

    def record(self, rec: LedgerRecord) -> None:
        """Append ``rec`` (its time set to now if unset); durable before this returns.

        Cache-hit records are written but not fsynced.
        """
        if rec.time == 0.0:
            rec = replace(rec, time=time.time())
        for name in ("cost_usd", "saved_usd", "reserved_usd"):
            if isinstance(getattr(rec, name), float):
                raise ValueError(f"{name} is a float ({getattr(rec, name)!r}): money is a "
                                 "Decimal or its string")
        line = _record_to_line(rec)
        try:  # what the readers skip must not be written: its spend would count as $0
            _record_from_json(json.loads(line))
        except ValueError as exc:
            raise ValueError(f"refusing to record it: {exc}") from None
        with self._lock:
            self._write(line, sync=rec.outcome != CACHE_HIT)

    @staticmethod
    def read(path: str | os.PathLike[str]) -> list[LedgerRecord]:
        """All readable records of the ledger at ``path``; skipped lines are logged."""
        contents = read_ledger(path)
        for number, reason in contents.problems:
            log.warning("ledger %s line %d skipped: %s", path, number, reason)
        return contents.records

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: nothing more can be recorded."""
        return self._fd is None

    def close(self) -> None:
        """Close the file (idempotent). Records already returned are on disk."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> SpendLedger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SpendLedger({str(self.path)!r})"


def maybe_billed(rec: LedgerRecord) -> bool:
    """Whether the provider billed, or may have billed, this sent record: not a refused
    connection (never left) nor an error status released at $0 (a gateway's timeout
    status is charged: it may have been billed)."""
    if rec.outcome == "refused":
        return False
    return not (rec.outcome.startswith("http_") and Decimal(rec.cost_usd) == 0)


@dataclass
class GroupTotals:
    """Totals of one (provider, model, kind).

    ``requests``: records that were sent (any outcome but cache_hit); ``items``: the
    items of those the provider billed or may have billed (:func:`maybe_billed`);
    ``spent_usd``: sum of ``cost_usd`` over all records; ``cache_hits``: items served
    from the cache; ``saved_usd``: what those hits would have cost;
    ``failures``: record counts by outcome, for outcomes other than ok and cache_hit;
    ``estimated``: billed records charged at our reservation because the provider did
    not say what it billed; ``overruns`` / ``overrun_usd``: records billed above their
    reservation, and by how much in total.
    """

    provider: str
    model: str
    kind: str
    requests: int = 0
    items: int = 0
    spent_usd: Decimal = field(default_factory=Decimal)
    cache_hits: int = 0
    saved_usd: Decimal = field(default_factory=Decimal)
    failures: dict[str, int] = field(default_factory=dict)
    estimated: int = 0
    overruns: int = 0
    overrun_usd: Decimal = field(default_factory=Decimal)

    def add(self, rec: LedgerRecord) -> None:
        self.spent_usd += Decimal(rec.cost_usd)
        self.saved_usd += Decimal(rec.saved_usd)
        if rec.outcome == CACHE_HIT:
            self.cache_hits += rec.items
            return
        # an orphaned line is always charged at its reservation (older ledgers did not
        # mark it estimated)
        self.estimated += rec.estimated or rec.outcome == ORPHANED
        if is_overrun(rec):
            self.overruns += 1
            self.overrun_usd += Decimal(rec.cost_usd) - Decimal(rec.reserved_usd)
        self.requests += 1
        if maybe_billed(rec):
            self.items += rec.items
        if rec.outcome != OK:
            self.failures[rec.outcome] = self.failures.get(rec.outcome, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, money as decimal strings."""
        return {
            "provider": self.provider,
            "model": self.model,
            "kind": self.kind,
            "requests": self.requests,
            "items": self.items,
            "spent_usd": plain(self.spent_usd),
            "cache_hits": self.cache_hits,
            "saved_usd": plain(self.saved_usd),
            "failures": dict(sorted(self.failures.items())),
            "estimated": self.estimated,
            "overruns": self.overruns,
            "overrun_usd": plain(self.overrun_usd),
        }


def plain(amount: Decimal) -> str:
    """A Decimal as a plain decimal string: ``0.00000072``, never ``7.2E-7``.

    >>> plain(Decimal("7.2E-7")), plain(Decimal("1E+2"))
    ('0.00000072', '100')
    """
    return format(amount, "f")


@dataclass
class Totals(GroupTotals):
    """Totals over all records, plus ``groups`` keyed by (provider, model, kind)."""

    groups: dict[tuple[str, str, str], GroupTotals] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        for name in ("provider", "model", "kind"):
            del out[name]
        out["groups"] = [self.groups[k].as_dict() for k in sorted(self.groups)]
        return out


def totals(records: Iterable[LedgerRecord]) -> Totals:
    """Sum ledger records overall and by (provider, model, kind); money stays Decimal."""
    total = Totals(provider="*", model="*", kind="*")
    for rec in records:
        key = (rec.provider, rec.model, rec.kind)
        group = total.groups.get(key)
        if group is None:
            group = total.groups[key] = GroupTotals(*key)
        group.add(rec)
        total.add(rec)
    return total


def by_model(groups: Mapping[tuple[str, str, str], GroupTotals]) -> list[dict[str, Any]]:
    """Groups merged over kinds: one JSON-able dict per provider:model (for reports)."""
    merged: dict[tuple[str, str], GroupTotals] = {}
    for (provider, model, _kind), group in sorted(groups.items()):
        into = merged.setdefault((provider, model), GroupTotals(provider, model, "*"))
        into.requests += group.requests
        into.items += group.items
        into.spent_usd += group.spent_usd
        into.cache_hits += group.cache_hits
        into.saved_usd += group.saved_usd
        into.estimated += group.estimated
        into.overruns += group.overruns
        into.overrun_usd += group.overrun_usd
        for outcome, count in group.failures.items():
            into.failures[outcome] = into.failures.get(outcome, 0) + count
    return [merged[k].as_dict() for k in sorted(merged)]

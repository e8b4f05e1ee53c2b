"""What :meth:`ResponseCache.stats` reports: entries and value bytes by kind, bytes on disk."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .protocols import CacheEntry

__all__ = ["CacheStats", "KindStats", "directory_bytes", "kind_of"]


def kind_of(entry: CacheEntry) -> str:
    """``meta["kind"]``, or "vector"/"text" for an entry that does not say."""
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


def directory_bytes(directory: Path) -> int:
    """Bytes of every file under ``directory`` (database, WAL and value files)."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # another process removed it meanwhile
                continue
    return total

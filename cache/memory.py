"""An in-memory cache behind the :class:`~cache.protocols.CacheLike` protocol."""

from __future__ import annotations

from collections.abc import Iterable

from .protocols import CacheEntry

__all__ = ["MemoryCache"]


class MemoryCache:
    """A dict-backed cache for tests and short scripts (nothing survives the process)."""

    def __init__(self) -> None:
        self._data: dict[str, CacheEntry] = {}
        self.gets = 0
        self.sets = 0

    def get(self, key: str) -> CacheEntry | None:
        self.gets += 1
        return self._data.get(key)

    def set_many(self, items: Iterable[tuple[str, CacheEntry]]) -> None:
        for key, entry in items:
            self.sets += 1
            self._data[key] = entry

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

"""The response cache's errors (cache/response_cache.py and the modules it is built from)."""

from __future__ import annotations

__all__ = ["CacheCorruptError", "CacheError", "CacheReadOnlyError", "CacheWriteError"]


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

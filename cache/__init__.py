"""Durable storage of paid teacher responses: response cache, spend ledger, embedding store.

Imports nothing else of vlm-distill.
"""

from .atomic import atomic_write, fsync_directory
from .codecs import FORMATS, VectorFormat, decode_vector, dequantize, encode_vector, quantize
from .coordination import Coordinator, SpendView
from .keys import canonical_json, make_key
from .ledger import (
    GroupTotals,
    LedgerContents,
    LedgerWriteError,
    SpendLedger,
    Totals,
    read_ledger,
    totals,
)
from .memory import MemoryCache
from .protocols import CacheEntry, CacheLike, LedgerLike, LedgerRecord
from .recover import RecoverResult, recover_cache
from .response_cache import (
    CacheCorruptError,
    CacheError,
    CacheReadOnlyError,
    CacheStats,
    CacheWriteError,
    KindStats,
    ResponseCache,
    verify_cache,
)
from .spill import SpillFile
from .store import EmbeddingStore, StoreError

__all__ = [
    "FORMATS",
    "CacheCorruptError",
    "CacheEntry",
    "CacheError",
    "CacheLike",
    "CacheReadOnlyError",
    "CacheStats",
    "CacheWriteError",
    "Coordinator",
    "EmbeddingStore",
    "GroupTotals",
    "KindStats",
    "LedgerContents",
    "LedgerLike",
    "LedgerRecord",
    "LedgerWriteError",
    "MemoryCache",
    "RecoverResult",
    "ResponseCache",
    "SpendLedger",
    "SpendView",
    "SpillFile",
    "StoreError",
    "Totals",
    "VectorFormat",
    "atomic_write",
    "canonical_json",
    "decode_vector",
    "dequantize",
    "encode_vector",
    "fsync_directory",
    "make_key",
    "quantize",
    "read_ledger",
    "recover_cache",
    "totals",
    "verify_cache",
]

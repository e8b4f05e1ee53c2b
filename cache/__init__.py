"""Durable storage of paid teacher responses: response cache, spend ledger, embedding store.

Imports nothing else of vlm-distill.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .atomic import atomic_write, atomic_write_csv, atomic_write_files, fsync_directory
    from .cache_errors import CacheCorruptError, CacheError, CacheReadOnlyError, CacheWriteError
    from .cache_stats import CacheStats, KindStats
    from .codecs import (
        FORMATS,
        VectorFormat,
        as_stored,
        decode_vector,
        dequantize,
        encode_vector,
        quantize,
    )
    from .coordination import CoordinationError, Coordinator, Overrun, SpendView, live_owners
    from .coordination_db import given_up_on, open_reservations, stop_waiting
    from .keys import (
        KeyTemplate,
        LiteralJSON,
        ascii_json_inner,
        ascii_json_string,
        canonical_json,
        json_bytes_with_literals,
        json_with_literals,
        make_key,
    )
    from .layout import (
        COORDINATION_FILE,
        LEDGER_FILE,
        RESPONSES_DIR,
        SELECT_DIR,
        STORES_DIR,
        CacheDir,
        CacheLayoutError,
        holds_cache,
    )
    from .ledger import (
        MAX_RECORD_USD,
        GroupTotals,
        LedgerContents,
        LedgerWriteError,
        SpendLedger,
        Totals,
        by_model,
        is_overrun,
        iter_ledger,
        plain,
        read_ledger,
        refuse_foreign_ledger,
        totals,
    )
    from .memory import MemoryCache
    from .money import money_context
    from .protocols import CacheEntry, CacheLike, LedgerLike, LedgerRecord
    from .recover import RecoverBusyError, RecoverResult, recover_cache
    from .response_cache import ResponseCache, read_cache_stats, verify_cache
    from .spill import SpillFile
    from .store import EmbeddingStore
    from .store_format import StoreError
    from .store_writer import StoreWriter
    from .swap import exchange, leftover_name

__all__ = [
    "COORDINATION_FILE",
    "FORMATS",
    "LEDGER_FILE",
    "MAX_RECORD_USD",
    "RESPONSES_DIR",
    "SELECT_DIR",
    "STORES_DIR",
    "CacheCorruptError",
    "CacheDir",
    "CacheEntry",
    "CacheError",
    "CacheLayoutError",
    "CacheLike",
    "CacheReadOnlyError",
    "CacheStats",
    "CacheWriteError",
    "CoordinationError",
    "Coordinator",
    "EmbeddingStore",
    "GroupTotals",
    "KeyTemplate",
    "KindStats",
    "LedgerContents",
    "LedgerLike",
    "LedgerRecord",
    "LedgerWriteError",
    "LiteralJSON",
    "MemoryCache",
    "Overrun",
    "RecoverBusyError",
    "RecoverResult",
    "ResponseCache",
    "SpendLedger",
    "SpendView",
    "SpillFile",
    "StoreError",
    "StoreWriter",
    "Totals",
    "VectorFormat",
    "as_stored",
    "ascii_json_inner",
    "ascii_json_string",
    "atomic_write",
    "atomic_write_csv",
    "atomic_write_files",
    "by_model",
    "canonical_json",
    "decode_vector",
    "dequantize",
    "encode_vector",
    "exchange",
    "fsync_directory",
    "given_up_on",
    "holds_cache",
    "is_overrun",
    "iter_ledger",
    "json_bytes_with_literals",
    "json_with_literals",
    "leftover_name",
    "live_owners",
    "make_key",
    "money_context",
    "open_reservations",
    "plain",
    "quantize",
    "read_cache_stats",
    "read_ledger",
    "recover_cache",
    "refuse_foreign_ledger",
    "stop_waiting",
    "totals",
    "verify_cache",
]

# Where each public name lives, imported on first use (PEP 562): ``import cache.layout``
# or a name from it must not load every dependency of the package. The imports under
# TYPE_CHECKING say the same to type checkers; tests/test_layout.py checks they agree.
_SOURCES: dict[str, str] = {
    "atomic_write": "atomic",
    "atomic_write_csv": "atomic",
    "atomic_write_files": "atomic",
    "fsync_directory": "atomic",
    "CacheCorruptError": "cache_errors",
    "CacheError": "cache_errors",
    "CacheReadOnlyError": "cache_errors",
    "CacheWriteError": "cache_errors",
    "CacheStats": "cache_stats",
    "KindStats": "cache_stats",
    "FORMATS": "codecs",
    "VectorFormat": "codecs",
    "as_stored": "codecs",
    "decode_vector": "codecs",
    "dequantize": "codecs",
    "encode_vector": "codecs",
    "quantize": "codecs",
    "CoordinationError": "coordination",
    "Coordinator": "coordination",
    "Overrun": "coordination",
    "SpendView": "coordination",
    "live_owners": "coordination",
    "given_up_on": "coordination_db",
    "open_reservations": "coordination_db",
    "stop_waiting": "coordination_db",
    "money_context": "money",
    "KeyTemplate": "keys",
    "LiteralJSON": "keys",
    "ascii_json_inner": "keys",
    "ascii_json_string": "keys",
    "canonical_json": "keys",
    "json_bytes_with_literals": "keys",
    "json_with_literals": "keys",
    "make_key": "keys",
    "COORDINATION_FILE": "layout",
    "LEDGER_FILE": "layout",
    "RESPONSES_DIR": "layout",
    "SELECT_DIR": "layout",
    "STORES_DIR": "layout",
    "CacheDir": "layout",
    "CacheLayoutError": "layout",
    "holds_cache": "layout",
    "MAX_RECORD_USD": "ledger",
    "GroupTotals": "ledger",
    "LedgerContents": "ledger",
    "LedgerWriteError": "ledger",
    "SpendLedger": "ledger",
    "Totals": "ledger",
    "by_model": "ledger",
    "is_overrun": "ledger",
    "iter_ledger": "ledger",
    "plain": "ledger",
    "read_ledger": "ledger",
    "refuse_foreign_ledger": "ledger",
    "totals": "ledger",
    "MemoryCache": "memory",
    "CacheEntry": "protocols",
    "CacheLike": "protocols",
    "LedgerLike": "protocols",
    "LedgerRecord": "protocols",
    "RecoverBusyError": "recover",
    "RecoverResult": "recover",
    "recover_cache": "recover",
    "ResponseCache": "response_cache",
    "read_cache_stats": "response_cache",
    "verify_cache": "response_cache",
    "SpillFile": "spill",
    "EmbeddingStore": "store",
    "StoreError": "store_format",
    "StoreWriter": "store_writer",
    "exchange": "swap",
    "leftover_name": "swap",
}


def __getattr__(name: str) -> Any:
    try:
        module = _SOURCES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups find it without coming back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

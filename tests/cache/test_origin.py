"""cache.origin: what a response database records of where it came from (the buyer's test
of an empty cache beside a ledger of purchases, distill/cli/_common.check_cache_not_lost)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from cache import ResponseCache
from cache.origin import ORIGIN_TABLE, Origin
from cache.protocols import CacheEntry


def entry() -> CacheEntry:
    return CacheEntry(vector=np.ones(4, np.float32), meta={"kind": "t"})


def test_a_new_database_is_unmarked_until_a_buyer_marks_it_once(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "r") as c:
        assert c.origin() is None
        c.mark_origin(before_purchases=True)
        c.mark_origin(before_purchases=False)  # the first mark stays
        assert c.origin() == Origin(before_purchases=True, held=False)


def test_held_is_written_with_the_first_store_and_outlives_a_prune(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "r") as c:
        c.mark_origin(before_purchases=True)
        c.set_many([("k", entry())])
        assert c.origin() == Origin(True, True)
        assert c.prune(older_than=-1) == 1 and len(c) == 0
    with ResponseCache(tmp_path / "r") as c:  # reopened: the record is in the database
        assert c.origin() == Origin(True, True)


def test_a_database_from_before_the_table_is_marked_holding_what_it_holds(
    tmp_path: Path,
) -> None:
    with ResponseCache(tmp_path / "r") as c:
        c.set_many([("k", entry())])
    con = sqlite3.connect(tmp_path / "r" / "cache.db")
    con.execute(f"DROP TABLE {ORIGIN_TABLE}")  # as an older version left it
    con.commit()
    con.close()
    with ResponseCache(tmp_path / "r") as c:
        assert c.origin() is None
        c.mark_origin(before_purchases=False)
        assert c.origin() == Origin(before_purchases=False, held=True)


def test_an_unmarked_empty_cache_beside_purchases_is_refused(tmp_path: Path) -> None:
    """Marking that fails (a full disk) leaves the database unmarked: the buyer's check
    then refuses an empty cache beside purchases, as before the origin was recorded,
    rather than buying them again."""
    from decimal import Decimal

    import pytest

    from cache import SpendLedger
    from cache.cache_errors import CacheWriteError
    from cache.protocols import LedgerRecord
    from distill.cli._common import check_cache_not_lost, mark_cache_origin
    from vlmclient import ConfigurationError

    class FullDisk(ResponseCache):
        def mark_origin(self, *, before_purchases: bool) -> None:
            raise CacheWriteError("database or disk is full")

    with SpendLedger(tmp_path / "ledger.jsonl") as ledger, FullDisk(tmp_path / "r") as cache:
        mark_cache_origin(cache, ledger)  # fails quietly
        ledger.record(LedgerRecord(request_id="r1", provider="local", model="hash",
                                   kind="image_embedding", items=2, cost_usd=Decimal("0.01"),
                                   reserved_usd=Decimal("0.01"), outcome="ok"))  # fmt: skip
        assert cache.origin() is None
        with pytest.raises(ConfigurationError, match="its database was lost or replaced"):
            check_cache_not_lost(cache, ledger, "local", "hash")

"""cache.origin: what a response database records of where it came from (the buyer's test
of an empty cache beside a ledger of purchases, distill/cli/_common.check_cache_not_lost)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

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
        def mark_origin(self, *, before_purchases: bool, **teacher: object) -> None:
            raise CacheWriteError("database or disk is full")

    with SpendLedger(tmp_path / "ledger.jsonl") as ledger, FullDisk(tmp_path / "r") as cache:
        mark_cache_origin(cache, ledger)  # fails quietly
        ledger.record(LedgerRecord(request_id="r1", provider="local", model="hash",
                                   kind="image_embedding", items=2, cost_usd=Decimal("0.01"),
                                   reserved_usd=Decimal("0.01"), outcome="ok"))  # fmt: skip
        assert cache.origin() is None
        with pytest.raises(ConfigurationError, match="its database was lost or replaced"):
            check_cache_not_lost(cache, ledger, "local", "hash")


def of(teacher: str) -> CacheEntry:
    provider, model = teacher.split(":")
    return CacheEntry(vector=np.ones(4, np.float32), meta={"provider": provider, "model": model})


def test_a_new_database_notes_each_teacher_it_holds(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "r") as c:
        assert c.teacher_origin("local:a").holds_none  # complete from the start: empty
        c.set_many([("k1", of("local:a")), ("k2", of("local:a"))])
        assert c.teacher_origin("local:a").held
        assert c.teacher_origin("local:b").holds_none
        assert c.prune(older_than=-1) == 2  # pruned: it held them (no longer "none")
        assert not c.teacher_origin("local:a").holds_none


def test_entries_stored_encoded_are_noted_by_their_headers(tmp_path: Path) -> None:
    """`cache recover` and the spill file's import store encoded values: their teachers
    are read from each value's header, so a recovered database knows what it holds."""
    from cache.entry_codec import encode_entry

    with ResponseCache(tmp_path / "r") as c:
        c.store_encoded([("k", encode_entry(of("cohere:embed-v4.0"), "float16")),
                         ("bad", b"not an entry")])  # fmt: skip
        assert c.teacher_origin("cohere:embed-v4.0").held


def test_a_database_from_before_the_rows_cannot_tell_and_is_not_refused(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "r") as c:
        c.set_many([("k", of("local:a"))])
    con = sqlite3.connect(tmp_path / "r" / "cache.db")
    con.execute(f"DROP TABLE {ORIGIN_TABLE}")  # as an older version left it
    con.commit()
    con.close()
    with ResponseCache(tmp_path / "r") as c:
        c.mark_origin(before_purchases=False, teacher="local:a", teacher_before=False)
        a = c.teacher_origin("local:a")
        assert not a.complete and not a.held and a.before_purchases is False
        assert not a.holds_none  # its entries may be local:a's, stored before the rows
        c.mark_origin(before_purchases=False, teacher="local:b", teacher_before=True)
        assert c.teacher_origin("local:b").holds_none  # none bought before: none held


def test_a_second_teacher_killed_before_its_first_cache_write_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database holding teacher a's answers, a harvest of teacher b killed between its
    first ledger line and its first cache write: b's items are bought again (with a
    note), not refused as a lost database; the same ledger beside a database that never
    saw b's first buyer before b's purchases is refused."""
    from decimal import Decimal

    from cache import SpendLedger
    from cache.protocols import LedgerRecord
    from distill.cli._common import check_cache_not_lost, mark_cache_origin
    from vlmclient import ConfigurationError

    def bought(ledger: SpendLedger, model: str) -> None:
        ledger.record(LedgerRecord(request_id="r", provider="local", model=model,
                                   kind="image_embedding", items=2, cost_usd=Decimal("0.01"),
                                   reserved_usd=Decimal("0.01"), outcome="ok"))  # fmt: skip

    with SpendLedger(tmp_path / "ledger.jsonl") as ledger:
        with ResponseCache(tmp_path / "r") as cache:
            mark_cache_origin(cache, ledger, "local:a")
            bought(ledger, "a")
            cache.set_many([("k", of("local:a"))])
            mark_cache_origin(cache, ledger, "local:b")  # b's first buyer
            bought(ledger, "b")  # ... killed here
            check_cache_not_lost(cache, ledger, "local", "b")  # resumes
        assert "2 items of local:b" in capsys.readouterr().err
        with ResponseCache(tmp_path / "new") as cache:  # b's database lost: a new one
            mark_cache_origin(cache, ledger, "local:a")
            cache.set_many([("k", of("local:a"))])
            mark_cache_origin(cache, ledger, "local:b")
            with pytest.raises(ConfigurationError, match="holds no answer of local:b"):
                check_cache_not_lost(cache, ledger, "local", "b")
            check_cache_not_lost(cache, ledger, "local", "a")  # a's answers are there

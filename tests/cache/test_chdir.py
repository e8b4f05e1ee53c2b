"""Cache objects opened on relative paths keep working on the same folder after the
process changes its working directory (a notebook's %cd, a library calling os.chdir)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from cache import CacheEntry, LedgerRecord, ResponseCache, SpendLedger, read_ledger, totals
from cache.coordination import Coordinator


def test_the_spend_cap_after_a_chdir_still_counts_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the coordinator read its relative ledger path lazily, after the chdir found
    no file, seeded the spend at $0 and granted $0.01 under a $0.015 cap with $0.012
    already spent; its orphan record went into a new ledger in the other folder."""
    (tmp_path / "proj" / "vlm-cache").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    with SpendLedger("vlm-cache/ledger.jsonl") as ledger:
        ledger.record(LedgerRecord("local", "hash", "image_embedding", 120, "0.012"))
    coord = Coordinator("vlm-cache/coordination.db", ledger_path="vlm-cache/ledger.jsonl")
    monkeypatch.chdir(tmp_path / "elsewhere")
    rid, view = coord.try_reserve("local:hash", Decimal("0.01"), 100, cap=Decimal("0.015"))
    assert rid is None and view.settled == Decimal("0.012")
    rid, _ = coord.try_reserve("local:hash", Decimal("0.002"), 20, cap=Decimal("0.015"))
    assert rid is not None
    coord.close()  # the open reservation is charged to the ledger as 'orphaned'
    assert not (tmp_path / "elsewhere" / "vlm-cache").exists()
    records = read_ledger(tmp_path / "proj" / "vlm-cache" / "ledger.jsonl").records
    assert totals(records).spent_usd == Decimal("0.014")


def test_a_response_cache_after_a_chdir_keeps_its_large_values_in_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a value of 32 KB or more (diskcache keeps it in a file beside cache.db) was
    written under the new working directory; reopened from its folder, it was a miss."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    big = np.arange(20_000, dtype=np.float32)  # 40 KB as float16
    with ResponseCache("responses") as cache:
        monkeypatch.chdir(tmp_path / "elsewhere")
        cache.set_many([("k", CacheEntry(vector=big, meta={"cost_usd": "0.0001"}))])
    assert not any((tmp_path / "elsewhere").iterdir())
    with ResponseCache(tmp_path / "proj" / "responses") as cache:
        entry = cache.get("k")
        assert entry is not None and entry.vector is not None
        np.testing.assert_allclose(entry.vector, big.astype(np.float16))

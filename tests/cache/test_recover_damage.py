"""`cache recover` saves the entries left on the pages of a cache.db that SQLite refuses.

Before 2026-12-06 it saved nothing from a file cut short ("database disk image is
malformed" on the schema) or with an overwritten header or first page ("file is not a
database"): it reported 0 entries recovered and the next harvest bought everything again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cache import CacheEntry, ResponseCache
from cache.recover import recover_cache
from distill.cli import main

N = 400
DIM = 1024  # 4 KB vectors: every entry spills onto an overflow page, as real ones do


def _cache(root: Path) -> Path:
    responses = root / "responses"
    with ResponseCache(responses) as cache:
        cache.set_many(
            [(f"k{i}", CacheEntry(vector=np.full(DIM, i, np.float32))) for i in range(N)]
        )
    return responses


def _damage(db: Path, how: str) -> None:
    data = db.read_bytes()
    if how == "cut in half":
        db.write_bytes(data[: len(data) // 2])
    elif how == "header overwritten":
        db.write_bytes(b"\0" * 100 + data[100:])
    else:  # first page overwritten
        db.write_bytes(b"\0" * 4096 + data[4096:])


def _entries(responses: Path) -> dict[str, float]:
    with ResponseCache(responses) as cache:
        out = {}
        for key in (f"k{i}" for i in range(N)):
            entry = cache.get(key)
            if entry is not None:
                assert entry.vector is not None
                assert len(set(entry.vector.tolist())) == 1  # no torn vector came back
                out[key] = float(entry.vector[0])
        return out


@pytest.mark.parametrize(
    ("how", "at_least"),
    [("cut in half", 150), ("header overwritten", N), ("first page overwritten", N)],
)
def test_recover_reads_the_pages_sqlite_refuses(tmp_path: Path, how: str, at_least: int) -> None:
    responses = _cache(tmp_path)
    _damage(responses / "cache.db", how)
    result = recover_cache(responses)
    got = _entries(responses)
    assert result.copied == len(got) >= at_least
    assert all(value == int(key[1:]) for key, value in got.items())  # each under its own key
    if how == "cut in half":
        assert result.expected == N and result.unreadable == N - len(got)
    else:
        assert result.unreadable is None  # the count itself was on the lost header page


def test_cache_recover_cli_says_what_it_read_from_the_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    responses = _cache(tmp_path)
    _damage(responses / "cache.db", "header overwritten")
    assert main(["cache", "recover", "--cache", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"recovered {N} entries" in out
    assert "how many it lost is unknown" in out


def test_entries_pruned_before_the_damage_do_not_come_back(tmp_path: Path) -> None:
    responses = _cache(tmp_path)
    with ResponseCache(responses) as cache:
        pruned = cache.prune(lambda key, _entry: int(key[1:]) < 100)
    assert pruned == 100
    _damage(responses / "cache.db", "cut in half")
    recover_cache(responses)
    got = _entries(responses)
    assert got and not any(int(key[1:]) < 100 for key in got)


def test_page_reader_skips_the_free_list_and_reads_overflow_chains(tmp_path: Path) -> None:
    """A database without auto-vacuum keeps freed pages on its free list, rows and all:
    they were deleted and must not come back. (Response caches use auto-vacuum, so theirs
    is empty; this covers the reader on any SQLite file.)"""
    import sqlite3

    from cache.sqlite_pages import table_rows

    db = tmp_path / "t.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA secure_delete = OFF")  # freed pages keep their old content
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, blob BLOB, x REAL)")
    rows = [(i, f"n{i}", bytes([i % 256]) * (10 + 97 * i), i / 3) for i in range(200)]
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    con.commit()
    con.execute("DELETE FROM t WHERE id < 150")
    con.commit()
    assert con.execute("PRAGMA freelist_count").fetchone()[0] > 0
    con.close()
    got = {row[1]: row for row in table_rows(db, 4)}
    assert sorted(got) == sorted(f"n{i}" for i in range(150, 200))
    for i in range(150, 200):
        assert got[f"n{i}"][2:] == [rows[i][2], rows[i][3]]  # long blobs over overflow pages

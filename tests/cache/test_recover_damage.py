"""`cache recover` saves the entries left on the pages of a cache.db that SQLite refuses.

Before 2026-12-06 it saved nothing from a file cut short ("database disk image is
malformed" on the schema) or with an overwritten header or first page ("file is not a
database"): it reported 0 entries recovered and the next harvest bought everything again.
"""

from __future__ import annotations

import os
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


def test_cache_recover_refuses_while_a_harvest_uses_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cache recover` while a harvest ran on the cache moved the database aside under the
    harvest, which went on storing what it bought into the moved-aside copy
    (responses.damaged-*): paid entries missing from the recovered cache."""
    import sqlite3
    from contextlib import closing

    from cache import Coordinator

    responses = _cache(tmp_path)
    with closing(sqlite3.connect(responses / "cache.db")) as con:  # one garbled entry
        (value,) = con.execute("SELECT value FROM Cache WHERE key = 'k1'").fetchone()
        con.execute("UPDATE Cache SET value = ? WHERE key = 'k1'", (value[:-4] + bytes(4),))
        con.commit()
    harvest = Coordinator(tmp_path / "coordination.db", ledger_path=tmp_path / "ledger.jsonl")
    with harvest, ResponseCache(responses, spill=False) as bought:
        capsys.readouterr()
        assert main(["cache", "recover", "--cache", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"pid {os.getpid()} on this host" in err and "nothing was changed" in err
        assert sorted(p.name for p in tmp_path.iterdir() if "responses" in p.name) == ["responses"]
        bought.set_many([("paid-now", CacheEntry(vector=np.ones(DIM, np.float32)))])
    assert main(["cache", "recover", "--cache", str(tmp_path)]) == 0  # once it has ended
    with ResponseCache(responses) as cache:
        assert cache.get("paid-now") is not None


def test_a_second_recover_of_the_same_cache_is_refused_while_one_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: two `cache recover` at once on one cache: the second removed the first's
    half-built ``responses.recovering`` as a leftover and built its own; one finished, the
    other failed with "responses.recovering -> responses: No such file or directory". Now
    the second is refused at once, in one line (exit 2), and the first finishes whole."""
    import threading

    import cache.recover as rec

    responses = _cache(tmp_path)
    _damage(responses / "cache.db", "cut in half")
    inside, go_on = threading.Event(), threading.Event()
    real_read = rec.SpillFile.read

    def paused(self: rec.SpillFile) -> object:  # the first: copied, not yet swapped in
        inside.set()
        assert go_on.wait(60)
        return real_read(self)

    monkeypatch.setattr(rec.SpillFile, "read", paused)
    done: dict[str, object] = {}

    def first() -> None:
        try:
            done["result"] = recover_cache(responses)
        except BaseException as exc:  # shown by the assert below
            done["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert inside.wait(60)
        monkeypatch.setattr(rec.SpillFile, "read", real_read)
        code = main(["cache", "recover", "--cache", str(tmp_path)])
    finally:
        go_on.set()
        thread.join(60)
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    line = " ".join(captured.err.split())
    assert "another `cache recover` of" in line and "nothing was changed" in line, line
    assert "Traceback" not in captured.err
    assert "error" not in done, done
    result = done["result"]
    assert isinstance(result, rec.RecoverResult)
    got = _entries(responses)
    assert result.copied == len(got) >= 150
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("responses.damaged-*")) == [
        "responses.damaged"
    ]  # one recovery, one copy kept aside

"""What cache/ assumes of diskcache beyond its public API (issue 14 item 10).

``ResponseCache`` lists rows through the private ``Cache._sql`` (no public call lists rows
without decoding their keys, and a pickled key must never be decoded) and runs SQLite's
``quick_check`` through it; ``cache.recover`` reads the ``Cache`` and ``Settings`` tables
and the storage modes directly. pyproject pins diskcache below 6; these tests fail when an
upgrade breaks one of the assumptions, rather than a user's ``cache verify``.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import diskcache
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = diskcache.Cache(str(tmp_path / "c"), disk_min_file_size=1024)
    yield c
    c.close()


def test_pyproject_pins_the_major_version_installed() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    # the dependency line (the mypy override lists the bare module names too)
    specs = re.findall(r'^\s*"(diskcache[<>=!~][^"]*)"', pyproject, re.M)
    assert specs == ["diskcache>=5.6,<6"]
    assert int(diskcache.__version__.split(".")[0]) == 5


def test_private_sql_runs_statements_on_the_cache_connection(cache: diskcache.Cache) -> None:
    cache.set("small", b"x" * 10)
    cache.set("large", b"y" * 4096)
    rows = cache._sql(
        "SELECT rowid, key, raw FROM Cache WHERE rowid > ? ORDER BY rowid LIMIT 1000", (0,)
    ).fetchall()
    assert [(key, raw) for _rowid, key, raw in rows] == [("small", 1), ("large", 1)]
    assert all(isinstance(rowid, int) for rowid, _k, _r in rows)
    assert cache._sql("PRAGMA quick_check", ()).fetchall() == [("ok",)]


def test_schema_and_modes_recover_reads(cache: diskcache.Cache, tmp_path: Path) -> None:
    cache.set("small", b"x" * 10)
    cache.set("large", b"y" * 4096)
    con = sqlite3.connect(tmp_path / "c" / "cache.db")
    try:
        rows = dict(
            (key, (mode, filename, value))
            for key, mode, filename, value in con.execute(
                "SELECT key, mode, filename, value FROM Cache ORDER BY rowid"
            )
        )
        count = con.execute("SELECT value FROM Settings WHERE key = 'count'").fetchone()[0]
        con.execute("SELECT max(rowid) FROM Cache INDEXED BY Cache_key_raw").fetchone()
    finally:
        con.close()
    assert count == 2
    mode, filename, value = rows["small"]
    assert mode == diskcache.core.MODE_RAW and filename is None and value == b"x" * 10
    mode, filename, value = rows["large"]
    assert mode == diskcache.core.MODE_BINARY and value is None
    assert re.fullmatch(r"[0-9a-f/]+\.val", filename)
    assert (tmp_path / "c" / filename).read_bytes() == b"y" * 4096


def test_rows_inserted_in_bulk_are_those_cache_set_writes(tmp_path: Path) -> None:
    # ResponseCache inserts new keys with one executemany of diskcache's own columns;
    # the rows and the count/size its triggers keep must be what Cache.set writes
    from cache import CacheEntry, ResponseCache
    from cache.entry_codec import encode_entry
    from cache.response_db import CACHE_SETTINGS, BytesOnlyDisk

    values = [(f"k{i}", encode_entry(CacheEntry(text="t" * i), stored=1.0)) for i in range(5)]
    with ResponseCache(tmp_path / "ours", spill=False) as ours:
        ours.store_encoded(values)
        ours.store_encoded(values[:2])  # existing keys: replaced through Cache.set
    plain = diskcache.Cache(str(tmp_path / "plain"), disk=BytesOnlyDisk, **CACHE_SETTINGS)
    for key, value in [*values, *values[:2]]:
        plain.set(key, value)
    plain.close()

    def rows(directory: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        con = sqlite3.connect(directory / "cache.db")
        try:
            cache_rows = con.execute(
                "SELECT key, raw, expire_time, access_count, tag, size, mode, filename, value"
                " FROM Cache ORDER BY key"
            ).fetchall()
            settings = con.execute(
                "SELECT key, value FROM Settings WHERE key IN ('count', 'size') ORDER BY key"
            ).fetchall()
        finally:
            con.close()
        return cache_rows, settings

    assert rows(tmp_path / "ours") == rows(tmp_path / "plain")
    assert rows(tmp_path / "ours")[1] == [("count", 5), ("size", 0)]

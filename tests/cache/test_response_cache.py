"""ResponseCache: round trips, no pickle, no eviction, corruption as misses, two writers."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import textwrap
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import diskcache
import httpx
import numpy as np
import pytest

from cache import CacheEntry, CacheWriteError, ResponseCache, verify_cache
from cache.response_cache import CacheCorruptError, decode_entry, encode_entry
from cache.response_db import NO_SIZE_LIMIT, BytesOnlyDisk
from tests.conftest import FakeCohere, make_image_requests
from vlmclient import Price, TeacherClient

REPO = Path(__file__).resolve().parents[2]


def _entry(i: int, dim: int = 64) -> CacheEntry:
    vec = np.random.default_rng(i).standard_normal(dim).astype(np.float32)
    return CacheEntry(
        vector=vec / np.linalg.norm(vec),
        meta={"provider": "fake", "model": "m1", "kind": "image_embedding",
              "request_id": f"req-{i}", "cost_usd": "0.0001", "created": 1700000000.0},
    )


def _rows(directory: Path) -> list[tuple[str, int, bytes | None]]:
    con = sqlite3.connect(directory / "cache.db")
    try:
        return con.execute("SELECT key, mode, value FROM Cache").fetchall()
    finally:
        con.close()


def test_round_trip_vectors_texts_and_meta(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c") as cache:
        answer = CacheEntry(text="A tabby cat on a sofa. ünïcödé", meta={"kind": "answer",
                            "usage": {"input_tokens": 12}, "cost_usd": Decimal("0.0003")})
        cache.set_many([("v", _entry(1)), ("a", answer)])
        got = cache.get("v")
        assert got is not None and got.vector is not None and got.text is None
        assert got.vector.dtype == np.float32
        assert np.allclose(got.vector, _entry(1).vector, atol=1e-3)
        assert got.meta == dict(_entry(1).meta)
        text = cache.get("a")
        assert text is not None and text.vector is None
        assert text.text == answer.text
        assert text.meta["cost_usd"] == "0.0003"  # Decimal stored as an exact string
        assert cache.get("missing") is None
        assert cache.get_many(["a", "missing", "v"])[1] is None
        assert len(cache) == 2 and "v" in cache and sorted(cache.iterkeys()) == ["a", "v"]


def test_survives_reopen_and_reads_each_entry_in_its_own_format(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c", vector_format="int8") as cache:
        cache.set_many([("k8", _entry(2))])
    with ResponseCache(tmp_path / "c") as cache:  # now writing float16
        cache.set_many([("k16", _entry(3))])
        for key, i in (("k8", 2), ("k16", 3)):
            got = cache.get(key)
            assert got is not None and got.vector is not None
            assert float(got.vector @ _entry(i).vector) > 0.9998


def test_directory_is_private(tmp_path: Path) -> None:
    ResponseCache(tmp_path / "new" / "cache").close()
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "cache").st_mode) == 0o700


def test_values_are_never_pickled(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c") as cache:
        big = CacheEntry(text="x" * 100_000, meta={"kind": "answer"})  # lands in a file
        cache.set_many([(f"k{i}", _entry(i)) for i in range(20)] + [("big", big)])
    modes = {mode for _key, mode, _value in _rows(tmp_path / "c")}
    assert modes <= {diskcache.core.MODE_RAW, diskcache.core.MODE_BINARY}
    assert diskcache.core.MODE_BINARY in modes  # the big value went to a file, as raw bytes
    for _key, _mode, value in _rows(tmp_path / "c"):
        if value is not None:
            assert bytes(value).startswith(b"VDC1")
    con = sqlite3.connect(tmp_path / "c" / "cache.db")
    assert con.execute("SELECT DISTINCT raw FROM Cache").fetchall() == [(1,)]  # keys: plain str
    con.close()


def test_a_planted_pickle_is_not_unpickled(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(canary), "w"))

    payload = pickle.dumps(Exploit())
    with ResponseCache(tmp_path / "c") as cache:
        cache.set_many([("good", _entry(1))])
    plain = diskcache.Cache(str(tmp_path / "c"))  # default Disk: pickles non-bytes values
    plain.set("evil", {"payload": payload, "x": Exploit()})
    plain.set(("evil", Exploit()), b"a pickled key")
    plain.close()
    with ResponseCache(tmp_path / "c") as cache:
        assert cache.get("evil") is None
        assert not canary.exists()
        problems = dict(cache.verify())
        assert "evil" in problems and "refusing" in problems["evil"]
        assert problems["<row 3>"] == "key is not a plain str"
        assert list(cache.iterkeys()) == ["good", "evil"]
        assert cache.stats().corrupt == 2
        assert cache.prune(corrupt=True) == 1  # "evil"; the pickled key is left alone
        assert not canary.exists()
        assert cache.get("good") is not None


def test_only_str_keys_and_bytes_values_reach_diskcache(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c") as cache:
        with pytest.raises(CacheWriteError, match="keys must be str"):
            cache.set_many([(b"raw", _entry(1))])  # type: ignore[list-item]
        assert len(cache) == 0
    # the Disk it stores through refuses anything but bytes (diskcache would pickle it)
    with diskcache.Cache(str(tmp_path / "c"), disk=BytesOnlyDisk) as raw:
        with pytest.raises(TypeError, match="bytes"):
            raw.set("k", {"not": "bytes"})
        assert len(raw) == 0


def test_eviction_is_off(tmp_path: Path) -> None:
    # A directory first created by diskcache with a 1000-byte limit (culled on every set) ...
    diskcache.Cache(str(tmp_path / "c"), size_limit=1000).close()
    with ResponseCache(tmp_path / "c") as cache:
        # ... keeps everything written to it as a ResponseCache, far past that limit ...
        for start in range(0, 200, 50):
            cache.set_many([(f"k{i}", _entry(i, dim=256)) for i in range(start, start + 50)])
        assert len(cache) == 200
        assert all(cache.get(f"k{i}") is not None for i in range(200))
    # ... because its stored settings now say: never evict, no size limit.
    with diskcache.Cache(str(tmp_path / "c"), disk=BytesOnlyDisk) as raw:
        assert raw.eviction_policy == "none" and raw.size_limit == NO_SIZE_LIMIT
        assert raw.volume() > 1000 and len(raw) == 200


async def test_secret_never_lands_in_the_cache_directory(tmp_path: Path) -> None:
    secret = "sk-live-" + hashlib.sha256(b"test secret").hexdigest()
    fake = FakeCohere()
    sent: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("authorization", ""))
        return await fake.handler(request)

    directory = tmp_path / "c"
    with ResponseCache(directory) as cache:
        # the real client, with the secret as its API key, fills the cache
        async with TeacherClient(
            "local:hash", api_key=secret, transport=httpx.MockTransport(handler), cache=cache,
            price=Price(usd_per_image=Decimal("0.001")),
        ) as client:  # fmt: skip
            assert len(await client.embed_images(make_image_requests(30))) == 30
        assert sent and all(secret in h for h in sent)  # the secret did travel
        assert len(cache) == 30
        cache.set_many([("answer", CacheEntry(text="a cat", meta={"kind": "answer"}))])
        with pytest.raises(CacheWriteError, match="looks like a secret"):
            cache.set_many([("bad", CacheEntry(text="x", meta={"api_key": secret}))])
        with pytest.raises(CacheWriteError, match="looks like a secret"):
            cache.set_many([("bad", CacheEntry(text="x", meta={"Authorization": secret}))])
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert any(p.name == "cache.db" for p in files)
    for path in files:
        data = path.read_bytes()
        assert secret.encode() not in data, path
        assert b"Bearer" not in data, path


def _garble(directory: Path, key: str, offset: int) -> None:
    con = sqlite3.connect(directory / "cache.db")
    (value,) = con.execute("SELECT value FROM Cache WHERE key = ?", (key,)).fetchone()
    data = bytearray(value)
    data[offset] ^= 0xFF
    con.execute("UPDATE Cache SET value = ? WHERE key = ?", (bytes(data), key))
    con.commit()
    con.close()


def test_garbled_values_are_misses_and_verify_lists_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "c"
    with ResponseCache(directory) as cache:
        cache.set_many([(f"k{i}", _entry(i)) for i in range(10)])
    _garble(directory, "k3", -5)  # a flipped byte in the vector
    _garble(directory, "k7", 1)  # a flipped byte in the magic
    con = sqlite3.connect(directory / "cache.db")
    con.execute("UPDATE Cache SET value = substr(value, 1, 20) WHERE key = 'k5'")  # truncated
    con.commit()
    con.close()
    with ResponseCache(directory) as cache, caplog.at_level(logging.WARNING):
        assert cache.get("k3") is None
        assert cache.get("k7") is None
        assert cache.get("k5") is None
        assert "k3" in caplog.text and "corrupt" in caplog.text
        assert cache.get("k4") is not None
        problems = dict(cache.verify())
        assert set(problems) == {"k3", "k5", "k7"}
        assert "checksum" in problems["k3"] and "magic" in problems["k7"]
        stats = cache.stats()
        assert (stats.entries, stats.corrupt) == (10, 3)
        assert stats.by_kind["image_embedding"].entries == 7
        assert cache.prune(corrupt=True) == 3
        assert cache.verify() == [] and len(cache) == 7


def test_missing_value_file_is_a_miss(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c") as cache:
        cache.set_many([("big", CacheEntry(text="y" * 50_000, meta={"kind": "answer"}))])
        for path in (tmp_path / "c").rglob("*.val"):
            path.unlink()
        assert cache.get("big") is None
        assert [key for key, _ in cache.verify()] == ["big"]


def test_truncated_database_is_reported_not_a_crash(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with ResponseCache(directory) as cache:
        cache.set_many([(f"k{i}", _entry(i, dim=512)) for i in range(2000)])
    db = directory / "cache.db"
    os.truncate(db, db.stat().st_size // 2)
    problems = verify_cache(directory)
    assert problems and problems[0][0] == "<database>"
    assert "malformed" in problems[0][1]
    with pytest.raises(CacheCorruptError, match="cannot be opened"):
        ResponseCache(directory)
    assert verify_cache(tmp_path / "nowhere")[0][0] == "<database>"


def test_sound_cache_verifies_clean(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c") as cache:
        cache.set_many([(f"k{i}", _entry(i)) for i in range(50)])
    assert verify_cache(tmp_path / "c") == []


def test_the_read_only_reader_finds_what_verify_finds_and_changes_no_file(
    tmp_path: Path,
) -> None:
    """How `verify_cache` reads a cache in a folder it may not write (a read-only mount,
    ``chmod -R a-w``; through the CLI: tests/reliability/test_untrusted_inputs.py)."""
    from contextlib import closing

    from cache.response_db import ReadOnlyRows, row_problems

    directory = tmp_path / "c"
    with ResponseCache(directory, spill=False) as cache:
        cache.set_many([(f"k{i}", _entry(i)) for i in range(20)])
        cache.set_many([("big", CacheEntry(text="y" * 50_000, meta={"kind": "answer"}))])
    for path in directory.rglob("*.val"):
        path.unlink()  # the big value's file: a lost value
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        (value,) = con.execute("SELECT value FROM Cache WHERE key = 'k3'").fetchone()
        con.execute("UPDATE Cache SET value = ? WHERE key = 'k3'", (value[:-4] + b"\0\0\0\0",))
        con.commit()
    files = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in directory.rglob("*")}
    with closing(ReadOnlyRows(directory)) as rows:
        found = row_problems(rows, directory)
    # (in a folder it may write, SQLite makes its WAL index: a read-only one has none)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in files} == files
    assert sorted(key for key, _ in found) == ["big", "k3"]
    with ResponseCache(directory, spill=False) as cache:
        assert found == cache.verify()


def test_stats_and_prune(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c") as cache:
        cache.set_many([(f"k{i}", _entry(i)) for i in range(6)])
        cache.set_many([("t", CacheEntry(text="yes", meta={"kind": "answer"}))])
        stats = cache.stats()
        assert stats.entries == 7 and stats.corrupt == 0
        assert stats.by_kind["image_embedding"].entries == 6
        assert stats.by_kind["answer"].entries == 1
        assert stats.by_kind["image_embedding"].value_bytes > 6 * 128  # 64-d float16 + header
        assert stats.bytes_on_disk >= os.path.getsize(tmp_path / "c" / "cache.db")
        assert cache.prune(lambda key, entry: entry.text is not None) == 1
        assert cache.prune(older_than=3600) == 0
        assert cache.prune(older_than=-1) == 6  # everything is "older" than the future
        assert len(cache) == 0


def test_prune_spares_an_entry_another_process_stored_again_while_it_scanned(
    tmp_path: Path,
) -> None:
    """`cache prune --corrupt` while a harvest runs: the harvest reads a corrupt entry as a
    miss and buys it again. Prune deleted every key its scan had found corrupt, so an
    entry stored again after the scan passed it (and paid) was deleted too."""
    directory = tmp_path / "c"
    with ResponseCache(directory, spill=False) as cache:
        cache.set_many([("a", _entry(0)), ("b", _entry(1))])
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        (value,) = con.execute("SELECT value FROM Cache WHERE key = 'a'").fetchone()
        con.execute("UPDATE Cache SET value = ? WHERE key = 'a'", (value[:-4] + b"\0" * 4,))
        con.commit()
    with ResponseCache(directory, spill=False) as cache, ResponseCache(
        directory, spill=False
    ) as harvest:
        assert cache.get("a") is None

        def rebuy(key: str, entry: CacheEntry) -> bool:
            if key == "b":  # the scan is past "a" (found corrupt): it is bought again
                harvest.set_many([("a", _entry(5))])
            return False

        assert cache.prune(rebuy, corrupt=True) == 0
        again = cache.get("a")
        assert again is not None and again.meta["request_id"] == "req-5"
        assert cache.prune(older_than=-1, dry_run=True) == 2


def test_bad_entries_raise_clear_write_errors_and_store_nothing(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c") as cache:
        nan = CacheEntry(vector=np.array([0.1, np.nan], np.float32))
        with pytest.raises(CacheWriteError, match="NaN"):
            cache.set_many([("ok", _entry(1)), ("nan", nan)])
        with pytest.raises(CacheWriteError, match="not JSON serialisable"):
            cache.set_many([("ok", _entry(1)), ("obj", CacheEntry(text="x", meta={"o": object()}))])
        assert len(cache) == 0


def test_write_fails_loudly_when_another_process_holds_the_lock(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c", timeout=0.2) as cache:
        cache.set_many([("before", _entry(0))])
        blocker = sqlite3.connect(tmp_path / "c" / "cache.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(CacheWriteError, match="could not store 2 entries"):
                cache.set_many([("a", _entry(1)), ("b", _entry(2))])
            assert cache.get("before") is not None  # readers are not blocked (WAL)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # the refused (paid) entries are kept in the spill file and still served...
        assert cache.get("a") is not None and "a" not in cache
        assert cache.spill_problem is not None
    # ...and the next open moves them into the database
    with ResponseCache(tmp_path / "c") as cache:
        assert "a" in cache and "b" in cache
        assert cache.spill_problem is None


WRITER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from cache import CacheEntry, ResponseCache

    directory, start, stop, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    with ResponseCache(directory) as cache:
        print("ready", flush=True)
        while not os.path.exists(go):  # both writers start together
            time.sleep(0.002)
        for lo in range(start, stop, 20):
            batch = []
            for i in range(lo, min(lo + 20, stop)):
                vec = np.random.default_rng(i).standard_normal(128).astype(np.float32)
                batch.append((f"k{i}", CacheEntry(vector=vec, meta={"kind": "e", "i": i})))
            cache.set_many(batch)
    print("done")
    """
)


def test_two_processes_writing_one_directory(tmp_path: Path) -> None:
    directory, go = tmp_path / "shared", tmp_path / "go"
    # overlapping ranges: both processes write k1000..k1499 with identical content
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(directory), lo, hi, str(go)],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for lo, hi in (("0", "1500"), ("1000", "2500"))
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    assert verify_cache(directory) == []
    with ResponseCache(directory) as cache:
        assert len(cache) == 2500
        for i in range(2500):
            got = cache.get(f"k{i}")
            assert got is not None and got.vector is not None and got.meta["i"] == i
            vec = np.random.default_rng(i).standard_normal(128).astype(np.float32)
            assert np.allclose(got.vector, vec, rtol=1e-3, atol=1e-3)


def test_decode_entry_rejects_non_bytes_and_short_values() -> None:
    with pytest.raises(CacheCorruptError):
        decode_entry(b"VDC1")
    data = encode_entry(_entry(1))
    assert decode_entry(data).meta["request_id"] == "req-1"
    with pytest.raises(CacheCorruptError):
        decode_entry(data + b"\x00")


def test_a_damaged_page_is_an_error_on_read_and_what_cannot_be_stored_there_is_spilled(
    tmp_path: Path,
) -> None:
    with ResponseCache(tmp_path / "c") as cache:
        cache.set_many([(f"k{i}", _entry(i, dim=256)) for i in range(300)])
    db = tmp_path / "c" / "cache.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = db.read_bytes()
    page = 4096
    value_pages = sorted({data.find(b"VDC1", i * page, (i + 1) * page) >= 0 and i
                          for i in range(1, len(data) // page)} - {False})
    victim = value_pages[len(value_pages) // 2]
    with open(db, "r+b") as f:
        f.seek(victim * page)
        f.write(b"\xff" * 16)
    with ResponseCache(tmp_path / "c") as cache:
        damaged = []
        for i in range(300):
            try:
                cache.get(f"k{i}")
            except CacheCorruptError:
                damaged.append(f"k{i}")
        assert damaged, "some rows sit on the damaged page"
        with pytest.raises(CacheWriteError, match=r"(malformed|read back).*kept in .*spill\.vdc"):
            cache.set_many([(damaged[0], _entry(7, dim=256))])
        assert cache.get(damaged[0]) is not None  # served from the spill file
    # the next open cannot move it into the damaged database: it waits, is served, is reported
    with ResponseCache(tmp_path / "c") as cache:
        assert cache.spill_problem is not None and "1 paid entries wait" in cache.spill_problem
        got = cache.get(damaged[0])
        assert got is not None and got.meta["request_id"] == "req-7"
        assert any("wait in" in problem for _key, problem in cache.verify())


def test_a_write_that_does_not_read_back_is_an_error_and_is_spilled(tmp_path: Path) -> None:
    # A database that takes a write and gives back something else (what a damaged page
    # can do), made with a real SQLite trigger rather than by patching our code.
    with ResponseCache(tmp_path / "c") as cache:
        cache.set_many([("before", _entry(0))])
    con = sqlite3.connect(tmp_path / "c" / "cache.db")
    con.execute(
        "CREATE TRIGGER garble AFTER INSERT ON Cache "
        "BEGIN UPDATE Cache SET value = x'00' WHERE rowid = NEW.rowid; END"
    )
    con.commit()
    con.close()
    with ResponseCache(tmp_path / "c") as cache:
        with pytest.raises(CacheWriteError, match=r"do not read back.*kept in .*spill\.vdc"):
            cache.set_many([("paid", _entry(1))])
        got = cache.get("paid")  # served from the spill file, not the garbled row
        assert got is not None and got.meta["request_id"] == "req-1"


def test_values_kept_in_files_read_back_and_a_bad_entry_is_named(tmp_path: Path) -> None:
    # diskcache keeps values of 32 KB and more in files; the read-back after a write
    # must fetch those too (and not call them unreadable)
    big = CacheEntry(text="x" * 50_000, meta={"kind": "answer"})
    with ResponseCache(tmp_path / "c") as cache:
        cache.set_many([("big", big), ("small", _entry(1))])
        got = cache.get("big")
        assert got is not None and got.text == big.text
        assert [mode for key, mode, _ in _rows(tmp_path / "c") if key == "big"] == [
            diskcache.core.MODE_BINARY
        ]
        bad = CacheEntry(vector=np.array([np.inf], np.float32))
        with pytest.raises(CacheWriteError, match="cannot encode cache entry k-bad"):
            cache.set_many([("k-ok", _entry(2)), ("k-bad", bad)])
        assert cache.get("k-ok") is None  # all or nothing


def test_get_many_reads_what_get_reads_key_by_key(tmp_path: Path) -> None:
    # more keys than one query takes, repeats, misses, a garbled value, a file-kept value
    with ResponseCache(tmp_path / "c") as cache:
        cache.set_many([(f"k{i}", _entry(i, dim=8)) for i in range(700)])
        cache.set_many([("big", CacheEntry(text="x" * 40_000, meta={"kind": "answer"}))])
    con = sqlite3.connect(tmp_path / "c" / "cache.db")
    con.execute("UPDATE Cache SET value = x'00' WHERE key = 'k5'")
    con.commit()
    con.close()
    keys = ["big", "k5", "missing", *(f"k{i}" for i in range(0, 700, 3)), "k3", "k3"]
    with ResponseCache(tmp_path / "c") as cache:
        many = cache.get_many(keys)
        one_by_one = [cache.get(key) for key in keys]
    assert [e is None for e in many] == [e is None for e in one_by_one]
    assert many[1] is None and many[2] is None and many[0] is not None
    for a, b in zip(many, one_by_one, strict=True):
        if a is not None and b is not None:
            assert a.text == b.text and dict(a.meta) == dict(b.meta)
            assert (a.vector is None and b.vector is None) or np.array_equal(a.vector, b.vector)


@pytest.mark.parametrize("lost", ["deleted", "emptied"])
def test_verify_of_a_lost_database_says_so_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lost: str
) -> None:
    """Before: `cache verify` on a cache folder whose cache.db was deleted (or truncated to
    nothing) created a fresh empty database and printed "every entry reads back", exit 0."""
    from distill.cli import main

    responses = tmp_path / "c" / "responses"
    with ResponseCache(responses) as cache:
        cache.set_many([(f"k{i}", _entry(i)) for i in range(5)])
    for f in responses.glob("cache.db*"):
        if lost == "deleted":
            f.unlink()
        else:
            f.write_bytes(b"")
    assert main(["cache", "verify", "--cache", str(tmp_path / "c")]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "missing or empty" in out and "every entry reads back" not in out
    db = responses / "cache.db"
    assert not db.exists() if lost == "deleted" else db.stat().st_size == 0

"""SpillFile: the place paid cache entries go when the database cannot take them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cache.spill import SpillFile


def test_records_round_trip_in_order_and_space_is_reserved(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "s", reserve=64 * 1024)
    spill.reserve()
    assert os.stat(tmp_path / "s").st_size == 64 * 1024  # blocks taken while there is room
    assert spill.read() == []
    spill.append([("a", b"1"), ("b", b"22")])
    spill.append([("c", b"")])
    assert spill.read() == [("a", b"1"), ("b", b"22"), ("c", b"")]


def test_a_torn_record_ends_the_scan_and_the_next_append_replaces_it(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "s", reserve=4096)
    spill.reserve()
    spill.append([("a", b"first")])
    spill.append([("b", b"second")])
    data = bytearray((tmp_path / "s").read_bytes())
    end = data.index(b"second") + len(b"second")
    data[end - 3 : end] = b"\0\0\0"  # a crash in the middle of writing "b"
    (tmp_path / "s").write_bytes(bytes(data))
    assert spill.read() == [("a", b"first")]
    spill.append([("c", b"third")])
    assert spill.read() == [("a", b"first"), ("c", b"third")]


def test_drain_forgets_records_only_when_the_consumer_succeeds(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "s", reserve=4096)
    spill.append([("a", b"1"), ("b", b"2")])

    def refuse(records: list[tuple[str, bytes]]) -> None:
        raise OSError("database or disk is full")

    with pytest.raises(OSError, match="disk is full"):
        spill.drain(refuse)
    assert spill.read() == [("a", b"1"), ("b", b"2")]
    taken: list[tuple[str, bytes]] = []
    assert spill.drain(taken.extend) == 2
    assert taken == [("a", b"1"), ("b", b"2")] and spill.read() == []
    spill.append([("c", b"3")])  # after a drain, new records start clean
    assert spill.read() == [("c", b"3")]

"""The one atomic file write (issue 14 item 10: five hand-rolled copies merged)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache import atomic_write, fsync_directory


def test_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old", "utf-8")
    assert atomic_write(path, "new é\n") == path
    assert path.read_bytes() == "new é\n".encode()
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # a folder cannot be replaced by a file
    (target / "inside").write_text("kept", "utf-8")
    with pytest.raises(IsADirectoryError):
        atomic_write(target, "x")
    assert (target / "inside").read_text("utf-8") == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_fsync_directory_tolerates_what_cannot_be_opened(tmp_path: Path) -> None:
    fsync_directory(tmp_path)
    fsync_directory(tmp_path / "missing")  # no error: durability is best effort there

"""The one atomic file write (issue 14 item 10: five hand-rolled copies merged)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cache import atomic_write, atomic_write_files, fsync_directory


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


@pytest.mark.parametrize("manifest_existed", [True, False])
def test_a_failed_second_rename_puts_the_first_file_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest_existed: bool
) -> None:
    # weights renamed in, then the manifest's rename fails: the pair must not be half new
    weights, manifest = tmp_path / "teacher.pt", tmp_path / "teacher.json"
    if manifest_existed:
        weights.write_bytes(b"old weights")
        manifest.write_text("old manifest", "utf-8")
    real_replace = os.replace
    calls: list[str] = []

    def second_fails(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(str(dst))
        if Path(dst) == manifest:
            raise OSError(errno.EIO, "injected", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(OSError, match="injected"):
        atomic_write_files({weights: b"new weights", manifest: "new manifest"})
    assert calls[0] == str(weights)  # the first rename did happen
    if manifest_existed:
        assert weights.read_bytes() == b"old weights"
        assert manifest.read_text("utf-8") == "old manifest"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher.json", "teacher.pt"]
    else:
        assert list(tmp_path.iterdir()) == []  # no new weights without their manifest


def test_a_non_empty_folder_in_the_second_place_keeps_the_first_file(tmp_path: Path) -> None:
    weights, manifest = tmp_path / "teacher.pt", tmp_path / "teacher.json"
    weights.write_bytes(b"old weights")
    manifest.mkdir()
    (manifest / "inside").write_text("kept", "utf-8")
    with pytest.raises(IsADirectoryError):
        atomic_write_files({weights: b"new weights", manifest: "new manifest"})
    assert weights.read_bytes() == b"old weights"
    assert (manifest / "inside").read_text("utf-8") == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher.json", "teacher.pt"]


def test_several_files_replaced_leave_no_backups(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("old a", "utf-8")
    atomic_write_files({a: "new a", b: b"new b"})
    assert (a.read_text("utf-8"), b.read_bytes()) == ("new a", b"new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_an_old_file_that_cannot_be_put_back_is_kept_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, manifest = tmp_path / "teacher.pt", tmp_path / "teacher.json"
    weights.write_bytes(b"old weights")
    manifest.write_text("old manifest", "utf-8")
    real_replace = os.replace

    def also_the_restore_fails(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst) == manifest or ".old-" in Path(src).name:
            raise OSError(errno.EIO, "injected", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", also_the_restore_fails)
    with pytest.raises(OSError, match="injected"):
        atomic_write_files({weights: b"new weights", manifest: "new manifest"})
    (kept,) = tmp_path.glob("teacher.pt.old-*")  # the only old weights left: never deleted
    assert kept.read_bytes() == b"old weights"
    assert manifest.read_text("utf-8") == "old manifest"

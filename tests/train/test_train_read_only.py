"""`vlm-distill train --out DIR` into an existing folder it cannot write (`chmod -R a-w`, a
read-only mount): refused before the data and the model are loaded, as `eval` is."""

from __future__ import annotations

from pathlib import Path

from .conftest import TEACHER
from .read_only_view import run_read_only

STUDENT = "mobilenetv3_small_050"


def _argv(data: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(data), "--cache", str(cache), "--teacher", TEACHER,
            "--student", STUDENT, "--no-pretrained", "--method", "erm", "--steps", "1",
            "--test-domains", "dom3", "--image-size", "32", "--batch-per-domain", "2",
            "--threads", "1", "--out", str(out), *extra]  # fmt: skip


def test_train_into_a_read_only_out_is_refused_before_loading_anything(
    tiny_data: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    """It loaded the data and built the student, then ended in "train failed on a file:
    OUT/config.json: Read-only file system" (exit 1): with a large data set or a download
    of pretrained weights, minutes later."""
    folder = tmp_path / "empty"
    folder.mkdir()
    spy = "distill.train.trainer.split_data"
    view = tmp_path / "view"
    done = run_read_only(folder, view, _argv(tiny_data, tiny_cache, view), spy=spy,
                         marker="LOADING")  # fmt: skip
    assert "LOADING" not in done.stderr, done.stderr  # refused before the data is read
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot write into the run folder {view}" in lines[0]
    assert "make it writable, or give another --out" in lines[0]
    assert not any(folder.iterdir())

    # --resume of a run seen read-only: the fix is a copy, not another empty --out
    view = tmp_path / "view2"
    done = run_read_only(folder, view, _argv(tiny_data, tiny_cache, view, "--resume"),
                         spy=spy, marker="LOADING")  # fmt: skip
    assert "LOADING" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert "copy the run into a writable folder and --resume there" in done.stderr

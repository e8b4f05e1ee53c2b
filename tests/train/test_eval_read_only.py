"""`vlm-distill eval` of a run folder it cannot write into (a shared or archived run,
`chmod -R a-w`, a read-only mount): refused before the model is loaded, as an ``--out``
that cannot be written is; results that cannot be saved late (a full disk) are printed
first and said to be unsaved."""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pytest

from distill.cli import main
from distill.train.config import TrainConfig
from distill.train.trainer import train

from .conftest import TEACHER
from .read_only_view import run_read_only


@pytest.fixture(scope="module")
def run_folder(tiny_data: Path, tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("eval-ro") / "run"
    train(TrainConfig(data=str(tiny_data), cache=str(tiny_cache), teacher=TEACHER,
                      out=str(out), student="mobilenetv3_small_050", pretrained=False,
                      method="erm", steps=1, image_size=32, batch_per_domain=2,
                      test_domains=("dom3",), threads=1))  # fmt: skip
    return out


def _read_only_eval(run: Path, view: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``eval`` run on ``run`` seen read-only at ``view``; "EVALUATING" on stderr once the
    evaluation starts."""
    spy = "distill.train.evaluate.evaluate_run"
    return run_read_only(run, view, argv, spy=spy, marker="EVALUATING")


def test_eval_into_a_read_only_run_folder_is_refused_before_evaluating(
    run_folder: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """It evaluated the whole data set, then ended in "eval failed on a file:
    RUN/eval.json: Read-only file system" (exit 1) with the results lost."""
    view = tmp_path / "view"
    done = _read_only_eval(run_folder, view, ["eval", str(view), str(tiny_data)])
    assert "EVALUATING" not in done.stderr, done.stderr  # refused before the work
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot write the results into the run folder {view}" in lines[0]
    assert "--out" in lines[0]  # and says how to write them elsewhere
    assert not (run_folder / "eval.json").exists()

    # an --out in a read-only folder that exists was not checked either
    view = tmp_path / "view2"
    argv = ["eval", str(run_folder), str(tiny_data), "--out", str(view / "e.json")]
    done = _read_only_eval(run_folder, view, argv)
    assert "EVALUATING" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert f"cannot write --out {view / 'e.json'}" in done.stderr

    # --out elsewhere evaluates the read-only run
    out = tmp_path / "elsewhere" / "eval.json"
    argv = ["eval", str(tmp_path / "view3"), str(tiny_data), "--out", str(out), "--json"]
    done = _read_only_eval(run_folder, tmp_path / "view3", argv)
    assert done.returncode == 0, done.stderr
    assert "EVALUATING" in done.stderr  # the spy is in place: its absence above means something
    assert json.loads(out.read_text())["mean_ood"] is not None


def test_results_that_cannot_be_saved_late_are_printed_and_said_unsaved(
    run_folder: Path,
    tiny_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A disk that fills during the evaluation: the results were lost with "eval failed on
    a file"; now they are printed, then the error says they were not saved (exit 1)."""
    import cache

    def full_disk(path: Path, data: object) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cache, "atomic_write", full_disk)
    out = run_folder / "late.json"
    assert main(["eval", str(run_folder), str(tiny_data), "--out", str(out)]) == 1
    said = capsys.readouterr()
    assert "dom3" in said.out and "written:" not in said.out  # the results table
    err = said.err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in said.err, said.err
    assert f"the results above were not saved to {out}: No space left on device" in err[0]
    assert not out.exists()

"""Issue 16 item 13 (trainer half): a checkpoint save killed mid-way is mended on resume,
and a half-written checkpoint is refused instead of silently restarting at step 0."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.train.trainer import Progress, train
from vlmclient.errors import ConfigurationError

from .test_trainer import STUDENT, TEACHER, _crashed_run, _log


def test_kill_between_the_two_renames_of_a_save_is_mended_on_resume(
    tiny_data: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    """The two-rename save killed after "checkpoint -> checkpoint.old" and before
    "checkpoint.tmp -> checkpoint": no checkpoint/, a complete .tmp and .old. Before the
    fix --resume started again at step 0 and appended duplicate log lines."""
    out = tmp_path / "run"
    cfg = _crashed_run(tiny_data, tiny_cache, out)
    ckpt = out / "checkpoint"
    shutil.copytree(ckpt, out / "checkpoint.tmp")  # the finished new one
    ckpt.rename(out / "checkpoint.old")  # the previous one, moved aside

    events: list[Progress] = []
    train(cfg.model_copy(update={"resume": True}), progress=events.append)
    starts = [(e.stage, e.step) for e in events if e.event == "start"]
    assert starts == [("distill", 1)]
    steps = [(r["stage"], r["step"]) for r in _log(out)]
    assert steps == [("align", i) for i in range(3)] + [("distill", i) for i in range(4)]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == [
        "checkpoint"
    ]


def test_leftover_of_a_save_killed_after_the_swap_is_removed(
    tiny_data: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    """Killed after the one-step exchange, before the old one was deleted."""
    out = tmp_path / "run"
    cfg = _crashed_run(tiny_data, tiny_cache, out)
    shutil.copytree(out / "checkpoint", out / "checkpoint.tmp")
    events: list[Progress] = []
    train(cfg.model_copy(update={"resume": True}), progress=events.append)
    assert [(e.stage, e.step) for e in events if e.event == "start"] == [("distill", 1)]
    assert not (out / "checkpoint.tmp").exists()


@pytest.mark.parametrize("missing", ["state.json", "model.safetensors", "optim.pt"])
def test_half_written_checkpoint_is_refused(
    tiny_data: Path, tiny_cache: Path, tmp_path: Path, missing: str
) -> None:
    out = tmp_path / "run"
    cfg = _crashed_run(tiny_data, tiny_cache, out)
    (out / "checkpoint" / missing).unlink()
    log_before = (out / "log.jsonl").read_text()
    with pytest.raises(ConfigurationError, match=f"incomplete \\(missing {missing}\\)"):
        train(cfg.model_copy(update={"resume": True}))
    assert (out / "log.jsonl").read_text() == log_before  # nothing appended


def test_resume_with_no_checkpoint_does_not_duplicate_log_lines(
    tiny_data: Path, tiny_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed before its first checkpoint: --resume starts at 0 and the log says so once;
    the user is told that nothing was resumed (before: not a word, as for a typo in --out)."""
    out = tmp_path / "run"
    cfg = _crashed_run(tiny_data, tiny_cache, out)
    shutil.rmtree(out / "checkpoint")
    with caplog.at_level("WARNING"):
        train(cfg.model_copy(update={"resume": True}))
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("no checkpoint" in m and "step 0" in m for m in said), said
    steps = [(r["stage"], r["step"]) for r in _log(out)]
    assert steps == [("align", i) for i in range(3)] + [("distill", i) for i in range(4)]


def _write_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from distill.train import checkpoints

    def full_disk(state: object, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoints, "save_weights", full_disk)


def test_a_failed_first_checkpoint_does_not_claim_an_earlier_one_is_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a full disk at the first save said "the previous checkpoint is intact"
    though there was none; a --resume then starts again from step 0."""
    import torch

    from distill.train.checkpoints import CheckpointWriteError, save_checkpoint

    _write_fails(monkeypatch)
    with pytest.raises(CheckpointWriteError) as caught:
        save_checkpoint(tmp_path, torch.nn.Linear(2, 2), {"step": 1}, None, None)
    said = str(caught.value)
    assert "intact" not in said, said
    assert "no checkpoint was written yet" in said and "step 0" in said, said
    assert not any(tmp_path.iterdir())  # no half checkpoint left on the full disk


def test_a_failed_save_says_the_earlier_checkpoint_is_intact_only_when_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from distill.train.checkpoints import CheckpointWriteError, save_checkpoint

    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, model, {"step": 1}, None, None)
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()}
    _write_fails(monkeypatch)
    with pytest.raises(CheckpointWriteError) as caught:
        save_checkpoint(tmp_path, model, {"step": 2}, None, None)
    said = str(caught.value)
    assert "the previous checkpoint is intact" in said and "--resume" in said, said
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]

    (tmp_path / "checkpoint" / "state.json").unlink()  # not a complete checkpoint
    with pytest.raises(CheckpointWriteError) as caught:
        save_checkpoint(tmp_path, model, {"step": 2}, None, None)
    assert "intact" not in str(caught.value), caught.value


def test_a_full_disk_at_the_final_model_leaves_no_torn_file_and_says_resume(
    tiny_data: Path, tiny_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: a full disk while the trained student was written ended the whole run in a
    traceback and left a torn model.safetensors, with no word that the run is checkpointed
    and `--resume` writes it."""
    import errno

    from distill.cli import main
    from distill.train import checkpoints, trainer

    out = tmp_path / "run"
    real = checkpoints.save_weights

    def full_disk_for_the_final_model(state: dict, path: Path) -> None:
        if Path(path).parent != out:  # the checkpoints (in checkpoint.tmp/) are written
            real(state, path)
            return
        Path(path).write_bytes(b"\x00" * 64)  # what a full disk leaves: a torn file
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoints, "save_weights", full_disk_for_the_final_model)
    monkeypatch.setattr(trainer, "save_weights", full_disk_for_the_final_model, raising=False)
    argv = ["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
            "--student", STUDENT, "--no-pretrained", "--method", "adip", "--out", str(out),
            "--test-domains", "dom3", "--steps-align", "2", "--steps-distill", "2",
            "--image-size", "32", "--batch-per-domain", "4", "--threads", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--resume" in err and "checkpoint" in err, err
    assert not (out / "model.safetensors").exists()  # no torn model left for eval to read
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name and "checkpoint" not in p.name]
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0  # the checkpoint of the last stage finishes it
    assert (out / "metrics.json").is_file() and (out / "model.safetensors").stat().st_size > 64
    steps = [(r["stage"], r["step"]) for r in _log(out)]
    assert steps == [("align", 0), ("align", 1), ("distill", 0), ("distill", 1)]


def test_every_file_of_a_checkpoint_is_on_disk_before_it_is_swapped_in(
    tiny_data: Path, tiny_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save wrote checkpoint.tmp's weights and optimizer state without an fsync, swapped
    it in and deleted the previous checkpoint: after a power cut the swap could be on disk
    before the files (empty or cut short), so the only checkpoint did not read and the run
    started over from step 0. The store's writer and the final weights were already synced."""
    import os

    from distill.train import checkpoints
    from distill.train.config import TrainConfig

    synced: set[tuple[int, int]] = set()
    real_fsync, real_exchange, real_replace = os.fsync, checkpoints.exchange, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.add((st.st_dev, st.st_ino))
        real_fsync(fd)

    swaps: list[list[str]] = []

    def check(tmp: Path) -> None:  # at the swap: the folder and each of its files synced
        unsynced = [p.name for p in [tmp, *tmp.iterdir()]
                    if (p.stat().st_dev, p.stat().st_ino) not in synced]
        swaps.append(unsynced)

    def exchange(a: Path, b: Path) -> bool:
        check(Path(a))
        return real_exchange(a, b)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src).name == "checkpoint.tmp":
            check(Path(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(checkpoints, "exchange", exchange)
    train(TrainConfig(
        data=str(tiny_data), cache=str(tiny_cache), teacher=TEACHER, out=str(tmp_path / "run"),
        student=STUDENT, pretrained=False, method="erm", steps=2, eval_every=1,
        image_size=32, batch_per_domain=2, test_domains=("dom3",), threads=1,
    ))
    assert len(swaps) >= 2  # the first save and at least one that replaced it
    assert swaps == [[]] * len(swaps)

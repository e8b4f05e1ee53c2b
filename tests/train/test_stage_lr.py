"""Each stage's learning rate: Align its own, KD its own when set, else ``lr``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main
from distill.train.config import TrainConfig

from .conftest import TEACHER


def _cfg(**kw: object) -> TrainConfig:
    return TrainConfig(data="D", teacher="local:hash", out="o", cache="c", **kw)  # type: ignore[arg-type]


def test_kd_takes_lr_kd_when_set_and_lr_otherwise() -> None:
    assert _cfg(method="kd", lr=5e-4).stage_lr("kd") == 5e-4
    cfg = _cfg(method="kd", lr=5e-4, lr_kd=5e-5)
    assert cfg.stage_lr("kd") == 5e-5
    assert cfg.stage_lr("erm") == 5e-4 and cfg.stage_lr("distill") == 5e-4
    assert cfg.stage_lr("align") == cfg.lr_align


def test_lr_kd_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lr_kd"):
        _cfg(lr_kd=0.0)


def test_lr_kd_flag_reaches_the_run_config(tiny_data: Path, tiny_cache: Path,
                                           tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher",
                 TEACHER, "--method", "kd", "--out", str(out), "--steps", "1",
                 "--student", "mobilenetv3_small_050", "--no-pretrained", "--image-size", "32",
                 "--eval-every", "1", "--lr-kd", "2e-5"])
    assert code == 0
    assert json.loads((out / "config.json").read_text())["lr_kd"] == 2e-5


def test_the_demo_trains_kd_at_erms_lr() -> None:
    from distill.demo import DemoConfig

    cfg = DemoConfig()
    assert cfg.lr_kd is None  # unset: KD's stage takes --lr, as ERM's and Distill's
    run = _cfg(method="kd", lr=cfg.lr, lr_kd=cfg.lr_kd)
    assert run.stage_lr("kd") == cfg.lr


def test_kd_logit_scale_reaches_the_kd_task(tiny_data: Path, tiny_cache: Path,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import distill.train.trainer as trainer

    seen: list[float] = []
    real = trainer.make_task

    def spy(stage: str, **kw: object):  # type: ignore[no-untyped-def]
        task = real(stage, **kw)  # type: ignore[arg-type]
        seen.append(task.logit_scale)  # type: ignore[attr-defined]
        return task

    monkeypatch.setattr(trainer, "make_task", spy)
    cfg = TrainConfig(data=str(tiny_data), cache=str(tiny_cache), teacher=TEACHER,
                      out=str(tmp_path / "run"), method="kd", steps=1, eval_every=1,
                      student="mobilenetv3_small_050", pretrained=False, image_size=32,
                      kd_logit_scale=15.0)
    trainer.train(cfg)
    assert seen == [15.0]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["kd_logit_scale"] == 15.0


def test_train_config_takes_paths_as_well_as_text(tmp_path: Path) -> None:
    """Before: TrainConfig(data=Path(...)) was refused by pydantic's str check (the
    library's other entry points take a Path)."""
    from distill.train.config import TrainConfig

    cfg = TrainConfig(data=tmp_path / "d", out=tmp_path / "o", cache=tmp_path / "c",
                      teacher="local:hash", student_weights=tmp_path / "w.safetensors")
    assert (cfg.data, cfg.out, cfg.cache) == (str(tmp_path / "d"), str(tmp_path / "o"),
                                              str(tmp_path / "c"))
    assert cfg.student_weights == str(tmp_path / "w.safetensors")

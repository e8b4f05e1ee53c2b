"""The learning-rate warm-up: every stage ramps its lr linearly over its first ``warmup``
steps, the optimizer steps with that lr, and a resumed stage picks the ramp up where the
crash left it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distill.cli import main
from distill.train.config import TrainConfig
from distill.train.trainer import Progress, train

from .conftest import TEACHER

ARGS = ["--student", "mobilenetv3_small_050", "--no-pretrained", "--image-size", "32",
        "--batch-per-domain", "4", "--test-domains", "dom3", "--threads", "1"]


def _cfg(**kw: Any) -> TrainConfig:
    return TrainConfig(data="D", teacher="t", out="o", cache="c", **kw)


def _lrs(out: Path) -> list[tuple[str, int, float]]:
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return [(r["stage"], r["step"], r["lr"]) for r in rows]


def test_lr_ramps_over_the_warmup_then_holds() -> None:
    cfg = _cfg(lr=1e-3, lr_align=1e-2, warmup=4)
    assert [cfg.lr_at("erm", k) for k in range(6)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert cfg.lr_at("align", 0) == pytest.approx(2.5e-3)  # each stage its own lr
    assert [_cfg(lr=1e-3, warmup=0).lr_at("erm", k) for k in (0, 5)] == [1e-3, 1e-3]


def test_warmup_is_on_by_default_and_not_negative() -> None:
    assert _cfg().warmup > 0
    with pytest.raises(ValueError, match="warmup"):
        _cfg(warmup=-1)


def test_every_stage_of_a_run_warms_up(tiny_data: Path, tiny_cache: Path, tmp_path: Path,
                                       adam_lrs: list[float]) -> None:
    out = tmp_path / "run"
    code = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
                 "--out", str(out), "--steps-align", "3", "--steps-distill", "5",
                 "--align-min-delta", "0", "--eval-every", "100", "--lr", "1e-3",
                 "--lr-align", "1e-2", "--warmup", "4", *ARGS])
    assert code == 0
    want = [1e-2 * k / 4 for k in (1, 2, 3)] + [1e-3 * min(1, k / 4) for k in range(1, 6)]
    assert [lr for _, _, lr in _lrs(out)] == pytest.approx(want)
    assert adam_lrs == pytest.approx(want)
    assert json.loads((out / "config.json").read_text())["warmup"] == 4


def test_a_resumed_stage_continues_the_ramp(tiny_data: Path, tiny_cache: Path,
                                            tmp_path: Path, adam_lrs: list[float]) -> None:
    cfg = TrainConfig(data=str(tiny_data), cache=str(tiny_cache), teacher=TEACHER,
                      out=str(tmp_path / "run"), method="erm", steps=6, lr=1e-3, warmup=4,
                      eval_every=1, select="last", student="mobilenetv3_small_050",
                      pretrained=False, image_size=32, batch_per_domain=4,
                      test_domains=("dom3",), threads=1)

    class Crash(Exception):
        pass

    def crash(p: Progress) -> None:
        if p.event == "step" and p.step == 2:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, progress=crash)
    adam_lrs.clear()
    train(cfg.model_copy(update={"resume": True}))
    # the checkpoint after step 0 holds; steps 1.. run again at their place on the ramp
    assert adam_lrs == pytest.approx([5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert [s for _, s, _ in _lrs(tmp_path / "run")] == list(range(6))

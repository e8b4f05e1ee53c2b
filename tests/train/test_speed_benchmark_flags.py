"""benchmarks/train_speed.py and benchmarks/small_maps_speed.py check their flags before
they measure: a misspelt variant was measured as fp32 and written to docs/benchmarks.md
under the misspelt name; a bad size or count failed after the sizes before it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _script(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run: `from docs_section import`
    module = importlib.import_module(name)

    def no_work(*_: object, **__: object) -> None:
        raise AssertionError(f"{name} measured on bad flags")

    monkeypatch.setattr(module, "measure", no_work)
    monkeypatch.setattr(module, "write_docs", no_work)
    return module


def _refused(module: ModuleType, argv: list[str], monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> str:  # fmt: skip
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", "--no-docs", *argv])
    with pytest.raises(SystemExit) as exc:
        module.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["--variants", "fp32,channels-last"],  # measured as fp32, labelled channels-last
        ["--variants", "bf-16"],
        ["--variants", ""],
        ["--pairs", "0"],  # no timed block: statistics of nothing, after the warm-up
        ["--size", "0"],
        ["--batch", "-1"],
        # a traceback when measured (until 2026-12-07): not a timm name, a pretrained tag
        # timm does not have, a ViT made for 224 px at the default --size 64
        ["--model", "nosuchnet"],
        ["--model", "mobilenetv3_small_100.nosuchtag"],
        ["--model", "vit_tiny_patch16_224"],
    ],
)
def test_train_speed_refuses_bad_flags(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(_script("train_speed", monkeypatch), argv, monkeypatch, capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["--sizes", "32,6x"],  # 32 px measured, then a ValueError
        ["--sizes", "32,0"],
        ["--rounds", "0"],
        ["--block", "1"],  # the first step of a block is not timed: nothing timed
        ["--batch", "0"],
        ["--model", "mobilenetv3_small_100.nosuchtag"],  # a traceback when measured
        ["--model", "vit_tiny_patch16_224"],  # at 32 px: a traceback once measured
    ],
)
def test_small_maps_speed_refuses_bad_flags(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(_script("small_maps_speed", monkeypatch), argv, monkeypatch, capsys)

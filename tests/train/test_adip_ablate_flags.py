"""benchmarks/adip_ablate.py checks every variant before it trains the first one: a typo
in the last ``--variant`` was a pydantic traceback after the variants before it had
trained (hours), and two variants of one name shared, and deleted, each other's runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import adip_ablate


def _refused(
    variants: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], *extra: str,
) -> str:  # fmt: skip
    import distill.train.trainer

    trained: list[Any] = []
    monkeypatch.setattr(
        distill.train.trainer,
        "train",
        lambda cfg: trained.append(cfg) or {"mean_id": 1.0, "mean_ood": 1.0},
    )
    argv = ["adip_ablate.py", str(tmp_path / "data"), "--cache", str(tmp_path / "cache"),
            "--teacher", "local:hash", "--test-domains", "rot", "--work", str(tmp_path / "w"),
            *extra]  # fmt: skip
    for v in variants:
        argv += ["--variant", v]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        adip_ablate.main()
    assert trained == []  # nothing trained before the refusal
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("bad", ["typo:lr_algin=1e-3", "neg:steps=-5", "bad:method=bogus",
                                 "novalue:lr"])  # fmt: skip
def test_a_bad_variant_is_refused_before_any_training(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    err = _refused(["base", "lr:lr=1e-3", bad], tmp_path, monkeypatch, capsys)
    assert bad.partition(":")[0] in err


def test_two_variants_of_one_name_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(["a:lr=1e-3", "a:lr=5e-4"], tmp_path, monkeypatch, capsys)
    assert "twice" in err


@pytest.mark.parametrize("seeds", ["0", "-1"])
def test_seeds_must_be_positive(
    seeds: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    err = _refused(["base"], tmp_path, monkeypatch, capsys, "--seeds", seeds)
    assert "--seeds" in err

"""benchmarks/budget_curve.py and benchmarks/parity_filter.py refuse bad flags when they
parse them (exit 2), not after the teacher was fitted and the pool bought (minutes), and
never with a section of empty rows written over docs/results.md."""

from __future__ import annotations

import sys

import pytest

from benchmarks import budget_curve, parity_filter


@pytest.mark.parametrize(
    "argv",
    [
        ["--seeds", "0"],  # no seed: an empty table and "not measured" written to the docs
        ["--seeds", "-1"],
        ["--first-seed", "-1"],
        ["--final-steps", "0"],
        ["--threads", "0"],
        ["--fractions", "0.5,0"],  # buys nothing, then trains on no image
        ["--fractions", "-0.25"],  # a negative cap
        ["--fractions", "0.5,1.5"],  # 1.5 reported as "all" at 1.5: the goal looks for 1.0
        ["--fractions", "nan"],
        ["--fractions", "half"],
        ["--average", "2"],  # a ValueError once the first final student trains
        ["--average", "-0.1"],
    ],
)
def test_budget_curve_refuses_bad_flags(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["budget_curve.py", "--no-docs", *argv])
    with pytest.raises(SystemExit) as exc:
        budget_curve._args()
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_budget_curve_takes_good_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["budget_curve.py", "--fractions", "0.25,1", "--seeds",
                                      "1", "--average", "0.5", "--first-seed", "0"])  # fmt: skip
    args = budget_curve._args()
    assert args.fractions == [0.25, 1.0] and args.seeds == 1 and args.average == 0.5


@pytest.mark.parametrize(
    "argv",
    [
        ["--seeds", "0"],
        ["--seeds", "-2"],
        ["--threads", "0"],
        ["--budget", "abc"],  # an InvalidOperation traceback
        ["--budget", "0"],
        ["--budget", "-1"],
        ["--budget", "nan"],
    ],
)
def test_parity_filter_refuses_bad_flags(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["parity_filter.py", "--no-docs", *argv])
    with pytest.raises(SystemExit) as exc:
        parity_filter._args()
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err

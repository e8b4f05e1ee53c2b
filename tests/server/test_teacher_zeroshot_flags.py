"""benchmarks/teacher_zeroshot.py checks its flags before it fits the first teacher."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import teacher_zeroshot


def _no_work(*_: object) -> None:
    raise AssertionError("teacher_zeroshot started working on bad flags")


@pytest.mark.parametrize(
    "argv",
    [
        ["--benchmarks", "digits,fashoin"],  # digits fitted (minutes), then a KeyError
        ["--benchmarks", "bogus", "--steps", "10"],  # built and fitted as mnist-digits
        ["--benchmarks", ","],
        ["--steps", "0"],  # read as "the kind's default"
        ["--steps", "-5"],
    ],
)
def test_bad_flags_are_refused_before_any_fit(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["teacher_zeroshot.py", "--no-docs", "--work",
                                      str(tmp_path / "w"), *argv])  # fmt: skip
    monkeypatch.setattr(teacher_zeroshot, "measure", _no_work)
    monkeypatch.setattr(teacher_zeroshot, "write_docs", _no_work)
    with pytest.raises(SystemExit) as exc:
        teacher_zeroshot.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and "Traceback" not in err


def test_render_only_with_no_docs_leaves_docs_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--render-only --no-docs` rewrote docs/results.md all the same."""
    work = tmp_path / "w"
    work.mkdir()
    (work / teacher_zeroshot.RESULTS).write_text(json.dumps({"meta": {}, "results": []}))
    monkeypatch.setattr(sys, "argv", ["teacher_zeroshot.py", "--render-only", "--no-docs",
                                      "--work", str(work)])  # fmt: skip
    monkeypatch.setattr(teacher_zeroshot, "write_docs", _no_work)
    monkeypatch.setattr(teacher_zeroshot, "render", lambda results, meta: "THE SECTION\n")
    teacher_zeroshot.main()
    assert "THE SECTION" in capsys.readouterr().out

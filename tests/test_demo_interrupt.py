"""An interrupted `vlm-distill demo` says what it kept, as it is on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distill.cli import main


def test_a_stop_during_the_teachers_fit_does_not_claim_a_teacher_was_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "the data, the teacher and every answer bought are kept" whatever had been
    written when Ctrl-C came (an audit stopped it during the teacher's fit)."""
    import distill.demo

    work = tmp_path / "demo"

    def stopped_in_the_fit(cfg: Any, **_: Any) -> Any:
        (work / "data").mkdir(parents=True, exist_ok=True)  # the data, then the fit began
        (work / "teacher").mkdir(exist_ok=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(distill.demo, "run_demo", stopped_in_the_fit)
    assert main(["demo", "--workdir", str(work)]) == 130
    said = " ".join(capsys.readouterr().err.split())
    assert "the data is kept in" in said and "fitted teacher" not in said

    (work / "teacher" / "digits-s0.safetensors").write_bytes(b"x")
    (work / "cache").mkdir()
    (work / "cache" / "ledger.jsonl").write_text("")
    assert main(["demo", "--workdir", str(work)]) == 130
    said = " ".join(capsys.readouterr().err.split())
    assert "the data, the fitted teacher and every answer bought are kept in" in said

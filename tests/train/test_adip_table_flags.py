"""benchmarks/adip_table.py refuses bad flags at once (exit 2), before it builds a data
set, fits a teacher, harvests or trains anything (minutes to hours of work)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from benchmarks import adip_table


def _no_work(*_: object) -> None:
    raise AssertionError("adip_table started working on bad flags")


def _refused(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    monkeypatch.setattr(sys, "argv", ["adip_table.py", *argv])
    monkeypatch.setattr(adip_table, "build_data", _no_work)
    monkeypatch.setattr(adip_table, "write_docs", _no_work)
    with pytest.raises(SystemExit) as exc:
        adip_table.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "flag",
    [
        "--seeds",
        "--steps",
        "--views",
        "--threads",
        "--eval-every",
        "--image-size",
        "--batch-per-domain",
        "--fashion-per-domain",
        "--mnist-per-class",
    ],
)
@pytest.mark.parametrize("value", ["0", "-2"])
def test_counts_must_be_positive(
    flag: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """0 was read as "unset" (`--seeds 0` ran the mode's 3 or 5 seeds, `--steps 0` its 300
    steps); a negative count was taken and failed after the harvest, or gave empty rows."""
    work = tmp_path / "work"
    err = _refused(["--quick", "--no-docs", "--work", str(work), flag, value], monkeypatch, capsys)
    assert flag in err
    assert not work.exists()


@pytest.mark.parametrize(
    ("flag", "value"), [("--lr", "0"), ("--lr", "-1e-3"), ("--lr", "nan"), ("--warmup", "-1")]
)
def test_lr_and_warmup_are_checked(
    flag: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _refused(
        ["--quick", "--no-docs", "--work", str(tmp_path / "w"), flag, value], monkeypatch, capsys
    )
    assert flag in err


@pytest.mark.parametrize("datasets", ["bogus", "rotated-fashion,bogus", ","])
def test_unknown_dataset_names_are_refused(
    datasets: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unknown name was skipped without a word (or, alone, ended in "no dataset could
    be built; see the SKIPPED lines above" with no such line)."""
    err = _refused(
        ["--quick", "--no-docs", "--work", str(tmp_path / "w"), "--datasets", datasets],
        monkeypatch,
        capsys,
    )
    assert "--datasets" in err and "rotated-fashion" in err and "mnist-digits" in err


def test_a_work_path_that_is_a_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    for work in (afile, afile / "below"):
        err = _refused(["--quick", "--no-docs", "--work", str(work)], monkeypatch, capsys)
        assert "--work" in err and "not a folder" in err


def _saved(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    row = {"ood": {"sklearn_digits": [0.5]}, "avg_id": [0.9], "avg_ood": [0.5]}
    results = {"mnist-digits": {"domains": ["mnist", "sklearn_digits"],
                                "targets": ["sklearn_digits"], "n_images": 10,
                                "methods": {"erm": row, "prototype": row}}}  # fmt: skip
    (work / "results.json").write_text(json.dumps({"meta": {"command": "x"}, "results": results}))


def test_render_only_with_no_docs_prints_the_section_and_leaves_docs_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--render-only --no-docs` rewrote docs/results.md all the same."""
    work = tmp_path / "work"
    _saved(work)
    monkeypatch.setattr(sys, "argv", ["adip_table.py", "--render-only", "--no-docs",
                                      "--work", str(work)])  # fmt: skip
    monkeypatch.setattr(adip_table, "write_docs", _no_work)
    monkeypatch.setattr(adip_table, "render", lambda results, meta: "THE SECTION\n")
    adip_table.main()
    assert "THE SECTION" in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, "{", "[]", '{"meta": {}}'])
def test_render_only_without_a_readable_results_file_is_one_line(
    content: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A work folder with no results.json (a run stopped before its end, a mistyped
    --work) or a damaged one: a FileNotFoundError, JSONDecodeError or KeyError traceback."""
    work = tmp_path / "work"
    work.mkdir()
    if content is not None:
        (work / "results.json").write_text(content)
    err = _refused(["--render-only", "--work", str(work)], monkeypatch, capsys)
    assert "results.json" in err


@pytest.mark.parametrize("content", ["", '{"views": 4, "teach', "[1, 2]", "null"])
def test_a_damaged_harvest_record_is_named_not_a_traceback(
    content: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """WORK/harvest.json cut short (a full disk) or damaged: every rerun of the table was a
    JSONDecodeError (or AttributeError) traceback once the teachers were fitted."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "harvest.json").write_text(content)
    data = {"mnist-digits": work / "mnist"}
    argv = ["--quick", "--no-docs", "--datasets", "mnist-digits", "--work", str(work)]
    monkeypatch.setattr(sys, "argv", ["adip_table.py", *argv])
    monkeypatch.setattr(adip_table, "build_data", lambda work, args: data)
    monkeypatch.setattr(adip_table, "fit_teachers", lambda data, work: {})
    monkeypatch.setattr(adip_table, "harvest_record", _no_work)
    monkeypatch.setattr(adip_table, "write_docs", _no_work)
    with pytest.raises(SystemExit) as exc:
        adip_table.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "harvest.json" in err


def test_ctrl_c_while_a_dataset_is_built_stops_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during `data make-fashion` (the CLI returns 130) was reported as "SKIPPED
    rotated-fashion: could not build it (interrupted)": the table went on with the other
    data set (teachers, harvest, hours of training) and wrote a table without it."""
    import distill.data.builders

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(distill.data.builders, "make_rotated_fashion", interrupted)
    monkeypatch.setattr(distill.data.builders, "make_mnist_digits", _no_work)
    args = argparse.Namespace(datasets=["rotated-fashion", "mnist-digits"], rebuild=False,
                              fashion_per_domain=10, mnist_per_class=1)  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        adip_table.build_data(tmp_path, args)
    assert exc.value.code == 130  # the shell's code for Ctrl-C; the next set not built
    assert "SKIPPED" not in capsys.readouterr().out


def test_the_table_reports_in_domain_accuracy_per_held_out_target() -> None:
    """Issue 12 asks for ID and OOD per domain: each target's column gets the ID accuracy
    of the runs that held it out; results recorded without it render as before."""
    meta = {"command": "x", "wall_s": 60, "teacher": {"harvest_s": 1}, "queries": "q",
            "spent_usd": "0", "image_size": 32, "steps": 2, "lr": 5e-4,
            "batch_per_domain": 4, "seeds": 2, "swad": False, "machine": "m", "views": 4}
    row = {"ood": {"a": [0.5, 0.6], "b": [0.7, 0.7]}, "id": {"a": [0.9, 1.0], "b": [0.8, 0.8]},
           "avg_id": [0.85, 0.9], "avg_ood": [0.6, 0.65]}
    results = {"d": {"domains": ["a", "b", "c"], "targets": ["a", "b"], "n_images": 9,
                     "methods": {"erm": row, "adip": row}}}
    text = adip_table.render(results, meta)
    assert "| method | ID without a | ID without b |" in text
    assert "| ERM | 95.0 ± 7.1 | 80.0 ± 0.0 |" in text
    assert "| VL2V-ADiP (K = 4 views) | 95.0 ± 7.1 | 80.0 ± 0.0 |" in text
    old = {k: v for k, v in row.items() if k != "id"}
    results["d"]["methods"] = {"erm": old}
    assert "ID without" not in adip_table.render(results, meta)


def test_the_header_names_a_fitted_projection_start_and_only_that() -> None:
    meta = {"command": "x", "wall_s": 60, "teacher": {"harvest_s": 1}, "queries": "q",
            "spent_usd": "0", "image_size": 32, "steps": 2, "lr": 5e-4,
            "batch_per_domain": 4, "seeds": 2, "swad": False, "machine": "m", "views": 4}
    assert "least-squares" not in adip_table.render({}, meta)  # a table from before the flag
    assert "least-squares" not in adip_table.render({}, {**meta, "proj_init": "random"})
    assert "started at its ridge least-squares fit (`--proj-init lstsq`)" in adip_table.render(
        {}, {**meta, "proj_init": "lstsq"})


def test_an_unknown_proj_init_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "--proj-init" in _refused(["--proj-init", "zeros"], monkeypatch, capsys)

"""benchmarks/adip_table.py resumes: a finished run or a harvest record is reused only when it
was made against the teacher the table now names (a refitted teacher has a new name)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import adip_table
from benchmarks.adip_table import finished_run, harvest_record


def _write(path: Path, record: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_a_finished_run_is_reused_for_its_own_teacher_only(tmp_path: Path) -> None:
    out = tmp_path / "adip-trot0-s0"
    _write(out / "metrics.json", {"teacher": "local:mini-clip-aaa", "mean_ood": 0.5})
    assert finished_run(out, "local:mini-clip-aaa") == {
        "teacher": "local:mini-clip-aaa", "mean_ood": 0.5}
    assert finished_run(out, "local:mini-clip-bbb") is None
    assert not out.exists()  # trained against the old teacher: retrained, not reported


def test_an_unfinished_run_of_another_teacher_is_cleared(tmp_path: Path) -> None:
    out = tmp_path / "erm-trot0-s0"
    _write(out / "checkpoint" / "state.json", {"teacher": "local:mini-clip-aaa", "step": 40})
    assert finished_run(out, "local:mini-clip-aaa") is None
    assert (out / "checkpoint").is_dir()  # same teacher: the trainer resumes it
    assert finished_run(out, "local:mini-clip-bbb") is None
    assert not out.exists()  # the trainer would refuse to resume it


def test_a_harvest_record_of_the_same_teachers_is_reused_and_summed(tmp_path: Path) -> None:
    adip_table.TEACHERS.update({"rotated-fashion": "local:mini-clip-f", "mnist-digits": "m"})
    one = {"requests": 2, "images": 10, "input_tokens": 0, "usd": "0.5"}
    saved = {"views": 4, "teachers": {
        "rotated-fashion": {"teacher": "local:mini-clip-f", "harvest_s": 3.0, "billing": one},
        "mnist-digits": {"teacher": "m", "harvest_s": 1.5, "billing": one},
    }}  # fmt: skip
    data = {"rotated-fashion": tmp_path / "f", "mnist-digits": tmp_path / "m"}
    record = harvest_record(saved, data, {}, tmp_path / "cache", views=4)
    assert record["billing"] == {"requests": 4, "images": 20, "input_tokens": 0, "usd": "1.0"}
    assert record["harvest_s"] == 4.5
    assert record["teachers"] == saved["teachers"]


def test_a_run_made_with_other_settings_is_retrained_not_reported(tmp_path: Path) -> None:
    """The same folder, re-run with other options (here: views, steps): the old run is
    deleted rather than reported under the new settings."""
    out = tmp_path / "kd-tsklearn_digits-s0"
    settings = {"method": "kd", "views": 4, "steps": 300, "test_domains": ("sklearn_digits",)}
    _write(out / "metrics.json", {"teacher": "t", "mean_ood": 0.6})
    _write(out / "config.json", {**settings, "test_domains": ["sklearn_digits"], "lr": 5e-4})
    assert finished_run(out, "t", settings) == {"teacher": "t", "mean_ood": 0.6}
    assert finished_run(out, "t", {**settings, "views": 1}) is None
    assert not out.exists()
    _write(out / "checkpoint" / "state.json", {"teacher": "t", "step": 40})
    _write(out / "config.json", {**settings, "test_domains": ["sklearn_digits"]})
    assert finished_run(out, "t", settings) is None and (out / "checkpoint").is_dir()
    assert finished_run(out, "t", {**settings, "steps": 150}) is None
    assert not out.exists()  # an unfinished run of other settings is not resumed either


def test_each_dataset_has_its_own_size_and_seeds_unless_one_is_given() -> None:
    import argparse

    from benchmarks.adip_table import image_size, per_dataset, seed_count

    default = argparse.Namespace(image_size=None, seeds=None, quick=False)
    assert image_size("rotated-fashion", default) == 32
    assert image_size("mnist-digits", default) == 64
    assert image_size("mnist-digits", argparse.Namespace(image_size=48)) == 48
    assert (seed_count("rotated-fashion", default), seed_count("mnist-digits", default)) == (3, 5)
    quick = argparse.Namespace(seeds=None, quick=True)
    assert seed_count("mnist-digits", quick) == 1
    assert seed_count("mnist-digits", argparse.Namespace(seeds=2, quick=False)) == 2
    assert per_dataset(32, " px") == "32 px"  # a results.json written before per-dataset
    assert per_dataset({"a": 32, "b": 32}, " px") == "32 px"
    assert per_dataset({"rotated-fashion": 32, "mnist-digits": 64}, " px") == (
        "32 px on rotated-fashion, 64 px on mnist-digits")

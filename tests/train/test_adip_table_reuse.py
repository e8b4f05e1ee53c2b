"""benchmarks/adip_table.py resumes: a finished run or a harvest record is reused only when it
was made against the teacher the table now names (a refitted teacher has a new name)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

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


def test_a_finished_erm_run_is_reused_for_any_teacher(tmp_path: Path) -> None:
    """ERM reads no teacher output: a refitted teacher does not retrain it (a checkpoint of
    another teacher is still cleared: the trainer would refuse to resume it)."""
    out = tmp_path / "erm-trot0-s0"
    _write(out / "metrics.json", {"teacher": "local:mini-clip-aaa", "mean_ood": 0.5})
    assert finished_run(out, "local:mini-clip-bbb", any_teacher=True) == {
        "teacher": "local:mini-clip-aaa", "mean_ood": 0.5}
    assert out.exists()
    _write(tmp_path / "erm-s1" / "checkpoint" / "state.json", {"teacher": "local:mini-clip-aaa"})
    assert finished_run(tmp_path / "erm-s1", "local:mini-clip-bbb", any_teacher=True) is None
    assert not (tmp_path / "erm-s1").exists()


def test_run_one_reuses_erm_across_teachers_only(tmp_path: Path, monkeypatch) -> None:
    asked: dict[str, bool] = {}
    monkeypatch.setattr(adip_table, "finished_run", lambda out, teacher, settings, **kw:
                        asked.update({settings["method"]: kw["any_teacher"]}) or {"ok": 1})
    args = argparse.Namespace(views=4, steps=10, lr=5e-4, batch_per_domain=4, eval_every=5,
                              swad=False, threads=1, warmup=0, image_targets="all",
                              text_loss="cosine", proj_init="random")  # fmt: skip
    for method in ("erm", "adip", "kd", "adip-k1"):
        adip_table.run_one(tmp_path, tmp_path, tmp_path / method, method, "rot0", 0, args,
                           "t", 32, 4)  # fmt: skip
    assert asked == {"erm": True, "adip": False, "kd": False}


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


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = dict(
        kd_lr=False, methods=None, views=4, steps=150, image_size=None, lr=5e-4,
        batch_per_domain=32, eval_every=75, swad=False, threads=2, warmup=40, seeds=None,
        quick=False)
    return argparse.Namespace(**{**base, **kw})


def test_methods_chooses_what_is_trained_and_rejects_unknown_names() -> None:
    assert adip_table.methods_to_train(_args()) == ("erm", "kd", "adip", "adip-k1")
    assert adip_table.methods_to_train(_args(kd_lr=True, methods="erm, kd-lr,adip")) == (
        "erm", "kd-lr", "adip")
    with pytest.raises(SystemExit, match="unknown kd-lr"):
        adip_table.methods_to_train(_args(methods="erm,kd-lr"))  # kd-lr needs --kd-lr
    with pytest.raises(SystemExit, match="unknown bogus"):
        adip_table.methods_to_train(_args(methods="bogus"))


def test_a_method_left_out_is_reported_only_from_finished_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table finished in parts: a row left out by --methods comes from the folder's
    finished runs, or is left out; nothing is trained for it."""
    monkeypatch.setitem(adip_table.TEACHERS, "mnist-digits", "t")
    args = _args(kd_lr=True, methods="adip", seeds=3)
    runs = tmp_path / "runs" / "mnist-digits"
    settings = {"method": "kd", "views": 4, "test_domains": ["sklearn_digits"],
                "steps_align": 150, "steps_distill": 150, "steps": 300, "image_size": 64,
                "lr": 5e-4, "lr_kd": 5e-4, "batch_per_domain": 32, "eval_every": 75,
                "seed": 0, "swad": False, "threads": 2, "warmup": 40}
    for seed in (0, 1, 2):
        out = runs / f"kd-lr-tsklearn_digits-s{seed}"
        _write(out / "config.json", {**settings, "seed": seed})
        _write(out / "metrics.json", {"teacher": "t", "mean_id": 0.9, "mean_ood": 0.5 + seed / 10,
                                      "wall_time_s": 10.0})
    row = adip_table.table_row("mnist-digits", tmp_path / "data", tmp_path / "cache", tmp_path,
                               "kd-lr", ["sklearn_digits"], args, reuse_only=True)
    assert row is not None
    assert row["ood"]["sklearn_digits"] == [0.5, 0.6, 0.7] and row["compute_s"] == 30.0
    (runs / "kd-lr-tsklearn_digits-s2" / "metrics.json").unlink()  # one run unfinished
    assert adip_table.table_row("mnist-digits", tmp_path / "data", tmp_path / "cache",
                                tmp_path, "kd-lr", ["sklearn_digits"], args,
                                reuse_only=True) is None
    assert not (runs / "kd-lr-tsklearn_digits-s2" / "metrics.json").exists()  # not trained


def test_a_setting_missing_from_an_old_config_counts_as_its_default(tmp_path: Path) -> None:
    """A run made before a TrainConfig field existed had that field's default: reused for
    the default, retrained for another value (not reported under it)."""
    out = tmp_path / "adip-trot0-s0"
    _write(out / "metrics.json", {"teacher": "t", "mean_ood": 0.7})
    _write(out / "config.json", {"method": "adip"})  # no image_targets: made before it
    assert finished_run(out, "t", {"method": "adip", "image_targets": "all"}) == {
        "teacher": "t", "mean_ood": 0.7}
    assert finished_run(out, "t", {"method": "adip", "image_targets": "teacher-correct"}) is None


def test_a_run_from_before_proj_init_counts_as_a_random_start(tmp_path: Path) -> None:
    out = tmp_path / "adip-trot0-s0"
    _write(out / "config.json", {"method": "adip"})  # made before --proj-init existed
    _write(out / "metrics.json", {"teacher": "t", "mean_ood": 0.5})
    assert finished_run(out, "t", {"method": "adip", "proj_init": "random"}) is not None
    assert finished_run(out, "t", {"method": "adip", "proj_init": "lstsq"}) is None
    assert not out.exists()  # a random-P run never stands in for a fitted-P one
    assert not out.exists()


def test_the_table_asks_adip_runs_for_their_image_targets(tmp_path: Path, monkeypatch) -> None:
    seen: list[dict] = []
    monkeypatch.setattr(adip_table, "finished_run",
                        lambda out, teacher, settings, **kw: seen.append(settings) or {"ok": 1})
    args = argparse.Namespace(views=4, steps=10, lr=5e-4, batch_per_domain=4, eval_every=5,
                              swad=False, threads=1, warmup=0, image_targets="teacher-correct",
                              text_loss="softmax", proj_init="lstsq")
    for method in ("adip", "erm"):
        adip_table.run_one(tmp_path, tmp_path, tmp_path / method, method, "rot0", 0, args,
                           "t", 32, 4)
    assert seen[0]["image_targets"] == "teacher-correct"
    assert seen[0]["text_loss"] == "softmax"
    assert seen[0]["proj_init"] == "lstsq"
    assert not {"image_targets", "text_loss", "proj_init"} & set(seen[1])  # ERM has none
    assert seen[0]["batch_per_domain"] == 4


def test_standard_mode_takes_its_batch_per_dataset_unless_one_is_given() -> None:
    """--standard trains Rotated Fashion at 16 images per source domain and MNIST -> digits
    at 32; --batch-per-domain sets one for both; the other modes use 32."""
    standard = argparse.Namespace(batch_per_domain=None, standard=True)
    assert adip_table.batch_size("rotated-fashion", standard) == 16
    assert adip_table.batch_size("mnist-digits", standard) == 32
    given = argparse.Namespace(batch_per_domain=8, standard=True)
    assert adip_table.batch_size("rotated-fashion", given) == 8
    assert adip_table.batch_size("mnist-digits", given) == 8
    full = argparse.Namespace(batch_per_domain=None, standard=False)
    assert adip_table.batch_size("rotated-fashion", full) == 32
    assert adip_table.per_dataset({"rotated-fashion": 16, "mnist-digits": 32}) == (
        "16 on rotated-fashion, 32 on mnist-digits")


def test_the_goal_line_is_computed_from_the_seeds_and_their_spread() -> None:
    from benchmarks.adip_table import goal_lines

    rows = {
        "fashion": {"methods": {"adip": {"avg_ood": [0.77, 0.76, 0.76]},
                                "erm": {"avg_ood": [0.73, 0.74, 0.73]},
                                "kd-lr": {"avg_ood": [0.74, 0.74, 0.74]}}},
        "mnist": {"methods": {"adip": {"avg_ood": [0.84, 0.83, 0.74, 0.80, 0.82]},
                              "erm": {"avg_ood": [0.73, 0.66, 0.77, 0.67, 0.80]},
                              "kd-lr": {"avg_ood": [0.80, 0.77, 0.70, 0.84, 0.75]}}},
        "one-seed": {"methods": {"adip": {"avg_ood": [0.9]}, "erm": {"avg_ood": [0.1]}}},
    }
    lines = goal_lines(rows)
    [fashion] = [x for x in lines if x.startswith("- fashion")]
    [mnist] = [x for x in lines if x.startswith("- mnist")]
    assert "**met**" in fashion and fashion.count("by more than the spread") == 2
    assert "**not met**" in mnist
    assert "Against ERM: +8.0 points (80.6 against 72.6; spreads 4.0 and 6.1)" in mnist
    assert "Against KD (ERM's lr): +3.4 points" in mnist
    assert "ahead on 4 of 5 seeds: not by more than the spread" in mnist
    assert not any("one-seed" in x for x in lines)  # no spread with one seed: no verdict
    assert goal_lines({"d": {"methods": {"erm": {"avg_ood": [0.5, 0.6]}}}}) == []

"""`vlm-distill demo` end to end, twice: the second run is free and refits nothing.

The hidden ``--smoke`` option (two digits per class, four steps per stage), a tiny random-init
student and a mini-clip teacher fitted for three steps keep this to the pipeline's plumbing:
fit -> serve -> harvest (with views) -> train -> report. Accuracy is not the point here
(benchmarks/adip_table.py and the demo itself measure it).
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import ANY

import pytest

from distill.cli import main


def _bought(cache: Path) -> int:
    """Image views the ledger records as bought (it also records cache hits)."""
    ledger = [json.loads(x) for x in (cache / "ledger.jsonl").read_text().splitlines()]
    return sum(
        r["items"] for r in ledger if r.get("kind") == "image_embedding" and r["outcome"] == "ok"
    )


@pytest.mark.slow
def test_demo_runs_twice_and_the_second_run_spends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "demo"
    argv = [
        "demo", "--smoke", "--student", "mobilenetv3_small_050", "--teacher-steps", "3",
        "--views", "2", "--workdir", str(work),
    ]  # fmt: skip
    assert main(argv) == 0
    first = capsys.readouterr().out
    [teacher] = (work / "teacher").glob("digits-*.safetensors")
    fitted = teacher.stat().st_mtime_ns
    assert "fitting it once" in first
    assert "stopped" not in first and "ADiP" in first and "teacher zero-shot" in first
    assert "one seed (0)" in first  # the table says how little one seed's order means
    [run] = (work / "runs").iterdir()
    for name in (
        "config.json",
        "ledger.jsonl",
        "metrics.json",
        "losses.png",
        "accuracy.png",
        "spend.png",
    ):
        assert (run / name).exists(), name
    rotated = len(list((work / "data" / "digits" / "rotated").rglob("*.png")))
    assert rotated == 10 * 2  # ten classes, two digits each
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"zeroshot", "erm", "kd", "adip"}
    for m in metrics["methods"].values():
        # scored on every held-out image, as a count of hits
        ood = m["ood"]["rotated"]
        assert ood["n"] == rotated and m["mean_ood"] == ood["acc"]
        assert ood["acc"] * rotated == pytest.approx(round(ood["acc"] * rotated))
    assert json.loads((run / "config.json").read_text())["cache"] == str(work / "cache")
    # two views of every image, bought on the first run
    images = len(list((work / "data" / "digits").rglob("*.png")))
    assert _bought(work / "cache") == 2 * images

    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "Everything was already cached: this run spent $0." in second
    assert "loaded from" in second and teacher.stat().st_mtime_ns == fitted
    assert _bought(work / "cache") == 2 * images  # nothing more bought
    assert len(list((work / "runs").iterdir())) == 2


@pytest.mark.slow
def test_demo_with_several_seeds_reports_mean_and_spread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "demo"
    argv = [
        "demo", "--smoke", "--backend", "hash", "--student", "mobilenetv3_small_050",
        "--views", "1", "--seeds", "2", "--student-size", "48", "--workdir", str(work),
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "mean ± std over seeds 0-1" in out
    assert "at 48 px" in out
    [run] = (work / "runs").iterdir()
    # --student-size: the students train at 48 px from the 32 px digits
    assert json.loads((run / "erm-s0" / "config.json").read_text())["image_size"] == 48
    folders = sorted(p.name for p in run.iterdir() if p.is_dir())
    assert folders == ["adip-s0", "adip-s1", "erm-s0", "erm-s1", "kd-s0", "kd-s1", "zeroshot"]
    assert (run / "losses.png").exists()
    methods = json.loads((run / "metrics.json").read_text())["methods"]
    assert "seeds" not in methods["zeroshot"]  # the teacher does not depend on the seed
    for name in ("erm", "kd", "adip"):
        m = methods[name]
        per_seed = [s["mean_ood"] for s in m["seeds"]]
        assert [s["seed"] for s in m["seeds"]] == [0, 1]
        # the reported figure is the mean of the seeds' own results
        assert m["mean_ood"] == pytest.approx(sum(per_seed) / 2, abs=1e-4)
        for s in m["seeds"]:
            own = json.loads((run / f"{name}-s{s['seed']}" / "metrics.json").read_text())
            assert own["mean_ood"] == s["mean_ood"]
        assert m["std_ood"] >= 0


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--seeds", "0"), ("--views", "0"), ("--views", "65"), ("--teacher-steps", "0")],
)
def test_demo_refuses_bad_numbers_before_doing_anything(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --views 0 used to fit the teacher first, then fail in the harvest's own usage line
    with pytest.raises(SystemExit) as exc:
        main(["demo", flag, value, "--workdir", str(tmp_path / "demo")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"vlm-distill demo: error: argument {flag}" in err
    assert not (tmp_path / "demo").exists()


def test_demo_refuses_an_unknown_student_before_doing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # it used to fit the teacher and harvest, then end in timm's RuntimeError traceback
    assert main(["demo", "--student", "nosuchnet", "--workdir", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert "unknown student model 'nosuchnet'" in err and "Traceback" not in err
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize(
    ("student", "says"),
    [
        ("vit_tiny_patch16_224", "Input height (32) doesn't match model (224)"),
        ("mobilenetv3_small_100.nosuchtag", "Invalid pretrained tag (nosuchtag)"),
    ],
    ids=["fixed-input-size", "unknown-tag"],
)
def test_demo_refuses_a_student_that_cannot_train_before_doing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], student: str, says: str
) -> None:
    # the name check let them through: a traceback after the teacher and the harvest
    argv = ["demo", "--student", student, "--backend", "hash", "--smoke",
            "--workdir", str(tmp_path / "demo")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: --student {student} cannot train on 32 px images"
    ), err
    assert says in err
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
def test_demo_students_train_with_the_callers_threads_and_no_teacher_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The in-process teacher sets its own torch thread count; the students must not inherit
    it (they trained with the teacher's 2 threads whatever the machine had). Nor may the
    teacher's inference thread outlive the harvest: idle, it kept its OpenMP team, and with
    more OpenMP threads than cores libgomp puts the training threads to sleep between
    parallel regions (the demo's students trained about 2x slower)."""
    import threading

    import torch

    import distill.train.trainer as trainer

    seen: list[int] = []
    teacher_threads: list[str] = []
    real_train = trainer.train

    def spy(config: object, **kwargs: object) -> dict[str, object]:
        seen.append(torch.get_num_threads())
        teacher_threads.extend(
            t.name for t in threading.enumerate() if t.name.startswith("mini-clip")
        )
        return real_train(config, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer, "train", spy)
    before = torch.get_num_threads()
    # 3 is neither this machine's core count nor the teacher's default of 2
    torch.set_num_threads(3)
    try:
        argv = [
            "demo", "--smoke", "--student", "mobilenetv3_small_050", "--teacher-steps", "3",
            "--views", "1", "--workdir", str(tmp_path / "demo"),
        ]  # fmt: skip
        assert main(argv) == 0
        assert seen and set(seen) == {3}, seen
        assert teacher_threads == []
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()


@pytest.mark.slow
def test_a_demo_stopped_by_its_budget_says_so_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `vlm-distill demo --budget 0.001` used to end in a RuntimeError traceback.
    work = tmp_path / "demo"
    argv = [
        "demo", "--smoke", "--student", "mobilenetv3_small_050", "--teacher-steps", "3",
        "--views", "1", "--budget", "0.001", "--workdir", str(work),
    ]  # fmt: skip
    assert main(argv) == 3  # the harvest's budget stop
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    out = " ".join(captured.out.split())
    assert "stopped by the budget" in out
    assert "the demo stopped at its harvest (exit 3), before training" in out
    assert 0 < _bought(work / "cache") <= 10  # $0.0001 an image: at most ten bought
    assert not any((work / "runs").rglob("metrics.json"))


def test_a_demo_of_another_size_rebuilds_the_data_of_its_work_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo --quick` (8 digits a class), then `demo` in the same folder: the second run
    found `data/digits` and used it as it was, so the "full" demo trained and scored on the
    quick one's 320 digits while its config.json said 20 a class (and the reverse)."""
    work = tmp_path / "demo"
    data = work / "data" / "digits"
    # what an earlier run of another size left (--quick: per_class 8)
    assert main(["data", "make-digits", str(data), "--per-class", "3"]) == 0
    argv = [
        "demo", "--smoke", "--backend", "hash", "--student", "mobilenetv3_small_050",
        "--views", "1", "--budget", "0.001", "--workdir", str(work),
    ]  # fmt: skip
    assert main(argv) == 3  # the budget stops the harvest: no student is trained here
    capsys.readouterr()
    assert json.loads((data / "dataset.json").read_text())["per_class"] == 2  # --smoke's
    assert len(list((data / "rotated").rglob("*.png"))) == 10 * 2
    [run] = (work / "runs").iterdir()
    assert json.loads((run / "config.json").read_text())["per_class"] == 2


@pytest.mark.parametrize("student", ["mobilenetv3_small_050", "tf_efficientnet_lite0.in1k"])
def test_a_demo_student_without_packaged_weights_says_it_starts_random(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], student: str
) -> None:
    """Its students started from random init without a word (the packaged weights' own
    timm tag too); one note at the start now, none for the tag."""
    argv = [
        "demo", "--smoke", "--backend", "hash", "--student", student, "--views", "1",
        "--budget", "0.001", "--workdir", str(tmp_path / "demo"),
    ]  # fmt: skip
    assert main(argv) == 3  # the budget stops the harvest: no student is trained here
    err = capsys.readouterr().err
    if student == "tf_efficientnet_lite0.in1k":
        assert "random init" not in err
    else:
        assert err.count("note:") == 1 and f"--student {student} starts from random init" in err


def test_a_demo_whose_teacher_manifest_was_edited_fits_the_teacher_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`teacher/digits-*.json` edited by hand (its "pool" taken out, or not an object):
    the rerun ended in a KeyError (TypeError, AttributeError) traceback before anything
    was harvested. Each edit makes the teacher one to fit again; the last is rerun end to
    end (one fit and two demos for the three edits: the suite's time)."""
    from distill.demo import DemoConfig, demo_teacher_fitted

    work = tmp_path / "demo"
    argv = [
        "demo", "--smoke", "--student", "mobilenetv3_small_050", "--teacher-steps", "2",
        "--views", "1", "--budget", "0.001", "--workdir", str(work),
    ]  # fmt: skip
    assert main(argv) == 3  # the budget stops the harvest: no student is trained here
    [manifest] = (work / "teacher").glob("digits-*.json")
    fitted = json.loads(manifest.read_text())
    cfg = DemoConfig(teacher_steps=2)
    assert demo_teacher_fitted(work, cfg) is not None  # as fitted: reused
    no_pool = {k: v for k, v in fitted.items() if k != "pool"}
    for edited in ([fitted], {**no_pool, "pool": None}, no_pool):
        manifest.write_text(json.dumps(edited))
        assert demo_teacher_fitted(work, cfg) is None, edited  # fitted again, no traceback
    capsys.readouterr()
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    # fitted again, as the first time (same seed: the same teacher, so its cache is used)
    assert json.loads(manifest.read_text()) == {**fitted, "fit_s": ANY}


def _budget_stopped_demo(work: Path) -> list[str]:
    """A demo the budget stops in its harvest: seconds, no teacher fit, no student."""
    return [
        "demo", "--smoke", "--backend", "hash", "--student", "mobilenetv3_small_050",
        "--views", "1", "--budget", "0.001", "--workdir", str(work),
    ]  # fmt: skip


def test_a_demo_whose_digits_another_demo_made_meanwhile_uses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two demos started at once in one new `--workdir`: both found no digits, one made
    them, and the other ended with "error: WORK/data/digits is not empty; choose a new
    folder or pass --force" (exit 1; the demo has no --force)."""
    import distill.data.digits as digits

    work = tmp_path / "demo"
    real = digits.make_digits

    def the_other_demo_first(out: Path, **kwargs: object) -> Path:
        real(out, **kwargs)  # type: ignore[arg-type]  # the other demo, a moment earlier
        return real(out, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(digits, "make_digits", the_other_demo_first)
    assert main(_budget_stopped_demo(work)) == 3  # the budget stops the harvest
    captured = capsys.readouterr()
    assert "error" not in captured.err
    assert len(list((work / "data" / "digits" / "rotated").rglob("*.png"))) == 10 * 2


def test_two_demos_started_in_the_same_second_get_a_run_folder_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run folder was named by the second the demo started: a second demo started in
    the same second (two at once, or a rerun of one the budget stopped at once) wrote into
    the first's folder, its config.json, metrics and students over the first's."""
    import time

    monkeypatch.setattr(time, "strftime", lambda *a: "20261206-120000")  # the same second
    work = tmp_path / "demo"
    assert main(_budget_stopped_demo(work)) == 3
    [first] = (work / "runs").iterdir()
    (first / "config.json").write_text('{"mine": true}')
    assert main(_budget_stopped_demo(work)) == 3
    capsys.readouterr()
    assert len(list((work / "runs").iterdir())) == 2
    assert json.loads((first / "config.json").read_text()) == {"mine": True}


@pytest.mark.parametrize("under", ["", "sub"])
def test_demo_refuses_a_workdir_that_is_a_file_before_doing_anything(
    under: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--workdir notes.txt` (a file, or a folder under one): "error: demo failed on a
    file: notes.txt/runs/STAMP: Not a directory", exit 1, as for a failure mid-run."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    work = notes / under if under else notes
    argv = ["demo", "--smoke", "--backend", "hash", "--views", "1", "--budget", "0.001"]
    assert main([*argv, "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert "--workdir folder" in err and "is a file, not a folder" in err
    assert notes.read_text() == "mine"


def test_a_demo_stopped_by_sigterm_while_training_says_what_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kill PID` (`timeout`, `docker stop`, a closed terminal: SIGTERM, SIGHUP, SIGQUIT)
    while the demo fitted its teacher or trained: Python's default ended it on the spot,
    exit -15 and no word, where Ctrl-C said what is kept for the rerun (and `train`,
    `data` stop the same way on every one of these signals)."""
    import signal

    import distill.train.trainer as trainer

    class DiedOnTheSpot(Exception):
        """What Python's default action would have done: ended the process, pytest too."""

    def default(signum: int, frame: object) -> None:
        raise DiedOnTheSpot

    def killed(config: object, **kwargs: object) -> dict[str, object]:
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("still training after SIGTERM")

    previous = signal.signal(signal.SIGTERM, default)
    monkeypatch.setattr(trainer, "train", killed)
    work = tmp_path / "demo"
    argv = ["demo", "--smoke", "--backend", "hash", "--student", "mobilenetv3_small_050"]
    try:
        assert main([*argv, "--views", "1", "--workdir", str(work)]) == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is default  # the caller's handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = " ".join(capsys.readouterr().err.split())
    assert "interrupted: the data and every answer bought are kept in" in err


def test_a_demo_whose_digits_manifest_was_damaged_says_how_to_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`data/digits/dataset.json` of an earlier demo cut short or edited by hand: every
    rerun said the folder "was not written by vlm-distill (no dataset.json ...)", which
    it was and which has one, and not what to do. It is still not replaced (a damaged
    file cannot tell the demo's digits from a user's images)."""
    work = tmp_path / "demo"
    data = work / "data" / "digits"
    assert main(["data", "make-digits", str(data), "--per-class", "2"]) == 0
    (data / "dataset.json").write_text('{"name": "dig')
    assert main(_budget_stopped_demo(work)) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "dataset.json does not read as a `data make-*` build's" in err
    assert "move it aside (or delete it) and run again" in err
    assert "no dataset.json" not in err
    assert len(list((data / "rotated").rglob("*.png"))) == 10 * 2  # nothing deleted

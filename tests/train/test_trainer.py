"""End-to-end training on real PNGs + a real EmbeddingStore: ADiP, ERM, KD, zero-shot,
checkpoints and resume, refusals, and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from distill.cli import main
from distill.data import scan
from distill.train.config import TrainConfig
from distill.train.targets import find_store
from distill.train.trainer import Progress, train
from vlmclient.errors import ConfigurationError

from .conftest import TEACHER, make_store

STUDENT = "mobilenetv3_small_050"


def _cfg(data: Path, cache: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(data), cache=str(cache), teacher=TEACHER, out=str(out), student=STUDENT,
        pretrained=False, steps_align=3, steps_distill=3, steps=3, image_size=32,
        batch_per_domain=4, eval_every=2, test_domains=("dom3",), swad_bn_steps=2,
        threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def test_adip_end_to_end_writes_run_folder(tiny_data: Path, tiny_cache: Path, tmp_path: Path):
    events: list[Progress] = []
    m = train(_cfg(tiny_data, tiny_cache, tmp_path / "run"), progress=events.append)
    out = tmp_path / "run"
    for name in ("config.json", "log.jsonl", "evals.jsonl", "metrics.json", "run.json",
                 "model.safetensors", "checkpoint"):
        assert (out / name).exists(), name
    assert set(m["id"]) == {"dom1", "dom2"} and set(m["ood"]) == {"dom3"}
    assert m["teacher_zeroshot"]["mean_ood"] == 1.0  # the fake teacher is separable
    assert m["id"]["dom1"]["n"] == round(18 * 0.2)
    log = _log(out)
    assert [(r["stage"], r["step"]) for r in log] == [
        ("align", 0), ("align", 1), ("align", 2), ("distill", 0), ("distill", 1), ("distill", 2)
    ]
    assert {"loss", "image", "text", "lr", "time"} <= set(log[0])
    assert log[0]["loss"] == pytest.approx(0.5 * log[0]["image"] + 0.5 * log[0]["text"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train_domains"] == ["dom1", "dom2"] and cfg["channels_last"] is True
    assert cfg["store"].endswith("s1")
    kinds = {e.event for e in events}
    assert {"start", "step", "eval", "stage_end", "done"} <= kinds
    assert json.loads((out / "metrics.json").read_text())["mean_ood"] == m["mean_ood"]


@pytest.mark.parametrize("method,terms", [("erm", {"loss", "ce"}), ("kd", {"loss", "ce", "kl"})])
def test_baselines_run_through_the_same_loop(tiny_data, tiny_cache, tmp_path, method, terms):
    m = train(_cfg(tiny_data, tiny_cache, tmp_path / method, method=method, select="last"))
    log = _log(tmp_path / method)
    assert len(log) == 3 and {r["stage"] for r in log} == {method}
    assert terms <= set(log[0])
    assert m["stages"][0]["selected"] == "last"
    # scored on every image of the held-out domain (3 classes x 6), as a count of hits
    ood = m["ood"]["dom3"]
    assert ood["n"] == 18 and (ood["acc"] * 18) == pytest.approx(round(ood["acc"] * 18))
    assert m["mean_ood"] == ood["acc"]


def test_zeroshot_needs_no_training(tiny_data, tiny_cache, tmp_path):
    m = train(_cfg(tiny_data, tiny_cache, tmp_path / "zs", method="zeroshot"))
    assert m["mean_id"] == 1.0 and m["mean_ood"] == 1.0
    assert not (tmp_path / "zs" / "log.jsonl").exists()


def test_swad_averages_and_reports(tiny_data, tiny_cache, tmp_path):
    m = train(_cfg(tiny_data, tiny_cache, tmp_path / "swad", method="erm", swad=True,
                   steps=5, eval_every=1, freeze_bn=False))
    note = m["stages"][0]
    assert note["selected"] == "swad" and "converged" in note["swad"]
    assert note["bn_batches"] == 2
    # BatchNorm frozen (the default for a pretrained student): nothing to re-estimate
    m = train(_cfg(tiny_data, tiny_cache, tmp_path / "swad-frozen", method="erm", swad=True,
                   steps=5, eval_every=1, freeze_bn=True))
    assert m["stages"][0]["selected"] == "swad" and "bn_batches" not in m["stages"][0]


def test_a_stage_ends_when_its_swad_valley_dies(tiny_data, tiny_cache, tmp_path, monkeypatch):
    """As the official trainer does: once the valley is dead no later step can enter the
    average, so the stage stops (it used to train on to its last step for nothing)."""
    import distill.train.trainer as trainer_module
    from distill.train.swad import Average, LossValley

    class DiesAtSecondEvaluation(LossValley):
        def update_and_evaluate(self, segment: Average, val_loss: float) -> None:
            super().update_and_evaluate(segment, val_loss)
            if len(self.converge_q) == 2 and not self.dead_valley:
                self.dead_valley, self.dead_at_step = True, segment.end_step

    monkeypatch.setattr(trainer_module, "LossValley", DiesAtSecondEvaluation)
    out = tmp_path / "dies"
    m = train(_cfg(tiny_data, tiny_cache, out, method="adip", swad=True, steps_align=8,
                   steps_distill=8, eval_every=2))
    for note in m["stages"]:  # evaluations at steps 0 and 2: dead at 2, 3 steps run
        assert note["swad"]["dead_valley"] and note["swad"]["dead_at_step"] == 2
    for stage in ("align", "distill"):
        steps = [r["step"] for r in _log(out) if r.get("stage") == stage and "loss" in r]
        assert steps == [0, 1, 2], stage


def test_align_stops_when_its_loss_settles_and_reports_it(tiny_data, tiny_cache, tmp_path):
    events: list[Progress] = []
    m = train(_cfg(tiny_data, tiny_cache, tmp_path / "align", method="adip",
                   steps_align=400, steps_distill=2, eval_every=1000, align_window=5,
                   align_min_delta=0.5), progress=events.append)
    # the progress bar ends at the steps run, not the stage's 400 (it jumped to 400/400)
    [end] = [(e.step, e.total) for e in events if e.event == "stage_end" and e.stage == "align"]
    assert end == (10, 400)
    align = m["stages"][0]
    # a 0.5 improvement per window is impossible for a cosine loss: it stops after 2 windows
    assert align["align"]["converged"] and align["align"]["steps_run"] == 10
    assert 0.0 < align["proj_cos_to_init"] < 1.0
    lines = (tmp_path / "align" / "log.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines if json.loads(x)["stage"] == "align"]
    assert steps == list(range(10))
    m = train(_cfg(tiny_data, tiny_cache, tmp_path / "align-all", method="adip",
                   steps_align=12, steps_distill=2, eval_every=1000, align_min_delta=0.0))
    assert "align" not in m["stages"][0]


class _Crash(Exception):
    pass


def _crash_then_resume(cfg: TrainConfig, out: Path, when) -> dict:
    """Train ``cfg`` into ``out`` until ``when(progress)`` holds (a crash), then ``--resume``
    it to the end; the resumed run's metrics."""

    def crash(p: Progress) -> None:
        if when(p):
            raise _Crash

    cfg_b = cfg.model_copy(update={"out": str(out)})
    with pytest.raises(_Crash):
        train(cfg_b, progress=crash)
    return train(cfg_b.model_copy(update={"resume": True}))


def _crash_in_distill(cfg: TrainConfig) -> None:
    """Train ``cfg`` until its first Distill step, then crash (a checkpoint is left)."""

    def crash(p: Progress) -> None:
        if p.event == "step" and p.stage == "distill" and p.step == 1:
            raise _Crash

    with pytest.raises(_Crash):
        train(cfg, progress=crash)


def _crashed_run(tiny_data: Path, tiny_cache: Path, out: Path) -> TrainConfig:
    """A run stopped at distill step 2, its last checkpoint at distill step 1."""

    def crash(p: Progress) -> None:
        if p.event == "step" and p.stage == "distill" and p.step == 2:
            raise _Crash

    cfg = _cfg(tiny_data, tiny_cache, out, steps_distill=4, eval_every=1)
    with pytest.raises(_Crash):
        train(cfg, progress=crash)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert (state["stage"], state["step"]) == ("distill", 1)
    return cfg


def test_resume_continues_at_the_checkpointed_step(tiny_data, tiny_cache, tmp_path):
    out = tmp_path / "crash"
    cfg = _crashed_run(tiny_data, tiny_cache, out)
    with pytest.raises(ConfigurationError, match="--resume"):
        train(cfg)
    events: list[Progress] = []
    train(cfg.model_copy(update={"resume": True}), progress=events.append)
    starts = [e for e in events if e.event == "start"]
    assert [(e.stage, e.step) for e in starts] == [("distill", 1)]
    steps = [(r["stage"], r["step"]) for r in _log(out)]
    assert steps == [("align", i) for i in range(3)] + [("distill", i) for i in range(4)]


def test_resumed_run_matches_uninterrupted_run(tiny_data, tiny_cache, tmp_path):
    """Same seed, same stream: a crash + resume ends with the same losses."""
    cfg = _cfg(tiny_data, tiny_cache, tmp_path / "a", method="erm", steps=4, eval_every=1,
               select="last")
    train(cfg)
    _crash_then_resume(cfg, tmp_path / "b", lambda p: p.event == "step" and p.step == 3)
    la, lb = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert [r["step"] for r in lb] == [0, 1, 2, 3]
    assert [r["loss"] for r in lb] == pytest.approx([r["loss"] for r in la], rel=1e-4)


def test_refuses_without_store_or_with_wrong_teacher(tiny_data, tmp_path):
    empty = tmp_path / "empty-cache"
    with pytest.raises(ConfigurationError, match="vlm-distill harvest"):
        train(_cfg(tiny_data, empty, tmp_path / "r1"))
    cache = tmp_path / "cache"
    make_store(tiny_data, cache, teacher="other:teacher")
    with pytest.raises(ConfigurationError, match="no cached teacher embeddings"):
        train(_cfg(tiny_data, cache, tmp_path / "r2"))
    store = cache / "stores" / "s1"
    with pytest.raises(ConfigurationError, match="other:teacher"):
        train(_cfg(tiny_data, cache, tmp_path / "r3", store=str(store)))


def test_refuses_a_store_of_another_dataset(tiny_data, tmp_path):
    from .conftest import make_data

    other = make_data(tmp_path / "other", per_class=2)
    cache = tmp_path / "cache"
    make_store(other, cache)
    with pytest.raises(ConfigurationError, match="no cached teacher embeddings"):
        train(_cfg(tiny_data, cache, tmp_path / "r1"))
    with pytest.raises(ConfigurationError, match="lacks teacher embeddings"):
        train(_cfg(tiny_data, cache, tmp_path / "r2", store=str(cache / "stores" / "s1")))


def test_find_store_picks_teacher_and_fingerprint(tiny_data, tmp_path):
    cache = tmp_path / "cache"
    make_store(tiny_data, cache, teacher="x:a", slug="a")
    make_store(tiny_data, cache, teacher=TEACHER, slug="b")
    make_store(tiny_data, cache, teacher=TEACHER, slug="c", fingerprint="0" * 64)
    assert find_store(cache, TEACHER, scan(tiny_data)).name == "b"


def test_find_store_prefers_the_store_of_the_datasets_own_folder(tiny_data, tmp_path):
    """Two copies of one dataset (same ids, labels, domains: one fingerprint) harvested
    into one cache: the newer store was taken for both, so the older copy was refused as
    "replaced or edited since" (until 2026-12-06)."""
    import shutil

    cache = tmp_path / "cache"
    copies = [tmp_path / name for name in ("first", "second", "third")]
    for copy in copies:
        shutil.copytree(tiny_data, copy)
    for slug, copy, created in (("a", copies[0], 1.0), ("b", copies[1], 2.0)):
        meta_path = make_store(copy, cache, slug=slug) / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta.update(dataset_root=str(copy), created=created)
        meta_path.write_text(json.dumps(meta))
    assert find_store(cache, TEACHER, scan(copies[0])).name == "a"
    assert find_store(cache, TEACHER, scan(copies[1])).name == "b"
    assert find_store(cache, TEACHER, scan(copies[2])).name == "b"  # elsewhere: the newest


def test_a_class_file_given_to_train_only_is_named_as_the_one_to_drop(tiny_data, tmp_path):
    """The store was harvested without a class file (the sorted class folders); train was
    given one in another order. The message said "pass --class-file FILE, the class file
    the harvest was given", which the user had just done (until 2026-12-08)."""
    from .conftest import CLASSES

    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(reversed(CLASSES)) + "\n")
    cache = tmp_path / "cache"
    make_store(tiny_data, cache)
    kw = dict(method="erm", steps=2, holdout_fraction=0.0)
    with pytest.raises(ConfigurationError, match="drop --class-file") as refused:
        train(_cfg(tiny_data, cache, tmp_path / "r0", class_file=str(classes), **kw))
    assert "the class file the harvest was given" not in str(refused.value)


def test_a_store_harvested_with_an_unsorted_class_file_trains_with_class_file(
    tiny_data, tmp_path, capsys
):
    """`harvest --class-file` fixes the classes' order; train could not be given it (its
    scan sorted the class folders), so the store was never found and the message said
    "run `vlm-distill harvest ...` first", which gives the same store again (until
    2026-12-06)."""
    from .conftest import CLASSES

    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(reversed(CLASSES)) + "\n")
    cache = tmp_path / "cache"
    make_store(tiny_data, cache, class_file=classes)
    kw = dict(method="erm", steps=2, holdout_fraction=0.0)
    with pytest.raises(ConfigurationError, match="--class-file") as refused:
        train(_cfg(tiny_data, cache, tmp_path / "r0", **kw))
    assert "harvest first" not in str(refused.value)
    assert "class file" in str(refused.value)
    out = tmp_path / "r1"
    metrics = train(_cfg(tiny_data, cache, out, class_file=str(classes), **kw))
    assert metrics["method"] == "erm"
    info = json.loads((out / "run.json").read_text())
    assert info["class_names"] == list(reversed(CLASSES))
    assert json.loads((out / "config.json").read_text())["class_file"] == str(classes)
    # eval reads the data with the run's class list: the same split as training
    assert main(["eval", str(out), str(tiny_data), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["same_dataset"] is True
    assert res["mean_ood"] == pytest.approx(metrics["mean_ood"])
    # the flag on the command line, as the message says
    rc = main(["train", str(tiny_data), "--cache", str(cache), "--teacher", TEACHER,
               "--student", STUDENT, "--no-pretrained", "--method", "erm", "--steps", "1",
               "--out", str(tmp_path / "r2"), "--test-domains", "dom3", "--image-size", "32",
               "--batch-per-domain", "2", "--holdout-fraction", "0", "--threads", "1",
               "--class-file", str(classes), "--json"])
    assert rc == 0


def test_eval_of_a_class_file_run_says_which_images_it_left_out(tiny_data, tmp_path, capsys):
    """A run trained with --class-file on two of the three classes, evaluated on data
    with all three (a folder, or a manifest): the third class's images were left out of
    every count without a word (until 2026-12-06). Now the JSON has them by class, and
    the table (or stderr, with --json) says how many of which class were not scored."""
    import shutil

    from .conftest import CLASSES

    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES[:2]) + "\n")
    cache = tmp_path / "cache"
    make_store(tiny_data, cache, class_file=classes)
    out = tmp_path / "run"
    train(_cfg(tiny_data, cache, out, class_file=str(classes), method="erm", steps=1,
               holdout_fraction=0.0))  # fmt: skip
    other = tmp_path / "other.csv"  # other data: a manifest, its own domain names
    rows = [f"{s.path},{CLASSES[s.label]},d{i % 2}" for i, s in enumerate(scan(tiny_data).samples)]
    other.write_text("path,label,domain\n" + "\n".join(rows) + "\n")
    n_third = sum(r.split(",")[1] == CLASSES[2] for r in rows)
    assert n_third == 18
    # scored: the training data's OOD domain (no hold-out), every other image kept
    for data, scored in ((tiny_data, 12), (other, 36)):
        assert main(["eval", str(out), str(data)]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "18 files of 1 class the run was not trained on" in text
        assert f"{CLASSES[2]} (18)" in text
        assert main(["eval", str(out), str(data), "--json"]) == 0
        got = capsys.readouterr()
        res = json.loads(got.out.strip().splitlines()[-1])
        assert res["classes_left_out"] == {CLASSES[2]: 18}
        assert sum(v["n"] for v in (*res["id"].values(), *res["ood"].values())) == scored
        assert f"{CLASSES[2]} (18)" in got.err
    # data of the left-out class alone: refused (exit 2), saying which classes it has
    alone = tmp_path / "alone"
    shutil.copytree(tiny_data / "dom1" / CLASSES[2], alone / CLASSES[2])
    assert main(["eval", str(out), str(alone)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"it has {CLASSES[2]} (6)" in err and CLASSES[0] in err


def test_eval_does_not_count_left_out_classes_as_unreadable_files(tiny_data, tmp_path, capsys):
    """eval of a --class-file run on data with more classes: besides the note on the
    classes left out, it said "N files of DATA could not be used" and listed, in
    `files_skipped`, one entry per class folder (or manifest row) of those classes: the
    same images counted twice, folders called files (until 2026-12-07). `files_skipped`
    is for files the scan cannot read, as the README says."""
    from .conftest import CLASSES

    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES[:2]) + "\n")
    cache = tmp_path / "cache"
    make_store(tiny_data, cache, class_file=classes)
    out = tmp_path / "run"
    train(_cfg(tiny_data, cache, out, class_file=str(classes), method="erm", steps=1,
               holdout_fraction=0.0))  # fmt: skip
    other = tmp_path / "other.csv"  # a manifest too: its rows of the third class
    rows = [f"{s.path},{CLASSES[s.label]},d{i % 2}" for i, s in enumerate(scan(tiny_data).samples)]
    other.write_text("path,label,domain\n" + "\n".join(rows) + "\n")
    for data in (tiny_data, other):
        assert main(["eval", str(out), str(data)]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "18 files of 1 class the run was not trained on" in text
        assert "could not be used" not in text
        assert main(["eval", str(out), str(data), "--json"]) == 0
        got = capsys.readouterr()
        res = json.loads(got.out.strip().splitlines()[-1])
        assert res["classes_left_out"] == {CLASSES[2]: 18}
        assert res["files_skipped"] == []
        assert "could not be used" not in got.err


def test_cli_train_then_eval(tiny_data, tiny_cache, tmp_path, capsys):
    out = tmp_path / "cli"
    train_args = ["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
                  "--student", STUDENT, "--no-pretrained", "--method", "adip", "--out", str(out),
                  "--test-domains", "dom3", "--steps-align", "2", "--steps-distill", "2",
                  "--image-size", "32", "--batch-per-domain", "4", "--threads", "1"]
    assert main(train_args) == 0
    text = capsys.readouterr().out
    assert "dom3" in text and "teacher zero-shot" in text
    assert "align: 2/2" in text and "distill: 2/2" in text  # plain progress lines
    rc = main(["eval", str(out), str(tiny_data), "--json",
               "--store", str(tiny_cache / "stores" / "s1")])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    # Re-evaluating the saved student gives the numbers the trainer reported.
    assert res["mean_ood"] == pytest.approx(metrics["mean_ood"])
    assert res["mean_id"] == pytest.approx(metrics["mean_id"])
    assert res["teacher_zeroshot"]["mean_ood"] == 1.0
    assert (out / "eval.json").is_file()
    assert res["teacher_zeroshot"]["teacher"] == TEACHER
    # another teacher's store of the same data: its zero-shot was shown as the run's
    # teacher's, exit 0, until 2026-12-06
    other_store = make_store(tiny_data, tmp_path / "other-cache", teacher="x:other")
    assert main(["eval", str(out), str(tiny_data), "--store", str(other_store)]) == 2
    assert "holds teacher 'x:other'" in capsys.readouterr().err
    # data with other classes is a usage error: one line, exit 2 (it was exit 1, "failed")
    other = tmp_path / "other"
    for cls in ("a_circle", "z_other"):
        (other / "dom1" / cls).mkdir(parents=True)
        (other / "dom1" / cls / "0.png").hardlink_to(tiny_data / "dom1" / "a_circle" / "000.png")
    assert main(["eval", str(out), str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "this data's classes are not the run's" in err[0]
    # it names what differs (both lists were cut to their first five names: alike, 2026-12-08)
    assert "the data has 1 class the run was not trained on: 'z_other'" in err[0], err
    # the teacher's zero-shot into the trained run's folder replaced its config.json and
    # metrics.json (weights and run.json still ADiP's) until 2026-12-06
    before = (out / "metrics.json").read_bytes()
    rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
               "--method", "zeroshot", "--out", str(out), "--test-domains", "dom3"])
    assert rc == 2 and "holds a trained run" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before
    # its checkpoint/ deleted (to save space, or left out of a copy), the finished run was
    # trained again from step 0 over it without a word (--resume: a warning that nothing
    # was resumed), its metrics, student and logs replaced, until 2026-12-07
    import shutil

    shutil.rmtree(out / "checkpoint")
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    for resume in ([], ["--resume"]):
        assert main([*train_args, *resume]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds a finished run (metrics.json" in err[0], err
        assert "another --out" in err[0] and f"remove {out}" in err[0], err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # nothing touched


def test_eval_on_a_training_manifest_with_unlabelled_rows_scores_training_s_hold_out(
    tiny_data, tmp_path, capsys
):
    """With unlabelled rows in a source domain, `eval RUN DATA` split the hold-out before
    dropping them and the trainer after: eval's "ID" was other images (some the student
    trained on), while ``same_dataset: true`` hid the note saying so (until 2026-12-06)."""
    import shutil

    from .conftest import CLASSES

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    shapes = scan(tiny_data)
    rows = ["path,label,domain"]
    rows += [f"{s.id},{CLASSES[s.label]},{s.domain}" for s in shapes.samples]  # type: ignore[index]
    (data / "blank").mkdir()
    for i, s in enumerate(shapes.in_domains(["dom1"]).samples[:6]):  # other files, no labels
        shutil.copy(s.path, data / "blank" / f"{i:02d}.png")
        rows.append(f"blank/{i:02d}.png,,dom1")
    manifest = data / "m.csv"
    manifest.write_text("\n".join(rows) + "\n")
    cache = tmp_path / "cache"
    make_store(manifest, cache)
    out = tmp_path / "run"
    rc = main(["train", str(manifest), "--cache", str(cache), "--teacher", TEACHER,
               "--student", STUDENT, "--no-pretrained", "--method", "erm", "--out", str(out),
               "--test-domains", "dom3", "--steps", "1", "--image-size", "32",
               "--batch-per-domain", "2", "--threads", "1"])
    assert rc == 0
    capsys.readouterr()
    assert main(["eval", str(out), str(manifest), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert res["same_dataset"] is True
    assert {d: r["n"] for d, r in res["id"].items()} == {
        d: r["n"] for d, r in metrics["id"].items()
    } == {"dom1": round(18 * 0.2), "dom2": round(18 * 0.2)}
    assert res["mean_id"] == pytest.approx(metrics["mean_id"])


def test_cli_usage_errors(tiny_data, tiny_cache, tmp_path, capsys):
    rc = main(["train", str(tiny_data), "--teacher", TEACHER, "--out", str(tmp_path / "x")])
    assert rc == 2 and "--cache" in capsys.readouterr().err
    rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
               "--out", str(tmp_path / "y"), "--test-domains", "nope", "--student", STUDENT])
    assert rc == 2 and "unknown domain" in capsys.readouterr().err


def _running_means(out: Path) -> list:
    from safetensors.torch import load_file

    state = load_file(str(out / "model.safetensors"))
    return [v for k, v in state.items() if k.endswith("running_mean")]


def test_a_random_student_trains_its_batchnorm(tiny_data, tiny_cache, tmp_path):
    # A randomly initialised student's BatchNorm statistics are placeholders (mean 0, var 1):
    # frozen, BatchNorm is a fixed affine map and the network trains without normalisation.
    # By default BN is frozen only for a student that starts from weights.
    args = ["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
            "--student", STUDENT, "--no-pretrained", "--method", "erm", "--steps", "2",
            "--test-domains", "dom3", "--image-size", "32", "--batch-per-domain", "4",
            "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "auto")]) == 0
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["freeze_bn"] is False
    assert all(m.abs().sum() > 0 for m in _running_means(tmp_path / "auto"))
    assert main([*args, "--out", str(tmp_path / "frozen"), "--freeze-bn"]) == 0
    assert json.loads((tmp_path / "frozen" / "config.json").read_text())["freeze_bn"] is True
    assert all(m.abs().sum() == 0 for m in _running_means(tmp_path / "frozen"))


def test_bn_train_stage_trains_batchnorm_in_that_adip_stage_only(tiny_data, tiny_cache,
                                                                 tmp_path, capsys):
    """Issue 12 item 6 ablates BatchNorm's mode per stage: ``--bn-train-stage align`` trains
    the statistics in Align alone (Distill keeps them), ``distill`` in Distill alone; the
    other stage is frozen even with --freeze-bn. ERM and KD have no stages to name."""
    args = ["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
            "--student", STUDENT, "--no-pretrained", "--freeze-bn", "--method", "adip",
            "--test-domains", "dom3", "--image-size", "32", "--batch-per-domain", "4",
            "--threads", "1", "--select", "last"]
    moved = {}
    for stage in ("align", "distill"):
        for only in ("align", "distill"):
            out = tmp_path / f"{only}-in-{stage}"
            steps = ["--steps-align", "2" if stage == "align" else "0",
                     "--steps-distill", "2" if stage == "distill" else "0"]
            assert main([*args, *steps, "--bn-train-stage", only, "--out", str(out)]) == 0
            moved[only, stage] = any(m.abs().sum() > 0 for m in _running_means(out))
    assert moved == {("align", "align"): True, ("align", "distill"): False,
                     ("distill", "align"): False, ("distill", "distill"): True}
    capsys.readouterr()
    rc = main([*args, "--method", "erm", "--steps", "1", "--bn-train-stage", "align",
               "--out", str(tmp_path / "erm")])
    assert rc == 2 and "--bn-train-stage names one of ADiP's two stages" in " ".join(
        capsys.readouterr().err.split())


def test_a_pretrained_student_keeps_its_batchnorm_frozen_by_default(tiny_data, tiny_cache,
                                                                     tmp_path):
    from distill.train.prepare import resolve
    from distill.train.student import starts_from_weights

    assert starts_from_weights("tf_efficientnet_lite0", pretrained=True)
    assert not starts_from_weights("tf_efficientnet_lite0", pretrained=False)
    assert starts_from_weights(STUDENT, pretrained=False, weights_file="w.safetensors")
    cfg = _cfg(tiny_data, tiny_cache, tmp_path / "r", student="tf_efficientnet_lite0",
               pretrained=True)
    assert cfg.freeze_bn is None
    split = SimpleNamespace(train_domains=("dom1", "dom2"), test_domains=("dom3",))
    targets = SimpleNamespace(path=tiny_cache / "stores" / "s1", views=1)
    fmt = SimpleNamespace(channels_last=True)
    assert resolve(cfg, split, targets, fmt).freeze_bn is True  # type: ignore[arg-type]
    off = cfg.model_copy(update={"freeze_bn": False})
    assert resolve(off, split, targets, fmt).freeze_bn is False  # type: ignore[arg-type]


def test_a_student_without_packaged_weights_says_it_starts_random(tiny_data, tiny_cache,
                                                                   tmp_path, capsys):
    # Pretrained weights are asked for by default; a student with none packaged started
    # from random init without a word, and config.json recorded pretrained: true.
    args = ["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
            "--student", STUDENT, "--method", "erm", "--steps", "1", "--test-domains",
            "dom3", "--image-size", "32", "--batch-per-domain", "2", "--threads", "1",
            "--json"]
    assert main([*args, "--out", str(tmp_path / "asked")]) == 0
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and f"--student {STUDENT} starts from random init" in err
    assert "--no-pretrained" in err and "--weights" in err
    config = json.loads((tmp_path / "asked" / "config.json").read_text())
    assert config["pretrained"] is False and config["freeze_bn"] is False
    # meant: no note
    assert main([*args, "--out", str(tmp_path / "meant"), "--no-pretrained"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_the_tag_of_the_packaged_weights_trains_as_the_untagged_name(tiny_data, tiny_cache,
                                                                      tmp_path):
    from distill.train.prepare import resolve

    split = SimpleNamespace(train_domains=("dom1", "dom2"), test_domains=("dom3",))
    targets = SimpleNamespace(path=tiny_cache / "stores" / "s1", views=1)
    fmt = SimpleNamespace(channels_last=True)
    cfg = _cfg(tiny_data, tiny_cache, tmp_path / "r", student="tf_efficientnet_lite0.in1k",
               pretrained=True)
    resolved = resolve(cfg, split, targets, fmt)  # type: ignore[arg-type]
    assert resolved.freeze_bn is True and resolved.pretrained is True


def test_a_run_recorded_pretrained_without_packaged_weights_still_resumes(tmp_path):
    # Runs written before config.json recorded what happened say pretrained: true for a
    # student that started from random init; resuming one is the same recipe.
    from distill.train.checkpoints import check_same_settings

    cfg = TrainConfig(data="d", cache="c", teacher=TEACHER, out=str(tmp_path), student=STUDENT,
                      pretrained=False)
    saved = cfg.model_dump(mode="json")
    (tmp_path / "config.json").write_text(json.dumps({**saved, "pretrained": True}))
    check_same_settings(tmp_path, saved)
    lite0 = cfg.model_copy(update={"student": "tf_efficientnet_lite0"}).model_dump(mode="json")
    (tmp_path / "config.json").write_text(json.dumps({**lite0, "pretrained": True}))
    with pytest.raises(ConfigurationError, match="pretrained: True then, False now"):
        check_same_settings(tmp_path, lite0)


def _first_adip_logs(tiny_data, tiny_cache, tmp_path, flag: str, kinds: tuple[str, ...]):
    """One Align step per value of ``flag``; each run's config records it; first log rows."""
    first: dict[str, dict] = {}
    key = flag.removeprefix("--").replace("-", "_")
    for kind in kinds:
        out = tmp_path / kind
        rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
                   "--student", STUDENT, "--no-pretrained", "--method", "adip",
                   "--out", str(out), "--test-domains", "dom3", "--steps-align", "1",
                   "--steps-distill", "0", "--image-size", "32", "--batch-per-domain", "4",
                   "--threads", "1", flag, kind])
        assert rc == 0
        assert json.loads((out / "config.json").read_text())[key] == kind
        first[kind] = _log(out)[0]
    return first


def test_text_loss_flag_reaches_the_text_term(tiny_data, tiny_cache, tmp_path):
    first = _first_adip_logs(tiny_data, tiny_cache, tmp_path, "--text-loss",
                             ("cosine", "softmax"))
    # Same student, same batch: the image term agrees; the cosine text term is in [-1, 1],
    # the softmax one is a cross-entropy (> 0)
    assert first["softmax"]["image"] == pytest.approx(first["cosine"]["image"])
    assert -1.0 <= first["cosine"]["text"] <= 1.0
    assert first["softmax"]["text"] > 0.0


def test_image_targets_flag_reaches_the_image_term(tiny_data, tiny_cache, tmp_path):
    first = _first_adip_logs(tiny_data, tiny_cache, tmp_path, "--image-targets",
                             ("all", "view0", "class-mean"))
    # Same student, same batch (views 0 and 1 of a 2-view store): the text term agrees,
    # the image term differs because view 1's targets are left out (view0) or every
    # target is its class's prototype (class-mean)
    for kind in ("view0", "class-mean"):
        assert first[kind]["text"] == pytest.approx(first["all"]["text"])
        assert first[kind]["image"] != pytest.approx(first["all"]["image"])


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_a_resumed_swad_stage_ends_with_the_uninterrupted_average(
    tiny_data, tiny_cache, tmp_path, freeze_bn
):
    """The loss valley (its segments, whether and where it converged, the average so far)
    is part of the checkpoint: a run killed after the valley formed and resumed ends with
    the same averaged weights as one never killed. Before, a resumed stage started a new
    valley and averaged only the steps after the resume."""
    import torch

    cfg = _cfg(tiny_data, tiny_cache, tmp_path / "a", method="erm", swad=True, steps=8,
               eval_every=1, swad_n_converge=1, swad_n_tolerance=2,
               swad_tolerance_ratio=100.0, freeze_bn=freeze_bn)
    ma = train(cfg)
    assert ma["stages"][0]["swad"]["converge_step"] == 0  # formed before the crash below

    mb = _crash_then_resume(cfg, tmp_path / "b", lambda p: p.event == "step" and p.step == 5)
    assert mb["stages"][0]["swad"] == ma["stages"][0]["swad"]
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_swad_stage_resumed_at_its_end_re_estimates_batchnorm_on_the_same_batches(
    tiny_data, tiny_cache, tmp_path, num_workers
):
    """Stopped after the checkpoint of a SWAD stage's last step (Ctrl-C while BatchNorm is
    re-estimated over --swad-bn-steps batches), the resumed run re-estimates it on the
    batches the uninterrupted run used. Before, those were the training iterator's next
    ones: without workers the uninterrupted run started one batch earlier than the resumed
    one (which took no step), so its running statistics differed."""
    import torch

    cfg = _cfg(tiny_data, tiny_cache, tmp_path / "a", method="erm", swad=True, steps=4,
               eval_every=1, swad_n_converge=1, swad_n_tolerance=2,
               swad_tolerance_ratio=100.0, freeze_bn=False, num_workers=num_workers)
    ma = train(cfg)
    mb = _crash_then_resume(cfg, tmp_path / "b", lambda p: p.event == "eval" and p.step == 4)
    assert mb["stages"][0]["bn_batches"] == ma["stages"][0]["bn_batches"] == 2
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("crash_event", ["step", "eval"])
def test_a_resumed_align_stage_stops_where_the_uninterrupted_one_does(
    tiny_data, tiny_cache, tmp_path, crash_event
):
    """Align's stopping rule keeps its loss windows across a resume (they are in the
    checkpoint), and the stage note still measures how far P moved from where Align
    started, not from where the resume picked it up. ``eval``: killed right after the
    checkpoint of the step where the rule stopped Align, the resumed run trains no more
    Align steps."""
    cfg = _cfg(tiny_data, tiny_cache, tmp_path / "a", method="adip", steps_align=12,
               steps_distill=2, eval_every=1, align_window=2, align_min_delta=1e9)
    ma = train(cfg)
    align = ma["stages"][0]
    assert align["align"]["converged"] and align["align"]["steps_run"] == 4

    at = 3 if crash_event == "step" else 4  # 4: the eval after Align's last step
    mb = _crash_then_resume(cfg, tmp_path / "b", lambda p: p.event == crash_event
                            and p.stage == "align" and p.step == at)
    assert mb["stages"][0]["align"] == align["align"]
    assert [r["step"] for r in _log(tmp_path / "b") if r["stage"] == "align"] == [0, 1, 2, 3]
    assert mb["stages"][0]["proj_cos_to_init"] == pytest.approx(align["proj_cos_to_init"],
                                                                rel=1e-5)


def test_proj_init_lstsq_starts_align_at_a_lower_image_loss(tiny_data, tiny_cache, tmp_path):
    """``--proj-init lstsq`` fits P before Align's first step: that step's image term (its
    loss is taken before the step moves P) is lower than from nn.Linear's random init on
    the same batch; the text term is not what the fit aims at. The note says how P started."""
    first = _first_adip_logs(tiny_data, tiny_cache, tmp_path, "--proj-init",
                             ("random", "lstsq"))
    assert first["lstsq"]["image"] < first["random"]["image"] - 0.3
    notes = {kind: json.loads((tmp_path / kind / "metrics.json").read_text())["stages"][0]
             for kind in ("random", "lstsq")}
    assert notes["random"]["proj_init"] == "random" and "proj_fit" not in notes["random"]
    fit = notes["lstsq"]["proj_fit"]
    assert notes["lstsq"]["proj_init"] == "lstsq"
    # 50 batches of 4 images x 2 source domains, every row (image_targets all)
    assert (fit["batches"], fit["rows"], fit["ridge"]) == (50, 400, 1e-3)
    assert fit["image_cos"] > fit["image_cos_random"] + 0.3
    assert fit["image_cos_random"] == pytest.approx(-first["random"]["image"], abs=0.3)


def _p(out: Path) -> tuple:
    w = _weights(out)
    return w["proj.weight"], w["proj.bias"]


def test_the_default_proj_init_is_nn_linear_s_seeded_init(tiny_data, tiny_cache, tmp_path):
    """No step trained: the run's P is where it started. By default that is nn.Linear's own
    init right after the seeded backbone, as before proj_init existed; lstsq moves it."""
    import torch
    from torch import nn

    from distill.train.student import create_backbone

    cfg = _cfg(tiny_data, tiny_cache, tmp_path / "random", steps_align=0, steps_distill=0,
               seed=3)
    assert cfg.proj_init == "random"
    train(cfg)
    torch.manual_seed(3)
    backbone = create_backbone(STUDENT, pretrained=False)
    width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    linear = nn.Linear(width, 16)  # the fake teacher's DIM
    weight, bias = _p(tmp_path / "random")
    assert torch.equal(weight, linear.weight.detach()) and torch.equal(bias, linear.bias.detach())

    train(cfg.model_copy(update={"out": str(tmp_path / "lstsq"), "proj_init": "lstsq"}))
    fitted, _ = _p(tmp_path / "lstsq")
    assert not torch.allclose(fitted, weight)


def test_a_resumed_align_does_not_fit_p_again(tiny_data, tiny_cache, tmp_path, monkeypatch):
    """P is in the checkpoint: a run killed in Align and resumed goes on from it, without a
    second fit, and ends as the uninterrupted run; the note of the fit survives the resume.
    A resume with the other proj_init is refused (two runs, not one)."""
    import torch

    import distill.train.trainer as trainer_module

    cfg = _cfg(tiny_data, tiny_cache, tmp_path / "a", method="adip", steps_align=4,
               steps_distill=1, eval_every=1, proj_init="lstsq", align_min_delta=0.0)
    ma = train(cfg)
    out = tmp_path / "b"
    cfg_b = cfg.model_copy(update={"out": str(out)})

    def crash(p: Progress) -> None:
        if p.event == "step" and p.stage == "align" and p.step == 3:
            raise _Crash

    with pytest.raises(_Crash):
        train(cfg_b, progress=crash)
    with pytest.raises(ConfigurationError, match=r"proj_init: 'lstsq' then, 'random' now"):
        train(cfg_b.model_copy(update={"resume": True, "proj_init": "random"}))

    def no_second_fit(*args, **kwargs):
        raise AssertionError("a resumed Align fitted P again")

    monkeypatch.setattr(trainer_module, "fit_projection", no_second_fit)
    mb = train(cfg_b.model_copy(update={"resume": True}))
    assert mb["stages"][0]["proj_fit"] == ma["stages"][0]["proj_fit"]
    assert mb["stages"][0]["proj_cos_to_init"] == pytest.approx(ma["stages"][0]["proj_cos_to_init"],
                                                                rel=1e-5)
    wa, wb = _weights(tmp_path / "a"), _weights(out)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.slow
def test_kill_9_of_a_swad_run_then_resume_ends_with_the_uninterrupted_weights(
    tiny_data, tiny_cache, tmp_path
):
    """The real CLI, killed with SIGKILL once its loss valley has formed, then `train
    --resume`: the student it writes is the one an uninterrupted run writes."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    import torch

    steps = 30  # (60 until 2026-12-07: the suite's time; the kill comes at step 10 or so)
    args = ["train", str(tiny_data), "--cache", str(tiny_cache),
            "--teacher", TEACHER, "--student", STUDENT, "--no-pretrained", "--method", "erm",
            "--test-domains", "dom3", "--steps", str(steps), "--eval-every", "1",
            "--image-size", "32", "--batch-per-domain", "4", "--threads", "1", "--swad",
            "--swad-n-converge", "1", "--swad-n-tolerance", "2",
            "--swad-tolerance-ratio", "100"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Only the killed run needs a process of its own; the uninterrupted run is the same CLI
    # called in this process while the child runs (a child process costs seconds of torch +
    # timm, and the two runs use both cores), a thread watching the child to kill it.
    proc = subprocess.Popen([sys.executable, "-m", "distill", *args, "--out", str(tmp_path / "b")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "b" / "checkpoint" / "state.json"
    killed_at: list[int] = []

    def kill_at_step_10() -> None:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                step = json.loads(state.read_text())["step"]
            except (OSError, ValueError, KeyError):
                step = 0
            if step >= 10:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at.append(step)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_at_step_10)
    watcher.start()
    try:
        assert main([*args, "--out", str(tmp_path / "a")]) == 0
    finally:
        watcher.join()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert killed_at and killed_at[0] < steps, "the run ended before the kill"
    assert main([*args, "--out", str(tmp_path / "b"), "--resume"]) == 0
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert mb["stages"][0]["swad"] == ma["stages"][0]["swad"]
    assert ma["stages"][0]["swad"]["start_step"] == 0  # the average reaches back past the kill
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=k)


def test_views_beyond_the_store_are_refused_not_capped(tiny_data, tiny_cache, tmp_path, capsys):
    # The store holds 2 views per image; asking for 4 used to train on 2 without a word.
    out = tmp_path / "views"
    rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
               "--student", STUDENT, "--no-pretrained", "--method", "adip", "--out", str(out),
               "--test-domains", "dom3", "--steps-align", "1", "--steps-distill", "1",
               "--image-size", "32", "--batch-per-domain", "4", "--threads", "1",
               "--views", "4"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--views 4" in err and "holds (2)" in err and "harvest" in err
    assert not (out / "checkpoint").exists() and not (out / "metrics.json").exists()


def test_resume_with_other_training_settings_is_refused(tiny_data, tiny_cache, tmp_path,
                                                        capsys):
    # Resuming with another lr used to go on silently: the finished run mixed two learning
    # rates and recorded only the second in config.json and metrics.json.
    out = tmp_path / "run"

    cfg = _cfg(tiny_data, tiny_cache, out, steps_distill=3, eval_every=1, lr=5e-4)
    _crash_in_distill(cfg)
    before = (out / "checkpoint" / "state.json").read_text()
    with pytest.raises(ConfigurationError, match=r"lr: 0.0005 then, 0.001 now"):
        train(cfg.model_copy(update={"resume": True, "lr": 1e-3}))
    rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
               "--student", STUDENT, "--no-pretrained", "--out", str(out), "--resume",
               "--test-domains", "dom3", "--lr", "1e-3", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "other training settings" in err and "lr: 0.0005 then" in err
    assert (out / "checkpoint" / "state.json").read_text() == before  # nothing touched
    # Where files are and how fast it runs may change: the resume goes on to the end.
    metrics = train(cfg.model_copy(update={"resume": True, "eval_batch_size": 7}))
    assert [s["stage"] for s in metrics["stages"]] == ["align", "distill"]
    assert json.loads((out / "config.json").read_text())["lr"] == 5e-4


def _long_cli_run(data: Path, cache: Path, out: Path, *, nohup: bool = False,
                  workers: int = 0, group: bool = False):
    """A real CLI `train` in a child process, returned once its first checkpoint exists
    (``nohup``: started with SIGHUP ignored, as ``nohup`` starts it; ``workers``: its
    ``--num-workers``; ``group``: in a process group of its own, as a shell job is)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [sys.executable, "-m", "distill", "train", str(data), "--cache", str(cache),
            "--teacher", TEACHER, "--student", STUDENT, "--no-pretrained", "--method", "erm",
            "--test-domains", "dom3", "--steps", "100000", "--eval-every", "2",
            "--image-size", "32", "--batch-per-domain", "2", "--threads", "1",
            "--num-workers", str(workers), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    def ignore_hup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=ignore_hup if nohup else None,
                            start_new_session=group)
    state = out / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    while proc.poll() is None and not state.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    return proc


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_says_where_the_checkpoint_is_and_how_to_resume(
    signame, tiny_data, tiny_cache, tmp_path
):
    """The real CLI, stopped after a checkpoint by Ctrl-C (SIGINT) or a scheduler's
    SIGTERM: Ctrl-C used to print only "interrupted", SIGTERM ended it without a word (exit
    -15); both name the checkpoint kept and the flag that continues it."""
    import os
    import signal

    signum = getattr(signal, signame)
    out = tmp_path / "run"
    proc = _long_cli_run(tiny_data, tiny_cache, out)
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err, err
    step = json.loads((out / "checkpoint" / "state.json").read_text())["step"]
    assert f"the checkpoint in {out} (erm: {step} steps done) is kept" in err, err
    assert "with --resume" in err
    if signame == "SIGTERM":
        assert "interrupted by SIGTERM" in err


def test_a_sigterm_to_the_whole_process_group_is_one_message_with_workers(
    tiny_data, tiny_cache, tmp_path
):
    """`timeout`, `systemctl stop` and Slurm's scancel send SIGTERM to every process of the
    job, DataLoader workers (`--num-workers 2`) too: they died of it, and after its
    "interrupted by SIGTERM ..." the trainer printed an "Exception ignored ...
    RuntimeError: DataLoader worker (pid N) is killed by signal: Terminated" traceback.
    The workers leave the stop to the trainer, which ends them."""
    import os
    import signal

    signum, signame = signal.SIGTERM, "SIGTERM"
    out = tmp_path / "run"
    proc = _long_cli_run(tiny_data, tiny_cache, out, workers=2, group=True)
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert f"interrupted by {signame}: the checkpoint in {out}" in err, err
    assert "Traceback" not in err and "killed by signal" not in err, err


def test_a_second_train_into_a_folder_being_trained_is_refused(tiny_data, tiny_cache, tmp_path,
                                                               capsys):
    """Two `train`s into one --out (a second terminal, a job submitted twice) used to write
    each other's checkpoints; the second is refused at once and the first goes on."""
    import os
    import signal

    from distill.train.checkpoints import run_lock

    out = tmp_path / "run"
    proc = _long_cli_run(tiny_data, tiny_cache, out)
    try:
        for extra in ([], ["--resume"]):
            rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher",
                       TEACHER, "--student", STUDENT, "--no-pretrained", "--method", "erm",
                       "--test-domains", "dom3", "--out", str(out), "--threads", "1", *extra])
            assert rc == 2
            assert "being trained into by another process" in capsys.readouterr().err
        assert proc.poll() is None  # the first run is untouched and still training
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.communicate(timeout=120)
    assert proc.returncode == 130
    with run_lock(out):  # free again once the first has stopped
        pass


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (its DataLoader workers), from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def test_dataloader_workers_left_by_a_killed_trainer_do_not_hold_its_run_lock(
    tiny_data, tiny_cache, tmp_path
):
    """Forked DataLoader workers (`--num-workers 2`) shared the trainer's lock on the run
    folder: after a kill -9 of the trainer (the OOM killer, a scheduler) the folder stayed
    locked while they lingered (about 5 s, until they noticed; as long as they were slow or
    stopped), and a `--resume` then was refused as "being trained into by another
    process". The lock is the trainer's alone."""
    import contextlib
    import os
    import signal

    from distill.train.checkpoints import run_lock

    out = tmp_path / "run"
    proc = _long_cli_run(tiny_data, tiny_cache, out, workers=2)
    workers = _children(proc.pid)
    assert len(workers) >= 2, workers
    try:
        for pid in workers:  # lingering workers, deterministically
            os.kill(pid, signal.SIGSTOP)
        proc.kill()
        proc.wait(timeout=60)  # not communicate(): the stopped workers hold its stderr
        with run_lock(out):  # a resume may take it at once
            pass
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=60)


def test_a_train_stopped_in_a_notebook_can_be_resumed_with_workers(
    tiny_data, tiny_cache, tmp_path
):
    """Ctrl-C (or any error) in a notebook keeps the exception and with it the trainer's
    frame and its DataLoader iterator, whose forked workers held the lock on the folder:
    `train(resume=True)` in the same kernel was refused as "being trained into by another
    process right now" until the kernel restarted."""
    import sys

    out = tmp_path / "run"
    cfg = _cfg(tiny_data, tiny_cache, out, method="erm", steps=6, batch_per_domain=2,
               num_workers=2)

    def ctrl_c(p: Progress) -> None:
        if p.event == "step" and p.step == 3:
            raise KeyboardInterrupt

    try:
        train(cfg, progress=ctrl_c)
    except KeyboardInterrupt:
        kept = sys.exc_info()  # as IPython keeps sys.last_traceback
    try:
        metrics = train(cfg.model_copy(update={"resume": True}))
    finally:
        del kept
    assert [s["steps"] for s in metrics["stages"]] == [6]


def test_a_run_stopped_by_bad_input_leaves_no_empty_folder(tiny_data, tmp_path):
    out = tmp_path / "never" / "made" / "run"
    with pytest.raises(ConfigurationError, match="vlm-distill harvest"):
        train(_cfg(tiny_data, tmp_path / "empty-cache", out))
    assert not (tmp_path / "never").exists()


def test_under_nohup_a_hangup_does_not_stop_training(tiny_data, tiny_cache, tmp_path):
    """`nohup vlm-distill train ...` ignores SIGHUP so the run outlives the SSH session; the
    stop-signal handlers must not take that back (they did: the hangup stopped it)."""
    import os
    import signal
    import time

    out = tmp_path / "run"
    proc = _long_cli_run(tiny_data, tiny_cache, out, nohup=True)
    os.kill(proc.pid, signal.SIGHUP)
    time.sleep(2)
    alive = proc.poll() is None
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert alive, err
    assert proc.returncode == 130, err


def test_a_resume_reads_a_setting_its_config_json_predates_as_the_default(tiny_data, tiny_cache,
                                                                          tmp_path):
    # A run started before a TrainConfig field existed has no such key in its config.json;
    # it trained with the field's default, so a resume with the default goes on (read as
    # None, it was refused: "kd_logit_scale: None then, 100.0 now").
    out = tmp_path / "run"

    cfg = _cfg(tiny_data, tiny_cache, out, steps_distill=3, eval_every=1)
    _crash_in_distill(cfg)
    saved = json.loads((out / "config.json").read_text())
    del saved["kd_logit_scale"], saved["image_targets"]
    (out / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigurationError, match=r"image_targets: 'all' then, 'view0' now"):
        train(cfg.model_copy(update={"resume": True, "image_targets": "view0"}))
    metrics = train(cfg.model_copy(update={"resume": True}))
    assert [s["stage"] for s in metrics["stages"]] == ["align", "distill"]


def test_a_resume_refuses_a_store_whose_embeddings_changed(tiny_data, tiny_cache, tmp_path):
    # Harvested again with another --prompt, the store at the same path holds other text
    # targets: a resume used to mix the two sets of targets in one run.
    import shutil

    import numpy as np

    from cache.store import EmbeddingStore

    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache, cache)
    out = tmp_path / "run"

    cfg = _cfg(tiny_data, cache, out, steps_distill=3, eval_every=1)
    _crash_in_distill(cfg)
    path = cache / "stores" / "s1"
    old = EmbeddingStore.open(path)
    vectors = np.stack([old.gather(np.arange(len(old)), v) for v in range(old.views)], axis=1)
    EmbeddingStore.write(
        path, image_ids=old.image_ids, image_vectors=vectors.astype(np.float32),
        text_vectors=-np.asarray(old.text_embeddings, dtype=np.float32),
        class_names=list(old.class_names), prompts=[f"an image of a {c}" for c in old.class_names],
        teacher=TEACHER, teacher_fingerprint="fake-v1",
        dataset_fingerprint=old.meta["dataset_fingerprint"],
    )
    with pytest.raises(ConfigurationError, match="changed since it started"):
        train(cfg.model_copy(update={"resume": True}))


@pytest.mark.parametrize("damaged", ["state.json", "model.safetensors", "optim.pt"])
def test_a_damaged_checkpoint_is_a_one_line_refusal(damaged, tiny_data, tiny_cache, tmp_path):
    # each used to end in its reader's traceback (JSONDecodeError, SafetensorError,
    # torch.load's UnpicklingError)
    out = tmp_path / "run"

    cfg = _cfg(tiny_data, tiny_cache, out, steps_distill=3, eval_every=1)
    _crash_in_distill(cfg)
    (out / "checkpoint" / damaged).write_bytes(b"{cut short")
    with pytest.raises(ConfigurationError, match=r"checkpoint does not read .*move .* aside"):
        train(cfg.model_copy(update={"resume": True}))


@pytest.mark.parametrize("lost", ["best.safetensors", "stage.safetensors"])
def test_a_checkpoint_missing_a_file_it_was_written_with_is_refused(
    lost, tiny_data, tiny_cache, tmp_path
):
    """A checkpoint copied in part (a copy cut short, a backup that left out large files)
    without best.safetensors resumed with no best weights and ended "selected: last"; without
    stage.safetensors it resumed SWAD's valley with empty averages and ended "selected:
    swad" with weights that were not the average. Both went on without a word."""
    out = tmp_path / "run"
    swad = dict(swad=True, swad_n_converge=1, swad_n_tolerance=2, swad_tolerance_ratio=100.0)
    cfg = _cfg(tiny_data, tiny_cache, out, method="erm", steps=4, eval_every=1,
               **(swad if lost == "stage.safetensors" else {}))
    with pytest.raises(_Crash):
        train(cfg, progress=lambda p: _crash_if(p.event == "eval" and p.step == 2))
    (out / "checkpoint" / lost).unlink()
    with pytest.raises(ConfigurationError, match=f"incomplete .*missing {lost}"):
        train(cfg.model_copy(update={"resume": True}))


def _crash_if(cond: bool) -> None:
    if cond:
        raise _Crash


def test_a_run_whose_loss_turns_nan_stops_and_says_so(tiny_data, tiny_cache, tmp_path, capsys):
    """Before 2026-12-06 a run at --lr 1e30 trained on NaN from step 1, saved NaN weights,
    exited 0 and reported chance accuracy as its result."""
    out = tmp_path / "diverge"
    rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
               "--student", STUDENT, "--no-pretrained", "--method", "erm", "--out", str(out),
               "--test-domains", "dom3", "--steps", "6", "--lr", "1e30", "--warmup", "0",
               "--image-size", "32", "--batch-per-domain", "4", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and "training diverged at erm step" in err[0]
    assert "--lr 1e+30" in err[0]
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize("flag", [["--kd-temperature", "1e-300"], ["--kd-logit-scale", "1e308"]])
def test_a_loss_that_is_nan_before_any_step_does_not_blame_the_learning_rate(
    flag, tiny_data, tiny_cache, tmp_path, capsys
):
    """KD's loss was NaN at its first step, before any weight moved (logits divided by a
    tiny temperature, or scaled past float range, are infinite), and the run said "Lower
    the learning rate (--lr 5e-05 ...)": a lower lr fails the same way."""
    out = tmp_path / "nan"
    rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
               "--student", STUDENT, "--no-pretrained", "--method", "kd", "--out", str(out),
               "--test-domains", "dom3", "--steps", "2", "--image-size", "32",
               "--batch-per-domain", "2", "--threads", "1", *flag])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "at kd step 0" in err[0] and "Lower the learning rate" not in err[0], err[0]
    assert flag[0] in err[0], err[0]


def _strict_json(path: Path) -> list:
    """Each JSON document of ``path`` (one, or one per line), refusing bare NaN/Infinity."""
    def refuse(name: str) -> None:
        raise ValueError(f"{path.name} holds a bare {name}")

    if path.suffix == ".json":
        return [json.loads(path.read_text(), parse_constant=refuse)]
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_no_holdout_keeps_the_last_weights_and_writes_strict_json(
    tiny_data, tiny_cache, tmp_path, capsys
):
    """Before 2026-12-06, --holdout-fraction 0 with the default --select best_id kept the
    weights of the first evaluation (every later one tied at an accuracy of 0), and wrote
    a bare NaN id_loss into metrics.json and evals.jsonl."""
    import torch
    from safetensors.torch import load_file

    def run(out: Path, steps: int, *extra: str) -> int:
        return main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
                     "--student", STUDENT, "--no-pretrained", "--method", "erm",
                     "--out", str(out), "--test-domains", "dom3", "--steps", str(steps),
                     "--holdout-fraction", "0", "--lr", "0.01", "--warmup", "0",
                     "--eval-every", "1", "--image-size", "32", "--batch-per-domain", "4",
                     "--threads", "1", *extra])

    assert run(tmp_path / "six", 6) == 0 and run(tmp_path / "one", 1) == 0
    six, one = (load_file(tmp_path / n / "model.safetensors") for n in ("six", "one"))
    assert any(not torch.equal(six[k], one[k]) for k in six)  # six steps trained, not one
    assert json.loads((tmp_path / "six" / "config.json").read_text())["select"] == "last"
    assert all(e["id_loss"] is None for e in _strict_json(tmp_path / "six" / "evals.jsonl"))
    _strict_json(tmp_path / "six" / "metrics.json")
    capsys.readouterr()
    for extra in (("--select", "best_id"), ("--swad",), ("--seed", "-1")):
        assert run(tmp_path / "bad", 1, *extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err
    assert not (tmp_path / "bad").exists()


def test_a_source_domain_without_labelled_images_is_a_usage_error(
    tiny_data, tiny_cache, tmp_path, capsys
):
    """It was a 27-line traceback from the batch sampler naming "domain(s) [0]", with a
    config.json left behind (until 2026-12-06)."""
    import shutil

    rows = ["path,label,domain"]
    for dom in ("dom1", "dom2", "dom3", "blank"):
        for cls in ("a_circle", "b_square", "c_cross"):
            for i in range(2):
                path = tiny_data / ("dom1" if dom == "blank" else dom) / cls / f"{i:03d}.png"
                if dom == "blank":  # other files, no labels
                    path = Path(shutil.copy(path, tmp_path / f"blank-{cls}-{i}.png"))
                rows.append(f"{path},{'' if dom == 'blank' else cls},{dom}")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    rc = main(["train", str(manifest), "--cache", str(tiny_cache), "--teacher", TEACHER,
               "--student", STUDENT, "--no-pretrained", "--method", "erm", "--out", str(out),
               "--test-domains", "dom3", "--steps", "1", "--image-size", "32",
               "--batch-per-domain", "2", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "source domain(s) ['blank']" in err[0]
    assert not out.exists()


def test_evals_log_has_no_duplicates_after_a_crash_or_a_fresh_start(
    tiny_data, tiny_cache, tmp_path, monkeypatch
):
    """A crash between an evaluation's evals.jsonl line and its checkpoint, then --resume,
    wrote that evaluation twice; a fresh start in a folder whose checkpoint was moved
    aside appended to both logs (steps 0.. twice) until 2026-12-06."""
    from distill.train import trainer as trainer_module

    def evals(out: Path) -> list[tuple[str, int]]:
        lines = (out / "evals.jsonl").read_text().splitlines()
        return [(json.loads(x)["stage"], json.loads(x)["step"]) for x in lines]

    cfg = _cfg(tiny_data, tiny_cache, tmp_path / "a", method="erm", steps=6, eval_every=2)
    train(cfg)
    real = trainer_module.save_checkpoint
    calls = []

    def crash_on_second_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the evaluation at step 2 is written, its checkpoint is not
            raise _Crash
        return real(*args, **kwargs)

    cfg_b = cfg.model_copy(update={"out": str(tmp_path / "b")})
    monkeypatch.setattr(trainer_module, "save_checkpoint", crash_on_second_save)
    with pytest.raises(_Crash):
        train(cfg_b)
    monkeypatch.setattr(trainer_module, "save_checkpoint", real)
    train(cfg_b.model_copy(update={"resume": True}))
    assert evals(tmp_path / "b") == evals(tmp_path / "a")
    assert [r["step"] for r in _log(tmp_path / "b")] == [r["step"] for r in _log(tmp_path / "a")]

    import shutil

    shutil.move(tmp_path / "b" / "checkpoint", tmp_path / "aside")
    for name in ("metrics.json", "model.safetensors", "run.json"):  # a finished run is
        (tmp_path / "b" / name).unlink()  # refused (test_cli_train_then_eval)
    train(cfg_b)  # starts again at step 0
    assert evals(tmp_path / "b") == evals(tmp_path / "a")
    assert [r["step"] for r in _log(tmp_path / "b")] == [r["step"] for r in _log(tmp_path / "a")]


def test_a_checkpoint_that_does_not_fit_on_the_disk_is_one_line(tiny_data, tiny_cache, tmp_path):
    """A full disk (here: a file-size limit) while a checkpoint was written ended in a
    36-line torch or safetensors traceback that said neither "disk" nor "--resume", and
    left the partial checkpoint.tmp on the full disk (until 2026-12-06)."""
    import os
    import resource
    import subprocess
    import sys

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "distill", "train", str(tiny_data), "--cache", str(tiny_cache),
         "--teacher", TEACHER, "--student", STUDENT, "--no-pretrained", "--method", "erm",
         "--out", str(out), "--test-domains", "dom3", "--steps", "2", "--image-size", "32",
         "--batch-per-domain", "2", "--threads", "1"],
        capture_output=True, text=True, timeout=300, preexec_fn=small_files,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr[-3000:]
    assert len(err) == 1 and "could not write a checkpoint" in err[0], err
    assert "--resume" in err[0]
    assert not (out / "checkpoint.tmp").exists()


def test_a_student_that_cannot_take_the_image_size_is_refused_before_training(
    tiny_data, tiny_cache, tmp_path, capsys
):
    """A 224-px ViT at --image-size 32 was a 60-line AssertionError at the first step,
    after the run folder was written (until 2026-12-06)."""
    out = tmp_path / "vit"
    rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
               "--student", "vit_tiny_patch16_224", "--no-pretrained", "--method", "erm",
               "--out", str(out), "--test-domains", "dom3", "--steps", "1",
               "--image-size", "32", "--batch-per-domain", "2", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "cannot train on 32 px images" in err[0]
    assert not (out / "config.json").exists()


def test_train_called_as_a_library_refuses_a_student_that_cannot_take_the_image_size(
    tiny_data, tiny_cache, tmp_path
):
    """``train(config)`` without the CLI's check (examples/train_from_cache.py, a script of
    one's own): the student is tried on one image when it is built, a one-line error
    before the run folder is written, not an AssertionError at the first step."""
    out = tmp_path / "vit"
    cfg = _cfg(tiny_data, tiny_cache, out, student="vit_tiny_patch16_224", method="erm",
               steps=1, batch_per_domain=2)  # fmt: skip
    with pytest.raises(ConfigurationError, match="does not take 32 px inputs"):
        train(cfg)
    assert not (out / "config.json").exists()


def test_a_run_s_weights_warm_start_a_student_of_the_same_kind(
    tiny_data, tiny_cache, tmp_path, capsys
):
    """--weights RUN/model.safetensors was a 31-line "lacks 208 tensors" traceback: the
    run's tensors are named backbone.* (until 2026-12-06). Another student's file is a
    one-line usage error."""
    import torch
    from safetensors.torch import load_file

    def run(out: Path, *extra: str, student: str = STUDENT) -> int:
        return main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
                     "--student", student, "--no-pretrained", "--method", "erm",
                     "--out", str(out), "--test-domains", "dom3", "--steps", "1",
                     "--lr", "1e-9", "--image-size", "32", "--batch-per-domain", "2",
                     "--threads", "1", *extra])

    assert run(tmp_path / "base") == 0
    weights = tmp_path / "base" / "model.safetensors"
    assert run(tmp_path / "warm", "--weights", str(weights)) == 0
    base, warm = load_file(weights), load_file(tmp_path / "warm" / "model.safetensors")
    conv = next(k for k in base if k.startswith("backbone.") and k.endswith("conv_stem.weight"))
    assert torch.allclose(base[conv], warm[conv], atol=1e-6)  # started from the run's weights
    capsys.readouterr()
    assert run(tmp_path / "other", "--weights", str(weights), student="resnet10t") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit student resnet10t" in err[0], err


def test_a_resumed_run_times_every_process_and_a_finished_run_is_not_resumed(
    tiny_data, tiny_cache, tmp_path, capsys
):
    """Until 2026-12-06 a resumed run's wall_time_s and train_images_per_s covered its
    last process only, and --resume of a finished run (which the "already holds a
    checkpoint; pass --resume" message invited) scored it again and rewrote metrics.json
    with a wall time of 0.1 s."""
    import time

    cfg = _cfg(tiny_data, tiny_cache, tmp_path / "r", method="erm", steps=6, eval_every=2)
    started = time.time()

    def crash(p: Progress) -> None:
        if p.event == "eval" and p.step == 3:  # after the checkpoint of step 2
            raise _Crash

    with pytest.raises(_Crash):
        train(cfg, progress=crash)
    first = time.time() - started
    w1 = json.loads((tmp_path / "r" / "checkpoint" / "state.json").read_text())["wall_s"]
    assert 0 < w1 <= first
    resumed_at = time.time()
    metrics = train(cfg.model_copy(update={"resume": True}))
    second = time.time() - resumed_at
    # the first process's time up to its checkpoint is in it; before, the figure was the
    # second process's alone (a little under ``second``)
    assert w1 + 0.5 * second < metrics["wall_time_s"] <= first + second
    assert metrics["wall_time_s"] > second
    before = (tmp_path / "r" / "metrics.json").read_bytes()
    for resume in (True, False):
        with pytest.raises(ConfigurationError, match="holds a finished run; nothing to resume"):
            train(cfg.model_copy(update={"resume": resume}))
    assert (tmp_path / "r" / "metrics.json").read_bytes() == before
    # its checkpoint damaged (or the run of another method, ADiP's two stages): "pass
    # --resume", then "damaged", then (checkpoint/ removed) "a finished run", until
    # 2026-12-07; now the finished run is said at once
    (tmp_path / "r" / "checkpoint" / "state.json").write_text("{not json")
    for change in ({"resume": True}, {"resume": False}, {"method": "adip"}):
        with pytest.raises(ConfigurationError, match=re.escape(
                "holds a finished run (metrics.json) whose checkpoint/ is damaged or of "
                "another method")):
            train(cfg.model_copy(update=change))
    assert (tmp_path / "r" / "metrics.json").read_bytes() == before


def test_eval_of_a_run_json_without_a_setting_is_one_line(tiny_data, tiny_cache, tmp_path,
                                                           capsys):
    """A run.json that reads but lacks a setting eval needs (edited by hand, another tool's
    file under its name) ended in a KeyError traceback after the student was loaded."""
    out = tmp_path / "run"
    train(_cfg(tiny_data, tiny_cache, out, method="erm", steps=1))
    info = json.loads((out / "run.json").read_text())
    for key in ("mean", "train_domains", "image_size"):
        (out / "run.json").write_text(json.dumps({k: v for k, v in info.items() if k != key}))
        assert main(["eval", str(out), str(tiny_data)]) == 1  # as a damaged run.json
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not a readable training run" in err[0], err
        assert repr(key) in err[0], err


def test_eval_on_the_training_data_scores_ood_on_the_run_s_test_domains(
    tiny_data, tiny_cache, tmp_path, capsys
):
    """A run trained on dom1 and tested on dom3 (dom2 in neither): `eval RUN DATA` on its own
    data scored dom2 as OOD too, so its mean_ood was not metrics.json's although it said
    ``same_dataset: true`` (until 2026-12-06). dom2 is now scored apart, as excluded."""
    out = tmp_path / "run"
    rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
               "--student", STUDENT, "--no-pretrained", "--method", "erm", "--out", str(out),
               "--train-domains", "dom1", "--test-domains", "dom3", "--steps", "1",
               "--image-size", "32", "--batch-per-domain", "2", "--threads", "1"])
    assert rc == 0
    capsys.readouterr()
    assert main(["eval", str(out), str(tiny_data), "--json",
                 "--store", str(tiny_cache / "stores" / "s1")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert res["same_dataset"] is True
    assert list(res["ood"]) == list(metrics["ood"]) == ["dom3"]
    assert res["mean_ood"] == pytest.approx(metrics["mean_ood"])
    assert res["mean_id"] == pytest.approx(metrics["mean_id"])
    assert list(res["excluded"]) == ["dom2"] and res["excluded"]["dom2"]["n"] == 18
    assert list(res["teacher_zeroshot"]["ood"]) == ["dom3"]
    assert list(res["teacher_zeroshot"]["excluded"]) == ["dom2"]
    # the table says what it did with dom2
    assert main(["eval", str(out), str(tiny_data)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "dom2" in text and "neither trained nor tested on" in text
    # on other data (a copy with one image fewer) every domain not trained on is OOD
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    (other / "dom2" / "a_circle" / "000.png").unlink()
    assert main(["eval", str(out), str(other), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["same_dataset"] is False
    assert list(res["ood"]) == ["dom2", "dom3"] and res["excluded"] == {}


@pytest.mark.parametrize("name", ["hf-hub:timm/resnet18.a1_in1k", "mobilenetv3_gone_050",
                                  "resnet18"])
def test_eval_of_a_run_whose_student_this_timm_cannot_build_is_one_line(
    name, tiny_data, tiny_cache, tmp_path, capsys
):
    """A run.json naming a student this machine's timm does not know (renamed or dropped by
    a timm upgrade, a hub name) or one that does not fit the weights: a hub name went to the
    network (weights never come from a hub), the others said "train it again" or were a
    message of several lines (until 2026-12-06)."""
    out = tmp_path / "run"
    train(_cfg(tiny_data, tiny_cache, out, method="erm", steps=1))
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "student": name}))
    assert main(["eval", str(out), str(tiny_data)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    if name == "resnet18":  # a timm model, other weights: the file does not fit it
        assert "is not a readable training run" in err[0] and "Missing key" in err[0], err
    else:
        assert f"its student {name!r} is not a model this timm" in err[0], err
        assert "timm version the run was trained with" in err[0], err


def test_eval_table_shows_domain_names_with_brackets_as_they_are(tiny_data, tiny_cache, tmp_path,
                                                                  capsys):
    """A manifest's domain named like rich markup: "odd[/]dom" ended eval (and train's last
    table) in a MarkupError traceback before eval.json was written, "x[bold]y" showed as
    "xy" (until 2026-12-06)."""
    from .conftest import CLASSES

    out = tmp_path / "run"
    train(_cfg(tiny_data, tiny_cache, out, method="erm", steps=1))
    names = {"dom1": "dom1", "dom2": "x[bold]y", "dom3": "odd[/]dom"}
    rows = ["path,label,domain"] + [
        f"{s.path},{CLASSES[s.label]},{names[s.domain]}"  # type: ignore[index]
        for s in scan(tiny_data).samples
    ]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(rows) + "\n")
    capsys.readouterr()
    assert main(["eval", str(out), str(manifest)]) == 0
    text = capsys.readouterr().out
    assert "odd[/]dom" in text and "x[bold]y" in text
    assert set(json.loads((out / "eval.json").read_text())["ood"]) == {"x[bold]y", "odd[/]dom"}


def test_eval_on_data_without_labels_is_refused_and_keeps_the_last_results(
    tiny_data, tmp_path, capsys
):
    """`eval RUN POOL` on unlabelled images (the pool pseudolabel reads): exit 0 with an
    empty table, and RUN/eval.json replaced by nulls (the last results lost); without
    --class-file the refusal said the data had classes [] (until 2026-12-06)."""
    from .conftest import CLASSES

    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    unlabelled = tmp_path / "pool.csv"
    rows = [f"{s.path},,{s.domain}" for s in scan(tiny_data).samples]
    unlabelled.write_text("path,label,domain\n" + "\n".join(rows) + "\n")
    for class_file in (classes, None):
        cache = tmp_path / f"cache-{class_file is None}"
        make_store(tiny_data, cache, class_file=class_file)
        out = tmp_path / f"run-{class_file is None}"
        train(_cfg(tiny_data, cache, out, class_file=str(class_file) if class_file else None,
                   method="erm", steps=1))  # fmt: skip
        assert main(["eval", str(out), str(tiny_data)]) == 0
        before = (out / "eval.json").read_bytes()
        capsys.readouterr()
        assert main(["eval", str(out), str(unlabelled)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "has no labelled image" in err[0], err
        assert "54 images" in err[0], err
        assert (out / "eval.json").read_bytes() == before


def test_a_domain_whose_name_has_a_comma_can_be_named(tiny_data, tmp_path, capsys):
    """A domain folder "Paris, France": `--test-domains "Paris, France"` was split at the
    comma into 'Paris' and ' France', "unknown domain 'Paris'" (exit 2), and no spelling
    named it (until 2026-12-06). Commas still list several domains."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "dom3").rename(data / "Paris, France")
    cache = tmp_path / "cache"
    make_store(data, cache)
    out = tmp_path / "run"
    rc = main(["train", str(data), "--cache", str(cache), "--teacher", TEACHER,
               "--student", STUDENT, "--no-pretrained", "--method", "erm", "--out", str(out),
               "--train-domains", "dom1,dom2", "--test-domains", "Paris, France", "--steps",
               "1", "--image-size", "32", "--batch-per-domain", "2", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["train_domains"] == ["dom1", "dom2"]
    assert config["test_domains"] == ["Paris, France"]
    assert list(json.loads((out / "metrics.json").read_text())["ood"]) == ["Paris, France"]


def test_eval_out_onto_one_of_the_run_s_own_files_is_refused(tiny_data, tiny_cache, tmp_path,
                                                             capsys):
    """`eval RUN DATA --out RUN/model.safetensors` (or run.json, metrics.json, a checkpoint
    file: a slip of the shell's completion) replaced the trained student with the JSON
    results (until 2026-12-06): the run was lost."""
    out = tmp_path / "run"
    train(_cfg(tiny_data, tiny_cache, out, method="erm", steps=1))
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for name in ("model.safetensors", "run.json", "metrics.json", "config.json",
                 "checkpoint/state.json"):
        given = tmp_path / "." / "run" / name
        assert main(["eval", str(out), str(tiny_data), "--out", str(given)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is one of the run's own files" in err[0], err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    assert main(["eval", str(out), str(tiny_data), "--out", str(out / "eval-2.json")]) == 0


def test_eval_out_onto_any_other_existing_file_is_refused(tiny_data, tiny_cache, tmp_path,
                                                         capsys):
    """`eval RUN DATA --out CACHE/ledger.jsonl` (or DATA/dataset.json, another run's
    model.safetensors, an image) replaced that file with the JSON results (until
    2026-12-08): a cache's spend history (and with it --budget's cap) or the data's
    description was lost. An earlier eval's results are still replaced."""
    out = tmp_path / "run"
    train(_cfg(tiny_data, tiny_cache, out, method="erm", steps=1))
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text('{"provider": "local", "model": "hash", "cost_usd": "0.1"}\n')
    meta = tmp_path / "dataset.json"
    meta.write_text('{"hflip": false}')
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x00" * 64)
    for victim in (ledger, meta, weights):
        before = victim.read_bytes()
        assert main(["eval", str(out), str(tiny_data), "--out", str(victim)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "exists and is not an eval result" in err[0], err
        assert victim.read_bytes() == before
    mine = tmp_path / "mine.json"
    assert main(["eval", str(out), str(tiny_data), "--out", str(mine)]) == 0
    assert main(["eval", str(out), str(tiny_data), "--out", str(mine)]) == 0  # replaced


def test_eval_on_other_data_notes_id_only_when_it_has_id_rows(tiny_data, tiny_cache,
                                                               tmp_path, capsys):
    """The note "ID counts every image of its source domains here" was printed for data
    holding the test domain only, where there is no ID row at all (until 2026-12-08)."""
    import shutil

    out = tmp_path / "run"
    train(_cfg(tiny_data, tiny_cache, out, method="erm", steps=1))
    only_ood = tmp_path / "ood"
    shutil.copytree(tiny_data / "dom3", only_ood / "dom3")
    capsys.readouterr()
    assert main(["eval", str(out), str(only_ood), "--out", str(tmp_path / "a.json")]) == 0
    assert "ID counts every image" not in capsys.readouterr().out
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    (copy / "dom1" / "a_circle" / "000.png").unlink()  # other data: another fingerprint
    assert main(["eval", str(out), str(copy), "--out", str(tmp_path / "b.json")]) == 0
    assert "ID counts every image" in capsys.readouterr().out


def test_eval_of_a_zeroshot_run_says_it_has_no_student(tiny_data, tiny_cache, tmp_path, capsys):
    """`eval` of a `train --method zeroshot` folder said "not a finished training run ...;
    run `vlm-distill train` first", which the user had just done (until 2026-12-06)."""
    out = tmp_path / "zs"
    train(_cfg(tiny_data, tiny_cache, out, method="zeroshot"))
    assert main(["eval", str(out), str(tiny_data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--method zeroshot" in err[0] and "no student" in err[0], err
    assert "run `vlm-distill train` first" not in err[0], err


def test_eval_of_a_run_still_training_or_stopped_says_so(tiny_data, tiny_cache, tmp_path,
                                                        capsys):
    """`eval` of a run folder whose training is under way (or was stopped: a checkpoint, no
    model.safetensors yet) said "run `vlm-distill train` first" (until 2026-12-06)."""
    out = tmp_path / "run"
    _crash_in_distill(_cfg(tiny_data, tiny_cache, out, method="adip"))
    assert main(["eval", str(out), str(tiny_data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has not finished training" in err[0], err
    assert "--resume" in err[0] and "run `vlm-distill train` first" not in err[0], err


def test_eval_says_which_files_of_data_it_could_not_score(tiny_data, tiny_cache, tmp_path,
                                                         capsys):
    """A file of DATA that cannot be read (cut short by a copy, not an image) was left out
    of every count without a word (until 2026-12-06)."""
    import shutil

    out = tmp_path / "run"
    train(_cfg(tiny_data, tiny_cache, out, method="erm", steps=1))
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    cut = data / "dom3" / "a_circle" / "000.png"
    cut.write_bytes(cut.read_bytes()[:40])
    capsys.readouterr()
    assert main(["eval", str(out), str(data)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "1 file of" in text and "dom3/a_circle/000.png" in text and "not scored" in text
    assert main(["eval", str(out), str(data), "--json"]) == 0
    got = capsys.readouterr()
    res = json.loads(got.out.strip().splitlines()[-1])
    assert res["ood"]["dom3"]["n"] == 17
    assert [s["path"] for s in res["files_skipped"]] == ["dom3/a_circle/000.png"]
    assert "dom3/a_circle/000.png" in got.err


def test_eval_json_stays_strict_when_a_loss_is_not_finite(tiny_data, tiny_cache, tmp_path,
                                                          capsys):
    """A student whose logits overflow (an infinite weight: a damaged or hand-made file)
    gave an infinite loss, written as a bare `Infinity` in eval.json and on stdout with
    --json: not JSON to a strict reader (until 2026-12-06). It is null now."""
    from safetensors.torch import load_file, save_file

    out = tmp_path / "run"
    train(_cfg(tiny_data, tiny_cache, out, method="erm", steps=1))
    state = load_file(str(out / "model.safetensors"))
    state["head.weight"][0, 0] = float("inf")
    save_file(state, str(out / "model.safetensors"))
    capsys.readouterr()
    assert main(["eval", str(out), str(tiny_data), "--json"]) == 0
    printed = tmp_path / "printed.json"
    printed.write_text(capsys.readouterr().out)
    for path in (printed, out / "eval.json"):
        res = _strict_json(path)[0]
        assert res["ood"]["dom3"]["loss"] is None and res["ood"]["dom3"]["n"] == 18


def test_eval_store_without_some_images_says_the_teacher_column_is_over_fewer(
    tiny_data, tiny_cache, tmp_path, capsys
):
    """`eval RUN DATA --store S` where S was harvested before images were added to DATA: the
    teacher's zero-shot was over the images S holds, the student's over all, shown side by
    side as one domain's scores without a word (until 2026-12-06)."""
    import shutil

    out = tmp_path / "run"
    train(_cfg(tiny_data, tiny_cache, out, method="erm", steps=1))
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    store = make_store(data, tmp_path / "cache")
    circles = data / "dom3" / "a_circle"
    for i in range(6):  # added after the harvest
        shutil.copy(circles / "000.png", circles / f"n{i}.png")
    capsys.readouterr()
    assert main(["eval", str(out), str(data), "--store", str(store), "--json"]) == 0
    got = capsys.readouterr()
    res = json.loads(got.out.strip().splitlines()[-1])
    assert res["ood"]["dom3"]["n"] == 24 and res["teacher_zeroshot"]["ood"]["dom3"]["n"] == 18
    assert res["teacher_zeroshot"]["images_missing"] == 6
    assert "lacks 6 of the scored images" in " ".join(got.err.split())
    assert main(["eval", str(out), str(data), "--store", str(store)]) == 0
    assert "lacks 6 of the scored images" in " ".join(capsys.readouterr().out.split())


def test_domains_whose_names_share_a_part_before_the_comma_are_told_apart(
    tiny_data, tmp_path, capsys
):
    """`--test-domains "Paris, France" --train-domains "dom1,Paris, Texas"` was refused as
    "domains both train and test: ['Paris']" (exit 2), and `--test-domains "Paris,
    France,Paris, Texas"` as "names Paris twice": the checks ran on the comma-split parts,
    not on the domains they name (until 2026-12-06). A domain named twice is still refused."""
    import shutil

    from distill.train.prepare import split_data

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "dom2").rename(data / "Paris, Texas")
    (data / "dom3").rename(data / "Paris, France")
    cache = tmp_path / "cache"
    make_store(data, cache)
    out = tmp_path / "run"
    rc = main(["train", str(data), "--cache", str(cache), "--teacher", TEACHER,
               "--student", STUDENT, "--no-pretrained", "--method", "erm", "--out", str(out),
               "--train-domains", "dom1,Paris, Texas", "--test-domains", "Paris, France",
               "--steps", "1", "--image-size", "32", "--batch-per-domain", "2",
               "--threads", "1"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["train_domains"] == ["dom1", "Paris, Texas"]
    assert config["test_domains"] == ["Paris, France"]

    def cfg(**domains):
        return TrainConfig(data=str(data), cache=str(cache), teacher=TEACHER,
                           out=str(tmp_path / "other"), **domains)  # fmt: skip

    split = split_data(cfg(test_domains=("Paris", " France", "Paris", " Texas")))
    assert split.train_domains == ("dom1",)
    assert split.test_domains == ("Paris, France", "Paris, Texas")
    with pytest.raises(ConfigurationError, match=r"--train-domains names Paris, Texas twice"):
        split_data(cfg(train_domains=("Paris", " Texas", "dom1", "Paris", " Texas")))
    with pytest.raises(ConfigurationError, match=r"both train and test: \['Paris, Texas'\]"):
        split_data(cfg(train_domains=("Paris", " Texas"), test_domains=("Paris", " Texas")))


@pytest.mark.parametrize(
    ("key", "value"),
    [("history", "x"), ("stage_index", 7), ("stage_index", -1), ("step", "0"), ("step", -3),
     ("step", True), ("stage_notes", {"a": 1}), ("best_acc", "high"), ("images_seen", 1.5)],
)  # fmt: skip
def test_a_state_json_value_of_the_wrong_type_is_a_one_line_refusal_naming_it(
    key, value, tiny_data, tiny_cache, tmp_path
):
    """A state.json edited or damaged with a value of the wrong type or out of range was
    taken as it was: "x" as a history of one letter, stage 7 of two as a finished run,
    "0" and -3 as step numbers. Each is refused, naming the key."""
    out = tmp_path / "run"

    cfg = _cfg(tiny_data, tiny_cache, out, steps_distill=3, eval_every=1)
    _crash_in_distill(cfg)
    path = out / "checkpoint" / "state.json"
    saved = json.loads(path.read_text())
    saved[key] = value
    path.write_text(json.dumps(saved))
    with pytest.raises(ConfigurationError, match=rf"checkpoint does not read .*'{key}'.*aside"):
        train(cfg.model_copy(update={"resume": True}))

"""`vlm-distill eval` of a run folder against the files a user has at hand: a run.json
edited by hand (or of an older version), one domain's folder given as the data, a copy of
the data whose names macOS spelled in NFD."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from distill.cli import main
from distill.train.config import TrainConfig
from distill.train.trainer import train

from .conftest import TEACHER, _image, make_store


def _train(data: Path, cache: Path, out: Path, test_domain: str) -> Path:
    train(TrainConfig(data=str(data), cache=str(cache), teacher=TEACHER, out=str(out),
                      student="mobilenetv3_small_050", pretrained=False, method="erm",
                      steps=1, image_size=32, batch_per_domain=2,
                      test_domains=(test_domain,), threads=1))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def run_folder(tiny_data: Path, tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    return _train(tiny_data, tiny_cache, tmp_path_factory.mktemp("runfiles") / "run", "dom3")


def _eval_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_one_domain_s_folder_is_scored_as_that_domain(
    run_folder: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`eval RUN DATA/dom3` labelled its row "all"; `eval RUN DATA/dom1` (a training
    domain) scored its images as OOD under "all"."""
    out = ["--out", str(tmp_path / "e.json")]
    res = _eval_json(["eval", str(run_folder), str(tiny_data / "dom3"), *out], capsys)
    assert list(res["ood"]) == ["dom3"] and res["id"] == {}
    assert res["ood"]["dom3"]["n"] == 18
    res = _eval_json(["eval", str(run_folder), f"{tiny_data / 'dom1'}/", *out], capsys)
    assert list(res["id"]) == ["dom1"] and res["ood"] == {}


def test_one_domain_s_folder_is_scored_with_the_store_of_the_whole_data(
    run_folder: Path,
    tiny_data: Path,
    tiny_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`eval RUN DATA/dom3 --store S` (S harvested from DATA) was refused as "harvested
    from another dataset": the folder's image ids lack the `dom3/` they have in S."""
    store = ["--store", str(tiny_cache / "stores" / "s1")]
    store += ["--out", str(tmp_path / "e.json")]  # the shared run folder is left as it is
    res = _eval_json(["eval", str(run_folder), str(tiny_data / "dom3"), *store], capsys)
    assert list(res["ood"]) == ["dom3"] and res["ood"]["dom3"]["n"] == 18
    whole = _eval_json(["eval", str(run_folder), str(tiny_data), *store], capsys)
    assert res["ood"]["dom3"] == whole["ood"]["dom3"]
    zs, whole_zs = res["teacher_zeroshot"], whole["teacher_zeroshot"]
    assert zs["images_missing"] == 0 and zs["ood"]["dom3"]["n"] == 18
    assert zs["ood"]["dom3"] == whole_zs["ood"]["dom3"]


@pytest.mark.parametrize(
    "key,value,shown",
    [
        ("image_size", None, "'image_size' is null"),
        ("image_size", "32", "'image_size' is \"32\""),
        ("class_names", "cat", "'class_names' is \"cat\""),
        ("train_domains", "dom1", "'train_domains' is \"dom1\""),
        ("holdout_fraction", "0.2", "'holdout_fraction' is \"0.2\""),
        ("mean", [0.5, 0.5], "'mean' is [0.5, 0.5]"),
        ("left_out", 5, "'left_out' is 5"),
    ],
)
def test_a_run_json_value_of_the_wrong_type_is_one_line_naming_the_key(
    run_folder: Path,
    tiny_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key: str,
    value: object,
    shown: str,
) -> None:
    """Each was a traceback (TypeError deep in the loader) or, for "train_domains":
    "dom1", a silent misreading as the domains d, o, m and 1 (exit 0)."""
    run = tmp_path / "run"
    shutil.copytree(run_folder, run)
    info = json.loads((run / "run.json").read_text())
    info[key] = value
    (run / "run.json").write_text(json.dumps(info))
    rc = main(["eval", str(run), str(tiny_data)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "not a readable training run (run.json: " in err[0] and shown in err[0], err[0]
    assert not (run / "eval.json").exists()


def _nf(form: str, text: str) -> str:
    return unicodedata.normalize(form, text)  # type: ignore[arg-type]


def _accented_data(root: Path, form: str) -> Path:
    """Two domains "été" and "hiver" of two classes "café" and "thé", names in ``form``."""
    for d, dom in enumerate(("été", "hiver")):
        for c, cls in enumerate(("café", "thé")):
            folder = root / _nf(form, dom) / _nf(form, cls)
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(_image(c, d, i)).save(folder / f"{i}.png")
    return root


def test_a_macos_copy_of_the_data_is_the_run_s_classes_and_domains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trained on names in NFC, evaluated on a copy whose folders are NFD: refused as
    other classes (exit 2); its training domain would have been OOD."""
    data = _accented_data(tmp_path / "nfc", "NFC")
    cache = tmp_path / "cache"
    make_store(data, cache)
    run = _train(data, cache, tmp_path / "run", _nf("NFC", "hiver"))
    copy = _accented_data(tmp_path / "nfd", "NFD")
    res = _eval_json(["eval", str(run), str(copy), "--out", str(tmp_path / "e.json")], capsys)
    assert [_nf("NFC", d) for d in res["id"]] == ["été"]
    assert list(res["ood"]) == ["hiver"]
    assert res["id"][_nf("NFD", "été")]["n"] == 8


def test_data_lacking_one_of_the_run_s_classes_is_scored_with_the_run_s_labels(
    run_folder: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A test domain without images of one class (here the first, "a_circle"): refused as
    "trained on classes [a_circle, b_square, c_cross], this data has [b_square, c_cross]"
    (read alone, its classes would be numbered 0 and 1, not the run's 1 and 2)."""
    from distill.data import scan
    from distill.train.evaluate import evaluate_samples, load_run_student

    data = tmp_path / "test"
    shutil.copytree(tiny_data / "dom3", data / "dom3")
    shutil.rmtree(data / "dom3" / "a_circle")
    res = _eval_json(["eval", str(run_folder), str(data), "--out", str(tmp_path / "e.json")],
                     capsys)  # fmt: skip
    assert res["ood"]["dom3"]["n"] == 12
    # the same images scored with the run's labels
    student, info = load_run_student(run_folder)
    full = scan(tiny_data).in_domains(["dom3"])
    kept = [s for s in full.samples if s.label != 0]
    want = evaluate_samples(student, kept, image_size=info["image_size"], mean=info["mean"],
                            std=info["std"])  # fmt: skip
    assert res["ood"]["dom3"]["acc"] == pytest.approx(want["dom3"]["acc"])
    assert res["ood"]["dom3"]["loss"] == pytest.approx(want["dom3"]["loss"], rel=1e-5)


def _damage_pixels(path: Path) -> None:
    """Flip bytes of the pixel data: the header reads (so the scan keeps the file), the
    pixels do not decode."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    data[start : start + 40] = bytes(b ^ 0x5A for b in data[start : start + 40])
    path.write_bytes(bytes(data))


def test_other_data_with_a_damaged_image_is_scored_without_it(
    run_folder: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`eval RUN OTHER` (no store) on data holding a PNG whose pixels do not decode
    stopped at it: "error: cannot decode image '.../a_circle/000.png': broken data
    stream", exit 1, nothing scored. Now it is left out, as train leaves out what the
    harvest left out: counted in `images_left_out`, named in a note."""
    data = tmp_path / "other"
    shutil.copytree(tiny_data / "dom3", data / "dom3")
    for name in ("a_circle/000.png", "c_cross/004.png"):
        _damage_pixels(data / "dom3" / name)
    out = ["--out", str(tmp_path / "e.json")]
    assert main(["eval", str(run_folder), str(data), "--json", *out]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert res["images_left_out"] == ["dom3/a_circle/000.png", "dom3/c_cross/004.png"]
    assert res["ood"]["dom3"]["n"] == 16
    err = " ".join(captured.err.split())
    assert "2 images whose pixels cannot be decoded were not scored" in err, err
    assert "dom3/a_circle/000.png, dom3/c_cross/004.png" in err, err
    assert json.loads((tmp_path / "e.json").read_text())["images_left_out"] == (
        res["images_left_out"]
    )
    # the table says so too
    assert main(["eval", str(run_folder), str(data), *out]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "2 images whose pixels cannot be decoded were not scored" in shown, shown


def test_an_image_that_cannot_be_read_still_stops_eval(
    run_folder: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """A file that cannot be read at all (gone, no permission) is no damaged image: as in
    the harvest it stops the run, naming it, rather than being quietly left out."""
    from distill.data import DataError, scan
    from distill.train.evaluate import evaluate_samples, load_run_student

    data = tmp_path / "other"
    shutil.copytree(tiny_data / "dom3", data / "dom3")
    samples = list(scan(data).samples)
    samples[0].path.unlink()  # after the scan
    student, info = load_run_student(run_folder)
    left: list[str] = []
    with pytest.raises(DataError, match=r"cannot read image .*000\.png"):
        evaluate_samples(student, samples, image_size=info["image_size"], mean=info["mean"],
                         std=info["std"], left_out=left)  # fmt: skip
    assert left == []


def test_train_into_a_folder_of_something_else_is_refused_and_its_files_kept(
    tiny_data: Path, tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train --out` a folder holding another tool's config.json and log.jsonl (a project
    folder, a typo): training wrote its config.json over the user's and emptied log.jsonl
    (a run starting at step 0 truncates its logs). Refused before anything is read, exit
    2, every file as it was; a run's own files (one killed before its first checkpoint)
    are still started over."""
    from distill.train.config import files_of_no_run

    out = tmp_path / "project"
    out.mkdir()
    theirs = {"config.json": '{"lr": 0.1, "model": "resnet50"}\n', "log.jsonl": '{"epoch": 1}\n'}
    for name, text in theirs.items():
        (out / name).write_text(text)
    argv = ["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
            "--out", str(out), "--student", "mobilenetv3_small_050", "--no-pretrained",
            "--method", "erm", "--steps", "1", "--image-size", "32", "--batch-per-domain", "2",
            "--test-domains", "dom3", "--threads", "1"]  # fmt: skip
    for extra in ([], ["--resume"]):
        assert main([*argv, *extra]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "holds config.json, log.jsonl that no training run wrote" in err, err
        assert {p.name: p.read_text() for p in out.iterdir()} == theirs
    (out / "config.json").unlink()  # a log.jsonl alone is no run's either
    assert files_of_no_run(out) == ["log.jsonl"]
    (out / "log.jsonl").unlink()
    assert files_of_no_run(out) == [] and files_of_no_run(tmp_path / "none") == []
    # a run's own config.json and log: started over (as after a kill before a checkpoint)
    TrainConfig(data=str(tiny_data), cache=str(tiny_cache), teacher=TEACHER, out=str(out),
                method="erm").write(out)  # fmt: skip
    (out / "log.jsonl").write_text('{"stage": "erm", "step": 0}\n')
    assert files_of_no_run(out) == []
    assert main(argv) == 0, capsys.readouterr().err
    assert (out / "metrics.json").is_file()

"""Inputs are checked before anything is sent: a bad flag costs nothing (exit 2), and a
budget that stops the rounds early says so (exit 3). Against the real local server."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from distill.cli import main
from distill.data import scan
from distill.server import HashBackend, ServerConfig, ServerThread, create_app
from tests.e2e.conftest import TOKEN, LocalTeacher, harvest, local_teacher
from tests.labelfree.conftest import break_pixels, flat_folder
from tests.labelfree.test_pseudolabel_cli import pseudolabel

STUDENT = "mobilenetv3_small_100"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, digits_data: Path) -> Iterator[Path]:
    """A real run folder: the digits harvested from the hash teacher, a 1-step ERM student."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
        config = ServerConfig(token=SecretStr(TOKEN))
        with ServerThread(create_app(config, HashBackend(dim=64))) as server:
            argv = ["harvest", str(digits_data), "--teacher", "local:hash",
                    "--base-url", server.base_url, "--cache", str(root / "cache"),
                    "--budget", "1"]  # fmt: skip
            assert main(argv) == 0
    run = root / "run"
    assert train(digits_data, root / "cache", *TINY, "--threads", "1", "--out", str(run)) == 0
    yield root


@pytest.fixture
def unlabelled(digits_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """4 digits images flat in one folder and the digits class file."""
    return flat_folder(digits_data, tmp_path, count=4, every=30)


@dataclass
class Cli:
    """The commands against the hash teacher, with the cache ``tmp_path / "c"``."""

    teacher: LocalTeacher
    cache: Path
    capsys: pytest.CaptureFixture[str]

    def pseudolabel(self, data: Path, classes: Path, *extra: str) -> int:
        return pseudolabel(self.teacher, data, classes, self.cache, *extra)

    def select_harvest(self, data: Path, *extra: str) -> int:
        return select_harvest(self.teacher, data, self.cache, *extra)

    def refused(self, code: int, start: str) -> str:
        """Exit 2, one error line that starts with ``start``, nothing sent: the error."""
        assert code == 2
        err = self.capsys.readouterr().err
        one_error_line(err, start)
        assert self.teacher.billing()["requests"] == 0
        return err


@pytest.fixture
def cli(hash_teacher: LocalTeacher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(hash_teacher, tmp_path / "c", capsys)


TINY = ("--no-pretrained", "--image-size", "16", "--batch-per-domain", "2")  # a fast student


def train(data: Path, cache: Path, *extra: str, student: str = STUDENT) -> int:
    """One ERM step of ``student`` on the hash teacher's targets in ``cache``."""
    return main(
        [
            "train", str(data), "--cache", str(cache), "--teacher", "local:hash",
            "--method", "erm", "--steps", "1", "--student", student, *extra,
        ]
    )  # fmt: skip


def write_list(path: Path, folder: Path) -> None:
    """A manifest of the images in ``folder``: absolute paths, no labels, one domain."""
    path.write_text(
        "path,label,domain\n" + "".join(f"{p},,all\n" for p in sorted(folder.iterdir()))
    )


def select_harvest(teacher: LocalTeacher, data: Path, cache: Path, *extra: str) -> int:
    return main(
        [
            "harvest", str(data), "--teacher", "local:hash", "--base-url", teacher.url,
            "--cache", str(cache), "--select", "random", "--rounds", "3",
            "--round-steps", "0", *extra,
        ]
    )  # fmt: skip


def one_error_line(err: str, start: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), err


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2]", '{"puppy": 3}', '{"puppy": ["dog"]}', "{not json", None,
        # accepted and ignored until 2026-12-06: a name no class has, an empty word
        '{"dog": "notaclass"}', '{" ": "0_zero"}',
        # matched by nothing (an answer is read by its letters and digits): until 2026-12-06
        '{"🐱": "0_zero"}',
    ],
    ids=["list", "number", "list-value", "invalid", "missing", "unknown-class", "empty-word",
         "emoji-word"],
)
def test_a_bad_synonyms_file_is_refused_before_sending(
    cli: Cli, unlabelled: tuple[Path, Path], tmp_path: Path, content: str | None
) -> None:
    synonyms = tmp_path / "synonyms.json"
    if content is not None:
        synonyms.write_text(content)
    cli.refused(cli.pseudolabel(*unlabelled, "--synonyms", str(synonyms)), "error: --synonyms")


@pytest.mark.parametrize(
    ("route", "check"), [("answer", "zeroshot"), ("answer", "none"), ("zeroshot", "answer")]
)
def test_more_classes_than_letters_is_refused_before_sending(
    cli: Cli, unlabelled: tuple[Path, Path], tmp_path: Path, route: str, check: str
) -> None:
    """Before: with 27 classes the lettered prompt could not be made, the error passed for
    an unreadable image, so no answer was asked, the zero-shot check was bought anyway and
    the run ended with exit 0, every image unlabelled ("no_answer")."""
    folder, _ = unlabelled
    classes = tmp_path / "c27.txt"
    classes.write_text("\n".join(f"class{i:02d}" for i in range(27)) + "\n")
    code = cli.pseudolabel(folder, classes, "--route", route, "--check", check)
    err = cli.refused(code, "error: answers ask a multiple-choice question")
    assert "at most 26 classes (27 given)" in err and "--route zeroshot" in err


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_an_out_that_cannot_be_written_is_refused_before_sending(
    cli: Cli, unlabelled: tuple[Path, Path], tmp_path: Path, where: str
) -> None:
    # it was found after every answer was bought: "pseudolabel failed on a file: ..."
    afile = tmp_path / "AFILE"
    afile.write_text("x")
    out = tmp_path if where == "folder" else afile / "labels.csv"
    cli.refused(cli.pseudolabel(*unlabelled, "--out", str(out)), "error: --out")


@pytest.mark.parametrize("what", ["data", "class-file", "synonyms", "ledger", "default-out"])
def test_an_out_over_a_file_the_run_reads_is_refused_before_sending(
    cli: Cli, unlabelled: tuple[Path, Path], tmp_path: Path, what: str
) -> None:
    """Before: ``--out`` (or the default CACHE/pseudolabels.csv, when that manifest was
    fed back in) was written over the CSV manifest being labelled, the class file, the
    synonyms file or the spend ledger: the images dropped by the filter were gone from
    the user's list, the class file held CSV rows, the ledger its money record."""
    folder, classes = unlabelled
    cache = cli.cache
    cache.mkdir()
    data = tmp_path / "list.csv"
    if what == "default-out":  # the manifest of an earlier run, edited and fed back
        data = cache / "pseudolabels.csv"
    write_list(data, folder)
    synonyms = tmp_path / "synonyms.json"
    synonyms.write_text(json.dumps({"nought": classes.read_text().split()[0]}))
    (cache / "ledger.jsonl").write_text("")
    out = {
        "data": data, "class-file": classes, "synonyms": synonyms,
        "ledger": cache / "ledger.jsonl", "default-out": None,
    }[what]  # fmt: skip
    before = {p: p.read_bytes() for p in (data, classes, synonyms, cache / "ledger.jsonl")}
    extra = ("--synonyms", str(synonyms), "--allow-outside-paths")
    code = cli.pseudolabel(data, classes, *extra,
                           *(("--out", str(out)) if out is not None else ()))  # fmt: skip
    cli.refused(code, "error: --out")
    assert {p: p.read_bytes() for p in before} == before


def test_a_good_synonyms_file_is_used(
    hash_teacher: LocalTeacher, unlabelled: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, classes = unlabelled
    synonyms = tmp_path / "synonyms.json"
    synonyms.write_text(json.dumps({"nought": classes.read_text().split()[0]}))
    flags = ("--synonyms", str(synonyms), "--check", "none")
    assert pseudolabel(hash_teacher, folder, classes, tmp_path / "c", *flags) == 0
    assert hash_teacher.billing()["requests"] == 4


def test_the_student_run_is_checked_before_sending(
    cli: Cli, trained: Path, unlabelled: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, classes = unlabelled
    other = tmp_path / "other.txt"
    other.write_text("cat\ndog\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{")
    cases = [
        (classes, tmp_path / "no-such-run"),  # no run folder
        (other, trained / "run"),  # a run trained on other classes
        (classes, broken),  # an unreadable run.json
    ]
    for class_file, run in cases:
        code = cli.pseudolabel(folder, class_file, "--student-run", str(run))
        assert code == 2, run
        assert cli.teacher.billing()["requests"] == 0, run
        one_error_line(cli.capsys.readouterr().err, "error: --student-run")
    # the real run with the same classes still works
    out = tmp_path / "labels.csv"
    flags = ("--student-run", str(trained / "run"), "--check", "none", "--out", str(out))
    assert cli.pseudolabel(folder, classes, *flags) == 0
    with out.with_suffix(".decisions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["student"] for r in rows)


def test_select_stopped_early_by_the_budget_exits_3(cli: Cli, digits_data: Path) -> None:
    """$0.0001 buys the class prompts but no image ($0.0001 each, worst case). ($0.0003
    buys two images in rounds 1 and 2 and nothing for round 3: the budget is spent, exit 0,
    since 2026-12-07: test_rounds_e2e.py -k more_rounds_than.)"""
    code = cli.select_harvest(digits_data, "--budget", "0.0001")
    out = cli.capsys.readouterr().out
    assert code == 3
    assert "stopped by the budget" in out and "0 of 120 bought" in out
    assert cli.teacher.billing()["images"] == 0


def test_a_run_budget_below_one_image_is_named_as_the_cap_to_raise(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--budget 1 --run-budget 0.00005``: the run's cap, not the budget, leaves no money
    for one image. The stop said "raise the budget and run again" (until 2026-12-07): a
    rerun under the same --run-budget stopped the same, and --budget was not the cap."""
    code = select_harvest(hash_teacher, digits_data, tmp_path / "c", "--budget", "1",
                          "--run-budget", "0.00005")  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())
    assert code == 3
    assert "raise --run-budget $0.00005" in out and "raise the budget" not in out
    assert hash_teacher.billing()["images"] == 0


def test_a_select_harvest_is_noted_for_report_budget_left(cli: Cli, digits_data: Path) -> None:
    """Before: ``harvest --select`` wrote no line to runs.jsonl, so ``report`` showed no
    "budget left" for it (or a stale one from an earlier plain harvest)."""
    cache = cli.cache
    # the budget spent part-way through the rounds: exit 0 (since 2026-12-07), as noted
    assert cli.select_harvest(digits_data, "--budget", "0.0003") == 0
    [run] = [json.loads(line) for line in (cache / "runs.jsonl").read_text().splitlines()]
    assert run["budget_usd"] == "0.0003" and run["exit_code"] == 0
    assert run["bought"] == cli.teacher.billing()["images"] + 10  # + the 10 class prompts
    cli.capsys.readouterr()
    assert main(["report", str(cache)]) == 0
    assert "budget left" in cli.capsys.readouterr().out


def test_an_unknown_select_student_is_refused_before_sending(cli: Cli, digits_data: Path) -> None:
    code = cli.select_harvest(digits_data, "--budget", "0.006", "--select-student", "nosuchmodel")
    cli.refused(code, "error: unknown student model 'nosuchmodel'")
    assert not cli.cache.exists()  # the cache folder was made first until 2026-12-06


@pytest.mark.parametrize(
    "flags",
    [
        ["--rounds", "5"],
        ["--rounds", "3"],  # the default value, given: still a sign --select was forgotten
        ["--round-steps", "0"],
        ["--select-student", "nosuchnet"],
        ["--select-image-size", "64"],
        ["--select-labels"],
        ["--seed", "1"],
        ["--rounds", "5", "--select-labels"],
    ],
    ids=[
        "rounds",
        "rounds-default",
        "round-steps",
        "student",
        "image-size",
        "labels",
        "seed",
        "two",
    ],
)
def test_selection_flags_without_select_are_refused_before_sending(
    cli: Cli, digits_data: Path, flags: list[str]
) -> None:
    """``harvest DATA --rounds 5`` (``--select`` forgotten): the selection flags were
    ignored without a word and the plain harvest bought every image, exit 0 (until
    2026-12-07). Now a usage error naming them and --select, before anything is sent."""
    code = harvest(cli.teacher, digits_data, cli.cache, "--budget", "1", *flags)
    named = ", ".join(f for f in flags if f.startswith("--"))
    err = cli.refused(code, f"error: {named} only work")  # "only works" for one flag
    assert "with --select (random, uncertainty or coreset)" in err
    assert not cli.cache.exists()


def test_selection_keys_of_a_config_file_without_select_are_noted(
    cli: Cli, digits_data: Path, tmp_path: Path
) -> None:
    """A config file shared by selecting and plain harvests may hold selection keys: a
    plain harvest with it runs (a flag on the command line is refused), and says that
    they are not used (they were ignored without a word until 2026-12-07)."""
    config = tmp_path / "harvest.toml"
    config.write_text('rounds = 5\nselect-student = "resnet18"\n')
    flags = ("--budget", "1", "--config", str(config))
    assert harvest(cli.teacher, digits_data, cli.cache, *flags) == 0
    out = " ".join(cli.capsys.readouterr().out.split())
    assert "note: the config file's --rounds, --select-student only work with --select" in out
    assert cli.teacher.billing()["requests"] > 0


def test_select_labels_on_data_without_labels_is_refused_before_sending(
    hash_teacher: LocalTeacher,
    unlabelled: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--select-labels`` over a flat folder (no labels): the student trained on the
    teacher's probabilities alone, the flag recorded in the state as used, exit 0 without
    a word (until 2026-12-07). Now a usage error before anything is sent."""
    folder, classes = unlabelled
    code = select_harvest(hash_teacher, folder, tmp_path / "c", "--class-file", str(classes),
                          "--budget", "0.00002", "--select-labels")  # fmt: skip
    assert code == 2
    one_error_line(capsys.readouterr().err, "error: --select-labels needs a label for every image")
    assert hash_teacher.billing()["requests"] == 0
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("student", "says"),
    [
        ("vit_tiny_patch16_224", "Input height (32) doesn't match model (224)"),
        ("mobilenetv3_small_100.nosuchtag", "Invalid pretrained tag (nosuchtag)"),
    ],
    ids=["fixed-input-size", "unknown-tag"],
)
def test_a_select_student_that_cannot_train_is_refused_before_sending(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    student: str,
    says: str,
) -> None:
    """A timm name the name check accepts, but a student that cannot be built (a
    pretrained tag timm does not have) or cannot take the --select-image-size images (a
    ViT made for 224 px): a traceback once round 1 was paid for, on every rerun too (until
    2026-12-07). Now a usage error before anything is sent."""
    code = select_harvest(hash_teacher, digits_data, tmp_path / "c", "--budget", "0.006",
                          "--round-steps", "1", "--select-student", student)  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    one_error_line(err, f"error: --select-student {student} cannot train on 32 px images")
    assert says in err
    assert hash_teacher.billing()["requests"] == 0
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{",
        "[]",
        '{"version": 1}',
        '{"version": 2, "picked": []}',
        '{"version": 1, "picked": "x", "rounds_done": 0}',
    ],
    ids=["empty", "not-json", "a-list", "no-picks", "newer-version", "picks-not-a-list"],
)
def test_a_selection_state_that_cannot_be_read_is_refused_before_sending(
    cli: Cli, digits_data: Path, content: str
) -> None:
    """Before: a state file emptied, edited by hand, or written by a newer version ended
    ``harvest --select`` with a traceback (JSONDecodeError, KeyError, AttributeError...)."""
    from distill.labelfree.rounds import state_path

    state = state_path(cli.cache, "local:hash", scan(digits_data), "random")
    state.parent.mkdir(parents=True)
    state.write_text(content)
    code = cli.select_harvest(digits_data, "--budget", "0.001")
    cli.refused(code, f"error: the selection state {state}")
    assert state.read_text() == content  # left as it was, for the user to look at


def test_an_unknown_train_student_is_refused_before_training(
    trained: Path, digits_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    flags = ("--no-pretrained", "--out", str(out))
    assert train(digits_data, trained / "cache", *flags, student="mobilenetv3_smal_100") == 2
    err = capsys.readouterr().err
    one_error_line(err, "error: unknown student model 'mobilenetv3_smal_100'")
    assert "mobilenetv3_small_100" in err  # the close match is suggested
    assert not out.exists()  # nothing trained, no run folder


@pytest.mark.parametrize(
    ("student", "size", "says"),
    [
        ("vit_tiny_patch16_224", "32", "Input height (32) doesn't match model (224)"),
        ("mobilenetv3_small_100.nosuchtag", "16", "Invalid pretrained tag (nosuchtag)"),
    ],
    ids=["fixed-input-size", "unknown-tag"],
)
def test_a_train_student_that_cannot_train_is_refused_before_any_work(
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    student: str,
    size: str,
    says: str,
) -> None:
    """A timm name the name check accepts, but a student that cannot be built (a pretrained
    tag timm does not have: a traceback) or cannot take the --image-size images (a ViT made
    for 224 px: a one-line error), both found only after the data was scanned and the store
    loaded (until 2026-12-07). Now a usage error first: here the cache holds no store, the
    error that came first until then."""
    out = tmp_path / "run"
    flags = ("--no-pretrained", "--image-size", size, "--out", str(out))
    assert train(digits_data, tmp_path / "empty", *flags, student=student) == 2
    err = capsys.readouterr().err
    one_error_line(err, f"error: --student {student} cannot train on {size} px images")
    assert says in err
    assert not out.exists()


@pytest.mark.parametrize("weights", ["missing.safetensors", "notes.txt", "notes.safetensors"])
def test_a_weights_file_that_cannot_be_read_is_refused_before_training(
    trained: Path,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    weights: str,
) -> None:
    """Before: FileNotFoundError, or IndexError from torch.load on a text file, as a
    traceback once training had started."""
    for name in ("notes.txt", "notes.safetensors"):
        (tmp_path / name).write_text("not weights\n")
    out = tmp_path / "run"
    flags = ("--weights", str(tmp_path / weights), "--out", str(out))
    assert train(digits_data, trained / "cache", *flags, student="mobilenetv3_small_100") == 2
    one_error_line(capsys.readouterr().err, f"error: --weights {tmp_path / weights}")
    assert not out.exists()


def test_a_file_no_one_can_decode_with_a_student_run_leaves_only_itself_out(
    trained: Path, unlabelled: tuple[Path, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Before 2026-12-06 the student's predictions decoded every image after the teacher
    was paid: a truncated file ended the run there (exit 1, no labels written, on every
    rerun). The student now predicts before anything is sent and skips what it cannot
    read; the teacher route leaves that file unlabelled."""
    folder, classes = unlabelled
    break_pixels(folder / "img02.png")
    out = tmp_path / "labels.csv"
    flags = ("--route", "zeroshot", "--check", "none", "--batch-size", "4", "--out", str(out),
             "--student-run", str(trained / "run"))  # fmt: skip
    with local_teacher(monkeypatch, dim=64, decode=True) as teacher:
        code = pseudolabel(teacher, folder, classes, tmp_path / "c", *flags)
    assert code == 0, capsys.readouterr()
    with out.with_suffix(".decisions.csv").open(newline="") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert rows["img02.png"]["student"] == "" and rows["img02.png"]["label"] == ""
    assert rows["img02.png"]["decision"] == "no_answer"
    assert all(rows[f"img{i:02d}.png"]["student"] for i in (0, 1, 3))


def test_the_flat_folder_flow_with_an_unsorted_class_file_ends_in_a_student_run(
    hash_teacher: LocalTeacher, unlabelled: tuple[Path, Path], tmp_path: Path
) -> None:
    """What the harvest of a flat folder says to do: pseudolabel it, harvest the manifest
    with the class file, train, then pseudolabel again with ``--student-run``. With a class
    file not in sorted order `train` found no store ("run `vlm-distill harvest` first": it
    could not be given the class file) and so no run for ``--student-run`` (which compares
    the run's classes with the class file's, in order) until 2026-12-06."""
    folder, classes = unlabelled
    backwards = tmp_path / "backwards.txt"
    backwards.write_text("\n".join(reversed(classes.read_text().split())) + "\n")
    cache, labels = tmp_path / "c", tmp_path / "labels.csv"
    flags = ("--check", "none", "--out", str(labels))
    assert pseudolabel(hash_teacher, folder, backwards, cache, *flags) == 0
    assert main([
        "harvest", str(labels), "--class-file", str(backwards), "--allow-outside-paths",
        "--teacher", "local:hash", "--base-url", hash_teacher.url, "--cache", str(cache),
        "--budget", "1",
    ]) == 0  # fmt: skip
    run = tmp_path / "run"
    assert train(labels, cache, "--class-file", str(backwards), *TINY, "--holdout-fraction",
                 "0", "--threads", "1", "--out", str(run), "--json") == 0  # fmt: skip
    again = ("--check", "none", "--student-run", str(run), "--out", str(tmp_path / "b.csv"))
    assert pseudolabel(hash_teacher, folder, backwards, cache, *again) == 0


@pytest.mark.parametrize(
    ("route", "check", "refused"),
    [("answer", "none", True), ("zeroshot", "answer", True), ("zeroshot", "none", False)],
)
def test_a_class_named_like_an_option_letter_is_refused_before_sending(
    cli: Cli, unlabelled: tuple[Path, Path], tmp_path: Path, route: str, check: str, refused: bool
) -> None:
    """Before: the answer "c" (class c) of classes a, b, c shown in a shuffled order was
    read as option letter C, another class: a wrong label in the manifest with --check
    none. The zero-shot route parses no letters: it labels them."""
    folder, _ = unlabelled
    classes = tmp_path / "abc.txt"
    classes.write_text("a\nb\nc\n")
    code = cli.pseudolabel(folder, classes, "--route", route, "--check", check)
    if not refused:
        assert code == 0
        return
    cli.refused(code, "error: class 'a' could be read as an option letter")


@pytest.mark.parametrize(("route", "refused"), [("answer", True), ("zeroshot", False)])
def test_a_class_named_only_by_an_emoji_is_refused_on_the_answer_route(
    cli: Cli, unlabelled: tuple[Path, Path], tmp_path: Path, route: str, refused: bool
) -> None:
    """Before: "🐱" normalised to an empty name: every answer bought for it (a bare "🐱"
    too) got no label. The zero-shot route reads no names from answers: it labels it."""
    folder, _ = unlabelled
    classes = tmp_path / "emoji.txt"
    classes.write_text("🐱\ndog\n", encoding="utf-8")
    code = cli.pseudolabel(folder, classes, "--route", route, "--check", "none")
    if not refused:
        assert code == 0
        return
    cli.refused(code, "error: class '🐱' has no letter or digit")


@pytest.mark.parametrize("data_is", ["folder", "manifest"])
def test_an_out_over_the_datas_description_is_refused_before_sending(
    cli: Cli, unlabelled: tuple[Path, Path], tmp_path: Path, data_is: str
) -> None:
    """Before: ``--out DATA/dataset.json`` (or ``list.dataset.json`` beside a manifest
    ``list.csv``), which the run reads for the data's hflip, was written over with the
    kept rows after every answer was bought."""
    folder, classes = unlabelled
    data: Path = folder
    if data_is == "manifest":
        data = tmp_path / "list.csv"
        write_list(data, folder)
    described = folder / "dataset.json" if data_is == "folder" else tmp_path / "list.dataset.json"
    described.write_text('{"hflip": false}\n')
    before = described.read_bytes()
    code = cli.pseudolabel(data, classes, "--out", str(described), "--allow-outside-paths")
    cli.refused(code, "error: --out")
    assert described.read_bytes() == before


@pytest.mark.parametrize("name", ["run.json", "model.safetensors"])
def test_an_out_over_the_student_run_is_refused_before_sending(
    cli: Cli, trained: Path, unlabelled: tuple[Path, Path], tmp_path: Path, name: str
) -> None:
    """Before: ``--student-run RUN --out RUN/run.json`` (or its weights) was written over
    with the kept rows once every answer was bought: the trained run was gone."""
    folder, classes = unlabelled
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    before = (run / name).read_bytes()
    flags = ("--student-run", str(run), "--check", "none", "--out", str(run / name))
    cli.refused(cli.pseudolabel(folder, classes, *flags), "error: --out")
    assert (run / name).read_bytes() == before

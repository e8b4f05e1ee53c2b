"""`vlm-distill pseudolabel` on a folder of unlabelled images, against the real local server."""

from __future__ import annotations

import csv
import errno
from pathlib import Path
from typing import Any

import pytest

from distill.cli import main
from distill.data import scan
from tests.e2e.conftest import LocalTeacher, local_teacher
from tests.labelfree.conftest import break_pixels, flat_folder


@pytest.fixture
def unlabelled(digits_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """12 digits images flat in one folder (no class folders) and the class file."""
    return flat_folder(digits_data, tmp_path, count=12, every=10)


def pseudolabel(teacher: LocalTeacher, data: Path, classes: Path, cache: Path, *extra: str) -> int:
    return main(
        [
            "pseudolabel", str(data), "--class-file", str(classes), "--teacher", "local:hash",
            "--base-url", teacher.url, "--cache", str(cache), "--budget", "1", *extra,
        ]
    )  # fmt: skip


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("check", ["zeroshot", "resample", "none"])
def test_pseudolabel_writes_a_manifest_of_kept_images(
    hash_teacher: LocalTeacher,
    unlabelled: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    check: str,
) -> None:
    folder, classes = unlabelled
    assert scan(folder, class_file=classes).layout == "unlabelled"
    out = tmp_path / "labels.csv"
    cache = tmp_path / "cache"
    flags = ("--check", check, "--out", str(out))
    assert pseudolabel(hash_teacher, folder, classes, cache, *flags) == 0
    decisions = read(out.with_suffix(".decisions.csv"))
    assert len(decisions) == 12
    kept = [d for d in decisions if d["decision"] == "kept"]
    assert all(d["label"] == d["second"] for d in kept)
    assert all(d["decision"] == "teacher_inconsistent" for d in decisions if d not in kept)
    if check == "none":
        assert len(kept) == 12  # every answer parsed; no second opinion to disagree
    manifest = scan(out, class_file=classes, allow_outside_paths=True)  # absolute paths
    assert len(manifest.samples) == len(kept)
    assert [manifest.class_names[s.label] for s in manifest.samples] == [  # type: ignore[index]
        d["label"] for d in kept
    ]
    bill = hash_teacher.billing()
    answers_bought = 12 * (2 if check == "resample" else 1)
    assert bill["requests"] >= answers_bought
    capsys.readouterr()
    # everything is cached: a second run sends nothing
    assert pseudolabel(hash_teacher, folder, classes, cache, *flags) == 0
    assert hash_teacher.billing()["requests"] == bill["requests"]


def test_out_onto_a_file_no_pseudolabel_run_wrote_is_refused(
    hash_teacher: LocalTeacher,
    unlabelled: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--out CACHE/responses/cache.db` wrote the CSV over the paid response database (the
    next run refused the cache; `cache recover` found 0 entries), `--out POOL/image.png`
    over an image of the data: both exit 0 (until 2026-12-08). Refused now, exit 2,
    before anything is sent; the run's own earlier output is still replaced."""
    folder, classes = unlabelled
    cache = tmp_path / "cache"
    assert pseudolabel(hash_teacher, folder, classes, cache) == 0
    bought = hash_teacher.billing()["requests"]
    image = sorted(p for p in folder.iterdir() if p.suffix == ".png")[0]
    for victim in (cache / "responses" / "cache.db", image):
        before = victim.read_bytes()
        capsys.readouterr()
        assert pseudolabel(hash_teacher, folder, classes, cache, "--out", str(victim)) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "exists and is not a pseudolabel run's output" in err, err
        assert victim.read_bytes() == before
    assert hash_teacher.billing()["requests"] == bought
    assert pseudolabel(hash_teacher, folder, classes, cache) == 0  # its own: replaced


def test_the_manifest_keeps_the_datas_no_flip_setting(
    hash_teacher: LocalTeacher, unlabelled: tuple[Path, Path], tmp_path: Path
) -> None:
    """The manifest "ready for harvest/train" allowed flips whatever the data's
    dataset.json said (until 2026-12-06): digits were mirrored in harvest and training."""
    folder, classes = unlabelled
    (folder / "dataset.json").write_text('{"hflip": false}')
    assert scan(folder, class_file=classes).hflip is False
    out = tmp_path / "labels.csv"
    flags = ("--check", "none", "--out", str(out))
    assert pseudolabel(hash_teacher, folder, classes, tmp_path / "cache", *flags) == 0
    labelled = scan(out, class_file=classes, allow_outside_paths=True)
    assert len(labelled.samples) == 12 and labelled.hflip is False


def test_pseudolabel_budget_stop_and_bad_flags(
    hash_teacher: LocalTeacher,
    unlabelled: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, classes = unlabelled
    cache = tmp_path / "cache"
    code = pseudolabel(hash_teacher, folder, classes, cache, "--check", "none",
                       "--max-requests", "5")  # fmt: skip
    assert code == 3 and "stopped by the budget" in capsys.readouterr().out
    assert hash_teacher.billing()["requests"] == 5
    assert pseudolabel(hash_teacher, folder, classes, cache, "--route", "zeroshot") == 2
    assert main(["pseudolabel", str(folder), "--cache", str(cache)]) == 2  # no class names


def test_an_inconsistent_teacher_is_filtered_out(
    hash_teacher: LocalTeacher, unlabelled: tuple[Path, Path], tmp_path: Path
) -> None:
    """The hash teacher's answer and its zero-shot argmax agree only when both embed the
    same option text; another class prompt makes them disagree on most images."""
    folder, classes = unlabelled
    out = tmp_path / "labels.csv"
    flags = ("--prompt", "a drawing of the number {}", "--out", str(out))
    assert pseudolabel(hash_teacher, folder, classes, tmp_path / "c", *flags) == 0
    decisions = read(out.with_suffix(".decisions.csv"))
    dropped = [d for d in decisions if d["decision"] == "teacher_inconsistent"]
    assert dropped and all(d["label"] != d["second"] for d in dropped)
    kept = [d for d in decisions if d["decision"] == "kept"]
    assert len(read(out)) == len(kept) == 12 - len(dropped)


def test_pseudolabel_reruns_share_one_budget(
    hash_teacher: LocalTeacher, unlabelled: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--budget`` caps the ledger's total for the teacher: a rerun never spends it again."""
    from decimal import Decimal

    folder, classes = unlabelled
    flags = ("--check", "none", "--route", "answer")
    assert pseudolabel(hash_teacher, folder, classes, tmp_path / "scratch", *flags) == 0
    full = Decimal(hash_teacher.billing()["usd"])
    hash_teacher.reset()
    cap = str((full / 2).quantize(Decimal("0.000001")))
    cache = tmp_path / "cache"
    for run in range(4):
        code = pseudolabel(hash_teacher, folder, classes, cache, *flags, "--budget", cap)
        assert code == 3
        bill = hash_teacher.billing()
        # a rerun may use what the last one left of the cap, never the cap again
        assert Decimal(bill["usd"]) <= Decimal(cap), run
        assert bill["requests"] > 0  # the cap buys some answers


# -- a disk that fills (or a crash) while the manifest is written ---------------------------


def _disk_fills_after(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """Every CSV writer made from now on fails with a full disk after ``rows`` rows."""
    real = csv.writer

    class Writer:
        def __init__(self, f: Any, *args: Any, **kwargs: Any) -> None:
            self.inner, self.n = real(f, *args, **kwargs), 0

        def writerow(self, row: Any) -> Any:
            if self.n >= rows:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.n += 1
            return self.inner.writerow(row)

        def writerows(self, many: Any) -> None:
            for row in many:
                self.writerow(row)

    monkeypatch.setattr(csv, "writer", Writer)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_manifest_write_that_fails_midway_leaves_the_old_file_or_none(
    hash_teacher: LocalTeacher,
    unlabelled: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """labels.csv was written row by row in place: a full disk (or a crash) mid-write left
    its first rows, which `train` then read as a smaller data set without a word."""
    folder, classes = unlabelled
    out = tmp_path / "run" / "labels.csv"
    cache = tmp_path / "cache"
    flags = ("--check", "none", "--out", str(out))
    assert pseudolabel(hash_teacher, folder, classes, cache, *flags) == 0
    assert len(read(out)) == 12
    before = _files(out.parent)
    _disk_fills_after(monkeypatch, 3)
    capsys.readouterr()
    assert pseudolabel(hash_teacher, folder, classes, cache, *flags) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert _files(out.parent) == before  # the old manifest and decisions, no temporary file

    # a first write that fails leaves no manifest at all
    fresh = tmp_path / "fresh" / "labels.csv"
    assert pseudolabel(hash_teacher, folder, classes, cache, *flags[:2], "--out", str(fresh)) == 1
    assert _files(fresh.parent) == {}


def test_the_manifest_of_selected_images_is_written_whole_or_not_at_all(
    digits_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harvest --select`'s manifest of the bought images had the same flaw."""
    from distill.cli.select_cmd import write_manifest

    ds = scan(digits_data)
    ids = [s.id for s in ds.samples[:10]]
    path = tmp_path / "select" / "bought.csv"
    write_manifest(path, ds, ids)
    before = _files(path.parent)
    _disk_fills_after(monkeypatch, 3)
    with pytest.raises(OSError, match="No space left"):
        write_manifest(path, ds, ids[::-1])
    assert _files(path.parent) == before


# -- --check views: the teacher's zero-shot label of augmented views must agree ------------


@pytest.fixture
def with_black(unlabelled: tuple[Path, Path]) -> tuple[Path, Path]:
    """The 12 digits plus an all-black image: every augmented view of it (crop, brightness,
    contrast) is black again, and written as the views are encoded its file is byte for
    byte its views, so even the hash teacher gives all its views the answer's label."""
    import numpy as np

    from distill.data.views import png_bytes

    folder, classes = unlabelled
    (folder / "black.png").write_bytes(png_bytes(np.zeros((32, 32, 3), dtype=np.uint8)))
    return folder, classes


@pytest.mark.parametrize("route", ["answer", "zeroshot"])
def test_check_views_drops_an_image_whose_views_disagree(
    hash_teacher: LocalTeacher, with_black: tuple[Path, Path], tmp_path: Path, route: str
) -> None:
    folder, classes = with_black
    # a file the teacher takes as it is (its bytes), but that does not decode into views
    broken = bytearray((folder / "black.png").read_bytes())
    broken[50:-20] = bytes(x ^ 0x55 for x in broken[50:-20])  # the pixel data, scrambled
    (folder / "broken.png").write_bytes(bytes(broken))
    out = tmp_path / "labels.csv"
    flags = ("--route", route, "--check", "views", "--check-views", "3", "--out", str(out))
    assert pseudolabel(hash_teacher, folder, classes, tmp_path / "cache", *flags) == 0
    decisions = {Path(d["path"]).name: d for d in read(out.with_suffix(".decisions.csv"))}
    assert len(decisions) == 14
    broken = decisions.pop("broken.png")
    assert broken["label"] and broken["views"] == "unreadable"
    assert broken["decision"] == "teacher_inconsistent"
    black = decisions.pop("black.png")
    assert black["decision"] == "kept"
    assert black["views"] == "|".join([black["label"]] * 3) and black["second"] == black["label"]
    # The hash teacher's views of a digit are other bytes, so other (random) labels: the
    # first view that disagrees drops the image, and no further view is bought for it.
    dropped = [d for d in decisions.values() if d["decision"] == "teacher_inconsistent"]
    assert dropped
    for d in dropped:
        views = d["views"].split("|")
        assert views[:-1] == [d["label"]] * (len(views) - 1) and views[-1] != d["label"]
        assert d["second"] == views[-1]
    for d in decisions.values():
        assert d["decision"] in ("kept", "teacher_inconsistent")
        if d["decision"] == "kept":
            assert d["views"] == "|".join([d["label"]] * 3)
    assert {Path(r["path"]).name for r in read(out)} == {
        n for n, d in decisions.items() if d["decision"] == "kept"
    } | {"black.png"}
    # Images billed: 14 answers (or embeddings of the files), then each digit's views up to
    # the first that disagreed and the black image's first view; its other views are the
    # same bytes (cached), and so is its file for the zeroshot route's embedding.
    views_bought = sum(len(d["views"].split("|")) for d in decisions.values())
    views_bought += 1 if route == "answer" else 0
    assert hash_teacher.billing()["images"] == 14 + views_bought


@pytest.mark.parametrize("check", ["views", "resample"])
def test_check_stopped_by_the_budget_exits_3_and_a_rerun_spends_nothing(
    hash_teacher: LocalTeacher,
    with_black: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    check: str,
) -> None:
    """A budget that buys the answers but not the whole check stops the run with exit 3
    (any check: a stop during the check used to exit 0 with its drops reported as final),
    spends at most the cap; more budget finishes it; a third run sends nothing."""
    from decimal import Decimal

    folder, classes = with_black
    views = ("--check", check)
    # what the answers alone cost, and the answers plus the view check
    assert pseudolabel(hash_teacher, folder, classes, tmp_path / "a", "--check", "none") == 0
    answers = Decimal(hash_teacher.billing()["usd"])
    hash_teacher.reset()
    assert pseudolabel(hash_teacher, folder, classes, tmp_path / "b", *views) == 0
    full = Decimal(hash_teacher.billing()["usd"])
    assert full > answers  # the views cost something
    hash_teacher.reset()
    cap = str((answers + (full - answers) / 2).quantize(Decimal("0.000001")))
    cache = tmp_path / "cache"
    capsys.readouterr()
    assert pseudolabel(hash_teacher, folder, classes, cache, *views, "--budget", cap) == 3
    assert "answers are not checked yet" in " ".join(capsys.readouterr().out.split())
    assert Decimal(hash_teacher.billing()["usd"]) <= Decimal(cap)
    # more budget finishes the check without buying again what was bought
    assert pseudolabel(hash_teacher, folder, classes, cache, *views) == 0
    assert Decimal(hash_teacher.billing()["usd"]) == full
    bill = hash_teacher.billing()
    assert pseudolabel(hash_teacher, folder, classes, cache, *views) == 0
    assert hash_teacher.billing() == bill  # all cached: $0, nothing sent


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--check-views", "0"), "--check-views: must be a whole number from 1 to 64"),
        (("--check-views", "2"), "--check-views needs --check views"),  # with --check zeroshot
        (("--check", "views", "--teacher", "openai:gpt-4o-mini"), "cannot give image embeddings"),
    ],
)
def test_check_views_bad_input_exits_2_and_sends_nothing(
    hash_teacher: LocalTeacher,
    unlabelled: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: tuple[str, ...],
    message: str,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-secret")
    folder, classes = unlabelled
    argv = [
        "pseudolabel", str(folder), "--class-file", str(classes), "--teacher", "local:hash",
        "--base-url", hash_teacher.url, "--cache", str(tmp_path / "c"), *extra,
    ]  # fmt: skip
    if "openai:gpt-4o-mini" in extra:  # an answers-only teacher, pointed at the local server
        del argv[argv.index("--teacher") : argv.index("--teacher") + 2]
        argv[argv.index("--base-url") + 1] = hash_teacher.url + "/v1"
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses a bad number itself
        code = int(exc.code or 0)
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(
        ("error:", "vlm-distill pseudolabel: error:"))]
    assert len(err) == 1 and message in err[0], err
    assert hash_teacher.billing()["requests"] == 0


class InFlight:
    """ASGI wrapper: the most image-embedding requests it held at once."""

    def __init__(self, app: Any) -> None:
        self.app, self.now, self.most = app, 0, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/embed"):
            await self.app(scope, receive, send)
            return
        messages = [await receive()]
        while messages[-1].get("more_body"):
            messages.append(await receive())
        body = b"".join(m.get("body", b"") for m in messages)

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        counted = b'"images"' in body
        self.now += counted
        self.most = max(self.most, self.now)
        try:
            await self.app(scope, replay, send)
        finally:
            self.now -= counted


def test_zero_shot_requests_go_out_concurrently_with_progress(
    unlabelled: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: the zero-shot route sent its image requests one after another whatever
    --concurrency said (3x slower than harvest with the same flags), and printed nothing
    until the end."""
    from pydantic import SecretStr

    from distill.server import Faults, HashBackend, ServerConfig, ServerThread, create_app
    from tests.e2e.conftest import TOKEN

    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    config = ServerConfig(token=SecretStr(TOKEN), faults=Faults(latency_ms=150))
    gate = InFlight(create_app(config, HashBackend(dim=64)))
    folder, classes = unlabelled
    with ServerThread(gate) as server:
        code = main([
            "pseudolabel", str(folder), "--class-file", str(classes), "--teacher", "local:hash",
            "--base-url", server.base_url, "--cache", str(tmp_path / "c"), "--budget", "1",
            "--route", "zeroshot", "--check", "none", "--batch-size", "2",
            "--concurrency", "4",
        ])  # fmt: skip
    assert code == 0
    assert gate.most > 1  # 6 requests of 2 images, several at a time (was 1)
    assert "pseudolabel zero-shot" in capsys.readouterr().out  # the progress line


def test_a_file_the_teacher_cannot_decode_leaves_only_itself_unlabelled(
    unlabelled: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a file whose header opens but whose pixels do not decode made the teacher
    refuse (400) its whole zero-shot request; the error ended the run (exit 1) after the
    other requests were paid, with no labels written, on every rerun."""
    folder, classes = unlabelled
    good = (folder / "img05.png").read_bytes()
    broken = bytearray(good)
    broken[len(broken) // 2 : len(broken) // 2 + 32] = b"\xff" * 32
    (folder / "img05.png").write_bytes(bytes(broken))
    out = tmp_path / "labels.csv"
    flags = ("--route", "zeroshot", "--check", "none", "--batch-size", "4", "--out", str(out))
    with local_teacher(monkeypatch, dim=64, decode=True) as teacher:
        code = pseudolabel(teacher, folder, classes, tmp_path / "c", *flags)
    assert code == 0
    decisions = read(out.with_suffix(".decisions.csv"))
    labelled = {Path(r["path"]).name for r in decisions if r["label"]}
    assert labelled == {f"img{i:02d}.png" for i in range(12)} - {"img05.png"}
    # in the run (not skipped by the scan), with no answer
    by_name = {Path(r["path"]).name: r for r in decisions}
    assert by_name["img05.png"]["decision"] == "no_answer"


def test_a_check_the_budget_did_not_buy_is_unchecked_not_inconsistent(
    hash_teacher: LocalTeacher, unlabelled: tuple[Path, Path], tmp_path: Path
) -> None:
    """Before 2026-12-06, answers whose zero-shot check was never bought (the budget
    stopped first) were listed as teacher_inconsistent, in the table and decisions.csv."""
    folder, classes = unlabelled
    out = tmp_path / "labels.csv"
    # the 12 answers and the class prompts fit; the 12 image embeddings of the check do not
    flags = ("--budget", "0.0005", "--check", "zeroshot", "--out", str(out))
    code = pseudolabel(hash_teacher, folder, classes, tmp_path / "c", *flags)
    assert code == 3
    rows = read(out.with_suffix(".decisions.csv"))
    unchecked = [r for r in rows if r["decision"] == "unchecked"]
    assert unchecked and all(r["answer"] and not r["second"] for r in unchecked)
    assert not any(r["decision"] == "teacher_inconsistent" and not r["second"] for r in rows)


@pytest.mark.parametrize("check", ["none", "resample", "zeroshot"])
def test_files_the_teacher_cannot_decode_leave_only_themselves_unanswered(
    unlabelled: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    check: str,
) -> None:
    """Before: on the answer route, the teacher's 400 for a file whose pixels do not
    decode was counted as an answer failed at the teacher: exit 1 ("fix the cause, then
    run again to retry them") on every rerun, and five such files in a row stopped the
    run, the other images left unasked."""
    folder, classes = unlabelled
    broken = {f"img{i:02d}.png" for i in range(4, 10)}  # their pixels do not decode
    for name in broken:
        break_pixels(folder / name)
    out = tmp_path / "labels.csv"
    flags = ("--check", check, "--concurrency", "1", "--out", str(out))
    with local_teacher(monkeypatch, dim=64, decode=True) as teacher:
        code = pseudolabel(teacher, folder, classes, tmp_path / "c", *flags)
        assert code == 0, capsys.readouterr().out
        decisions = read(out.with_suffix(".decisions.csv"))
        labelled = {Path(r["path"]).name for r in decisions if r["label"]}
        assert labelled == {f"img{i:02d}.png" for i in range(12)} - broken
        assert {r["decision"] for r in decisions if Path(r["path"]).name in broken} == {"no_answer"}
        code = pseudolabel(teacher, folder, classes, tmp_path / "c", *flags)
        assert code == 0  # and so does a rerun


@pytest.mark.parametrize("check", ["resample", "zeroshot"])
def test_the_check_is_bought_only_for_images_with_a_label_to_check(
    hash_teacher: LocalTeacher,
    unlabelled: tuple[Path, Path],
    tmp_path: Path,
    check: str,
) -> None:
    """Before: the second opinion (a second paid answer, or an image embedding) was bought
    for every image, also for those whose answer named no option ("I cannot tell"),
    which the filter drops whatever the check says (``--check views`` already skipped
    them). Two of the three options share their first 16 words: an answer naming either
    is cut at the 16-token answer limit and names both, so no option. (Until 2026-12-06
    this was a class named "x", read as option letter X; such names are now refused.)"""
    from distill.labelfree.pseudolabel import shuffled_order

    folder, _ = unlabelled
    classes = tmp_path / "long.txt"
    shared = "_".join(f"word{i}" for i in range(16))
    classes.write_text(f"{shared}_fox\n{shared}_owl\ncat\n")
    out = tmp_path / "labels.csv"
    flags = ("--check", check, "--out", str(out))
    assert pseudolabel(hash_teacher, folder, classes, tmp_path / "c", *flags) == 0
    decisions = read(out.with_suffix(".decisions.csv"))
    unusable = [d["id"] for d in decisions if not d["label"]]
    assert all(d["decision"] == "no_answer" for d in decisions if not d["label"])
    bill = hash_teacher.billing()
    if check == "resample":  # a shuffled order that is the first one's is a cache hit
        shuffled = [d["id"] for d in decisions if shuffled_order(3, d["id"]) != [0, 1, 2]]
        assert set(unusable) & set(shuffled)  # some answers name no option
        assert bill["requests"] == 12 + len(set(shuffled) - set(unusable))  # answers only
    else:
        assert unusable  # some answers name no option: nothing to check for them
        assert bill["images"] == 12 + 12 - len(unusable)  # the answers, then embeddings


@pytest.mark.parametrize(
    ("cap", "said"),
    [
        (("--run-budget", "0.0003"), "--run-budget $0.0003 would be exceeded"),
        (("--max-requests", "5"), "--max-requests 5 would be exceeded"),
        (("--max-items", "5"), "--max-items 5 would be exceeded"),
        (("--budget", "0.0003"), "--budget $0.0003 for local:hash would be exceeded"),
    ],
    ids=["run-budget", "max-requests", "max-items", "budget"],
)
def test_a_budget_stop_says_which_cap_stopped_it(
    hash_teacher: LocalTeacher,
    unlabelled: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cap: tuple[str, str],
    said: str,
) -> None:
    """Before: every budget stop said "raise --budget and run again", also when
    ``--run-budget`` or ``--max-requests`` had stopped the run (raising ``--budget`` does
    nothing for those; running again does). Until 2026-12-07 a ``--max-requests`` or
    ``--max-items`` stop named no flag ("cap of 5 requests would be exceeded ... raise the
    cap"), though the README says the message names the cap that stopped the run."""
    folder, classes = unlabelled
    code = pseudolabel(hash_teacher, folder, classes, tmp_path / "c", *cap)
    assert code == 3
    text = " ".join(capsys.readouterr().out.split())  # as one line, however wrapped
    assert "stopped by the budget" in text and said in text
    assert ("raise --budget" in text) == (cap[0] == "--budget")


def broken_large_png() -> bytes:
    """A PNG over the 2048-px upload limit whose pixels do not decode: its header opens,
    the client cannot downscale it (it refuses it before sending)."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.zeros((2100, 2100, 3), np.uint8)
    pixels[::7] = 200
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    data = bytearray(out.getvalue())
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    return bytes(data)


def test_a_file_the_client_cannot_prepare_leaves_only_itself_unlabelled(
    hash_teacher: LocalTeacher,
    unlabelled: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: on the zero-shot route, an image the client refuses before sending (too
    large, so it must be downscaled, but its pixels do not decode) failed its whole
    request: exit 1 ("cannot decode image/png image of 2100x2100"), no labels written, on
    every rerun (the answer route already left such a file unlabelled)."""
    folder, classes = unlabelled
    (folder / "zz-big.png").write_bytes(broken_large_png())
    out = tmp_path / "labels.csv"
    flags = ("--route", "zeroshot", "--check", "none", "--batch-size", "4", "--out", str(out))
    for _ in range(2):  # and so does a rerun
        code = pseudolabel(hash_teacher, folder, classes, tmp_path / "c", *flags)
        assert code == 0, capsys.readouterr().err
        decisions = {Path(r["path"]).name: r for r in read(out.with_suffix(".decisions.csv"))}
        assert decisions["zz-big.png"]["decision"] == "no_answer"
        assert sum(1 for r in decisions.values() if r["label"]) == 12

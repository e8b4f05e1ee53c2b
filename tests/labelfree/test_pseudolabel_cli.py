"""`vlm-distill pseudolabel` on a folder of unlabelled images, against the real local server."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from distill.cli import main
from distill.data import scan
from tests.e2e.conftest import LocalTeacher


@pytest.fixture
def unlabelled(digits_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """12 digits images flat in one folder (no class folders) and the class file."""
    ds = scan(digits_data)
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i, s in enumerate(ds.samples[::10][:12]):
        shutil.copy(s.path, folder / f"img{i:02d}.png")
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(ds.class_names) + "\n")
    return folder, classes


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

    import httpx

    from tests.e2e.conftest import TOKEN

    folder, classes = unlabelled
    flags = ("--check", "none", "--route", "answer")
    assert pseudolabel(hash_teacher, folder, classes, tmp_path / "scratch", *flags) == 0
    full = Decimal(hash_teacher.billing()["usd"])
    httpx.post(
        hash_teacher.url + "/admin/reset", headers={"Authorization": f"Bearer {TOKEN}"}
    ).raise_for_status()
    cap = str((full / 2).quantize(Decimal("0.000001")))
    cache = tmp_path / "cache"
    for run in range(4):
        code = pseudolabel(hash_teacher, folder, classes, cache, *flags, "--budget", cap)
        assert code == 3
        bill = hash_teacher.billing()
        # a rerun may use what the last one left of the cap, never the cap again
        assert Decimal(bill["usd"]) <= Decimal(cap), run
        assert bill["requests"] > 0  # the cap buys some answers

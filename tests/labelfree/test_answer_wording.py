"""Answers whose wording names an option they do not choose (and answers cut at the
output limit, class lists that show two classes as one option), through the real CLI
(`pseudolabel --route answer`) against a loopback server speaking OpenAI's chat format.

Before 2026-12-06 these were labelled silently with the wrong class: a leading number
followed by other words was read as that option's number ("3 or 5" with the digits
classes became "2_two", the third option), an option letter on its own line was
overruled by a class the explanation below it named ("B" then "It is not a cat." became
cat), and a negated class ("It is not a dog.") was that class."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from distill.cli import main
from distill.labelfree.pseudolabel import parse_answer
from tests.conftest import png_bytes
from tests.providers.loopback import loopback

DIGITS = ["0_zero", "1_one", "2_two", "3_three", "4_four", "5_five"]


def _chat(reply: str, finish: str = "stop") -> Any:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {
            "id": "chatcmpl-1",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply},
                 "finish_reason": finish}
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 5},
        }  # fmt: skip

    return respond


@pytest.mark.parametrize(
    ("classes", "reply", "label"),
    [
        (DIGITS, "3 or 5", ""),  # was 2_two: "3" read as option number 3
        (DIGITS, "3, not 5", ""),  # was 2_two
        (["cat", "dog"], "1 or 2", ""),  # was cat
        (["cat", "dog"], "B\n\nIt is not a cat.", ""),  # was cat (B is dog)
        (["cat", "dog"], "A\n\nThe image shows a dog.", ""),  # was dog (A is cat)
        (["cat", "dog"], "It is not a dog.", ""),  # was dog
        (["cat", "dog"], "The image does not show a cat", ""),  # was cat
        (["cat", "dog"], "B\n\nThe ears are floppy.", "dog"),  # the letter, nothing against it
        (["cat", "dog"], "It is a dog.", "dog"),
        # a class that is another's plural: was sunglass (the plural form of option A)
        (["sunglass", "sunglasses"], "Sunglasses", "sunglasses"),
        (["sunglass", "sunglasses"], "B) sunglasses", "sunglasses"),  # was no label
        (["sunglass", "sunglasses"], "sunglass", "sunglass"),
        # reasoning, then a final answer: was cat (named in the reasoning), and no label
        (["cat", "dog"], "Pointed ears, unlike a cat. Final answer: B", "dog"),
        (DIGITS, "A 5 or a 3?\nAnswer: 3", "3_three"),
    ],
)
def test_an_answer_is_not_labelled_with_a_class_it_does_not_choose(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    classes: list[str],
    reply: str,
    label: str,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-0123456789")
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(3):
        (folder / f"img{i}.png").write_bytes(png_bytes(i))
    class_file = tmp_path / "classes.txt"
    class_file.write_text("\n".join(classes) + "\n")
    out = tmp_path / "labels.csv"
    with loopback(_chat(reply)) as server:
        code = main([
            "pseudolabel", str(folder), "--class-file", str(class_file),
            "--teacher", "openai:gpt-4o-mini", "--base-url", server.url + "/v1",
            "--cache", str(tmp_path / "cache"), "--budget", "1", "--route", "answer",
            "--check", "none", "--concurrency", "1", "--out", str(out),
        ])  # fmt: skip
        assert len(server.requests) == 3
    capsys.readouterr()
    assert code == 0
    with out.with_suffix(".decisions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["answer"] for r in rows] == [reply] * 3
    assert [r["label"] for r in rows] == [label] * 3


def _run(tmp_path: Path, classes: list[str], url: str) -> list[dict[str, str]]:
    class_file = tmp_path / "classes.txt"
    class_file.write_text("\n".join(classes) + "\n")
    out = tmp_path / "labels.csv"
    code = main([
        "pseudolabel", str(tmp_path / "unlabelled"), "--class-file", str(class_file),
        "--teacher", "openai:gpt-4o-mini", "--base-url", url + "/v1",
        "--cache", str(tmp_path / "cache"), "--budget", "1", "--route", "answer",
        "--check", "none", "--concurrency", "1", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    with out.with_suffix(".decisions.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("It is a cat", ""),  # cut at the limit: "cat" may be the start of "caterpillar"
        ("B) caterpillar\n\nIt has many", "caterpillar"),  # the option line is whole
    ],
)
def test_an_answer_cut_at_the_output_limit_is_not_read_by_its_cut_word(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reply: str,
    label: str,
) -> None:
    """Before: a reply cut at ``max_output_tokens`` (finish_reason "length") was read as
    if whole: "It is a cat" cut before "erpillar" was labelled cat, and cached so."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-0123456789")
    (tmp_path / "unlabelled").mkdir()
    for i in range(2):
        (tmp_path / "unlabelled" / f"img{i}.png").write_bytes(png_bytes(i))
    with loopback(_chat(reply, "length")) as server:
        first = _run(tmp_path, ["cat", "caterpillar"], server.url)
        again = _run(tmp_path, ["cat", "caterpillar"], server.url)  # from the cache
        assert len(server.requests) == 2
    capsys.readouterr()
    assert [r["label"] for r in first] == [label] * 2
    assert [r["label"] for r in again] == [label] * 2


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Not a cat", None),
        ("no dog", None),
        ("It isn't a dog", None),
        ("2) not a dog", None),
        ("option 2 or 1", None),
        ("A\nit is not a dog", None),
        ("B\n\nDefinitely a dog.", 1),
        ("B)\ndog", 1),
        ("2 dogs", 1),  # a count with a name: the name
        ("5", 5),  # still the class's own digit
    ],
)
def test_negations_and_trailing_words_name_no_option(answer: str, expected: int | None) -> None:
    names = ["cat", "dog"] if expected != 5 else DIGITS
    assert parse_answer(answer, names) == expected


@pytest.mark.parametrize("twins", [["hot_dog", "hot dog"], ["Cat", "cat"], ["dog", "dog."]])
def test_classes_shown_to_the_teacher_as_one_option_are_refused_before_sending(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    twins: list[str],
) -> None:
    """Before: both were listed ("A) hot dog", "B) hot dog") and bought, and every answer
    naming them was labelled with the later one."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-0123456789")
    (tmp_path / "unlabelled").mkdir()
    (tmp_path / "unlabelled" / "img0.png").write_bytes(png_bytes(0))
    with loopback(_chat("hot dog")) as server:
        class_file = tmp_path / "classes.txt"
        class_file.write_text("\n".join(["bus", *twins]) + "\n")
        argv = [
            "pseudolabel", str(tmp_path / "unlabelled"), "--class-file", str(class_file),
            "--teacher", "openai:gpt-4o-mini", "--base-url", server.url + "/v1",
            "--cache", str(tmp_path / "cache"), "--budget", "1", "--route", "answer",
            "--check", "none", "--out", str(tmp_path / "labels.csv"),
        ]  # fmt: skip
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
        assert code == 2 and server.requests == []
    said = " ".join(capsys.readouterr().err.split())
    assert f"{twins[0]!r} and {twins[1]!r}" in said and "same option" in said

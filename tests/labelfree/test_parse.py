"""Answer parsing: many phrasings of the same option, and everything that is not one."""

from __future__ import annotations

import pytest

from distill.labelfree.pseudolabel import (
    check_choices,
    choice_prompt,
    parse_answer,
    shuffled_order,
)
from distill.teacher.zeroshot import zeroshot_labels, zeroshot_probs
from vlmclient import ConfigurationError

NAMES = ["cat", "dog", "hot_dog", "butterfly", "bus"]
DIGITS = ["0_zero", "1_one", "2_two", "3_three", "4_four", "5_five", "6_six", "7_seven"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("cat", 0),
        ("Cat", 0),
        ("CAT.", 0),
        ("  cat!  ", 0),
        ('"dog"', 1),
        ("Dogs", 1),
        ("a dog", 1),
        ("The dog.", 1),
        ("It is a dog.", 1),
        ("It's a DOG", 1),
        ("The answer is: dog", 1),
        ("Answer: hot dog", 2),
        ("hot-dog", 2),
        ("Hot dogs", 2),
        ("hot_dog", 2),
        ("butterflies", 3),
        ("buses", 4),
        ("A", 0),
        ("b", 1),
        ("(C)", 2),
        ("C)", 2),
        ("D.", 3),
        ("B) dog", 1),
        ("E: bus", 4),
        ("2)", 1),
        ("option 3", 2),
        ("(4)", 3),
        ("I think it is a butterfly.", 3),
        ("The image shows a bus", 4),
        ("**cat**", 0),
    ],
)
def test_answers_that_name_one_option(answer: str, expected: int) -> None:
    assert parse_answer(answer, NAMES) == expected


@pytest.mark.parametrize(
    "answer",
    [
        None,
        "",
        "   ",
        "fox",
        "a photo of a horse",
        "cat or dog",
        "cat, dog",
        "Z",  # a letter beyond the options
        "F)",
        "9)",  # a number beyond the options
        "B) cat",  # letter and name disagree
        "I don't know",
        "...",
    ],
)
def test_answers_outside_the_options_are_none(answer: str | None) -> None:
    assert parse_answer(answer, NAMES) is None


@pytest.mark.parametrize(
    ("answer", "names", "expected"),
    [
        # reasoning that names other options, then the answer (all were no label, or the
        # class the reasoning named: "unlike a cat ... B" was cat)
        ("The ears are pointed, unlike a cat. Final answer: B", NAMES, 1),
        ("Could be a cat or a dog.\n\nFinal answer: B", NAMES, 1),
        ("Could be a cat or a dog. Answer: 3", NAMES, 2),
        ("The strokes could be a 5 or a 3.\nAnswer: 3", DIGITS, 3),  # the class's digit
        ("Could be a cat or a bus. Answer: dog", NAMES, 1),
        ("It is not a cat, so the answer is B.", NAMES, 1),
        ("Whiskers like a cat, but...\n\n**Final Answer:** B) dog", NAMES, 1),
        ("A bus? No. Final answer: **(c)**", NAMES, 2),
        ("Answer: cat. Final answer: dog", NAMES, 1),  # the last marker
        # what follows the marker is held to every rule
        ("I see a dog. Final answer: not a cat", NAMES, None),
        ("I see a dog. Final answer: cat or dog", NAMES, None),
        ("I see a dog. Final answer: B) cat", NAMES, None),
        ("I see a dog. Final answer:", NAMES, None),  # nothing after it (cut)
        ("I see a dog. Answer: Z", NAMES, None),
    ],
)
def test_a_final_answer_marker_is_read_after_the_reasoning(
    answer: str, names: list[str], expected: int | None
) -> None:
    assert parse_answer(answer, names) == expected


def test_synonyms_map_to_their_class() -> None:
    assert parse_answer("A puppy.", NAMES, synonyms={"puppy": "dog"}) == 1
    assert parse_answer("kitten", NAMES, synonyms={"kitten": "cat", "x": "not-a-class"}) == 0
    assert parse_answer("puppy", NAMES) is None


def test_digit_class_names_by_word_or_digit() -> None:
    assert parse_answer("seven", DIGITS) == 7
    assert parse_answer("7", DIGITS) == 7  # the class's own digit, not option number 7
    assert parse_answer("3 three", DIGITS) == 3
    assert parse_answer("Three.", DIGITS) == 3
    assert parse_answer("H", DIGITS) == 7
    assert parse_answer("7)", DIGITS) == 6  # an option number: the 7th listed option


def test_letters_follow_the_shown_order() -> None:
    order = [4, 3, 2, 1, 0]
    prompt = choice_prompt(NAMES, order=order)
    assert prompt.splitlines()[2:4] == ["A) bus", "B) butterfly"]
    assert parse_answer("A", NAMES, order=order) == 4
    assert parse_answer("A) bus", NAMES, order=order) == 4
    assert parse_answer("A) cat", NAMES, order=order) is None
    assert parse_answer("cat", NAMES, order=order) == 0


def test_prompt_lists_every_class_and_rejects_bad_orders() -> None:
    prompt = choice_prompt(NAMES)
    assert "Options:" in prompt and "C) hot dog" in prompt
    with pytest.raises(ValueError):
        choice_prompt(NAMES, order=[0, 0, 1, 2, 3])
    with pytest.raises(ValueError):
        choice_prompt(["only"])


def test_shuffled_order_is_a_deterministic_permutation() -> None:
    a = shuffled_order(10, "img/1.png")
    assert sorted(a) == list(range(10))
    assert a == shuffled_order(10, "img/1.png")
    assert any(shuffled_order(10, f"img/{i}.png") != a for i in range(2, 6))


def test_zeroshot_labels_is_the_cosine_argmax() -> None:
    import numpy as np

    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    img = np.array([[10.0, 1.0], [0.1, 0.2], [-1.0, -0.5]])
    assert zeroshot_labels(img, text).tolist() == [0, 1, 1]


def test_zeroshot_probs_are_the_softmax_of_100_cosines() -> None:
    import numpy as np

    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    img = np.array([[2.0, 0.0], [1.0, 1.0]])
    probs = zeroshot_probs(img, text)
    assert probs.dtype == np.float32
    assert np.allclose(probs[0], [1.0, np.exp(-100.0)], atol=1e-6)  # cos 1 against cos 0
    assert np.allclose(probs[1], [0.5, 0.5])  # equally close to both


@pytest.mark.parametrize("names", [["a", "b", "c"], ["x", "y", "z"], ["cat", "B"], ["cat", "(d)"]])
def test_a_class_an_answer_would_read_as_an_option_letter_is_refused(names: list[str]) -> None:
    """Before: "c" of classes a, b, c shown as [2, 0, 1] was read as option C (class b): a
    wrong label; "y" of x, y, z (only 3 options) got none."""
    with pytest.raises(ConfigurationError, match="read as an option letter") as err:
        check_choices(names)
    assert "letter_" in str(err.value) and "\n" not in str(err.value)


def test_names_that_only_hold_a_letter_among_others_are_shown() -> None:
    check_choices(["a cat", "b_dog", "c3", "1", "2", "x ray"])  # no refusal
    assert parse_answer("1", ["1", "2", "3"], order=[2, 0, 1]) == 0


@pytest.mark.parametrize("name", ["🐱", "?!", "__", "🐶🐶"])
def test_a_class_named_without_letters_or_digits_is_refused(name: str) -> None:
    """Before: the name normalised to nothing, so no answer (not even a bare "🐱") named it."""
    with pytest.raises(ConfigurationError, match="no letter or digit") as err:
        check_choices(["dog", name])
    assert repr(name) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("answer", ["\u212a", "\u0130.", "\u212a) cat", "\u0130"])
def test_a_letter_that_only_case_folds_to_a_z_is_not_a_crash(answer: str) -> None:
    """Before: the Kelvin sign (U+212A) and a dotted capital I (U+0130) matched the option
    letter pattern (case-insensitive) but are not in A-Z: a ValueError from inside
    answer_labels, after the answer was bought (and cached: every rerun ended the same)."""
    assert parse_answer(answer, NAMES) in (None, 0)
    assert parse_answer(answer, ["dog", "hot_dog"]) is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("E. coli", 0), ("e.coli", 0), ("It is E. coli.", 0), ("S. aureus", 1), ("A) E. coli", 0),
     ("B", 1), ("B) S. aureus", 1), ("B) E. coli", None)],
)  # fmt: skip
def test_a_class_that_starts_like_an_option_letter_is_read_by_its_name(
    answer: str, expected: int | None
) -> None:
    """Before: "E. coli" was read as option letter E followed by "coli" (no option): no
    label for any answer naming it by its name alone."""
    names = ["E._coli", "S._aureus", "listeria"]
    assert parse_answer(answer, names) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("label", 1), ("Label.", 1), ("It is a label", 1), ("Answer: label", 1), ("The label", 1),
     ("Option", 2), ("the answer is option", 2), ("Label: cat", 0), ("The answer is B", 1)],
)  # fmt: skip
def test_a_class_named_like_a_preamble_word_is_read(answer: str, expected: int) -> None:
    """Before: "label" (or "option", "class", "answer", "choice") was taken for the words
    a chatty reply puts before its answer and removed: nothing was left, no label."""
    assert parse_answer(answer, ["cat", "label", "option"]) == expected

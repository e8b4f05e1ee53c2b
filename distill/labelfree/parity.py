"""The parity filter (Model Parity Aligner, Penamakuri et al. 2025): train only on the
pseudo-labels that are both trustworthy and new to the student.

A pseudo-labelled image is kept when

1. the teacher gave a usable answer (one of the options),
2. the teacher is self-consistent: a second opinion agrees with the answer. The second
   opinion is its own zero-shot embedding argmax (``check="zeroshot"``, no extra answer
   bought), a second answer to the question with the options shuffled
   (``check="resample"``, one more paid answer per answered image; catches position bias), or the
   zero-shot labels of N augmented views, which must all equal the answer
   (``check="views"``, up to N image embeddings per image; catches a label that does not
   survive a crop or a change of light, even from a deterministic teacher:
   :mod:`distill.labelfree.view_check`), and
3. the current student disagrees with it (the knowledge gap). With no student yet
   (``student=None``) every self-consistent label is kept.

Every dropped image gets one reason, the first rule it fails, so the counts add up. An
image whose second opinion was never bought (a budget stop) is ``unchecked``, not
inconsistent: the next run checks it.

>>> r = parity_filter(["a", "b", "c", "d"], [0, 1, None, 2], [0, 0, 1, 2], [1, 1, 1, 1])
>>> r.kept, r.counts
(['a', 'd'], {'kept': 2, 'no_answer': 1, 'unchecked': 0, 'teacher_inconsistent': 1, \
'student_agrees': 0})
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["REASONS", "Check", "ParityResult", "parity_filter"]

Check = Literal["zeroshot", "resample", "views"]
NO_ANSWER = "no_answer"
UNCHECKED = "unchecked"
INCONSISTENT = "teacher_inconsistent"
STUDENT_AGREES = "student_agrees"
REASONS = (NO_ANSWER, UNCHECKED, INCONSISTENT, STUDENT_AGREES)


@dataclass
class ParityResult:
    """Which images to train on, and why the others were dropped."""

    kept: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # image id -> reason

    @property
    def counts(self) -> dict[str, int]:
        out = {"kept": len(self.kept)}
        for reason in REASONS:
            out[reason] = sum(1 for r in self.dropped.values() if r == reason)
        return out

    def decision(self, image_id: str) -> str:
        """"kept" or the drop reason of one image."""
        return self.dropped.get(image_id, "kept")


def parity_filter(
    ids: Sequence[str],
    answers: Sequence[int | None],
    second: Sequence[int | None],
    student: Sequence[int | None] | None = None,
    *,
    require_gap: bool = True,
    unchecked: Collection[str] = (),
) -> ParityResult:
    """Keep ids whose answer equals the second opinion and differs from the student.

    ``answers``: the parsed teacher answers (None: no usable answer); ``second``: the
    self-consistency check (zero-shot argmax or a second answer); ``student``: the
    student's current predictions, or None before any training. ``require_gap=False``
    keeps self-consistent labels even where the student already agrees (a plain
    confidence filter, for comparison). ``unchecked``: ids whose second opinion was not
    bought (their ``second`` is None); dropped as ``unchecked``.
    """
    n = len(ids)
    if len(answers) != n or len(second) != n or (student is not None and len(student) != n):
        raise ValueError("ids, answers, second and student must have the same length")
    result = ParityResult()
    unchecked_ids = set(unchecked)
    for i, image_id in enumerate(ids):
        a = answers[i]
        if a is None:
            result.dropped[image_id] = NO_ANSWER
        elif second[i] is None and image_id in unchecked_ids:
            result.dropped[image_id] = UNCHECKED
        elif second[i] is None or second[i] != a:
            result.dropped[image_id] = INCONSISTENT
        elif require_gap and student is not None and student[i] == a:
            result.dropped[image_id] = STUDENT_AGREES
        else:
            result.kept.append(image_id)
    return result

"""Self-training on the images the budget did not buy: their pixels are free, only the
teacher's answers cost.

A first student learns from what was bought (the teacher's soft targets, as
:func:`distill.labelfree.rounds.train_student` trains it), labels the unbought images
itself, and a second, fresh student learns from both: the bought images with the teacher's
targets, and the unbought ones the first student is confident about (top probability >=
``threshold``) with its one-hot label. No teacher call and no human label is used for the
unbought images, so the spend stays what the budget bought.

>>> import numpy as np
>>> confident_labels(np.array([[0.95, 0.05], [0.6, 0.4]]), 0.9)
(array([0]), array([[1., 0.]], dtype=float32))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from distill.labelfree.rounds import predict_probs, train_student

if TYPE_CHECKING:
    import torch

    from distill.train.student import Student

__all__ = ["DEFAULT_THRESHOLD", "SelfTrained", "confident_labels", "self_train"]

DEFAULT_THRESHOLD = 0.9


@dataclass
class SelfTrained:
    """The second student and what the first one added."""

    student: Student
    kept: np.ndarray  # rows of the unbought images the first student was confident about
    pseudo_labels: np.ndarray  # the label it gave each of them
    offered: int  # unbought images it looked at

    @property
    def added(self) -> int:
        """How many unbought images joined the second student's training set."""
        return len(self.kept)


def confident_labels(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose top probability reaches ``threshold``, and their one-hot labels."""
    keep = np.flatnonzero(probs.max(axis=1) >= threshold)
    onehot = np.eye(probs.shape[1], dtype=np.float32)[probs[keep].argmax(axis=1)]
    return keep, onehot


def self_train(
    pixels: torch.Tensor,
    targets: np.ndarray,
    free_pixels: torch.Tensor,
    *,
    labels: Sequence[int] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    first: Student | None = None,
    **train: Any,
) -> SelfTrained:
    """Train on ``pixels`` / ``targets``, pseudo-label ``free_pixels``, train again on both.

    ``train`` goes to :func:`~distill.labelfree.rounds.train_student` for both students
    (steps, student, pretrained, seed, ...). With ``labels`` (the bought images' true
    labels) both students add their cross-entropy term; for the unbought rows the label
    is the pseudo-label. When the first student is confident about no unbought image,
    it is returned as it is. ``first``: a student already trained on ``pixels`` /
    ``targets`` with the same ``train`` settings (not trained again).
    """
    import torch

    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], not {threshold}")
    if first is None:
        first = train_student(pixels, targets, labels=labels, **train)
    keep, onehot = confident_labels(predict_probs(first, free_pixels), threshold)
    if len(keep) == 0:
        return SelfTrained(first, keep, np.zeros(0, dtype=np.int64), len(free_pixels))
    both = torch.cat([pixels, free_pixels[torch.as_tensor(keep)]])
    soft = np.concatenate([np.asarray(targets, dtype=np.float32), onehot])
    given = None if labels is None else [*labels, *onehot.argmax(axis=1).tolist()]
    second = train_student(both, soft, labels=given, **train)
    return SelfTrained(second, keep, onehot.argmax(axis=1), len(free_pixels))

"""distill.labelfree.selftrain: what the second student is trained on (the bought images
with the teacher's targets, plus the unbought ones the first student is confident about,
with its label); the students themselves are stand-ins here (training is tested in
test_rounds)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from distill.labelfree import selftrain


def _fake_training(monkeypatch: pytest.MonkeyPatch, free_probs: np.ndarray) -> list[dict]:
    calls: list[dict[str, Any]] = []

    def train_student(pixels, targets, *, labels=None, **kw):
        calls.append({"pixels": pixels, "targets": targets, "labels": labels, **kw})
        return f"student{len(calls)}"

    monkeypatch.setattr(selftrain, "train_student", train_student)
    monkeypatch.setattr(selftrain, "predict_probs", lambda model, px: free_probs)
    return calls


def test_second_student_gets_the_confident_unbought_images_with_their_pseudo_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bought = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    free = torch.arange(3).view(3, 1, 1, 1).expand(3, 3, 4, 4).to(torch.uint8)
    targets = np.array([[0.7, 0.3], [0.2, 0.8]], dtype=np.float32)
    calls = _fake_training(monkeypatch, np.array([[0.95, 0.05], [0.5, 0.5], [0.02, 0.98]]))
    out = selftrain.self_train(bought, targets, free, steps=7, seed=3)
    assert (out.student, out.added, out.offered) == ("student2", 2, 3)
    assert out.kept.tolist() == [0, 2] and out.pseudo_labels.tolist() == [0, 1]
    first, second = calls
    assert first["pixels"] is bought and first["steps"] == 7 and second["seed"] == 3
    assert len(second["pixels"]) == 4
    assert second["pixels"][2:, 0, 0, 0].tolist() == [0, 2]  # free rows 0 and 2, not 1
    np.testing.assert_allclose(second["targets"], [[0.7, 0.3], [0.2, 0.8], [1, 0], [0, 1]])
    assert second["labels"] is None


def test_true_labels_of_bought_images_are_kept_and_pseudo_labels_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _fake_training(monkeypatch, np.array([[0.1, 0.9]]))
    selftrain.self_train(torch.zeros(1, 3, 2, 2), np.array([[1.0, 0.0]]),
                         torch.zeros(1, 3, 2, 2), labels=[0])
    assert calls[0]["labels"] == [0] and calls[1]["labels"] == [0, 1]


def test_no_confident_image_returns_the_first_student(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_training(monkeypatch, np.array([[0.6, 0.4]]))
    out = selftrain.self_train(torch.zeros(1, 3, 2, 2), np.array([[1.0, 0.0]]),
                               torch.zeros(1, 3, 2, 2))
    assert (out.student, out.added, len(calls)) == ("student1", 0, 1)
    assert out.kept.size == 0 and out.pseudo_labels.size == 0


@pytest.mark.parametrize("threshold", [0.0, 1.5])
def test_a_threshold_outside_0_1_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        selftrain.self_train(torch.zeros(1, 3, 2, 2), np.ones((1, 2)), torch.zeros(1, 3, 2, 2),
                             threshold=threshold)


def test_a_given_first_student_is_not_trained_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_training(monkeypatch, np.array([[0.1, 0.9]]))
    out = selftrain.self_train(torch.zeros(1, 3, 2, 2), np.array([[1.0, 0.0]]),
                               torch.zeros(1, 3, 2, 2), first="given")  # type: ignore[arg-type]
    assert (out.student, out.added, len(calls)) == ("student1", 1, 1)
    assert len(calls[0]["pixels"]) == 2  # the one call trains the second student

"""The parity filter on constructed cases; the selectors on constructed probability matrices."""

from __future__ import annotations

import numpy as np
import pytest

from distill.labelfree.parity import parity_filter
from distill.labelfree.selection import entropy, margin, select, select_coreset, select_random


def test_parity_keeps_consistent_labels_the_student_gets_wrong() -> None:
    ids = ["a", "b", "c", "d", "e", "f"]
    answers = [0, 1, None, 2, 3, 1]
    second = [0, 0, 1, 2, 3, None]
    student = [1, 1, 1, 2, 0, 1]
    r = parity_filter(ids, answers, second, student)
    assert r.kept == ["a", "e"]
    assert r.dropped == {
        "b": "teacher_inconsistent",
        "c": "no_answer",
        "d": "student_agrees",
        "f": "teacher_inconsistent",
    }
    assert r.counts == {
        "kept": 2,
        "no_answer": 1,
        "unchecked": 0,
        "teacher_inconsistent": 2,
        "student_agrees": 1,
    }
    assert sum(r.counts.values()) == len(ids)
    assert r.decision("a") == "kept" and r.decision("d") == "student_agrees"
    # f's second opinion was never bought (a budget stop): unchecked, not inconsistent
    r = parity_filter(ids, answers, second, student, unchecked=["f"])
    assert r.decision("f") == "unchecked" and r.counts["teacher_inconsistent"] == 1


def test_parity_without_student_or_gap_keeps_every_consistent_label() -> None:
    ids, answers, second = ["a", "b", "c"], [0, 1, 2], [0, 1, 0]
    assert parity_filter(ids, answers, second).kept == ["a", "b"]
    r = parity_filter(ids, answers, second, [0, 1, 2], require_gap=False)
    assert r.kept == ["a", "b"] and r.counts["student_agrees"] == 0


def test_parity_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        parity_filter(["a"], [0, 1], [0])


def _rows(n: int, c: int, seed: int) -> np.ndarray:
    p = np.random.default_rng(seed).random((n, c))
    return p / p.sum(axis=1, keepdims=True)


def test_uncertainty_picks_the_flattest_rows() -> None:
    confident = np.eye(4)[[0, 1, 2, 3, 0, 1]] * 0.97 + 0.0075
    flat = np.full((2, 4), 0.25)
    almost = np.array([[0.4, 0.3, 0.2, 0.1]])
    p = np.vstack([confident[:3], flat[:1], confident[3:], almost, flat[1:]])
    flat_rows = [3, 8]
    assert sorted(select("uncertainty", p, range(len(p)), [], 2)) == flat_rows
    assert select("uncertainty", p, range(len(p)), [], 3)[2] == 7
    assert select("uncertainty", p, [0, 1, 7], [], 1) == [7]  # only among the candidates
    assert entropy(flat).max() == pytest.approx(np.log(4))
    assert margin(flat).max() == pytest.approx(0.0)


def test_coreset_covers_every_cluster_before_repeating_one() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(5)
    # 5 clusters of very different sizes: 60, 20, 10, 5, 5 rows
    sizes = [60, 20, 10, 5, 5]
    cluster = np.repeat(np.arange(5), sizes)
    p = centres[cluster] * 0.8 + 0.04 + rng.normal(0, 0.01, (len(cluster), 5))
    picks = select_coreset(p, range(len(p)), [], 5)
    assert sorted(cluster[picks].tolist()) == [0, 1, 2, 3, 4]
    # seeded with rows of clusters 0-2, the next two picks cover clusters 3 and 4
    seeds = [0, 60, 80]
    cand = [i for i in range(len(p)) if i not in seeds]
    picks = select_coreset(p, cand, seeds, 2)
    assert sorted(cluster[picks].tolist()) == [3, 4]
    # random sampling of 5 rows usually misses a small cluster
    missed = sum(
        len(set(cluster[select_random(p, range(len(p)), [], 5, s)])) < 5 for s in range(20)
    )
    assert missed >= 15


def test_selectors_pick_distinct_candidates_only() -> None:
    p = _rows(50, 3, 1)
    cand = list(range(10, 50))
    for name in ("random", "uncertainty", "coreset"):
        picks = select(name, p, cand, list(range(10)), 15, seed=3)
        assert len(picks) == len(set(picks)) == 15
        assert set(picks) <= set(cand)
        assert select(name, p, cand, [], 100) and len(select(name, p, cand, [], 100)) == 40
    with pytest.raises(ValueError):
        select("magic", p, cand, [], 1)

"""Which images to pay the teacher for next: pure functions of the student's probabilities.

- ``random``: a seeded uniform sample (the baseline every other rule must beat);
- ``uncertainty``: the flattest rows first (highest entropy, or smallest top-2 margin);
- ``coreset``: k-center greedy in the student's class-probability space (PCoreSet, Kang
  et al. 2025): repeatedly take the candidate farthest (L2) from everything already
  bought or picked, so the bought set covers every region of the student's output space.

``probs`` is (N, C) over the whole pool; ``candidates`` are the pool rows still unbought;
``chosen`` the rows already bought (coreset's seeds). Each function returns ``k`` rows,
in pick order.

>>> import numpy as np
>>> p = np.array([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])
>>> select("uncertainty", p, candidates=[0, 1, 2], chosen=[], k=1)
[1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "STRATEGIES",
    "entropy",
    "margin",
    "select",
    "select_coreset",
    "select_random",
    "select_uncertainty",
]


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row (nats)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return np.asarray(-(p * np.log(p)).sum(axis=1))


def margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row (small = uncertain)."""
    p = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    if p.shape[1] < 2:
        return np.ones(p.shape[0])
    return np.asarray(p[:, -1] - p[:, -2])


def select_random(
    probs: np.ndarray, candidates: Sequence[int], chosen: Sequence[int], k: int, seed: int = 0
) -> list[int]:
    """``k`` candidates uniformly at random (seeded)."""
    cand = np.asarray(candidates, dtype=np.int64)
    k = min(k, len(cand))
    return [int(i) for i in np.random.default_rng(seed).choice(cand, size=k, replace=False)]


def select_uncertainty(
    probs: np.ndarray,
    candidates: Sequence[int],
    chosen: Sequence[int],
    k: int,
    seed: int = 0,
    *,
    by: str = "entropy",
) -> list[int]:
    """The ``k`` candidates the student is least sure about (ties broken by row order)."""
    cand = np.asarray(candidates, dtype=np.int64)
    if len(cand) == 0 or k <= 0:
        return []
    p = np.asarray(probs)[cand]
    score = entropy(p) if by == "entropy" else -margin(p)  # higher = less sure
    order = np.argsort(-score, kind="stable")
    return [int(cand[i]) for i in order[:k]]


def select_coreset(
    probs: np.ndarray, candidates: Sequence[int], chosen: Sequence[int], k: int, seed: int = 0
) -> list[int]:
    """k-center greedy over rows of ``probs`` (L2), seeded with the ``chosen`` rows.

    With nothing chosen yet, the first pick is the candidate farthest from the pool's mean
    probability vector (deterministic; any start gives the same 2-approximation bound).
    """
    cand = np.asarray(candidates, dtype=np.int64)
    if len(cand) == 0 or k <= 0:
        return []
    p = np.asarray(probs, dtype=np.float64)
    x = p[cand]
    if len(chosen):
        seeds = p[np.asarray(chosen, dtype=np.int64)]
        # nearest-seed distance, in blocks to bound memory on big pools
        dist = np.full(len(cand), np.inf)
        for s in range(0, len(seeds), 512):
            d = np.linalg.norm(x[:, None, :] - seeds[None, s : s + 512, :], axis=2)
            dist = np.minimum(dist, d.min(axis=1))
    else:
        dist = np.linalg.norm(x - x.mean(axis=0), axis=1)
    picks: list[int] = []
    for _ in range(min(k, len(cand))):
        j = int(np.argmax(dist))
        picks.append(int(cand[j]))
        dist = np.minimum(dist, np.linalg.norm(x - x[j], axis=1))
        dist[j] = -np.inf  # never pick the same row twice
    return picks


Selector = Callable[[np.ndarray, Sequence[int], Sequence[int], int, int], list[int]]
STRATEGIES: dict[str, Selector] = {
    "random": select_random,
    "uncertainty": select_uncertainty,
    "coreset": select_coreset,
}


def select(
    strategy: str,
    probs: np.ndarray,
    candidates: Sequence[int],
    chosen: Sequence[int],
    k: int,
    seed: int = 0,
) -> list[int]:
    """Dispatch to one of :data:`STRATEGIES` (ValueError for an unknown name)."""
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        known = sorted(STRATEGIES)
        raise ValueError(f"unknown selection {strategy!r}; choose from {known}") from None
    return fn(probs, candidates, chosen, k, seed)

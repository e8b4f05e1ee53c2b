"""Held-out splits that depend only on sample ids, domains and a seed."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable

from .dataset import Sample

__all__ = ["split_holdout", "split_sources"]


def split_holdout(
    samples: Iterable[Sample], *, fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """Split off ``fraction`` of each domain as held-out (in-domain validation, DomainBed).

    Which samples are held out depends only on their ids, domains and the seed: not on file
    order, and adding images to one domain leaves the other domains' splits unchanged. Each
    domain with at least two images keeps at least one on each side when 0 < fraction < 1.
    Returns ``(train, holdout)``, each in the input order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    items = list(samples)
    by_domain: dict[str, list[Sample]] = {}
    for s in items:
        by_domain.setdefault(s.domain, []).append(s)
    held: set[tuple[str, str]] = set()
    for domain, group in by_domain.items():
        n = len(group)
        k = round(n * fraction)
        if fraction > 0 and n >= 2:
            k = min(max(k, 1), n - 1)

        def rank(s: Sample, domain: str = domain) -> str:
            key = f"{seed}\x00{domain}\x00{s.id}".encode("utf-8", "surrogateescape")
            return hashlib.sha256(key).hexdigest()

        held.update((s.domain, s.id) for s in sorted(group, key=rank)[:k])
    train = tuple(s for s in items if (s.domain, s.id) not in held)
    holdout = tuple(s for s in items if (s.domain, s.id) in held)
    return train, holdout


def split_sources(
    samples: Iterable[Sample], sources: Collection[str], *, fraction: float, seed: int
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """A run's ``(train, ID hold-out)``: the labelled samples of its source domains, split
    by :func:`split_holdout`. Unlabelled samples are dropped before the split, so they do
    not move it. The trainer and ``eval`` on the training data both take their hold-out
    from here: they score the same images.
    """
    src = [s for s in samples if s.label is not None and s.domain in sources]
    return split_holdout(src, fraction=fraction, seed=seed)

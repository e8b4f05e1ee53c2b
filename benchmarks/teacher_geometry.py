"""Where a harvested teacher's image embeddings sit against its class prompts, per domain
and view, and what that allows ADiP's Distill loss (no training, no teacher call).

For every image I (one view) and its class prompt T_y: c = cos(I, T_y), the best other
class's cosine, and the teacher's zero-shot accuracy on that view. With λ = 0.5 the loss
λ·(-cos(z, I)) + (1 - λ)·(-cos(z, T_y)) is best at z = (I + T_y) / |I + T_y|, whose cosine
to I is √((1 + c) / 2): the most a student's ``image`` term can reach, to compare with the
trainer's log. With ``--kd-scales``, also how sharp KD's teacher distribution
softmax(k·cos(I, T_c)) is at each effective scale k (= logit scale / τ; the default KD is
100 / 0.1 = 1000), over every image and view: mean top probability, mean entropy, and the
share of rows whose top probability passes 0.99.

    .venv/bin/python benchmarks/teacher_geometry.py DATA STORE [--kd-scales 1000,150,15]
    # e.g. runs/mnist-geom/mnist runs/mnist-geom/cache/stores/mnist-local_mini-clip-...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from cache.store import EmbeddingStore
    from distill.data import scan

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="the dataset folder the store was harvested from")
    ap.add_argument("store", type=Path, help="the embedding store (cache/stores/...)")
    ap.add_argument("--kd-scales", default="",
                    help="comma-separated effective scales k of softmax(k·cos) to summarise")
    args = ap.parse_args()

    ds = scan(args.data)
    store = EmbeddingStore.open(args.store)
    text = store.text_embeddings / np.linalg.norm(store.text_embeddings, axis=1, keepdims=True)
    print(f"{args.store.name}: {store.views} views, {len(text)} classes")
    print("domain  view  cos(I,T_y)  best other  zero-shot  best cos(z,I) at λ=0.5")
    by_domain: dict[str, list] = {}
    for s in ds.samples:
        by_domain.setdefault(s.domain, []).append(s)
    pooled: list[np.ndarray] = []  # cos(I, T_c) of every image and view
    for domain, samples in by_domain.items():
        rows = store.rows_of([s.id for s in samples])
        y = np.array([s.label for s in samples])
        own = np.eye(len(text), dtype=bool)[y]
        for view in range(store.views):
            img = store.gather(rows, view)
            img = img / np.linalg.norm(img, axis=1, keepdims=True)
            sims = img @ text.T
            pooled.append(sims)
            c = sims[own]
            other = np.where(own, -np.inf, sims).max(axis=1)
            acc = float(np.mean(sims.argmax(axis=1) == y))
            best = float(np.mean(np.sqrt((1 + c) / 2)))
            print(f"{domain:<7} {view:>4}  {c.mean():>10.3f}  {other.mean():>10.3f}  "
                  f"{acc:>9.3f}  {best:>.3f}")
    if args.kd_scales:
        kd_sharpness(np.concatenate(pooled), [float(k) for k in args.kd_scales.split(",")])


def kd_sharpness(sims: np.ndarray, scales: list[float]) -> None:
    """Print how peaked softmax(k·sims) is per row, for each k."""
    top2 = np.sort(sims, axis=1)[:, -2:]
    print(f"{len(sims)} rows: top cos {top2[:, 1].mean():.3f}, runner-up {top2[:, 0].mean():.3f}")
    print("k        top p   entropy (nats)  top p > 0.99")
    for k in scales:
        z = k * sims
        z = z - z.max(axis=1, keepdims=True)
        prob = np.exp(z)
        prob /= prob.sum(axis=1, keepdims=True)
        entropy = -(prob * np.log(np.clip(prob, 1e-30, None))).sum(axis=1)
        print(f"{k:<8g} {prob.max(axis=1).mean():.3f}   {entropy.mean():.3f}"
              f"           {np.mean(prob.max(axis=1) > 0.99):.2f}")


if __name__ == "__main__":
    main()

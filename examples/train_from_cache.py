"""Train a student from an existing cache (no teacher calls, no key needed).

After `vlm-distill harvest DATA --teacher T --cache cache`:

    python examples/train_from_cache.py DATA --cache cache --teacher local:pseudo-clip

Runs the teacher zero-shot baseline, ERM and ADiP with small step counts and prints
ID/OOD accuracy. The same as `vlm-distill train ... --method M` for each method.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.train.config import TrainConfig
from distill.train.trainer import train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("cache"))
    ap.add_argument("--teacher", default="local:pseudo-clip")
    ap.add_argument("--out", type=Path, default=Path("runs/example"))
    ap.add_argument("--test-domains", nargs="+", default=None)
    a = ap.parse_args()
    for method in ("zeroshot", "erm", "adip"):
        cfg = TrainConfig(
            data=str(a.data),
            cache=str(a.cache),
            teacher=a.teacher,
            out=str(a.out / method),
            method=method,
            image_size=32,
            steps=300,
            steps_align=100,
            steps_distill=200,
            eval_every=100,
            test_domains=tuple(a.test_domains) if a.test_domains else None,
        )
        metrics = train(cfg)
        print(f"{method:9s} mean ID {metrics['mean_id']:.3f}  mean OOD {metrics['mean_ood']:.3f}")


if __name__ == "__main__":
    main()

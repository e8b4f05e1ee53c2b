"""Train a student from an existing cache (no teacher calls, no key needed).

After `vlm-distill harvest DATA --teacher T` (into ./vlm-cache, the harvest's default):

    python examples/train_from_cache.py DATA --teacher local:pseudo-clip --test-domains D

Runs the teacher zero-shot baseline, ERM and ADiP with small step counts and prints
ID/OOD accuracy (OOD on the ``--test-domains``; without them every domain trains and
there is no OOD figure). The same as `vlm-distill train ... --method M` for each method.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from distill.cli.model_flags import validation_message
from distill.cli.validate import int_in
from distill.train.config import TrainConfig
from vlmclient import ConfigurationError, VLMError


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    # not ./cache: a folder of that name beside the project would hide the `cache` package
    ap.add_argument("--cache", type=Path, default=Path("vlm-cache"))
    ap.add_argument("--teacher", default="local:pseudo-clip")
    ap.add_argument("--out", type=Path, default=Path("runs/example"))
    ap.add_argument("--test-domains", nargs="+", default=None)
    # the CLI's check: a whole number >= 1, or a one-line usage error (exit 2)
    ap.add_argument("--steps", type=int_in(1), default=300,
                    help="ERM's steps; ADiP's stages a third and two thirds of them")
    a = ap.parse_args()
    try:  # every method's config checked before the first one trains
        configs = [
            TrainConfig(
                data=str(a.data),
                cache=str(a.cache),
                teacher=a.teacher,
                out=str(a.out / method),
                method=method,
                image_size=32,
                steps=a.steps,
                steps_align=max(1, a.steps // 3),
                steps_distill=max(1, a.steps - a.steps // 3),
                eval_every=max(1, a.steps // 3),
                test_domains=tuple(a.test_domains) if a.test_domains else None,
            )
            for method in ("zeroshot", "erm", "adip")
        ]
    except ValidationError as exc:  # as the CLI says it: one line, exit 2
        print(f"error: invalid training options: {validation_message(exc)}", file=sys.stderr)
        return 2
    # torch and timm take seconds to import: after the arguments are checked, so a
    # usage error (or --help) is instant, as in the CLI
    from distill.train.trainer import train

    for cfg in configs:
        try:
            metrics = train(cfg)
        except VLMError as exc:  # no harvest yet, no such data or domain...: one line
            print(f"error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, ConfigurationError) else 1
        print(f"{cfg.method:9s} mean ID {_pct(metrics['mean_id'])}  mean OOD "
              f"{_pct(metrics['mean_ood'])}")
    return 0


def _pct(value: float | None) -> str:
    """An accuracy, or a dash where there is none (no OOD domain held out)."""
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())

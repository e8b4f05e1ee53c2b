"""`vlm-distill train DATA --cache DIR --teacher T --method adip --out RUN`: train a student
from cached teacher embeddings (never calls the teacher)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from vlmclient.errors import ConfigurationError

HELP = "train a student from cached teacher outputs"


def _domains(values: list[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    return tuple(d for v in values for d in v.split(",") if d)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="data folder or CSV manifest")
    parser.add_argument("--cache", help="cache folder the harvest wrote (holds stores/)")
    parser.add_argument("--store", help="EmbeddingStore folder (overrides the --cache lookup)")
    parser.add_argument("--teacher", required=True,
                        help="teacher as harvested, e.g. local:pseudo-clip")
    parser.add_argument("--student", default="tf_efficientnet_lite0", help="timm model name")
    parser.add_argument("--weights", dest="student_weights", help="student backbone weights file")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                        help="random init even when packaged weights exist")
    parser.add_argument("--method", choices=["adip", "kd", "erm", "zeroshot"], default="adip")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--train-domains", nargs="+", help="source domains (default: all others)")
    parser.add_argument("--test-domains", nargs="+", help="target (OOD) domains")
    parser.add_argument("--steps-align", type=int, default=5001, help="ADiP stage 1 steps")
    parser.add_argument("--steps-distill", type=int, default=5001, help="ADiP stage 2 steps")
    parser.add_argument("--steps", type=int, default=5001, help="steps of erm / kd")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--lambda", dest="lam", type=float, default=0.5,
                        help="ADiP image-vs-text weight; KD's KL weight")
    parser.add_argument("--kd-temperature", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=5e-5, help="lr of Distill, ERM and KD")
    parser.add_argument("--lr-align", type=float, default=1e-3,
                        help="lr of Align (only the projection trains)")
    parser.add_argument("--align-min-delta", type=float, default=1e-3,
                        help="Align stops when a 25-step window's mean loss improves by less "
                        "(0: run every --steps-align step)")
    parser.add_argument("--no-freeze-bn", dest="freeze_bn", action="store_false",
                        help="train BatchNorm statistics (the official code freezes them)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the ID hold-out split")
    parser.add_argument("--batch-per-domain", type=int, default=32)
    parser.add_argument("--views", type=int, help="teacher views to use (default: all cached)")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--select", choices=["best_id", "last"], default="best_id")
    parser.add_argument("--swad", action="store_true", help="SWAD weight averaging (LossValley)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint")
    parser.add_argument("--json", action="store_true", help="print metrics as JSON")


def build_config(args: argparse.Namespace) -> Any:
    """TrainConfig from parsed arguments; ConfigurationError when invalid."""
    from pydantic import ValidationError

    from distill.train.config import TrainConfig

    fields = dict(
        data=args.data, cache=args.cache, store=args.store, teacher=args.teacher,
        student=args.student, student_weights=args.student_weights, pretrained=args.pretrained,
        method=args.method, out=args.out, train_domains=_domains(args.train_domains),
        test_domains=_domains(args.test_domains), steps_align=args.steps_align,
        steps_distill=args.steps_distill, steps=args.steps, image_size=args.image_size,
        lam=args.lam, kd_temperature=args.kd_temperature, lr=args.lr, lr_align=args.lr_align,
        align_min_delta=args.align_min_delta, freeze_bn=args.freeze_bn,
        split_seed=args.split_seed,
        batch_per_domain=args.batch_per_domain, views=args.views, eval_every=args.eval_every,
        select=args.select, swad=args.swad, bf16=args.bf16, threads=args.threads,
        num_workers=args.num_workers, seed=args.seed, resume=args.resume,
    )
    try:
        return TrainConfig(**fields)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                         for e in exc.errors())
        raise ConfigurationError(f"invalid training options: {msgs}") from None


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_metrics(metrics: dict[str, Any]) -> None:
    """A rich table of per-domain accuracy (student and teacher zero-shot)."""
    from rich.table import Table

    zs = metrics.get("teacher_zeroshot") or {}
    table = Table(title=f"{metrics.get('method')} · {metrics.get('student', '')}")
    table.add_column("split")
    table.add_column("domain")
    table.add_column("n", justify="right")
    table.add_column("student", justify="right")
    table.add_column("teacher zero-shot", justify="right")
    for split in ("id", "ood"):
        for dom, v in (metrics.get(split) or {}).items():
            t = (zs.get(split) or {}).get(dom)
            table.add_row(split.upper(), dom, str(int(v["n"])), _fmt(v["acc"]),
                          _fmt(t["acc"]) if t else "-")
        mean = metrics.get(f"mean_{split}")
        if mean is not None:
            table.add_row(split.upper(), "[bold]mean", "", f"[bold]{_fmt(mean)}",
                          _fmt(zs.get(f"mean_{split}")))
    from .progress import console

    console().print(table)


def run(args: argparse.Namespace) -> int:
    from distill.train.trainer import train

    config = build_config(args)
    if os.environ.get("RANK", "0") != "0":  # torchrun: only rank 0 shows progress
        train(config)
        return 0
    if args.json:
        metrics = train(config)
    else:
        from .progress import TrainProgress

        with TrainProgress() as hook:
            metrics = train(config, progress=hook)
    if not metrics:  # DDP ranks other than 0
        return 0
    if args.json:
        print(json.dumps({k: metrics[k] for k in ("method", "id", "ood", "mean_id", "mean_ood",
                                                  "teacher_zeroshot") if k in metrics}))
    else:
        print_metrics(metrics)
        print(f"run folder: {config.out}")
    return 0

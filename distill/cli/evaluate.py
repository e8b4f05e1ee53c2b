"""`vlm-distill eval RUN DATA`: per-domain accuracy of a trained student (JSON + table)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .validate import int_in, path_text

HELP = "evaluate a trained run on a dataset, per domain"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run", metavar="RUN", type=path_text, help="run folder written by `vlm-distill train`"
    )
    parser.add_argument("data", metavar="DATA", type=path_text, help="data folder or CSV manifest")
    parser.add_argument(
        "--batch-size", type=int_in(1), default=256, help="images per batch, >= 1 (default 256)"
    )
    parser.add_argument(
        "--store", type=path_text, help="teacher EmbeddingStore: adds teacher zero-shot accuracy"
    )
    parser.add_argument(
        "--out", type=path_text, help="write the JSON here (default: RUN/eval.json)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot be written before evaluating, not after (exit 2)."""
    from . import check_out_file

    check_out_file(out, "--out", "eval.json")


def run(args: argparse.Namespace) -> int:
    from distill.cli.train import print_metrics
    from distill.train.evaluate import evaluate_run
    from distill.train.targets import open_store

    out = Path(args.out) if args.out else Path(args.run) / "eval.json"
    if args.out:
        _check_out(out)
    store = open_store(args.store) if args.store else None
    result = evaluate_run(args.run, args.data, batch_size=args.batch_size, store=store)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    if args.json:
        print(json.dumps(result))
    else:
        print_metrics(result)
        if not result["same_dataset"]:
            # the run's own hold-out cannot be told apart in other data
            print(
                "note: this is not the data the run was trained on, so ID counts every image "
                "of its source domains here, images it trained on included"
            )
        print(f"written: {out}")
    return 0

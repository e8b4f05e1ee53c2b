"""`vlm-distill train DATA --cache DIR --teacher T --method adip --out RUN`: train a student
from cached teacher embeddings (never calls the teacher)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmclient.errors import ConfigurationError

from .model_flags import ModelFlags, validation_message
from .signals import Stopped, raise_on_stop_signals, say
from .validate import path_text

if TYPE_CHECKING:
    from distill.train.config import TrainConfig

HELP = "train a student from cached teacher outputs"
# the TrainConfig fields that name a file or folder
PATH_FIELDS = ("data", "out", "cache", "store", "class_file", "student_weights", "weights_dir")


def train_flags() -> ModelFlags:
    """The flags of every TrainConfig field (pydantic only: `vlm-distill --help` stays cheap)."""
    from distill.train.config import TrainConfig

    return ModelFlags(
        TrainConfig,
        positional=["data"],
        # the names the flags had before they were generated from the model
        flags={"lam": "--lambda", "student_weights": "--weights"},
        # an empty path would be the current folder ("$OUT" with OUT unset)
        types=dict.fromkeys(PATH_FIELDS, path_text),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train_flags().add_to(parser)
    parser.add_argument("--json", action="store_true", help="print metrics as JSON")


def build_config(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from parsed arguments; ConfigurationError when invalid."""
    from pydantic import ValidationError

    from distill.train.config import TrainConfig

    flags = train_flags()
    missing = flags.missing(args)
    if missing:  # not argparse's required=True: a --config file may give them
        raise ConfigurationError(
            f"the following arguments are required: {', '.join(missing)} "
            "(on the command line or in --config)"
        )
    try:
        return TrainConfig(**flags.values(args))
    except ValidationError as exc:
        raise ConfigurationError(
            f"invalid training options: {validation_message(exc)}"
        ) from None


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_metrics(metrics: dict[str, Any]) -> None:
    """A rich table of per-domain accuracy (student and teacher zero-shot)."""
    from rich.table import Table

    from .failures import shown  # a domain named "a[/]b" (a manifest's) is not markup

    zs = metrics.get("teacher_zeroshot") or {}
    table = Table(title=shown(f"{metrics.get('method')} · {metrics.get('student', '')}"))
    table.add_column("split")
    table.add_column("domain")
    table.add_column("n", justify="right")
    table.add_column("student", justify="right")
    table.add_column("teacher zero-shot", justify="right")
    for split in ("id", "ood", "excluded"):  # excluded: eval's domains the run did not use
        for dom, v in (metrics.get(split) or {}).items():
            t = (zs.get(split) or {}).get(dom)
            table.add_row(split.upper(), shown(dom), str(int(v["n"])), _fmt(v["acc"]),
                          _fmt(t["acc"]) if t else "-")
        mean = metrics.get(f"mean_{split}")
        if mean is not None:
            table.add_row(split.upper(), "[bold]mean", "", f"[bold]{_fmt(mean)}",
                          _fmt(zs.get(f"mean_{split}")))
    from .progress import console

    console().print(table)


def interrupted_message(out: Path, by: str = "") -> str:
    """What a stop (Ctrl-C, or the signal named ``by``) left in the run folder and how to
    go on from it."""
    from distill.train.checkpoints import CHECKPOINT_DIR, STATE_FILE

    by_ = f" by {by}" if by else ""
    try:
        state = json.loads((out / CHECKPOINT_DIR / STATE_FILE).read_text("utf-8"))
        stage, step = str(state["stage"]), int(state["step"])
        # a checkpoint at a stage's end names the finished stage with step 0
        where = f"{stage} finished" if step == 0 else f"{stage}: {step} steps done"
    except (OSError, ValueError, KeyError, TypeError):
        return f"interrupted{by_} before the first checkpoint: nothing in {out} to resume from"
    return (
        f"interrupted{by_}: the checkpoint in {out} ({where}) is kept; run the same command "
        "with --resume to continue from it"
    )


def check_run_folder(out: Path, *, resume: bool) -> None:
    """Refuse an existing ``--out`` no file can be made in (``chmod -R a-w``, a read-only
    mount), or holding files of a run's names that no run wrote (``files_of_no_run``),
    before the data and the model are loaded, not at the first file the run writes (a
    missing one is checked by ``check_new_folder``, as for every command)."""
    from distill.train.config import files_of_no_run

    from . import cannot_write_in

    if out.is_dir() and (foreign := files_of_no_run(out)):
        raise ConfigurationError(
            f"the run folder {out} holds {', '.join(foreign)} that no training run wrote: "
            "training would write over them; give --out a new or empty folder"
        )
    why = cannot_write_in(out) if out.is_dir() else None
    if why is None:
        return
    fix = "copy the run into a writable folder and --resume there"
    if not resume:
        fix = "give another --out"
    raise ConfigurationError(
        f"cannot write into the run folder {out} ({why}): make it writable, or {fix}"
    )


def run(args: argparse.Namespace) -> int:
    config = build_config(args)  # before torch is imported: a usage error is instant
    check_run_folder(Path(config.out), resume=config.resume)

    from distill.data import DataError
    from distill.data.views import CANNOT_DECODE
    from distill.train.student import (
        check_student,
        check_weights_file,
        random_init_note,
        starts_from_weights,
    )
    from distill.train.trainer import train

    # a typo, a pretrained tag timm lacks, a ViT made for 224 px: a usage error before
    # the data is scanned, not a traceback (or a late error) after
    check_student(config.student, config.image_size)
    if config.student_weights is not None:
        check_weights_file(config.student_weights)

    if os.environ.get("RANK", "0") != "0":  # torchrun: only rank 0 shows progress
        train(config)
        return 0
    if config.pretrained and not starts_from_weights(
        config.student, pretrained=True, weights_file=config.student_weights
    ):  # it started from random init without a word
        say(random_init_note(config.student, fix="; give --weights FILE to start from "
                             "weights, or --no-pretrained to say random init is meant"))
    try:
        with raise_on_stop_signals():
            if args.json:
                metrics = train(config)
            else:
                from .progress import TrainProgress

                with TrainProgress() as hook:
                    metrics = train(config, progress=hook)
    except Stopped as exc:  # SIGTERM (a scheduler's preemption), SIGHUP, SIGQUIT
        say(interrupted_message(Path(config.out), str(exc)))
        return 128 + exc.signum
    except KeyboardInterrupt:
        say(interrupted_message(Path(config.out)))
        return 130
    except DataError as exc:
        # the student reads pixels lazily (decoding every file up front would cost about
        # an epoch's decoding on every run): a damaged file is met at its first batch
        if not str(exc).startswith(CANNOT_DECODE):
            raise
        raise DataError(
            f"{exc}; `vlm-distill data scan {config.data} --decode` lists every damaged "
            "file: replace or remove them, run `vlm-distill harvest` again (a removed file "
            "costs nothing, a replaced one is bought), then train again"
        ) from exc
    if not metrics:  # DDP ranks other than 0
        return 0
    if args.json:
        print(json.dumps({k: metrics[k] for k in ("method", "id", "ood", "mean_id", "mean_ood",
                                                  "teacher_zeroshot") if k in metrics}))
    else:
        print_metrics(metrics)
        print(f"run folder: {config.out}")
    return 0

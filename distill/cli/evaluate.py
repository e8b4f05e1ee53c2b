"""`vlm-distill eval RUN DATA`: per-domain accuracy of a trained student (JSON + table)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vlmclient.errors import ConfigurationError

from .validate import int_in, path_text

HELP = "evaluate a trained run on a dataset, per domain"
# past sys.maxsize the DataLoader raised a traceback after the data was read; far below it
# every image of a large dataset went into one batch (train caps its batch as well)
MAX_EVAL_BATCH = 4096


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run", metavar="RUN", type=path_text, help="run folder written by `vlm-distill train`"
    )
    parser.add_argument("data", metavar="DATA", type=path_text, help="data folder or CSV manifest")
    parser.add_argument(
        "--batch-size", type=int_in(1, MAX_EVAL_BATCH), default=256,
        help=f"images per batch, 1 to {MAX_EVAL_BATCH} (default 256)",
    )
    parser.add_argument(
        "--store", type=path_text, help="teacher EmbeddingStore: adds teacher zero-shot accuracy"
    )
    parser.add_argument(
        "--out", type=path_text, help="write the JSON here (default: RUN/eval.json)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _refuse_run_file(out: Path, run: Path) -> None:
    """ConfigurationError when ``--out`` is one of the run's own files (its weights,
    run.json, metrics, logs, checkpoint): the JSON results replaced the trained student."""
    import os

    folder, target = os.path.realpath(run), os.path.realpath(out)
    if os.path.commonpath([target, folder]) != folder:
        return  # outside the run (torch not imported for it)
    from distill.train.checkpoints import CHECKPOINT_DIR
    from distill.train.config import CONFIG_FILE
    from distill.train.evaluate import RUN_FILE, WEIGHTS_FILE
    from distill.train.trainer import EVALS_FILE, LOG_FILE, METRICS_FILE

    own = {RUN_FILE, WEIGHTS_FILE, METRICS_FILE, CONFIG_FILE, LOG_FILE, EVALS_FILE}
    ckpt = os.path.join(folder, CHECKPOINT_DIR)
    if os.path.commonpath([target, ckpt]) == ckpt or (
        os.path.dirname(target) == folder and os.path.basename(target) in own
    ):
        raise ConfigurationError(
            f"--out {out} is one of the run's own files; give another file name, e.g. "
            f"{Path(run) / 'eval.json'}"
        )


# The keys every eval result holds: an existing --out file without them is not one
EVAL_KEYS = frozenset({"run", "data", "method", "mean_id", "mean_ood"})
_MAX_EVAL_BYTES = 16 << 20  # larger than any eval result: not read to find out


def _refuse_other_file(out: Path) -> None:
    """ConfigurationError when ``--out`` is an existing file other than an eval result:
    a spend ledger, a data folder's dataset.json, another run's weights or an image were
    replaced by the JSON without a word."""
    if not out.exists():
        return
    try:
        small = out.is_file() and out.stat().st_size <= _MAX_EVAL_BYTES
        held = json.loads(out.read_bytes()) if small else None
    except (OSError, ValueError):
        held = None
    if isinstance(held, dict) and held.keys() >= EVAL_KEYS:
        return  # an earlier eval's results: replaced, as RUN/eval.json is
    raise ConfigurationError(
        f"--out {out} exists and is not an eval result; eval writes over nothing else "
        "(a spend ledger, a dataset.json, another run's weights): give a new file name, "
        "or remove that file first"
    )


def _check_out(out: Path, *, given: bool, run: Path) -> None:
    """Refuse a JSON file that cannot be written before evaluating, not after (exit 2):
    an ``--out``, or the run folder's ``eval.json`` (a shared run, ``chmod -R a-w``)."""
    from . import cannot_write_in, check_out_file

    if given:
        check_out_file(out, "--out", "eval.json")
        _refuse_run_file(out, run)
        _refuse_other_file(out)
        return
    run = out.parent
    why = cannot_write_in(run) if run.is_dir() else None
    if why is None:
        return
    from distill.train.evaluate import RUN_FILE

    if (run / RUN_FILE).is_file():  # else no run at all: evaluate_run says so
        raise ConfigurationError(
            f"cannot write the results into the run folder {run} ({why}): give --out FILE "
            "to write them elsewhere"
        )


def _left_out_note(per_class: dict[str, int]) -> str | None:
    """The line saying which images of DATA were not scored: those of classes the run's
    class list (its --class-file) does not name; None when there were none."""
    if not per_class:
        return None
    from distill.data import display

    n = sum(per_class.values())
    shown = ", ".join(f"{display(name)} ({k})" for name, k in list(per_class.items())[:10])
    more = f", ... ({len(per_class) - 10} more)" if len(per_class) > 10 else ""
    return (
        f"note: {n} file{'s' * (n != 1)} of {len(per_class)} class"
        f"{'es' * (len(per_class) != 1)} the run was not trained on (not in its "
        f"--class-file) were left out, not scored: {shown}{more}"
    )


def _skipped_note(skipped: list[dict[str, str]], data: str) -> str | None:
    """The line saying which files of DATA the scan could not use (not scored); None when
    there were none."""
    if not skipped:
        return None
    from distill.data import display

    n = len(skipped)
    shown = "; ".join(f"{display(s['path'])} ({display(s['reason'])})" for s in skipped[:3])
    more = f"; ... ({n - 3} more: `vlm-distill data scan DATA` lists them)" if n > 3 else ""
    return (
        f"note: {n} file{'s' * (n != 1)} of {display(data)} could not be used and "
        f"{'were' if n != 1 else 'was'} not scored: {shown}{more}"
    )


def _undecodable_note(ids: list[str]) -> str | None:
    """The line saying which images were not scored because their pixels cannot be
    decoded (the harvest left them out of the store, the run out of training, or eval
    found them so); None when there were none."""
    if not ids:
        return None
    from distill.data import display

    n = len(ids)
    shown = ", ".join(display(i) for i in ids[:3]) + (f" and {n - 3} more" if n > 3 else "")
    fix = "them with good copies to score them" if n != 1 else "it with a good copy to score it"
    return (
        f"note: {n} image{'s' * (n != 1)} whose pixels cannot be decoded "
        f"{'were' if n != 1 else 'was'} not scored: {shown} (`vlm-distill data scan DATA "
        f"--decode` lists every damaged file: replace {fix})"
    )


def _store_note(zs: dict[str, object] | None) -> str | None:
    """The line saying the teacher's column is over fewer images than the student's (the
    store lacks some scored images); None when it holds them all or was not given."""
    n = zs.get("images_missing") if zs else None
    if not zs or not isinstance(n, int) or n == 0:
        return None
    from distill.data import display

    return (
        f"note: the store at {display(str(zs['store']))} lacks {n} of the scored images "
        "(added after its harvest?): the teacher zero-shot column is over the others only; "
        "harvest DATA again with the run's teacher (it buys only those) and pass that store"
    )


def _excluded_note(excluded: dict[str, object]) -> str | None:
    """The line saying which domains of the run's own data were scored apart: those it was
    neither trained nor tested on (not its OOD, so not in mean OOD); None when none."""
    if not excluded:
        return None
    from distill.data import display

    names = ", ".join(display(d) for d in excluded)
    return (
        f"note: domain{'s' * (len(excluded) != 1)} {names}: neither trained nor tested on by "
        "the run (not in its --train-domains / --test-domains), shown as EXCLUDED, not in "
        "mean OOD (as in its metrics.json)"
    )


def _refuse_unfinished(run: Path) -> None:
    """ConfigurationError for a run folder whose training is under way or was stopped (a
    checkpoint, no trained student yet): it was told "run `vlm-distill train` first"."""
    from distill.train.checkpoints import CHECKPOINT_DIR
    from distill.train.evaluate import RUN_FILE, WEIGHTS_FILE

    if (run / CHECKPOINT_DIR).is_dir() and not (
        (run / RUN_FILE).is_file() and (run / WEIGHTS_FILE).is_file()
    ):
        raise ConfigurationError(
            f"{run} has not finished training (a checkpoint, no {WEIGHTS_FILE} yet): let "
            "its `vlm-distill train` end, or finish a stopped one with the same command and "
            "--resume"
        )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.run) / "eval.json"
    _check_out(out, given=bool(args.out), run=Path(args.run))  # before torch is even imported

    from cache import atomic_write
    from distill.cli import EXIT_ERROR
    from distill.cli.train import print_metrics
    from distill.train.evaluate import evaluate_run
    from distill.train.targets import open_store

    _refuse_unfinished(Path(args.run))
    store = open_store(args.store) if args.store else None
    result = evaluate_run(args.run, args.data, batch_size=args.batch_size, store=store)
    # shown before it is written: a write that fails now (a full disk) loses no results
    left_out = _left_out_note(result["classes_left_out"])
    skipped = _skipped_note(result["files_skipped"], args.data)
    undecodable = _undecodable_note(result["images_left_out"])
    lacks = _store_note(result.get("teacher_zeroshot"))
    if args.json:
        print(json.dumps(result))
        for note in (left_out, skipped, undecodable, lacks):
            if note:
                print(note, file=sys.stderr)
    else:
        print_metrics(result)
        for note in (left_out, skipped, undecodable, lacks):
            if note:
                print(note)
        excluded = _excluded_note(result["excluded"])
        if excluded:
            print(excluded)
        if not result["same_dataset"] and result["id"]:
            # the run's own hold-out cannot be told apart in other data (said only when
            # the data has images of its source domains: else there is no ID row)
            print(
                "note: this is not the data the run was trained on, so ID counts every image "
                "of its source domains here, images it trained on included"
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        print(f"error: the results above were not saved to {out}: {why}", file=sys.stderr)
        return EXIT_ERROR
    if not args.json:
        print(f"written: {out}")
    return 0

"""``vlm-distill demo``: the whole pipeline on the embedded default (local teacher, digits)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from . import EXIT_OK
from .progress import TrainProgress, console
from .signals import Stopped, raise_on_stop_signals, say
from .validate import MAX_SEEDS, MAX_STEPS, MAX_STUDENT_SIZE, MAX_VIEWS, int_in, money, path_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Defaults are DemoConfig's (distill/demo.py), declared there only.
    from distill.demo import DemoConfig

    p.add_argument(
        "--workdir",
        type=path_arg,
        default=DemoConfig.workdir,
        help="data, cache and runs go here (default: %(default)s)",
    )
    p.add_argument(
        "--budget",
        type=money,
        default=DemoConfig.budget,
        help="simulated budget in USD for the local teacher: the cap on everything the demo "
        "cache's ledger records, reruns included (default: %(default)s)",
    )
    p.add_argument(
        "--run-budget",
        type=money,
        help="also cap what this run's harvest spends, in USD (default: no per-run cap)",
    )
    p.add_argument("--quick", action="store_true", help="fewer images and steps (about 2 minutes)")
    p.add_argument(
        "--student", default=DemoConfig.student, help="timm student (default: %(default)s)"
    )
    p.add_argument(
        "--student-size", type=int_in(8, MAX_STUDENT_SIZE), default=DemoConfig.student_size,
        help=f"the student's input size in pixels, 8 to {MAX_STUDENT_SIZE} (the 32 px digits "
        "are resized to it; 64 reads them far better out of domain at about twice the "
        "training time; default: "
        f"{DemoConfig.image_size}, the digits' own)",
    )
    p.add_argument(
        "--views", type=int_in(1, MAX_VIEWS), default=DemoConfig.views,
        help="teacher views per image: the image and seeded augmentations (default: %(default)s)",
    )
    p.add_argument(
        "--seeds", type=int_in(1, MAX_SEEDS), default=DemoConfig.seeds,
        help=f"train each student with this many seeds, 1 to {MAX_SEEDS}, and show mean ± "
        "std: one seed's out-of-domain order is noise on these digits (about N times the "
        "training time; default: %(default)s)",
    )
    p.add_argument(
        "--teacher-steps", type=int_in(1, MAX_STEPS), default=DemoConfig.teacher_steps,
        help=f"mini-clip fitting steps when the teacher is fitted, 1 to {MAX_STEPS:,} "
        "(default: its own)",
    )
    # Test-only, hidden: two digits per class and a few steps per stage, so that
    # tests/e2e/test_demo.py checks the whole pipeline's plumbing (twice) in seconds.
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--backend",
        default=DemoConfig.backend,
        choices=["mini-clip", "pseudo-clip", "hash"],
        help="local teacher backend: mini-clip (fitted on digits the demo never deals out), "
        "pseudo-clip (real ImageNet + MiniLM weights, knows no digits), hash (meaningless "
        "vectors from each image's bytes: the plumbing only, in seconds) "
        "(default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from distill.cli import main as cli_main
    from distill.demo import (
        METHOD_NAMES,
        DemoConfig,
        HarvestStopped,
        demo_teacher_fitted,
        run_demo,
    )
    from distill.report import build_report

    from .report import show

    out = console()
    common = dict(
        workdir=args.workdir, budget=args.budget, run_budget=args.run_budget,
        student=args.student, backend=args.backend, views=args.views,
        teacher_steps=args.teacher_steps, seeds=args.seeds, student_size=args.student_size,
    )
    from distill.train.student import check_student, random_init_note, starts_from_weights

    cfg = DemoConfig(**common)
    # a typo, a pretrained tag timm lacks, a ViT made for 224 px: a usage error now, not a
    # traceback after the harvest
    check_student(args.student, cfg.student_size or cfg.image_size, size_flag="--student-size")
    if not starts_from_weights(args.student, pretrained=True):  # it did, without a word
        say(random_init_note(args.student, fix="; so do all the demo's students"))
    if args.quick:
        cfg = DemoConfig(
            **common,
            per_class=8,
            steps_align=60,
            steps_distill=100,
            steps=160,
            eval_every=80,
        )
    if args.smoke:
        cfg = DemoConfig(
            **common,
            per_class=2,
            steps_align=4,
            steps_distill=4,
            steps=4,
            eval_every=4,  # at a stage's first and last step: each eval writes a checkpoint
        )
    out.rule("[bold]vlm-distill demo")
    out.print(
        f"teacher: local {cfg.backend} server on 127.0.0.1 (simulated prices); "
        f"data: bundled digits, OOD domain {', '.join(cfg.test_domains)}; "
        f"student: {cfg.student} at {cfg.student_size or cfg.image_size} px"
    )

    if cfg.backend == "mini-clip" and demo_teacher_fitted(cfg.workdir, cfg) is not None:
        # what this run will do, not whether some teacher file is there (another
        # --teacher-steps, an edited manifest: refitted, though a file exists); that it
        # fits is said when it starts to (a demo fitting in this --workdir meanwhile: this
        # one waits and loads that teacher, and said "fitting" before)
        out.print("teacher: mini-clip, loaded from " + escape(str(cfg.workdir / "teacher")))
    try:
        # SIGTERM, SIGHUP, SIGQUIT stop the teacher's fit and the training as Ctrl-C does
        # (Python's default ended the demo on the spot, without a word); the harvest
        # handles them itself while it runs
        with raise_on_stop_signals():
            summary = run_demo(
                cfg,
                harvest=cli_main,
                on_method=lambda m: out.rule(f"train: {m}"),
                progress_factory=lambda method: TrainProgress(method, out=out),
                teacher_waiting=lambda: out.print(
                    "teacher: waiting for another demo fitting the teacher in "
                    f"{escape(str(cfg.workdir / 'teacher'))}; this one loads it then"
                ),
                teacher_fitting=lambda: out.print(
                    "teacher: mini-clip, fitting it once on the digits this demo never deals "
                    "out (about a minute)"
                ),
            )
    except HarvestStopped as exc:  # it said why above (budget, signal, error)
        out.print(
            f"[yellow]the demo stopped at its harvest (exit {exc.code}), before training.[/] "
            f"What was bought is cached in {escape(str(cfg.workdir / 'cache'))}: run the "
            "demo again (with a larger --budget if the budget stopped it) and it is not "
            "bought again."
        )
        return exc.code
    except KeyboardInterrupt as exc:
        say(f"interrupted: {kept_after_stop(cfg.workdir)}")
        return exc.exit_code if isinstance(exc, Stopped) else 130
    out.rule("spend")
    show(build_report(summary["cache"]))
    out.rule("results")
    t = Table(
        title="accuracy (%) on the digits: ID = held-out 20 % of the source domains, "
        f"OOD = {', '.join(cfg.test_domains)}",
        caption=(
            f"one seed ({cfg.seed}): out of domain, a student's accuracy moves by up to "
            "10 points from seed to seed here; --seeds 3 (or docs/results.md, 5 seeds) "
            "compares the methods"
            if cfg.seeds == 1 else
            f"mean ± std over seeds {cfg.seed}-{cfg.seed + cfg.seeds - 1} (the teacher: one "
            "run, it does not depend on the seed); train s: all seeds"
        ),
    )
    t.add_column("method")
    t.add_column("mean ID", justify="right")
    t.add_column("mean OOD", justify="right")
    t.add_column("train s", justify="right")

    def pct(v: float | None, std: float | None = None) -> str:
        if v is None:
            return "—"
        return f"{100 * v:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")

    for m, r in summary["methods"].items():
        t.add_row(
            METHOD_NAMES.get(m, m),
            pct(r["mean_id"], r.get("std_id")),
            pct(r["mean_ood"], r.get("std_ood")),
            f"{r['wall_time_s'] or 0:.0f}",
        )
    out.print(t)
    out.print(
        f"run folder: {escape(str(summary['run']))}  (config.json, ledger.jsonl, metrics.json"
        + (", " + ", ".join(p.name for p in summary["plots"]) if summary["plots"] else "")
        + ")"
    )
    (summary["run"] / "summary.json").write_text(
        json.dumps(
            {k: v for k, v in summary.items() if k in ("harvest_s", "methods")},
            indent=2,
            default=str,
        )
    )
    return EXIT_OK


def kept_after_stop(workdir: Path) -> str:
    """What an interrupted demo leaves in ``workdir`` for the next run, as it is on disk
    (a stop during the teacher's fit said the teacher was kept when none was written).

    >>> kept_after_stop(Path("/nonexistent-demo"))
    'nothing was kept yet; run the demo again to start over'
    """
    kept = []
    if (workdir / "data").is_dir():
        kept.append("the data")
    if any((workdir / "teacher").glob("*.safetensors")):
        kept.append("the fitted teacher")
    if (workdir / "cache" / "ledger.jsonl").is_file():
        kept.append("every answer bought")
    if not kept:
        return "nothing was kept yet; run the demo again to start over"
    what = kept[0] if len(kept) == 1 else ", ".join(kept[:-1]) + " and " + kept[-1]
    return (f"{what} {'is' if len(kept) == 1 else 'are'} kept in {workdir}; run the demo "
            "again: it buys nothing twice, refits no teacher it kept and trains the students "
            "again")


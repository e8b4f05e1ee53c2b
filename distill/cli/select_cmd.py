"""``vlm-distill harvest DATA --budget B --select random|uncertainty|coreset``: buy in rounds.

When the budget cannot cover every image, the harvest buys a first random batch, trains a
small student on it, and lets the student pick the next batch (most uncertain, or k-center
coverage of its probability space), ``--rounds`` times. ``--budget`` means what it means
everywhere: the cap on what this cache's ledger records for the teacher (so resumes
never spend it again); ``--run-budget`` caps one run. The state file in the cache folder
remembers which images each round picked, and the flags that picked them: a resume with
another ``--rounds``, ``--seed``, ``--round-steps``, ``--select-*`` or ``--prompt`` is
refused (exit 2), not mixed into one manifest. At the end the bought subset is written as a CSV
manifest with its own embedding store and the class list it was harvested with, ready for
``vlm-distill train MANIFEST --class-file MANIFEST.classes.txt --cache DIR`` (printed).
When the budget covers everything, this is the ordinary harvest.
"""

from __future__ import annotations

import argparse
import shlex
import signal
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from vlmclient import ConfigurationError, TextEmbeddingRequest

from . import EXIT_BUDGET, EXIT_ERROR, EXIT_OK
from ._common import budget_lines, note_run, note_stopped, open_client, open_coordinator
from .progress import console
from .signals import Interrupted, run_paid
from .validate import MAX_STEPS, MAX_STUDENT_SIZE, int_in, seed_arg

if TYPE_CHECKING:  # imported where used: `harvest --help` stays quick
    from cache import CacheLike
    from cache.layout import CacheDir
    from distill.data import Dataset
    from distill.labelfree.rounds import RoundsResult
    from vlmclient import TeacherClient

SELECTIONS = ("random", "uncertainty", "coreset")
STOPPED_WRITING = (
    "while the bought images' manifest and store were written: every answer bought is "
    "cached and the selection state kept; run again to write them (nothing is bought again)"
)


# the selection flags' own defaults: a value other than these, not given on the command
# line, came from a config file
SELECT_DEFAULTS = {
    "rounds": 3,
    "round_steps": 30,
    "select_student": "mobilenetv3_small_100",
    "select_image_size": 32,
    "select_labels": False,
    "seed": 0,
}


class _SelectFlag(argparse.Action):
    """argparse's ``store`` (``store_true`` given ``nargs=0, const=True``) that also notes
    the flag in ``namespace.select_flags``: given without ``--select`` it is refused."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        given = getattr(namespace, "select_flags", ())
        if self.option_strings[0] not in given:
            namespace.select_flags = (*given, self.option_strings[0])


def add_select_arguments(p: argparse.ArgumentParser) -> None:
    """The selection flags, added to ``harvest``."""
    g = p.add_argument_group(
        "budget-aware selection (when the budget cannot buy every image; the flags after "
        "--select work only with it)"
    )
    g.add_argument("--select", choices=SELECTIONS, help="how to pick the images to buy")

    def flag(name: str, **kw: Any) -> None:
        # noted when given, its default the one unused_select_flags compares a config
        # file's value to
        dest = name.removeprefix("--").replace("-", "_")
        g.add_argument(name, action=_SelectFlag, default=SELECT_DEFAULTS[dest], **kw)

    flag("--rounds", type=int_in(1, 1000), help="selection rounds (default: %(default)s)")
    flag(
        "--round-steps",
        type=int_in(0, MAX_STEPS),
        help=f"student training steps between rounds, 0 to {MAX_STEPS:,} "
        "(default: %(default)s)",
    )
    flag("--select-student", help="timm model trained between rounds (default: %(default)s)")
    flag(
        "--select-image-size",
        type=int_in(8, MAX_STUDENT_SIZE),
        help="its input size (default: %(default)s)",
    )
    flag(
        "--select-labels",
        nargs=0,
        const=True,
        help="also train the in-between student on the data's own labels (every image needs one)",
    )
    flag("--seed", type=seed_arg, help="selection seed (default: %(default)s)")
    p.set_defaults(select_flags=())


def unused_select_flags(args: argparse.Namespace) -> str | None:
    """For a harvest without ``--select``: ConfigurationError when selection flags were
    given on the command line (``--select`` forgotten: they were ignored without a word and
    every image bought); else the note to print when a config file sets some (a file may
    serve selecting and plain harvests alike), or None."""
    given: tuple[str, ...] = getattr(args, "select_flags", ())
    if given:
        named = ", ".join(given)
        works, them = ("works", "it") if len(given) == 1 else ("work", "them")
        raise ConfigurationError(
            f"{named} only {works} with --select (random, uncertainty or coreset), which "
            f"buys in rounds; without it every image is bought: add --select, or drop {them}"
        )
    from_file = [
        "--" + dest.replace("_", "-")
        for dest, default in SELECT_DEFAULTS.items()
        if getattr(args, dest, default) != default
    ]
    if not from_file:
        return None
    return (
        f"the config file's {', '.join(from_file)} only "
        f"{'works' if len(from_file) == 1 else 'work'} with --select: not used by this plain "
        "harvest"
    )


def _full_cost(client: TeacherClient, dataset: Dataset, prompt: str, views: int) -> Decimal:
    """What buying ``views`` views of every image and the class prompts would cost at most
    (what is cached left out): the plain harvest's bill when the budget covers it."""
    from distill.data import class_prompts
    from distill.harvest_store import image_items
    from distill.labelfree.rounds import sendable
    from distill.view_requests import upload_encoding, view_request

    items = image_items(dataset, views)
    encoding = upload_encoding(client.teacher)  # the augmented views' (view 0: the file)
    reqs = sendable(client, (view_request(i, dataset.hflip, encoding) for i in items))
    texts = [TextEmbeddingRequest(text=t) for t in class_prompts(dataset.class_names, prompt)]
    cost = client.plan("image_embedding", reqs)[1] if dataset.samples else Decimal(0)
    return cost + (client.plan("text_embedding", texts)[1] if texts else Decimal(0))


def write_manifest(path: Path, dataset: Dataset, ids: list[str]) -> Path:
    """CSV ``path,label,domain`` of the bought images (absolute paths, the dataset's hflip
    beside it) + a class file, each written atomically (a crash mid-write leaves the old
    file, never its first rows)."""
    from cache import atomic_write
    from distill.data.manifest_file import write_manifest_rows

    by_id = {s.id: s for s in dataset.samples}
    names = dataset.class_names
    rows = (
        (str(s.path), "" if s.label is None else names[s.label], s.domain)
        for s in (by_id[i] for i in ids)
    )
    write_manifest_rows(path, rows, hflip=dataset.hflip)
    classes = path.with_suffix(".classes.txt")
    atomic_write(classes, "\n".join(dataset.class_names) + "\n")
    return classes


def _rounds(
    args: argparse.Namespace,
    client: TeacherClient,
    cache: CacheLike,
    cdir: CacheDir,
    dataset: Dataset,
    state_file: Path,
) -> tuple[RoundsResult, Path | None, Path | None]:
    """Buy in rounds; (what the rounds did, the bought subset's store, its manifest)."""
    from distill.data import scan
    from distill.harvest_store import export_store
    from distill.labelfree.rounds import harvest_rounds

    out = console()

    async def go() -> RoundsResult:
        async with client:
            return await harvest_rounds(
                dataset,
                client,
                cache_dir=cdir.root,
                strategy=args.select,
                rounds=args.rounds,
                round_steps=args.round_steps,
                prompt=args.prompt,
                student=args.select_student,
                image_size=args.select_image_size,
                use_labels=args.select_labels,
                seed=args.seed,
                on_round=lambda r, ids: out.print(f"round {r + 1}: picked {len(ids)} images"),
            )

    try:
        result = run_paid(go())
    except Interrupted as exc:  # noted like a stopped plain harvest
        note_stopped(cdir.root, args, client, exc)
        raise
    store = manifest = None
    try:
        if result.bought_ids:
            manifest = state_file.with_suffix(".csv")
            classes = write_manifest(manifest, dataset, result.bought_ids)
            # our own manifest of absolute paths to images already checked
            subset = scan(manifest, class_file=classes, allow_outside_paths=True)
            store, _ = export_store(
                subset,
                cache,
                cache_dir=cdir.root,
                teacher=args.teacher,
                prompt=args.prompt,
                base_url=args.base_url,
                cache_namespace=args.cache_namespace,
            )
    except KeyboardInterrupt as exc:  # Ctrl-C, or another stop signal (Stopped)
        # the run spent money: noted as stopped, or `report` shows the run before it
        stop = Interrupted(getattr(exc, "signum", signal.SIGINT), STOPPED_WRITING)
        note_stopped(cdir.root, args, client, stop)
        raise stop from None
    return result, store, manifest


def run_select(args: argparse.Namespace) -> int | None:
    """Buy in rounds; the exit code, or None when the plain harvest does what was asked
    (a dry run, or a budget that covers every image: said on the console)."""
    from cache import ResponseCache, SpendLedger
    from cache.layout import CacheDir
    from distill.data import scan
    from distill.labelfree.rounds import (
        read_state,
        resume_conflict,
        selection_settings,
        state_path,
    )

    out = console()
    if args.rounds < 1 or args.round_steps < 0:
        raise ConfigurationError("--rounds must be >= 1 and --round-steps >= 0")
    if args.dry_run:
        return None
    dataset = scan(
        args.data, class_file=args.class_file, allow_outside_paths=args.allow_outside_paths
    )
    if not dataset.class_names:
        raise ConfigurationError("--select needs class names: give --class-file")
    unlabelled = sum(s.label is None for s in dataset.samples)
    if args.select_labels and unlabelled:  # the student would train without them, unsaid
        raise ConfigurationError(
            f"--select-labels needs a label for every image: {unlabelled} of "
            f"{len(dataset.samples)} have none (a flat folder has no labels); drop it"
        )
    from distill.train.student import check_student

    # the student trains after round 1 is paid for: it is checked before the cache folder
    # is made (it was made, then the name refused)
    check_student(
        args.select_student,
        args.select_image_size,
        student_flag="--select-student",
        size_flag="--select-image-size",
    )
    cdir = CacheDir(args.cache)
    state_file = state_path(cdir.root, args.teacher, dataset, args.select)
    settings = selection_settings(
        rounds=args.rounds, round_steps=args.round_steps, seed=args.seed,
        student=args.select_student, image_size=args.select_image_size,
        use_labels=args.select_labels, prompt=args.prompt,
    )  # fmt: skip
    with (
        # the ledger first: a file of someone else's there is refused before a response
        # cache is made beside it (as harvest)
        SpendLedger(cdir.ledger) as ledger,
        ResponseCache(cdir.responses) as cache,
        open_coordinator(cdir) as coord,
    ):
        # --budget is shared with every earlier run through the ledger: what is left of it
        # (and of --run-budget) is what the rounds may spend.
        client = open_client(args, cache, ledger, coord)
        from distill.labelfree.rounds import budget_left

        remaining = budget_left(client)  # of --budget: a --run-budget slices the rounds
        # priced at the views the plain harvest would buy: one view an image was priced
        # while it bought --views of each, and ran out of money in scan order
        full = _full_cost(client, dataset, args.prompt, args.views)
        covers = remaining is None or full <= remaining
        # a budget for every image is the plain harvest, which takes --views (a store of
        # more views is kept only with them); the rounds buy one view per image
        if not covers and args.views != 1:
            raise ConfigurationError(
                "--select buys one view per image in its rounds (this budget cannot buy "
                "every image); drop --views"
            )
        if not covers:
            conflict = resume_conflict(state_file, read_state(state_file), settings)
            if conflict is not None:  # before anything is bought: two experiments, one manifest
                raise ConfigurationError(conflict)
            result, store, manifest = _rounds(args, client, cache, cdir, dataset, state_file)
            money_rows = budget_lines(client)
            code = EXIT_ERROR if result.failed else EXIT_OK
            if client.overrun is not None or (
                result.stopped_by_budget and result.rounds_done < args.rounds
            ):
                code = EXIT_BUDGET
            # recorded like a plain harvest: `report` shows this run's "budget left"
            not_noted = note_run(
                cdir.root, args, client, bought=client.stats.items_bought,
                cache_hits=client.stats.cache_hits, code=code,
            )  # fmt: skip
    if covers:
        out.print("the budget covers every image: plain harvest, no selection needed")
        return None
    t = Table(title=f"harvest --select {args.select}", show_header=False)
    t.add_row("images", f"{len(result.bought_ids)} of {len(dataset.samples)} bought")
    t.add_row("rounds", f"{result.rounds_done} of {args.rounds}")
    for label, value in money_rows:
        t.add_row(label, value)
    t.add_row("state", escape(str(result.state_file)))
    if manifest is not None:
        t.add_row("manifest", escape(str(manifest)))
    if store is not None:
        t.add_row("embedding store", escape(str(store)))
    out.print(t)
    from ._common import label_first_advice

    no_labels = label_first_advice(dataset, args)
    if no_labels is not None:
        # unlabelled data: the train command below would be refused ("has no labels"); say
        # what the plain harvest says: label the data first
        out.print(f"[yellow]not for train[/]: {escape(no_labels)} The image embeddings are "
                  "cached.", soft_wrap=True)  # fmt: skip
    elif manifest is not None and store is not None:
        # the class file keeps the classes no bought image has: without it train reads
        # only the labels present, and finds no store for them
        cmd = shlex.join([
            "vlm-distill", "train", str(manifest),
            "--class-file", str(manifest.with_suffix(".classes.txt")),
            "--cache", str(args.cache), "--teacher", args.teacher,
        ])  # fmt: skip
        out.print(f"train on them: {escape(cmd)} --out RUN", soft_wrap=True)
    if not_noted is not None:
        out.print(f"[yellow]could not note this run in {escape(str(cdir.root))}:[/] "
                  f"{escape(not_noted)}", soft_wrap=True)  # fmt: skip
    from .failures import failure_advice, show_failed

    show_failed(out, result.failed)  # class prompts too long: as the plain harvest says
    if client.overrun is not None:  # the provider billed more than reserved: exit 3
        out.print(f"[red]{escape(str(client.overrun))}[/]")
        return EXIT_BUDGET
    if result.stopped_by_budget and result.rounds_done < args.rounds:
        out.print(f"[yellow]stopped by the budget[/]: {result.stopped_by_budget}")
        return EXIT_BUDGET
    if result.budget_spent:  # more --rounds than images the budget buys: one a round
        out.print(f"the budget is spent after {result.rounds_done} of {args.rounds} rounds: "
                  f"{result.budget_spent}")  # fmt: skip
    if result.failed:
        failure_advice(out, result.failed, client)
        return EXIT_ERROR
    return EXIT_OK

"""``vlm-distill harvest``: buy teacher embeddings for a dataset under a hard budget."""

from __future__ import annotations

import argparse
import itertools
import shlex
import tempfile
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cache import CacheLike
from cache.layout import CacheDir
from cache.ledger import plain
from vlmclient import (
    AnswerResult,
    ConfigurationError,
    EmbeddingResult,
    ImageEmbeddingRequest,
    Kind,
    TeacherClient,
    TextEmbeddingRequest,
)

from . import EXIT_BUDGET, EXIT_ERROR, EXIT_OK, EXIT_USAGE
from ._common import (
    add_client_arguments,
    budget_lines,
    item_flags,
    label_first_advice,
    note_run,
    note_stopped,
    open_client,
    open_coordinator,
    progress_money,
    removed_if_refused,
    saved_text,
    usd_text,
)
from .failures import (
    failure_advice,
    retry_advice,
    show_failed,
    show_left_out,
    shown,
    too_long_count,
)
from .progress import LiveProgress, console
from .select_cmd import add_select_arguments, run_select, unused_select_flags
from .signals import Interrupted, raise_on_stop_signals, run_paid
from .validate import MAX_VIEWS, int_in, path_arg

if TYPE_CHECKING:  # imported where used: `harvest --help` stays quick
    from distill.data import Dataset
    from distill.harvest import HarvestResult

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data",
        type=path_arg,
        help="DATA/<domain>/<class>/<image>, DATA/<class>/<image> or a CSV manifest",
    )
    add_client_arguments(p)
    p.add_argument(
        "--prompt", default="a photo of a {}", help="class prompt template (default: %(default)r)"
    )
    p.add_argument(
        "--class-file", type=path_arg,
        help="class names, one per line (fixes them and their order: give train the same "
        "--class-file)",
    )
    p.add_argument(
        "--views",
        type=int_in(1, MAX_VIEWS),
        help=f"teacher views per image, 1 to {MAX_VIEWS}; view 0 is the image itself "
        "(default 1; a run not given --views refuses to replace a store of more views)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print uncached items and their worst-case cost; send nothing",
    )
    add_select_arguments(p)


def run(args: argparse.Namespace) -> int:
    args.views_given = args.views is not None
    if args.views is None:
        args.views = 1
    if not args.select:
        note = unused_select_flags(args)  # a flag given is refused: nothing is bought
        if note is not None:
            console().print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    with (
        raise_on_stop_signals(),  # the loop's own handlers take over while it runs
        removed_if_refused(args.cache),
    ):
        if args.select:
            code = run_select(args)
            if code is not None:
                return code
            # else a plain harvest does what was asked (a dry run, or a budget that covers
            # all)
        return _plain_harvest(args)


def _plain_harvest(args: argparse.Namespace) -> int:
    """The plain harvest: every image view and prompt, then the store."""
    if args.dry_run and not Path(args.cache).exists():
        # Nothing is cached yet, and a dry run leaves nothing behind (a mistyped --cache
        # was created with an empty database and ledger): it plans in a folder of its own.
        with tempfile.TemporaryDirectory(prefix="vlm-distill-dry-run-") as tmp:
            return _harvest_into(args, CacheDir(tmp))
    return _harvest_into(args, CacheDir(args.cache))


def _harvest_into(args: argparse.Namespace, cdir: CacheDir) -> int:
    from cache import ResponseCache, SpendLedger
    from distill.data import scan
    from distill.harvest import harvest
    from distill.harvest_store import keep_views, store_dir

    out = console()
    if args.views < 1:
        raise ConfigurationError("--views must be >= 1")
    dataset = scan(
        args.data, class_file=args.class_file, allow_outside_paths=args.allow_outside_paths
    )
    out.print(
        f"[bold]{shown(str(dataset.root))}[/]: {len(dataset.samples)} images, "
        f"{len(dataset.class_names)} classes, {len(dataset.domains)} domains "
        f"({dataset.layout}); {len(dataset.skipped)} files skipped"
    )
    for path, reason in dataset.skipped[:10]:
        out.print(f"  skipped {shown(path)}: {shown(reason)}")
    if len(dataset.skipped) > 10:
        out.print(
            f"  ... and {len(dataset.skipped) - 10} more "
            f"(`vlm-distill data scan {shown(str(args.data))} --json` lists every one)"
        )
    with (
        # the ledger first: a file of someone else's there is refused before a response
        # cache is made beside it
        SpendLedger(cdir.ledger) as ledger,
        ResponseCache(cdir.responses) as cache,
        open_coordinator(cdir) as coord,
    ):
        if cache.spill_problem is not None and not args.dry_run:
            # Paid entries of an earlier run still cannot be stored: buying more would only
            # add to them (a full disk, a damaged database). Nothing is sent.
            out.print(f"[red]error:[/] {shown(cache.spill_problem)}")
            out.print(_storage_hint(args.cache))
            return EXIT_ERROR
        client = open_client(args, cache, ledger, coord)
        no_labels = label_first_advice(dataset, args)
        if no_labels is not None:
            # said before anything is bought, once the teacher is accepted (a refused one
            # buys nothing): the embeddings are still worth buying (cached for
            # `pseudolabel`), but `train` refuses these images as they are
            if args.dry_run:
                out.print(f"[yellow]note:[/] {shown(no_labels)}", soft_wrap=True)
            else:
                out.print(
                    "[yellow]note:[/] no image here has a label: `vlm-distill train` refuses "
                    "them as they are; their embeddings are bought and cached for `vlm-distill "
                    "pseudolabel`, which labels them (the commands are printed once the "
                    "harvest is done)"
                )

        async def go() -> HarvestResult | None:
            async with client:
                if not args.views_given:  # before anything is bought (or planned)
                    path = store_dir(cdir.root, client.teacher, dataset)
                    keep_views(path, client.fingerprint, args.views)
                if args.dry_run:
                    await _dry_run(client, cache, dataset, args)  # prints its plan, returns nothing
                    return None
                total = len(dataset.samples) * args.views + len(dataset.class_names)
                started = time.monotonic()
                with LiveProgress(f"harvest {args.teacher}", total, out=out) as bar:

                    def show(r: HarvestResult) -> None:
                        s = client.stats
                        rate = s.requests_sent / max(time.monotonic() - started, 1e-9)
                        bar.update(
                            r.bought + r.cache_hits + r.identical + r.left_out_views,
                            f"hits {r.cache_hits} · bought {r.bought} · {rate:.1f} req/s · "
                            f"retries {s.retries} · {progress_money(client)}",
                        )

                    wall_started = time.perf_counter()
                    try:
                        return await harvest(
                            dataset,
                            client,
                            cache_dir=cdir.root,
                            views=args.views,
                            prompt=args.prompt,
                            on_progress=show,
                            timings=client.timings,
                        )
                    finally:
                        wall[0] = time.perf_counter() - wall_started

        wall = [0.0]
        try:
            result = run_paid(go())
        except Interrupted as exc:
            # a stopped run spent money too: `report` shows it as the last run, not the one
            # before (until 2026-12-06 it wrote no line); a dry run notes nothing
            if not args.dry_run:
                note_stopped(cdir.root, args, client, exc)
            raise
        if result is None:
            return EXIT_OK
        code = _summary(out, result, client, args, no_labels)
        if getattr(args, "verbose", 0):
            # last line: a slow provider (wait) told apart from a slow disk (cache, ledger)
            out.print(client.timings.line(wall[0]), soft_wrap=True)
        failed = note_run(
            cdir.root, args, client, bought=result.bought, cache_hits=result.cache_hits,
            code=code,
        )  # fmt: skip
    if failed is not None:
        out.print(
            f"[yellow]could not note this run in {shown(str(cdir.root))}:[/] {shown(failed)}"
        )
        code = code or EXIT_ERROR
    return code


def _storage_hint(cache: Path) -> str:
    return (
        "Free disk space if the disk is full; if the database is damaged, run "
        f"`vlm-distill cache recover --cache {shown(shlex.quote(str(cache)))}`. Then run "
        "again: paid results kept in the spill file are imported before anything is bought."
    )


async def _dry_run(
    client: TeacherClient, cache: CacheLike, dataset: Dataset, args: argparse.Namespace
) -> None:
    from distill.data import class_prompts
    from distill.harvest import image_items
    from distill.view_requests import build_requests

    # The run's own look-ups (an augmented view by its content id, then by its key before
    # content ids), reading the cache only; priced a chunk at a time as the views are read.
    peek = _Peek(client, cache)
    n_views = len(dataset.samples) * args.views
    unreadable = [0]

    def reqs() -> Iterator[ImageEmbeddingRequest]:
        items = image_items(dataset, args.views)
        while chunk := list(itertools.islice(items, DRY_RUN_CHUNK)):
            built = build_requests(peek, chunk, hflip=dataset.hflip)
            unreadable[0] += len(built.failed)  # a run fails or leaves out these alone
            yield from built.requests

    n_img, cost_img = client.plan("image_embedding", reqs())
    texts = [TextEmbeddingRequest(text=p) for p in class_prompts(dataset.class_names, args.prompt)]
    n_txt, cost_txt = client.plan("text_embedding", texts) if texts else (0, Decimal(0))
    out = console()
    left = client.budget.remaining  # --budget always has a value: never None here
    out.print(
        f"dry run: {n_img} of {n_views} image views and {n_txt} of {len(texts)} prompts "
        f"are not cached; buying them would cost at most ${usd_text(cost_img + cost_txt)} "
        f"(budget ${args.budget}, of which ${plain(left or Decimal(0))} is left). Nothing "
        "was sent."
    )
    if unreadable[0]:
        n = unreadable[0]
        out.print(
            f"{n} image view{'s' * (n > 1)} cannot be read or prepared (not counted): a run "
            "buys the rest (an image whose pixels cannot be decoded is left out of the "
            f"embedding store; any other fails the run); `vlm-distill data scan "
            f"{shown(shlex.quote(str(args.data)))} --decode` lists damaged files."
        )


DRY_RUN_CHUNK = 64  # image views a dry run reads at a time


class _Peek:
    """The look-ups of a harvest's chunks (:class:`~distill.view_requests.ViewClient`)
    without their side effects: a hit is not counted in the ledger, an entry found under
    its key before content ids is not copied to the new one (a dry run changes nothing)."""

    def __init__(self, client: TeacherClient, cache: CacheLike) -> None:
        self.client, self.cache = client, cache
        self.teacher = client.teacher

    def prepare(self, item: ImageEmbeddingRequest) -> ImageEmbeddingRequest:
        return self.client.prepare(item)

    def cache_key(self, kind: Kind, item: ImageEmbeddingRequest) -> str:
        return self.client.cache_key(kind, item)

    def content_key(self, content_id: str) -> str:
        return self.client.content_key(content_id)

    def cached(
        self, kind: Kind, keys: Sequence[str], fallback: Sequence[str | None] = ()
    ) -> list[EmbeddingResult | AnswerResult | None]:
        out: list[EmbeddingResult | AnswerResult | None] = []
        for i, key in enumerate(keys):
            entry = self.cache.get(key)
            old = fallback[i] if i < len(fallback) else None
            if entry is None and old is not None:
                entry = self.cache.get(old)
            vector = None if entry is None else entry.vector
            out.append(None if vector is None else EmbeddingResult(vector=vector, cached=True))
        return out


def _not_counted(failed: list[tuple[str, str]]) -> str:
    """What "N items remain" leaves out: the prompts no rerun buys until shortened."""
    n = too_long_count(failed)
    if not n:
        return ""
    return (
        f" (not counting the {n} prompt{'s' * (n > 1)} too long for the teacher, listed "
        f"above: shorten {'them' if n > 1 else 'it'} first)"
    )


def _summary(
    out: Console,
    result: HarvestResult,
    client: TeacherClient,
    args: argparse.Namespace,
    no_labels: str | None,
) -> int:
    t = Table(title="harvest", show_header=False)
    t.add_row("teacher", args.teacher)
    t.add_row("items", f"{result.images_total} image views + {result.texts_total} prompts")
    t.add_row("cache hits", str(result.cache_hits))
    if args.views > 1:  # a cached view is found by its recipe, never recomputed
        t.add_row("augmented views computed", str(result.views_computed))
    t.add_row("bought", str(result.bought))
    if result.identical:  # files with the same bytes: one purchase answers them all
        t.add_row("identical to an item bought this run", str(result.identical))
    t.add_row("requests sent", str(client.stats.requests_sent))
    t.add_row("retries", str(client.stats.retries))
    for label, value in budget_lines(client):
        t.add_row(label, value)
    t.add_row("saved by the cache", f"${saved_text(client.stats.saved_usd)}")
    if client.stats.estimated:
        t.add_row("charged at our estimate", f"{client.stats.estimated} requests (no usage said)")
    out.print(t)
    if result.cache_hits and not result.bought and not result.remaining_items:
        out.print("Everything was already cached: this run spent $0.")
    show_failed(out, result.failed)
    show_left_out(out, result.left_out, written=result.store_path is not None)
    if result.overrun:
        # Before the other stops: an overrun means every estimate, the cap's too, is short.
        out.print(f"[red]{shown(result.overrun)}[/]")
        scale = client.budget.scale
        if result.remaining_items:
            out.print(
                f"{result.remaining_items} items remain{_not_counted(result.failed)}; at the "
                f"rate billed ({scale:.2f}x our estimate) finishing would cost about "
                f"${result.remaining_cost_usd:.6f}."
            )
        if client.budget.overruns:
            out.print(
                f"billed beyond the reservations: ${client.budget.overrun_usd} in "
                f"{client.budget.overruns} requests; `vlm-distill report "
                f"{shown(shlex.quote(str(args.cache)))}` lists them."
            )
        else:  # stopped by another run's overrun
            out.print(
                "this run was billed nothing beyond its reservations; "
                f"`vlm-distill report {shown(shlex.quote(str(args.cache)))}` lists the overrun."
            )
        return EXIT_BUDGET
    if result.fatal:
        out.print(f"[red]stopped:[/] {shown(result.fatal)}")
        if client.storage_problem is not None:
            out.print(_storage_hint(args.cache))
        if client.stats.charged_no_answer or client.billed_malformed:  # may have been billed
            out.print(retry_advice(client.stats.charged_no_answer, client.billed_malformed))
        # a setting found missing at the first request (Vertex's project, AWS credentials
        # or region): a configuration error like a missing key, exit 2
        return EXIT_USAGE if result.fatal_is_usage else EXIT_ERROR
    if result.stopped_by_budget:
        out.print(f"[yellow]stopped by the budget[/]: {shown(result.stopped_by_budget)}")
        out.print(
            f"{result.remaining_items} items remain{_not_counted(result.failed)}; finishing "
            f"would cost at most ${usd_text(result.remaining_cost_usd)}. What was bought is cached."
        )
        return EXIT_BUDGET
    if result.failed:
        failure_advice(out, result.failed, client)
        return EXIT_ERROR
    if result.store_error and not result.store_error_is_disk:
        # not the disk: cached vectors of two sizes (a server that answered some wrongly)
        out.print(
            f"[red]{shown(result.store_error)}[/]\nThe cached answers disagree in size: "
            "remove the wrong ones with `"
            + escape(f"vlm-distill cache prune --cache {shlex.quote(str(args.cache))} "
                     f"--teacher {shlex.quote(args.teacher)} --keep-dim N")
            + "` (N: the size this teacher gives), then run again (it buys only those)."
        )
        return EXIT_ERROR
    if result.store_error:
        out.print(
            f"[red]{shown(result.store_error)}[/]\nEverything is bought and cached; free disk "
            "space, then run again (it sends nothing) or `vlm-distill cache export "
            + escape(f"{shlex.quote(str(args.data))} --cache {shlex.quote(str(args.cache))} "
                     f"--teacher {shlex.quote(args.teacher)}{item_flags(args)}")
            + "`."
        )
        return EXIT_ERROR
    if result.store_path:
        out.print(f"embedding store: {shown(str(result.store_path))}", soft_wrap=True)
    if no_labels is not None and result.images_total:
        # Unlabelled data: `train` needs labels, which only `pseudolabel` gives it (a
        # --class-file here buys the prompts, but the images still have no labels).
        what = "not for train" if result.store_path else "no embedding store written"
        out.print(
            f"[yellow]{what}[/]: {shown(no_labels)} The image embeddings are cached.",
            soft_wrap=True,
        )
    return EXIT_OK

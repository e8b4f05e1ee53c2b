"""``vlm-distill harvest``: buy teacher embeddings for a dataset under a hard budget."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import httpx
from rich.table import Table

from cache.coordination import Coordinator
from distill.cachedir import CacheDir
from vlmclient import ConfigurationError, TeacherClient, TextEmbeddingRequest, load_prices
from vlmclient.models import Kind
from vlmclient.prices import PriceTable
from vlmclient.providers import parse_teacher
from vlmclient.shared_budget import SharedBudget

from . import EXIT_BUDGET, EXIT_ERROR, EXIT_OK
from .progress import LiveProgress, console
from .signals import run_paid
from .validate import (
    MAX_BATCH_SIZE,
    MAX_CONCURRENCY,
    MAX_VIEWS,
    int_in,
    money,
    positive_rate,
    positive_seconds,
)

__all__ = [
    "HARVEST_KINDS",
    "add_arguments",
    "add_client_arguments",
    "check_teacher",
    "money",
    "open_client",
    "run",
]


def add_client_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by every command that talks to a teacher."""
    p.add_argument(
        "--teacher", default="local:pseudo-clip", help="provider:model (default: %(default)s)"
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=Path("vlm-cache"),
        help="cache directory (default: %(default)s)",
    )
    p.add_argument(
        "--budget",
        type=money,
        default=Decimal("1.00"),
        help="hard cap in USD on everything this cache's ledger records for this teacher, "
        "every run and concurrent process included: a rerun never spends it again "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--run-budget",
        type=money,
        help="also cap what this run spends, in USD (default: no per-run cap)",
    )
    p.add_argument(
        "--max-requests", type=int_in(1), help="also stop after this many paid requests"
    )
    p.add_argument("--max-items", type=int_in(1), help="also stop after this many paid items")
    p.add_argument(
        "--base-url", help="override the provider's base URL (proxies, gateways, local servers)"
    )
    p.add_argument(
        "--cache-namespace",
        help="name the cache keys use for this endpoint instead of --base-url ('default': "
        "share the provider's own entries, e.g. behind a proxy to the provider itself)",
    )
    p.add_argument("--price-file", type=Path, help="JSON prices overriding the built-in table")
    p.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="let a CSV manifest name files outside its folder (absolute or ../ paths)",
    )
    p.add_argument(
        "--concurrency",
        type=int_in(1, MAX_CONCURRENCY),
        default=16,
        help=f"requests in flight, 1 to {MAX_CONCURRENCY} (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int_in(1, MAX_BATCH_SIZE),
        help="items per request (default: the provider's limit)",
    )
    p.add_argument("--rpm", type=positive_rate, help="requests per minute limit (> 0)")
    p.add_argument("--tpm", type=positive_rate, help="tokens per minute limit (> 0)")
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=60.0,
        help="seconds per request, > 0 and <= 3600 (default: %(default)s)",
    )
    p.add_argument(
        "--allow-free",
        action="store_true",
        help="run even when the price table makes a billed unit of the teacher free "
        "(the budget then cannot stop that spend)",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data",
        type=Path,
        help="DATA/<domain>/<class>/<image>, DATA/<class>/<image> or a CSV manifest",
    )
    add_client_arguments(p)
    p.add_argument(
        "--prompt", default="a photo of a {}", help="class prompt template (default: %(default)r)"
    )
    p.add_argument("--class-file", type=Path, help="class names, one per line (fixes their order)")
    p.add_argument(
        "--views",
        type=int_in(1, MAX_VIEWS),
        default=1,
        help=f"teacher views per image, 1 to {MAX_VIEWS}; view 0 is the image itself",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print uncached items and their worst-case cost; send nothing",
    )
    from .select_cmd import add_select_arguments

    add_select_arguments(p)


HARVEST_KINDS: tuple[Kind, ...] = ("image_embedding", "text_embedding")


def check_teacher(args: argparse.Namespace, prices: PriceTable, kinds: Sequence[Kind]) -> None:
    """Refuse (ConfigurationError, exit 2) before anything is sent when the teacher cannot
    do ``kinds`` or its price makes a billed unit free (unless ``--allow-free``)."""
    from vlmclient.price_check import MIN_PRICE_USD, free_units

    provider, model = parse_teacher(args.teacher)
    offered = provider.kinds_for(model)
    lacking = [k for k in kinds if k not in offered]
    if lacking:
        what = ", ".join(k.replace("_", " ") + "s" for k in lacking)
        can = ", ".join(sorted(k.replace("_", " ") + "s" for k in offered)) or "nothing"
        raise ConfigurationError(
            f"{args.teacher} cannot give {what} (it offers {can}); choose a teacher that "
            "does (`vlm-distill providers` lists them)"
        )
    price = prices.lookup(provider.name, model)
    if getattr(args, "allow_free", False):
        return
    free = free_units(args.teacher, price, kinds)
    if free:
        raise ConfigurationError(
            f"the price of {args.teacher} makes billed units free, so --budget cannot stop "
            f"the spend ({'; '.join(free)}; anything below ${MIN_PRICE_USD} counts as free): "
            "fix the --price-file entry, or pass --allow-free if the teacher really is free"
        )


def open_client(  # type: ignore[no-untyped-def]
    args: argparse.Namespace,
    cache,
    ledger,
    coord: Coordinator,
    kinds: Sequence[Kind] = HARVEST_KINDS,
) -> TeacherClient:
    """The command's client: ``--budget`` shared through ``coord`` with every run and
    process of this cache, ``--run-budget`` for this run, leases so concurrent runs of one
    cache do not buy the same items."""
    prices = load_prices(args.price_file)
    check_teacher(args, prices, kinds)
    provider, model = parse_teacher(args.teacher)
    budget = SharedBudget(
        coord,
        f"{provider.name}:{model}",
        total=args.budget,
        usd=getattr(args, "run_budget", None),
        max_requests=args.max_requests,
        max_items=args.max_items,
    )
    if args.concurrency < 1:
        raise ConfigurationError("--concurrency must be >= 1")
    extra: dict[str, object] = {}
    if getattr(args, "dry_run", False):
        # A dry run only estimates: it needs no key, and its client cannot send anything.
        extra = {"api_key": DRY_RUN_KEY, "transport": httpx.MockTransport(_refuse)}
    reasoning = getattr(args, "reasoning", None)
    if reasoning not in (None, "off"):  # "off" is every answer adapter's default already
        extra["params"] = {"reasoning": reasoning}
    return TeacherClient(
        args.teacher,
        base_url=args.base_url,
        budget=budget,
        cache=cache,
        ledger=ledger,
        prices=prices,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        rpm=args.rpm,
        tpm=args.tpm,
        timeout=args.timeout,
        cache_namespace=getattr(args, "cache_namespace", None),
        claims=coord,
        **extra,  # type: ignore[arg-type]
    )


def open_coordinator(cdir: CacheDir) -> Coordinator:
    """The cache folder's coordination database (leases and the shared budget)."""
    return Coordinator(cdir.coordination, ledger_path=cdir.ledger)


def budget_lines(client: TeacherClient) -> list[tuple[str, str]]:
    """(label, value) rows saying both caps: the ledger's total for the teacher, this run."""
    budget = client.budget
    if not isinstance(budget, SharedBudget):
        return [("spent", f"${budget.spent} of ${budget.cap}")]
    run_cap = "no --run-budget" if budget.cap is None else f"--run-budget ${budget.cap}"
    return [
        (
            "spent in ledger",
            f"${budget.ledger_spent} of --budget ${budget.total} for {budget.teacher} "
            "(every run and process)",
        ),
        ("spent this run", f"${budget.spent} of {run_cap}"),
    ]


def progress_money(client: TeacherClient) -> str:
    """The short form of :func:`budget_lines` for a progress bar."""
    budget = client.budget
    if not isinstance(budget, SharedBudget):
        return f"${budget.spent:.4f} of ${budget.cap}"
    run = f"${budget.spent:.4f}" + ("" if budget.cap is None else f" of ${budget.cap}")
    return f"ledger ${budget.ledger_spent:.4f} of ${budget.total} · run {run}"


DRY_RUN_KEY = "dry-run-sends-nothing"


def _refuse(request: httpx.Request) -> httpx.Response:
    raise RuntimeError("a dry run must not send requests")


def run(args: argparse.Namespace) -> int:
    from cache import ResponseCache, SpendLedger
    from distill.data import scan
    from distill.harvest import HarvestResult, harvest, image_items

    if getattr(args, "select", None):
        from .select_cmd import run_select

        return run_select(args)
    out = console()
    if args.views < 1:
        raise ConfigurationError("--views must be >= 1")
    dataset = scan(
        args.data, class_file=args.class_file, allow_outside_paths=args.allow_outside_paths
    )
    cdir = CacheDir(args.cache)
    out.print(
        f"[bold]{dataset.root}[/]: {len(dataset.samples)} images, "
        f"{len(dataset.class_names)} classes, {len(dataset.domains)} domains "
        f"({dataset.layout}); {len(dataset.skipped)} files skipped"
    )
    for path, reason in dataset.skipped[:10]:
        out.print(f"  skipped {_shown(path)}: {_shown(reason)}")
    if len(dataset.skipped) > 10:
        out.print(
            f"  ... and {len(dataset.skipped) - 10} more "
            f"(`vlm-distill data scan {_shown(str(args.data))} --json` lists every one)"
        )
    with (
        ResponseCache(cdir.responses) as cache,
        SpendLedger(cdir.ledger) as ledger,
        open_coordinator(cdir) as coord,
    ):
        if cache.spill_problem is not None and not args.dry_run:
            # Paid entries of an earlier run still cannot be stored: buying more would only
            # add to them (a full disk, a damaged database). Nothing is sent.
            out.print(f"[red]error:[/] {_shown(cache.spill_problem)}")
            out.print(_storage_hint(args.cache))
            return EXIT_ERROR
        client = open_client(args, cache, ledger, coord)

        async def go() -> HarvestResult | None:
            async with client:
                if args.dry_run:
                    await _dry_run(client, dataset, args)  # prints its plan, returns nothing
                    return None
                total = len(image_items(dataset, args.views)) + len(dataset.class_names)
                started = time.monotonic()
                with LiveProgress(f"harvest {args.teacher}", total, out=out) as bar:

                    def show(r: HarvestResult) -> None:
                        s = client.stats
                        rate = s.requests_sent / max(time.monotonic() - started, 1e-9)
                        bar.update(
                            r.bought + r.cache_hits,
                            f"hits {r.cache_hits} · bought {r.bought} · {rate:.1f} req/s · "
                            f"retries {s.retries} · {progress_money(client)}",
                        )

                    return await harvest(
                        dataset,
                        client,
                        cache_dir=cdir.root,
                        views=args.views,
                        prompt=args.prompt,
                        on_progress=show,
                    )

        result = run_paid(go())
        if result is None:
            return EXIT_OK
        code = _summary(out, result, client, args)
        budget = client.budget
        assert isinstance(budget, SharedBudget)
        ledger_spent = budget.ledger_spent
    from distill.report import append_run

    try:
        append_run(
            cdir.root,
            {
                "teacher": args.teacher,
                "budget_usd": str(args.budget),
                "run_budget_usd": None if args.run_budget is None else str(args.run_budget),
                "spent_usd": str(budget.spent),
                "teacher_spent_usd": str(ledger_spent),
                "bought": result.bought,
                "cache_hits": result.cache_hits,
                "overruns": budget.overruns,
                "exit_code": code,
            },
        )
    except OSError as exc:  # a full disk: the ledger, not this summary line, holds the spend
        out.print(f"[yellow]could not note this run in {cdir.root}:[/] {_shown(str(exc))}")
        code = code or EXIT_ERROR
    return code


def _storage_hint(cache: Path) -> str:
    return (
        "Free disk space if the disk is full; if the database is damaged, run "
        f"`vlm-distill cache recover --cache {_shown(str(cache))}`. Then run again: paid "
        "results kept in the spill file are imported before anything is bought."
    )


async def _dry_run(client: TeacherClient, dataset, args) -> None:  # type: ignore[no-untyped-def]
    from distill.data import class_prompts
    from distill.harvest import _request, image_items

    reqs = [_request(i, dataset.hflip) for i in image_items(dataset, args.views)]
    n_img, cost_img = client.plan("image_embedding", reqs)
    texts = [TextEmbeddingRequest(text=p) for p in class_prompts(dataset.class_names, args.prompt)]
    n_txt, cost_txt = client.plan("text_embedding", texts) if texts else (0, Decimal(0))
    out = console()
    left = client.budget.remaining
    out.print(
        f"dry run: {n_img} of {len(reqs)} image views and {n_txt} of {len(texts)} prompts "
        f"are not cached; buying them would cost at most ${cost_img + cost_txt:.6f} "
        f"(budget ${args.budget}, of which ${left} is left). Nothing was sent."
    )


def _shown(text: str) -> str:
    """A file name or reason as printable text: non-UTF-8 bytes as \\xNN, no rich markup."""
    from rich.markup import escape

    from distill.data import display

    return escape(display(text))


def _summary(out, result, client: TeacherClient, args) -> int:  # type: ignore[no-untyped-def]
    t = Table(title="harvest", show_header=False)
    t.add_row("teacher", args.teacher)
    t.add_row("items", f"{result.images_total} image views + {result.texts_total} prompts")
    t.add_row("cache hits", str(result.cache_hits))
    t.add_row("bought", str(result.bought))
    t.add_row("requests sent", str(client.stats.requests_sent))
    t.add_row("retries", str(client.stats.retries))
    for label, value in budget_lines(client):
        t.add_row(label, value)
    t.add_row("saved by the cache", f"${client.stats.saved_usd}")
    if client.stats.estimated:
        t.add_row("charged at our estimate", f"{client.stats.estimated} requests (no usage said)")
    out.print(t)
    if result.cache_hits and not result.bought and not result.remaining_items:
        out.print("Everything was already cached: this run spent $0.")
    for item, reason in result.failed[:10]:
        out.print(f"[red]failed[/] {_shown(item)}: {_shown(reason)}")
    if result.overrun:
        # Before the other stops: an overrun means every estimate, the cap's too, is short.
        out.print(f"[red]{_shown(result.overrun)}[/]")
        scale = client.budget.scale
        if result.remaining_items:
            out.print(
                f"{result.remaining_items} items remain; at the rate billed ({scale:.2f}x our "
                f"estimate) finishing would cost about ${result.remaining_cost_usd:.6f}."
            )
        out.print(
            f"billed beyond the reservations: ${client.budget.overrun_usd} in "
            f"{client.budget.overruns} requests; `vlm-distill report {args.cache}` lists them."
        )
        return EXIT_BUDGET
    if result.fatal:
        out.print(f"[red]stopped:[/] {_shown(result.fatal)}")
        if client.storage_problem is not None:
            out.print(_storage_hint(args.cache))
        return EXIT_ERROR
    if result.stopped_by_budget:
        out.print(f"[yellow]stopped by the budget[/]: {_shown(result.stopped_by_budget)}")
        out.print(
            f"{result.remaining_items} items remain; finishing would cost at most "
            f"${result.remaining_cost_usd:.6f}. What was bought is cached."
        )
        return EXIT_BUDGET
    if result.failed:
        from distill.harvest import UNREADABLE

        unreadable = sum(reason.startswith(UNREADABLE) for _, reason in result.failed)
        if unreadable:
            out.print(
                f"[red]{unreadable} image views cannot be read[/] (listed above): fix or remove "
                "them, then run again; re-running alone will not help them."
            )
        if len(result.failed) > unreadable:
            out.print(
                f"[red]{len(result.failed) - unreadable} items failed at the teacher[/]; run "
                "again to retry them (nothing paid is lost)."
            )
        return EXIT_ERROR
    if result.store_error:
        out.print(
            f"[red]{_shown(result.store_error)}[/]\nEverything is bought and cached; free disk "
            "space, then run again (it sends nothing) or `vlm-distill cache export`."
        )
        return EXIT_ERROR
    if result.store_path:
        out.print(f"embedding store: {result.store_path}")
    return EXIT_OK

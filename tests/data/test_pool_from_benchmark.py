"""`data make-teacher-pool KIND POOL --benchmark DIR`: the pool is cut from the settings DIR's
dataset.json records (not from flags a user may forget) and checked, by content hash,
against the source images DIR's files were made from; refused (exit 2, one line, nothing
written) when DIR is not such a build, is of another kind, a flag disagrees, or the pool
would share an image with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.cli import main
from distill.data import scan
from distill.data.builders import load_mnist_package, make_mnist_digits, make_rotated_fashion
from distill.data.digits import DEFAULT_DOMAINS, digits_shares, make_digits, sklearn_digits
from distill.teacher.pool import source_digest
from tests.data.test_bench_datasets import _fake_fashion, _fake_mnist
from tests.data.test_teacher_pool import (
    _assert_disjoint,
    _bench_digests,
    _pool_digests,
    _sklearn_u8,
)


def _pool(tmp_path: Path, kind: str, bench: Path, *flags: str, out: str = "pool") -> int:
    return main(["data", "make-teacher-pool", kind, str(tmp_path / out),
                 "--benchmark", str(bench), *flags])


def test_digits_pool_cut_from_the_benchmark_folder(tmp_path: Path) -> None:
    """Before --benchmark, a user who forgot --digits-per-class, --digits-domains or
    --bench-seed got the demo's cut (20 per class, four domains, seed 0), which shares
    images with this benchmark's (asserted first)."""
    domains = ["upright", "rotated", "colour", "inverted", "noisy"]
    bench = make_digits(tmp_path / "bench", size=8, per_class=30, seed=3, domains=domains)
    dealt = _bench_digests(bench, {"d": _sklearn_u8()})
    assert main(["data", "make-teacher-pool", "digits", str(tmp_path / "flags"),
                 "--per-class", "5"]) == 0
    assert _pool_digests(tmp_path / "flags") & set().union(*dealt.values())

    # a flag that repeats what dataset.json records is fine
    assert _pool(tmp_path, "digits", bench, "--per-class", "0", "--digits-per-class", "30") == 0
    _assert_disjoint(tmp_path / "pool", dealt)
    meta = json.loads((tmp_path / "pool" / "dataset.json").read_text())
    assert meta["benchmark_spec"]["digits_per_class"] == 30
    assert meta["benchmark_spec"]["digits_domains"] == domains
    assert meta["benchmark_spec"]["seed"] == 3
    assert meta["sources"]["sklearn_digits"]["dealt_to_benchmark"] == len(scan(bench).samples)


def test_fashion_and_mnist_digits_pools_cut_from_their_benchmark_folders(tmp_path: Path) -> None:
    src = tmp_path / "fashion-src"
    x, _ = _fake_fashion(src, n=60)
    fb = make_rotated_fashion(tmp_path / "fb", per_domain=2, size=8, seed=1, source=src)
    assert _pool(tmp_path, "fashion", fb, "--source", str(src), out="fp") == 0
    _assert_disjoint(tmp_path / "fp", _bench_digests(fb, {"f": x}))
    meta = json.loads((tmp_path / "fp" / "dataset.json").read_text())
    assert meta["benchmark_spec"]["fashion_per_domain"] == 2
    assert meta["benchmark_spec"]["seed"] == 1
    assert meta["sources"]["fashion"]["dealt_to_benchmark"] == 12

    package = tmp_path / "mnist"
    _fake_mnist(package, per_digit=6)
    mb = make_mnist_digits(tmp_path / "mb", per_class=2, size=8, mnist_dir=package)
    assert _pool(tmp_path, "mnist-digits", mb, "--mnist-dir", str(package),
                 "--per-class", "3", "--mnist-per-class", "2", out="mp") == 0
    mx, _ = load_mnist_package(package)
    _assert_disjoint(tmp_path / "mp", _bench_digests(mb, {"m": mx, "d": _sklearn_u8()}))


def _a_pool_image() -> int:
    """A sklearn digit the 2-per-class, seed-0 digits benchmark does not deal out, and whose
    pixels no dealt digit has: the uncapped pool holds it."""
    _, labels = sklearn_digits()
    dealt = {int(i) for s in digits_shares(labels, 0, DEFAULT_DOMAINS, 2).values() for i in s}
    u8 = _sklearn_u8()
    banned = {source_digest(u8[i]) for i in dealt}
    return next(i for i in range(len(labels))
                if i not in dealt and source_digest(u8[i]) not in banned)


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("no dataset.json", "dataset.json cannot be read"),
        ("another kind", "is a digits benchmark, not a fashion one"),
        ("a teacher pool", "is not a benchmark `vlm-distill data make-digits` wrote"),
        ("per_class edited", "holds per_class '2'"),
        ("domains edited", "holds domains"),
        ("--digits-per-class disagrees", "--digits-per-class 20 disagrees"),
        ("--bench-seed disagrees", "--bench-seed 1 disagrees"),
        ("--digits-domains disagrees", "--digits-domains upright rotated disagrees"),
        ("a file of another name", "x.png does not name the source image"),
        ("an index past the source", "image 9999, but the source holds 1797"),
        ("a file named after a pool image", "would hold the sklearn_digits images of 1"),
        ("POOL is DIR, --force", "are one folder, or one holds the other"),
    ],
)
def test_a_benchmark_folder_that_cannot_be_trusted_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, said: str
) -> None:
    bench = make_digits(tmp_path / "bench", size=8, per_class=2)
    meta_file = bench / "dataset.json"
    meta = json.loads(meta_file.read_text())
    kind, flags = "digits", {
        "--digits-per-class disagrees": ["--digits-per-class", "20"],
        "--bench-seed disagrees": ["--bench-seed", "1"],
        "--digits-domains disagrees": ["--digits-domains", "upright", "rotated"],
    }.get(case, [])
    a_file = next(bench.rglob("*.png"))
    if case == "no dataset.json":
        meta_file.unlink()
    elif case == "another kind":
        kind = "fashion"
    elif case == "a teacher pool":
        meta_file.write_text(json.dumps({**meta, "name": "teacher-pool"}))
    elif case == "per_class edited":
        meta_file.write_text(json.dumps({**meta, "per_class": "2"}))
    elif case == "domains edited":
        meta_file.write_text(json.dumps({**meta, "domains": ["upright", "sideways"]}))
    elif case == "a file of another name":
        shutil.copy(a_file, a_file.with_name("x.png"))
    elif case == "an index past the source":
        shutil.copy(a_file, a_file.with_name("d9999.png"))
    elif case == "a file named after a pool image":
        shutil.copy(a_file, a_file.with_name(f"d{_a_pool_image():04d}.png"))
    out = bench if case.startswith("POOL is DIR") else tmp_path / "pool"
    assert main(["data", "make-teacher-pool", kind, str(out), "--benchmark", str(bench),
                 "--per-class", "0", "--force", *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and said in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]  # no pool, no leftovers
    assert (bench / "upright").is_dir()

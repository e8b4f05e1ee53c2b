"""`fit-teacher POOL` takes its steps and tower from the pool's kind unless given, and
`--benchmark DIR` scores the fitted teacher on each of DIR's domains as it is served.

Before, `fit-teacher` without flags fitted 300 steps of the 16-128 tower on every pool:
the settings that reach 80 % zero-shot per kind (Fashion: now 12,000 steps, 24-192 channels)
were applied only by `ensure_teacher` (demo, benchmarks), so the README's steps by hand on
a Fashion pool gave a weak teacher. And the manifest's only zero-shot figures were per
synthetic look on held-out pool images, never per benchmark domain. Tiny data and a few
steps: the kind tables are patched to a few steps where the real defaults are thousands.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from distill.cli import main
from distill.data import class_prompts, scan
from distill.data.builders import make_rotated_fashion
from distill.data.digits import make_digits
from distill.teacher import miniclip
from distill.teacher.pool import PoolSpec, make_teacher_pool
from tests.data.test_bench_datasets import _fake_fashion

TINY = ["--batch", "8", "--threads", "1"]


def _manifest(weights: Path) -> dict:
    return json.loads(weights.with_suffix(".json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sizes_are_the_pool_kind_s_unless_given(tmp_path, monkeypatch, capsys):
    """A Fashion pool without flags: the Fashion tower (24-192) and its steps (patched
    from 12,000 to 2 here), said before the fit and recorded; --steps/--widths override."""
    with pytest.raises(SystemExit):  # --help names the tables' figures (it cannot import them)
        main(["fit-teacher", "--help"])
    helped = " ".join(capsys.readouterr().out.split())
    assert f"e.g. {miniclip.STEPS_BY_KIND['fashion']} for fashion" in helped
    fashion, digits = (",".join(map(str, miniclip.WIDTHS_BY_KIND[k]))
                       for k in ("fashion", "digits"))
    assert f"e.g. {fashion} for fashion, {digits} for the digits" in helped

    src = tmp_path / "fashion-src"
    _fake_fashion(src, n=60)
    bench = make_rotated_fashion(tmp_path / "bench", per_domain=2, size=8, seed=1, source=src)
    assert main(["data", "make-teacher-pool", "fashion", str(tmp_path / "pool"),
                 "--benchmark", str(bench), "--source", str(src)]) == 0
    monkeypatch.setitem(miniclip.STEPS_BY_KIND, "fashion", 2)
    capsys.readouterr()

    out = tmp_path / "kind.safetensors"
    assert main(["fit-teacher", str(tmp_path / "pool"), "--out", str(out), *TINY,
                 "--benchmark", str(bench), "--source", str(src)]) == 0
    said = capsys.readouterr().out
    assert ("fitting 2 steps (the fashion pool's default), widths 24,48,96,192 (the fashion "
            "pool's default), stem stride 2 (the fashion pool's default), batch 8") in said
    m = _manifest(out)
    assert (m["steps"], m["widths"], m["stem_stride"]) == (2, [24, 48, 96, 192], 2)
    assert m["defaults"] == {"used_for": ["steps", "widths", "stem_stride"], "kind": "fashion"}
    # the benchmark's six rotations, read with its own source (--source)
    assert sorted(m["zeroshot_by_domain"]) == sorted(scan(bench).domains)
    assert len(m["zeroshot_by_domain"]) == 6

    given = tmp_path / "given.safetensors"
    assert main(["fit-teacher", str(tmp_path / "pool"), "--out", str(given), *TINY,
                 "--steps", "1", "--widths", "8,16"]) == 0
    said = capsys.readouterr().out
    assert "fitting 1 steps (--steps), widths 8,16 (--widths), stem stride 2 (the fashion " \
           "pool's default)" in said
    m = _manifest(given)
    assert (m["steps"], m["widths"]) == (1, [8, 16])
    assert m["defaults"] == {"used_for": ["stem_stride"], "kind": "fashion"}
    # without --benchmark nothing is scored on one
    assert "zeroshot_by_domain" not in m and "benchmark" not in m
    assert "zero-shot on" in said and str(bench) not in said


def test_a_digits_pool_fitted_by_hand_without_flags_is_the_demo_s_teacher(
    tmp_path, monkeypatch
):
    """The digits defaults are the demo's (200 steps, 16-128, stem stride 2: the name of
    demo's teacher file says so, unchanged): fit-teacher without flags on a pool
    ensure_teacher cut writes its teacher byte for byte (steps patched to 2 in both)."""
    plan = miniclip._plan("digits", tmp_path, 0, None, None, None, "kind")
    assert plan.weights.name == "digits-s0-n200-w16-32-64-128-st2.safetensors"
    monkeypatch.setitem(miniclip.STEPS_BY_KIND, "digits", 2)
    # a pool of 5 per class (the demo's holds about 170): the same fit, in less time
    demo = miniclip.ensure_teacher("digits", tmp_path / "work", seed=1, pool_per_class=5)
    by_hand = tmp_path / "by-hand.safetensors"
    pool = tmp_path / "work" / "pool" / "digits-p5"
    assert main(["fit-teacher", str(pool), "--out", str(by_hand), "--seed", "1"]) == 0
    assert _sha(by_hand) == _sha(demo)
    assert _manifest(by_hand)["defaults"]["used_for"] == ["steps", "widths", "stem_stride"]


def test_benchmark_scores_every_domain_as_the_server_does(tmp_path, capsys):
    from distill.server import make_backend
    from distill.server.backend_base import ImageTask
    from distill.teacher.zeroshot import zeroshot_labels

    domains = ["upright", "rotated", "colour", "inverted", "noisy"]
    bench = make_digits(tmp_path / "bench", size=28, per_class=2, domains=domains)
    pool = tmp_path / "pool"
    assert main(["data", "make-teacher-pool", "digits", str(pool), "--benchmark", str(bench),
                 "--per-class", "5"]) == 0
    out = tmp_path / "t.safetensors"
    capsys.readouterr()
    assert main(["fit-teacher", str(pool), "--out", str(out), "--steps", "2", *TINY,
                 "--benchmark", str(bench)]) == 0
    said = capsys.readouterr().out
    m = _manifest(out)
    by_domain = m["zeroshot_by_domain"]
    assert sorted(by_domain) == sorted(domains)
    ds = scan(bench)
    assert m["benchmark"] == {"path": str(bench), "images": len(ds.samples),
                              "prompt": "a photo of a {}"}
    line = next(x for x in said.splitlines() if x.startswith(f"zero-shot on {bench}"))
    assert '"a photo of a {class}"' in line
    assert all(f"{d} {100 * by_domain[d]:.1f} %" in line for d in domains), line

    # the same figures from the served teacher: its image vectors of the files' bytes,
    # its text vectors of "a photo of a {class}", the nearest class
    backend = make_backend("mini-clip", weights=out)
    try:
        images = backend.embed_images([ImageTask(s.path.read_bytes()) for s in ds.samples])
        texts = backend.embed_texts(class_prompts(ds.class_names))
    finally:
        backend.close()
    vectors = np.stack([r.vector for r in images])  # type: ignore[union-attr]
    hits = zeroshot_labels(vectors, np.stack(texts)) == np.array([s.label for s in ds.samples])
    served = {d: round(float(np.mean([h for h, s in zip(hits, ds.samples, strict=True)
                                      if s.domain == d], dtype=np.float32)), 4)
              for d in domains}
    assert served == by_domain


def test_a_benchmark_sharing_images_with_the_pool_is_refused_before_the_pool_is_read(
    tmp_path, monkeypatch, capsys
):
    """The pool holds every digit the seed-0, 20-per-class benchmark leaves out; a seed-1
    benchmark deals some of them: its teacher would have seen the student's test images."""
    import distill.teacher.pool as pool_module

    pool = make_teacher_pool("digits", tmp_path / "pool", spec=PoolSpec(), per_class=None)
    bench = make_digits(tmp_path / "bench", size=8, per_class=20, seed=1)

    def read_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pool was read: the fit started")

    monkeypatch.setattr(pool_module, "read_pool", read_pool)
    out = tmp_path / "t.safetensors"
    assert main(["fit-teacher", str(pool), "--out", str(out), "--steps", "1",
                 "--benchmark", str(bench)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert f"--benchmark {bench} shares" in lines[0], lines[0]
    assert "by content hash" in lines[0]
    assert f"make-teacher-pool digits POOL --benchmark {bench}" in lines[0]
    assert "fitting" not in captured.out
    assert not out.exists() and not out.with_suffix(".json").exists()

    # a folder no builder of ours wrote cannot be checked: refused too
    (bench / "dataset.json").write_text(json.dumps({"name": "mine"}))
    assert main(["fit-teacher", str(pool), "--out", str(out), "--benchmark", str(bench)]) == 2
    assert "source images of its files are not known" in capsys.readouterr().err
    # a benchmark's source flag without a benchmark
    assert main(["fit-teacher", str(pool), "--out", str(out), "--source", str(tmp_path)]) == 2
    assert "no --benchmark is given" in capsys.readouterr().err
    assert not out.exists()


def test_the_readme_gives_each_kind_s_steps_and_tower_as_the_tables_hold_them() -> None:
    """The README's fit-teacher row said "Fashion 6,000" after the default became 12,000:
    nothing compared it with STEPS_BY_KIND. The row names each kind's steps and channels."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    row = next(x for x in readme.splitlines() if x.startswith("| `vlm-distill fit-teacher"))
    for kind, said in (("digits", "digits"), ("fashion", "Fashion"),
                       ("mnist-digits", "MNIST->digits")):  # fmt: skip
        steps, widths = miniclip.STEPS_BY_KIND[kind], miniclip.WIDTHS_BY_KIND[kind]
        assert f"{said} {steps:,} " in row, (kind, steps)
        assert f" at {','.join(map(str, widths))}" in row, (kind, widths)

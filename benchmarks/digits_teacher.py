"""The mini-clip digits teacher of the label-free benchmarks (budget curve, parity filter).

Fitted once (``ensure_teacher``) under a persistent work folder, so a rerun refits nothing,
on a pool cut against the benchmark's digits (``PoolSpec(digits_per_class=max(per_class,
20))``: a smaller benchmark deals a subset of those images). The folder is named after
that size, so a run at another size never reuses a pool cut against a smaller benchmark.
:func:`pool_overlap` checks what the teacher saw against what the benchmark deals out, by
content hash (as ``tests/data/test_teacher_pool.py`` does for the demo).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MIN_POOL_PER_CLASS = 20  # the demo's size: the pool is never cut against less


def pool_per_class(per_class: int) -> int:
    """Images per class and domain the pool is cut against for a benchmark of ``per_class``."""
    return max(per_class, MIN_POOL_PER_CLASS)


def ensure_digits_teacher(
    work: Path, per_class: int, seed: int = 0, steps: int | None = None
) -> Path:
    """The weights of the digits teacher for ``make_digits(per_class, seed=0)`` data
    (``steps``: its fit's, default the kind's)."""
    from distill.teacher.miniclip import ensure_teacher
    from distill.teacher.pool import PoolSpec

    n = pool_per_class(per_class)
    spec = PoolSpec(seed=0, digits_per_class=n)
    return ensure_teacher("digits", work / f"pc{n}", seed=seed, steps=steps, spec=spec)


def pool_overlap(bench: Path, weights: Path) -> dict[str, Any]:
    """How many benchmark images (made by ``make_digits``) the teacher's pool holds.

    Each benchmark file names its source digit in its stem (``d0042``); the source pixels'
    SHA-256 (:func:`distill.teacher.pool.source_digest`) is compared with every digest the
    teacher's manifest records for its pool. Returns the counts (``shared`` must be 0).
    """
    import numpy as np

    from distill.data import scan
    from distill.data.digits import sklearn_digits
    from distill.teacher.miniclip import manifest_path
    from distill.teacher.pool import source_digest

    manifest = json.loads(manifest_path(weights).read_text("utf-8"))
    seen = set((manifest["pool"].get("image_sha256") or {}).values())
    if not seen:
        raise SystemExit(f"{weights}: its manifest records no pool digests; cannot check")
    ink, _ = sklearn_digits()
    u8 = np.rint(ink * 255).astype(np.uint8)
    digests = {source_digest(u8[int(Path(s.id).stem[1:])]) for s in scan(bench).samples}
    return {"pool_images": len(seen), "benchmark_sources": len(digests),
            "shared": len(seen & digests)}


def digits_benchmark(
    out: Path, per_class: int, size: int, prefix: str, teacher_steps: int | None = None
) -> tuple[Path, Path, dict[str, Any], dict[str, Any], str]:
    """Build the benchmark's digits in a fresh temporary folder (removed when the process
    exits) and fit (or load) its teacher under ``out/teacher``; stop when the teacher's pool
    shares an image with them.

    Returns (the digits' root, the teacher's weights, its manifest, :func:`pool_overlap`,
    its teacher name). ``teacher_steps``: the teacher's fit (default the kind's).
    """
    import atexit
    import shutil
    import tempfile

    from distill.data.digits import make_digits
    from distill.teacher.miniclip import manifest_path, teacher_name

    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    root = make_digits(work / "digits", size=size, per_class=per_class, seed=0)
    weights = ensure_digits_teacher(out / "teacher", per_class, steps=teacher_steps)
    manifest = json.loads(manifest_path(weights).read_text("utf-8"))
    overlap = pool_overlap(root, weights)
    if overlap["shared"]:
        raise SystemExit(f"the teacher's pool holds {overlap['shared']} of the benchmark's "
                         f"images ({weights}): refit it against this benchmark's size")
    teacher = teacher_name(weights)
    print(f"teacher {teacher} ({weights}); its pool ({overlap['pool_images']} images) shares "
          f"none of the benchmark's {overlap['benchmark_sources']} source digits", flush=True)
    return root, weights, manifest, overlap, teacher


def teacher_record(
    teacher: str, weights: Path, manifest: dict[str, Any], overlap: dict[str, Any]
) -> dict[str, Any]:
    """What a benchmark's results.json records of its teacher (what :func:`digits_benchmark`
    returned)."""
    return {
        "name": teacher, "weights": str(weights), "steps": manifest.get("steps"),
        "fit_s": manifest.get("fit_s"), "pool_images": overlap["pool_images"],
        "pool_shares_with_benchmark": overlap["shared"],
        "pool_cut_against_per_class": manifest["pool"]["benchmark_spec"]["digits_per_class"],
    }

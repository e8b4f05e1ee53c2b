"""Augmented views (``harvest --views K``): bytes uploaded per view, and what a fully cached
rerun costs with 4 views against 1, measured in one run.

N distinct 224 px photos (crops of the two real photos scikit-learn ships, saved as JPEG
q95) are harvested from a hash teacher served on 127.0.0.1 in this process (it keeps its
own bill, request body sizes included). For each code tree (this one, and with
``--before REF`` a ``git archive`` of REF, e.g. ``main``, run the same way):

- ``--views 1`` and ``--views 4`` are bought into two fresh caches; the server's body bytes
  of the second minus the first, over 3N, are the bytes uploaded per augmented view;
- then fully cached reruns of both, interleaved for ``--rounds`` rounds, each a
  ``vlm-distill harvest -v`` subprocess: its wall time (interpreter start included) and the
  harvest's own wall time from the ``-v`` line; the median per setting.

Views are also encoded here, as a reference, as JPEG q90 and as the uncompressed PNG they
were sent as before content ids.

    .venv/bin/python benchmarks/view_cache.py --n 200 --rounds 3 --before main
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOKEN = "view-bench-token"
SIDE = 224
WALL = re.compile(r"\(wall ([\d.]+) s\)")


def make_photos(root: Path, n: int, seed: int = 0) -> Path:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    for i in range(n):
        photo = photos[i % len(photos)]
        top = int(rng.integers(0, photo.shape[0] - SIDE))
        left = int(rng.integers(0, photo.shape[1] - SIDE))
        crop = np.ascontiguousarray(photo[top : top + SIDE, left : left + SIDE])
        folder = root / ("china" if i % 2 == 0 else "flower")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(folder / f"{i:05d}.jpg", quality=95)
    return root


def reference_sizes(data: Path, views: int) -> tuple[float, float]:
    """(mean JPEG q90 bytes, mean uncompressed-PNG bytes) of the augmented views."""
    from PIL import Image

    from distill.data import scan
    from distill.data.views import load_rgb, png_bytes, view_array

    ds = scan(data)
    jpeg, png = [], []
    for s in ds.samples:
        img = load_rgb(s.path)
        for k in range(1, views):
            arr = view_array(img, s.id, k, hflip=ds.hflip)
            out = io.BytesIO()
            Image.fromarray(arr).save(out, "JPEG", quality=90)
            jpeg.append(len(out.getvalue()))
            png.append(len(png_bytes(arr)))
    return float(np.mean(jpeg)), float(np.mean(png))


def run_harvest(tree: Path, data: Path, cache: Path, url: str, views: int) -> tuple[float, float]:
    """(process wall s, harvest wall s from the -v line) of one harvest subprocess."""
    env = {**os.environ, "PYTHONPATH": str(tree), "VLM_DISTILL_TEACHER_TOKEN": TOKEN,
           "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}  # fmt: skip
    cmd = [
        sys.executable, "-m", "distill", "harvest", str(data), "--teacher", "local:hash",
        "--base-url", url, "--cache", str(cache), "--budget", "5", "--views", str(views), "-v",
    ]  # fmt: skip
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"harvest failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    match = WALL.search(out.stdout)
    return wall, float(match.group(1)) if match else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="photos (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", help="a git ref to measure the same way (e.g. main)")
    args = ap.parse_args()

    from pydantic import SecretStr

    from distill.server import HashBackend, ServerConfig, ServerThread, create_app

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = make_photos(tmp / "photos", args.n)
        trees = {"this tree": ROOT}
        if args.before:
            before = tmp / "before"
            before.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.before],
                capture_output=True, check=True,
            ).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            trees = {args.before: before, **trees}
        jpeg, png = reference_sizes(data, 4)
        config = ServerConfig(token=SecretStr(TOKEN), max_body_bytes=256 * 1024 * 1024)
        rows = []
        with ServerThread(create_app(config, HashBackend(dim=64))) as server:

            def body_bytes() -> int:
                import httpx

                r = httpx.get(
                    server.base_url + "/admin/billing",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                return int(r.json().get("body_bytes", 0))

            for name, tree in trees.items():
                sent = {}
                for views in (1, 4):
                    b0 = body_bytes()
                    run_harvest(tree, data, tmp / name / f"v{views}", server.base_url, views)
                    sent[views] = body_bytes() - b0
                per_view = (sent[4] - sent[1]) / (3 * args.n)
                times: dict[int, list[tuple[float, float]]] = {1: [], 4: []}
                for _ in range(args.rounds):
                    for views in (1, 4):
                        cache = tmp / name / f"v{views}"
                        times[views].append(run_harvest(tree, data, cache, server.base_url, views))
                med = {
                    v: (
                        statistics.median(t[0] for t in times[v]),
                        statistics.median(t[1] for t in times[v]),
                    )
                    for v in times
                }
                rows.append((name, per_view, med))
    load_after = os.getloadavg()[0]

    print(f"{args.n} photos of {SIDE} px, {args.rounds} rounds; 1-min load {load_before:.1f} "
          f"before, {load_after:.1f} after; reference per view: JPEG q90 {jpeg:,.0f} B, "
          f"uncompressed PNG {png:,.0f} B")  # fmt: skip
    print()
    print("| code | body bytes per augmented view | ÷ JPEG q90 | cached rerun --views 1 "
          "(process / harvest) | cached rerun --views 4 (process / harvest) | 4 ÷ 1 (process "
          "/ harvest) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name, per_view, med in rows:
        (p1, h1), (p4, h4) = med[1], med[4]
        print(
            f"| {name} | {per_view:,.0f} | {per_view / jpeg:.2f} | {p1:.2f} s / {h1:.2f} s | "
            f"{p4:.2f} s / {h4:.2f} s | {p4 / p1:.2f} / {h4 / h1:.2f} |"
        )


if __name__ == "__main__":
    main()

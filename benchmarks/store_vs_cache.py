"""Embedding store (memory map) vs per-key ResponseCache gets, for random training batches.

Writes N x D float16 vectors both ways, then, interleaved over several rounds, gathers
random batches of 256 rows from the store and fetches the same rows with one cache get
per key. Prints a table and writes it to docs/benchmarks.md
("Embedding store vs per-key cache gets").

    .venv/bin/python benchmarks/store_vs_cache.py            # 50k x 512, 5 rounds
    .venv/bin/python benchmarks/store_vs_cache.py --n 5000 --no-docs   # quick look
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import diskcache
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the repo

from cache import CacheEntry, EmbeddingStore, ResponseCache

SECTION = "## Embedding store vs per-key cache gets"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


TITLE = (
    "# Benchmarks\n\nMeasured on the project's machine (2 cores, no GPU). "
    "Each section names the command that produced it.\n"
)


def replace_section(path: Path, heading: str, body: str, title: str = TITLE) -> None:
    """Put ``heading`` + ``body`` into the markdown file, replacing that section if present."""
    text = path.read_text(encoding="utf-8") if path.exists() else title
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="vectors (default 50000)")
    parser.add_argument("--dim", type=int, default=512, help="dimension (default 512)")
    parser.add_argument("--batch", type=int, default=256, help="rows per gather (default 256)")
    parser.add_argument("--batches", type=int, default=195, help="gathers per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"domain/class/{i:06d}.jpg" for i in range(args.n)]
    keys = np.array([f"fake-embed:{i:064x}" for i in range(args.n)])

    with tempfile.TemporaryDirectory(prefix="store-vs-cache-") as tmp:
        t0 = time.perf_counter()
        store = EmbeddingStore.write(
            Path(tmp) / "store", image_ids=ids, image_vectors=vectors[:, None, :],
            text_vectors=np.zeros((0, args.dim), np.float32), class_names=[], prompts=[],
            teacher="bench", teacher_fingerprint="bench", dataset_fingerprint="bench",
        )
        store_write_s = time.perf_counter() - t0
        store = EmbeddingStore.open(store.path)  # as a training process would

        cache = ResponseCache(Path(tmp) / "cache")
        t0 = time.perf_counter()
        for lo in range(0, args.n, 5000):
            cache.set_many(
                (str(keys[i]), CacheEntry(vector=vectors[i], meta={"kind": "image_embedding"}))
                for i in range(lo, min(lo + 5000, args.n))
            )
        cache_write_s = time.perf_counter() - t0
        cache.close()
        cache = ResponseCache(Path(tmp) / "cache")  # fresh connection, as training would open it

        # Both paths return the same vectors, up to float16 rounding.
        rows = rng.choice(args.n, args.batch, replace=False)
        from_cache = np.stack([e.vector for e in cache.get_many(list(keys[rows]))])  # type: ignore[union-attr]
        assert np.allclose(store.gather(rows), from_cache, atol=1e-3)

        store_rates, cache_rates = [], []
        for _ in range(args.rounds):
            batches = [rng.choice(args.n, args.batch, replace=False) for _ in range(args.batches)]
            t0 = time.perf_counter()
            for rows in batches:
                store.gather(rows)
            store_rates.append(args.batches * args.batch / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for rows in batches:
                entries = cache.get_many(list(keys[rows]))
                np.stack([e.vector for e in entries])  # type: ignore[union-attr]
            cache_rates.append(args.batches * args.batch / (time.perf_counter() - t0))

        all_rows = np.arange(args.n)
        store.gather(all_rows)  # warm, as in the second epoch of training
        t0 = time.perf_counter()
        store.gather(all_rows)
        store_all_s = time.perf_counter() - t0
        disk_store = sum(p.stat().st_size for p in (Path(tmp) / "store").iterdir())
        disk_cache = cache.stats().bytes_on_disk
        cache.close()

    store_med, cache_med = statistics.median(store_rates), statistics.median(cache_rates)
    ratio = store_med / cache_med
    per_round = statistics.median(s / c for s, c in zip(store_rates, cache_rates, strict=True))
    table = "\n".join([
        "| path | 256-row random gather, rows/s (median) | range | write all | on disk |",
        "|---|---:|---:|---:|---:|",
        f"| `EmbeddingStore.gather` (np.load mmap, float16) | {store_med:,.0f} | "
        f"{min(store_rates):,.0f}–{max(store_rates):,.0f} | {store_write_s:.2f} s | "
        f"{disk_store / 1e6:.1f} MB |",
        f"| `ResponseCache.get` per key + decode + stack | {cache_med:,.0f} | "
        f"{min(cache_rates):,.0f}–{max(cache_rates):,.0f} | {cache_write_s:.2f} s "
        f"(`set_many`, 5k per transaction) | {disk_cache / 1e6:.1f} MB |",
    ])
    summary = (
        f"**Store / cache: {ratio:.1f}x** (median of per-round ratios {per_round:.1f}x). "
        f"Reading all {args.n:,} rows from the store: {store_all_s * 1e3:.1f} ms."
    )
    print(table)
    print(summary)

    if not args.no_docs:
        body = f"""
Reproduce: `.venv/bin/python benchmarks/store_vs_cache.py` (options: `--n --dim --batch
--batches --rounds`; `--no-docs` only prints).

{args.n:,} unit vectors of dimension {args.dim}, stored as float16 both ways: an
`EmbeddingStore` (one `images.npy` read through `np.load(mmap_mode="r")`) and a
`ResponseCache` (diskcache/SQLite, one bytes value per key). Per round,
{args.batches} random batches of {args.batch} rows: the store gathers them with one fancy
index; the cache does one `get` per key (decode header + float16 vector) and stacks them.
Rounds are interleaved ({args.rounds} rounds; the page cache is warm, as in training).

{table}

{summary}

Measured {datetime.date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores
(1-minute load average {load_before:.1f} at the start: the machine is shared, so compare
the ratio, which is measured interleaved, rather than the absolute rates), Python
{platform.python_version()}, numpy {np.__version__}, diskcache {diskcache.__version__}.
An earlier measurement on this machine (the same 50,000 x 512 float16 rows, 256-row random
gathers) found 1.65 M rows/s from a bare `np.memmap` against 0.10 M rows/s (16x) with the
plain `diskcache.Cache` API; our per-key path adds a
header, a CRC check and a `CacheEntry`, so it is a little slower than a bare `get`.
The issue asks for >= 10x. Per-key gets still cost well under 1 % of a CPU training
epoch, so the cache could feed training directly; the store is for speed and for one
self-describing file per dataset and teacher.
"""
        replace_section(DOCS, SECTION, body)
        print(f"wrote {DOCS}")
    return 0 if ratio >= 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())

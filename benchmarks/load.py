"""Load: 10,000 paid requests then 50,000 cache hits through one TeacherClient in one run.

The paid part goes to the real local teacher (``vlm-distill serve-teacher --backend hash``
in its own process, so its memory is not counted), one distinct 16x16 PNG per request,
``--concurrency`` requests in flight, with the durable ResponseCache and SpendLedger on
disk as in a harvest. The hits then ask for the same images again, 500 per call. Reports
throughput and this process's RSS at checkpoints (2k vs 10k paid requests, 10k vs 50k
hits) and its peak RSS: memory must not grow with the number of requests.

    .venv/bin/python benchmarks/load.py --paid 10000 --hits 50000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOKEN = "load-bench-token"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def images(n: int, seed: int = 0) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def start_server(
    code: Path = ROOT, extra: tuple[str, ...] = ("--hash-dim", "64")
) -> tuple[subprocess.Popen[str], str]:
    """``serve-teacher --backend hash`` of the checkout ``code`` on a free port: (process, URL)."""
    env = {**os.environ, "PYTHONPATH": str(code), "VLM_DISTILL_TEACHER_TOKEN": TOKEN}
    argv = ["serve-teacher", "--backend", "hash", *extra, "--port", "0"]
    script = f"import sys; from distill.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=code, env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    banner = proc.stderr.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", banner)
    if not match:
        proc.kill()
        raise RuntimeError(f"teacher did not start: {banner}")
    return proc, match.group(0)


@dataclass
class LoadResult:
    paid: int = 0
    hits: int = 0
    paid_s: float = 0.0
    hits_s: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    spent_usd: Decimal = Decimal(0)
    ledger_records: int = 0
    concurrency: int = 0


async def _load(
    url: str, tmp: Path, n_paid: int, n_hits: int, concurrency: int, memory: bool
) -> LoadResult:
    from contextlib import nullcontext

    import httpx

    from cache import MemoryCache, ResponseCache, SpendLedger, read_ledger
    from vlmclient import Budget, Image, ImageEmbeddingRequest, TeacherClient

    # a short-lived client for the server's health only
    for _ in range(100):
        try:
            httpx.get(url + "/healthz").raise_for_status()
            break
        except httpx.HTTPError:
            await asyncio.sleep(0.1)
    reqs = [
        ImageEmbeddingRequest(image=Image(data=d, media_type="image/png")) for d in images(n_paid)
    ]
    r = LoadResult(concurrency=concurrency)
    r.rss_mb["start"] = rss_mb()
    # --memory: no disk (MemoryCache, no ledger), to separate the cost of durability
    disk_cache = nullcontext(MemoryCache()) if memory else ResponseCache(tmp / "responses")
    disk_ledger = nullcontext(None) if memory else SpendLedger(tmp / "ledger.jsonl")
    with disk_cache as cache, disk_ledger as ledger:
        async with TeacherClient(
            "local:hash",
            api_key=TOKEN,
            base_url=url,
            budget=Budget("1000"),
            cache=cache,
            ledger=ledger,
            concurrency=concurrency,
            batch_size=1,
        ) as client:
            queue = list(reversed(reqs))
            checkpoints = {2_000, 4_000, 6_000, 8_000, n_paid}
            done = 0

            async def worker() -> None:
                nonlocal done
                while queue:
                    await client.embed_images([queue.pop()])
                    done += 1
                    if done in checkpoints:
                        r.rss_mb[f"after {done} paid"] = rss_mb()

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            r.paid_s = time.perf_counter() - t0
            r.paid = client.stats.requests_sent
            r.spent_usd = client.budget.spent

            t0 = time.perf_counter()
            served = 0
            step = 500
            while served < n_hits:
                start = served % n_paid
                chunk = reqs[start : start + min(step, n_hits - served)]
                out = await client.embed_images(chunk)
                assert all(o.cached for o in out)
                served += len(chunk)
                if served in (10_000, n_hits):
                    r.rss_mb[f"after {served} hits"] = rss_mb()
            r.hits_s = time.perf_counter() - t0
            r.hits = client.stats.cache_hits
            assert client.stats.requests_sent == r.paid  # hits sent nothing
    r.peak_rss_mb = peak_rss_mb()
    r.ledger_records = 0 if memory else len(read_ledger(tmp / "ledger.jsonl").records)
    return r


def run(
    n_paid: int = 10_000, n_hits: int = 50_000, concurrency: int = 16, memory: bool = False
) -> LoadResult:
    proc, url = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="load-") as tmp:
            return asyncio.run(_load(url, Path(tmp), n_paid, n_hits, concurrency, memory))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def table(r: LoadResult) -> str:
    rows = [
        "| phase | count | seconds | per second |",
        "| --- | ---: | ---: | ---: |",
        f"| paid requests (1 image each, real server) | {r.paid} | {r.paid_s:.1f} | "
        f"{r.paid / r.paid_s:.0f} |",
        f"| cache hits (500 per call) | {r.hits} | {r.hits_s:.1f} | {r.hits / r.hits_s:.0f} |",
        "",
        "| checkpoint | RSS (MB) |",
        "| --- | ---: |",
        *(f"| {k} | {v:.0f} |" for k, v in r.rss_mb.items()),
        f"| peak | {r.peak_rss_mb:.0f} |",
        "",
        f"concurrency {r.concurrency}; spent ${r.spent_usd}; {r.ledger_records} ledger records.",
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paid", type=int, default=10_000)
    ap.add_argument("--hits", type=int, default=50_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--memory", action="store_true", help="MemoryCache and no ledger")
    args = ap.parse_args()
    print(table(run(args.paid, args.hits, args.concurrency, args.memory)))


if __name__ == "__main__":
    main()

"""Harvest at scale: wall time, images/s, client CPU, peak RSS and upload per image vs N.

For each size N (default 1k, 10k, 100k) the real CLI runs in a child process against the
local hash teacher (``vlm-distill serve-teacher --backend hash``, its own process, so its
memory is not counted), over N distinct 64 px noise PNGs (DATA/c0..c9/, generated once
deterministically; smaller sets are hard links to the first files of the largest):

- ``harvest`` into a fresh cache (everything bought),
- ``harvest`` again (fully cached rerun: sends nothing, writes the store again),
- ``cache export`` (the store from the cache only).

Peak RSS and CPU are the child's own (``os.wait4``); bytes uploaded are what the server
process read from its sockets (``rchar`` of /proc/<server>/io), HTTP headers included. The
fitted growth is a least-squares line of peak RSS against N. With --write the table
replaces the "Harvest at scale" section of docs/benchmarks.md.

    nice -n 10 .venv/bin/python benchmarks/harvest_scale.py --sizes 1000 10000 100000 --write
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from docs_section import replace_section
from load import TOKEN, start_server

ROOT = Path(__file__).resolve().parents[1]
SIDE = 64
CLASSES = 10
HEADING = "## Harvest at scale (benchmarks/harvest_scale.py)"
START, END = "<!-- harvest_scale:start -->", "<!-- harvest_scale:end -->"


def _png(pixels: np.ndarray) -> bytes:
    """A PNG of (SIDE, SIDE, 3) uint8 pixels, written by hand (zlib level 1: fast)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    h, w, _ = pixels.shape
    raw = np.zeros((h, 1 + w * 3), dtype=np.uint8)  # filter byte 0 before every row
    raw[:, 1:] = pixels.reshape(h, w * 3)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


def make_pool(pool: Path, n: int) -> None:
    """``n`` distinct noise PNGs ``pool/000000.png``...; files already there are kept."""
    pool.mkdir(parents=True, exist_ok=True)
    have = len(os.listdir(pool))
    rng = np.random.default_rng(0)
    block = 1000
    for start in range(0, n, block):
        count = min(block, n - start)
        pixels = rng.integers(0, 256, (count, SIDE, SIDE, 3), dtype=np.uint8)
        if start + count <= have:
            continue  # drawn anyway, so every file's pixels depend only on its index
        for j in range(count):
            (pool / f"{start + j:06d}.png").write_bytes(_png(pixels[j]))


def make_dataset(pool: Path, root: Path, n: int) -> Path:
    """DATA/c<i % 10>/<i>.png for the first ``n`` files of the pool (hard links)."""
    if root.exists():
        shutil.rmtree(root)
    for c in range(CLASSES):
        (root / f"c{c}").mkdir(parents=True)
    for i in range(n):
        name = f"{i:06d}.png"
        os.link(pool / name, root / f"c{i % CLASSES}" / name)
    return root


def socket_read_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as fh:
        for line in fh:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/<pid>/io")


def run_child(code: Path, argv: list[str]) -> dict[str, float]:
    """The CLI in a child process: wall s, CPU s (user + system), peak RSS MB, exit code."""
    env = {**os.environ, "PYTHONPATH": str(code), "VLM_DISTILL_TEACHER_TOKEN": TOKEN}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill", *argv],
        cwd=code,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code_ = os.waitstatus_to_exitcode(status)
    if code_ != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"{argv[:2]} exited {code_}: {err[-2000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": usage.ru_maxrss / 1024,  # KiB on Linux
    }


def measure(code: Path, url: str, server_pid: int, data: Path, work: Path, n: int) -> list[dict]:
    cache = work / f"cache-{n}"
    shutil.rmtree(cache, ignore_errors=True)
    common = ["--teacher", "local:hash", "--base-url", url, "--cache", str(cache)]
    rows = []
    for what, argv in (
        ("harvest (fresh cache)", ["harvest", str(data), *common, "--budget", "1000"]),
        ("harvest (cached rerun)", ["harvest", str(data), *common, "--budget", "1000"]),
        ("cache export", ["cache", "export", str(data), *common]),
    ):
        before = socket_read_bytes(server_pid)
        got = run_child(code, argv)
        sent = socket_read_bytes(server_pid) - before
        row = {"what": what, "n": n, **got, "upload": sent / n}
        rows.append(row)
        print(
            f"{what:24s} n={n:>7d} wall {got['wall']:7.2f} s  {n / got['wall']:8.0f} img/s  "
            f"cpu {1000 * got['cpu'] / n:.3f} ms/img  peak RSS {got['rss']:7.1f} MB  "
            f"upload {sent / n:8.0f} B/img",
            flush=True,
        )
    shutil.rmtree(cache, ignore_errors=True)
    return rows


def fit(rows: list[dict], what: str) -> str:
    sel = [r for r in rows if r["what"] == what]
    if len(sel) < 2:
        return "–"
    n = np.array([r["n"] for r in sel], dtype=float)
    rss = np.array([r["rss"] for r in sel])
    slope, intercept = np.polyfit(n, rss, 1)
    return f"{intercept:.0f} MB + {slope * 1024:.2f} KB per image"


def table(rows: list[dict]) -> str:
    lines = [
        "| run | images | wall s | images/s | client CPU ms/image | peak RSS MB | "
        "uploaded bytes/image |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['n']:,} | {r['wall']:.1f} | {r['n'] / r['wall']:,.0f} | "
            f"{1000 * r['cpu'] / r['n']:.3f} | {r['rss']:.1f} | {r['upload']:,.0f} |"
        )
    return "\n".join(lines)


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"1-minute load average {one:.1f} (5-minute {five:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--work", type=Path, help="folder for images and caches (default: a temp)")
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout to measure")
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="harvest-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.sizes)
    started = time.perf_counter()
    make_pool(work / "pool", sizes[-1])
    print(f"{sizes[-1]} images ready in {time.perf_counter() - started:.1f} s", flush=True)
    load_before = load_line()
    server, url = start_server(args.code, extra=())
    rows: list[dict] = []
    try:
        for n in sizes:
            data = make_dataset(work / "pool", work / f"data-{n}", n)
            rows += measure(args.code, url, server.pid, data, work, n)
            shutil.rmtree(data)
    finally:
        server.terminate()
        server.wait(timeout=30)
    load_after = load_line()
    out = table(rows)
    fits = {w: fit(rows, w) for w in dict.fromkeys(r["what"] for r in rows)}
    print(out)
    for what, line in fits.items():
        print(f"peak RSS fit, {what}: {line}")
    if args.code != ROOT or not args.write:
        return
    by = {(r["what"], r["n"]): r for r in rows}
    ratios = []
    for what in fits:
        if (what, 10000) in by and (what, 100000) in by:
            big, small = by[(what, 100000)]["rss"], by[(what, 10000)]["rss"]
            per_image = (big - small) * 1024 / 90000
            ratios.append(f"{what}: {big / small:.2f}x ({per_image:.2f} KB per image more)")
    goals = ""
    fresh = by.get(("harvest (fresh cache)", 100000))
    if fresh is not None and ("harvest (fresh cache)", 10000) in by:
        ratio = fresh["rss"] / by[("harvest (fresh cache)", 10000)]["rss"]
        rate = fresh["n"] / fresh["wall"]
        cpu_ms = fresh["cpu"] * 1000 / fresh["n"]
        goals = (
            f"\nGoals of issue 17, fresh harvest at 100k: peak RSS {fresh['rss']:.1f} MB "
            f"(<= 400 MB: {'met' if fresh['rss'] <= 400 else 'not met'}), "
            f"{ratio:.2f}x the 10k peak (<= 1.2x: {'met' if ratio <= 1.2 else 'not met'}), "
            f"{rate:,.0f} images/s (>= 3,000: {'met' if rate >= 3000 else 'not met'}, with the "
            f"hash server on the same 2 cores), client CPU {cpu_ms:.3f} ms per image "
            f"(<= 0.2: {'met' if cpu_ms <= 0.2 else 'not met'}).\n"
        )
    section = (
        f"{HEADING}\n{START}\n\n"
        f"Reproduce: `nice -n 10 .venv/bin/python benchmarks/harvest_scale.py --sizes "
        f"{' '.join(map(str, sizes))} --write`.\n\n"
        "The real CLI in a child process (`harvest`, then the same `harvest` again on the full "
        "cache, then `cache export`) against `serve-teacher --backend hash` (384-d vectors, "
        "96 images per request, default concurrency) over N distinct 64 px noise PNGs. Peak "
        "RSS and CPU are the child's (`os.wait4`); uploaded bytes are what the server read "
        "from its sockets, headers included.\n\n"
        + out
        + "\n\nFitted growth of peak RSS (least squares over the sizes run): "
        + "; ".join(f"{w}: {line}" for w, line in fits.items())
        + ".\n"
        + (f"Peak RSS at 100k ÷ at 10k: {'; '.join(ratios)}.\n" if ratios else "")
        + goals
        + "\nFrom 1k to 10k a fresh harvest's peak grows by the window filling up (16 requests "
        "in flight and 16 prepared, 96 images each: 3,072 images read and not yet answered, "
        "with their request bodies); past it, only by what the scan holds.\n"
        + "\nBefore streaming (main at 0b056fe, same script, 1k and 10k only): peak RSS 105.0 / "
        "235.1 MB (fresh harvest), 95.4 / 209.9 MB (cached rerun), 71.5 / 160.0 MB (export), "
        "fitted 14.8, 13.0 and 10.1 KB per image: about 1.5 GB for a fresh harvest of 100k. "
        "What still grows with N is the scan's samples, which the harvest needs whole (ids, "
        "fingerprint, store rows): held by column, about 90 bytes per image (mostly the id "
        "string), against 0.65 kB with a `Path` per sample before (see \"Memory per image of "
        "a scan\").\n"
        + f"\nMeasured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}; {load_before} before, {load_after} after "
        "(a 1-minute load above about 1.5 means other jobs ran on these cores: they slow wall "
        "time and images/s, not peak RSS or bytes).\n"
        + f"\n{END}\n"
    )
    replace_section(ROOT / "docs" / "benchmarks.md", START, END, section, "Benchmarks")


if __name__ == "__main__":
    main()

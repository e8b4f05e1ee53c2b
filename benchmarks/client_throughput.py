"""Client throughput on loopback: TeacherClient vs AsyncOpenAI + aiolimiter, same run.

A zero-latency OpenAI-compatible /v1/embeddings server (aiohttp, its own process, pinned
to core 0 when taskset exists) answers every POST at once. Each client sends N POSTs of
~20 KB (one text per request) with C concurrent tasks. Prints a table and, with --write,
replaces the "Client throughput" section of docs/benchmarks.md.

    .venv/bin/python benchmarks/client_throughput.py --n 5000 --write
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER = textwrap.dedent(
    """
    import json, sys
    from aiohttp import web
    VEC = [0.1] * 64
    async def embeddings(request):
        body = await request.json()
        n = len(body["input"]) if isinstance(body["input"], list) else 1
        return web.json_response({"object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": i, "embedding": VEC} for i in range(n)],
            "usage": {"prompt_tokens": 10 * n, "total_tokens": 10 * n}})
    app = web.Application(client_max_size=2**24)
    app.router.add_post("/v1/embeddings", embeddings)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", SERVER, str(port)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(cmd)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("benchmark server did not start")


TEXT = "lorem ipsum " * 1700  # ~20 KB body


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def ours(url: str, n: int, conc: int, rpm: float | None) -> tuple[float, float]:
    from vlmclient import Budget, Price, TeacherClient, TextEmbeddingRequest

    price = Price(usd_per_1m_input_tokens=Decimal("0.02"))
    async with TeacherClient(
        "openai:bench",
        api_key="k",
        base_url=url + "/v1",
        price=price,
        budget=Budget("100"),
        concurrency=conc,
        rpm=rpm,
    ) as client:
        await client.embed_texts([TextEmbeddingRequest(text="warm up")])
        items = [TextEmbeddingRequest(text=f"{i} {TEXT}") for i in range(n)]
        queue = list(reversed(items))
        t0, c0 = time.perf_counter(), cpu()

        async def worker() -> None:
            while queue:
                await client.embed_texts([queue.pop()])

        await asyncio.gather(*(worker() for _ in range(conc)))
        return time.perf_counter() - t0, cpu() - c0


async def baseline(url: str, n: int, conc: int, rpm: float | None) -> tuple[float, float]:
    from aiolimiter import AsyncLimiter
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="k", base_url=url + "/v1", max_retries=0)
    # paced as aiolimiter's maintainer recommends (no start burst): 1 per interval
    limiter = AsyncLimiter(1, 60.0 / rpm) if rpm else None
    await client.embeddings.create(model="bench", input=["warm up"])
    queue = list(range(n))
    t0, c0 = time.perf_counter(), cpu()

    async def worker() -> None:
        while queue:
            i = queue.pop()
            if limiter:
                async with limiter:
                    await client.embeddings.create(model="bench", input=[f"{i} {TEXT}"])
            else:
                await client.embeddings.create(model="bench", input=[f"{i} {TEXT}"])

    await asyncio.gather(*(worker() for _ in range(conc)))
    out = time.perf_counter() - t0, cpu() - c0
    await client.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=24000.0, help="requests/min for the rate test")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    port = free_port()
    proc = start_server(port)
    url = f"http://127.0.0.1:{port}"
    rows: list[tuple[str, int, str, float, float, float]] = []
    try:
        for conc in (8, 16, 32, 64):
            for _rnd in range(args.rounds):
                for name, fn in (("TeacherClient", ours), ("AsyncOpenAI", baseline)):
                    if name == "AsyncOpenAI" and conc != 64:
                        continue
                    wall, cpu_s = asyncio.run(fn(url, args.n, conc, None))
                    rows.append((name, conc, "none", args.n / wall, cpu_s / args.n * 1000, 0.0))
                    print(rows[-1], flush=True)
        n_rate = int(args.rate / 60 * 10)  # about 10 s at the configured rate
        for _rnd in range(args.rounds):
            for name, fn in (("TeacherClient", ours), ("AsyncOpenAI+aiolimiter", baseline)):
                wall, cpu_s = asyncio.run(fn(url, n_rate, 64, args.rate))
                achieved = (n_rate / wall) * 60
                rows.append(
                    (
                        name,
                        64,
                        f"{args.rate:.0f}/min",
                        n_rate / wall,
                        cpu_s / n_rate * 1000,
                        achieved / args.rate,
                    )
                )
                print(rows[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait()

    import statistics

    keys = sorted({(r[0], r[1], r[2]) for r in rows}, key=lambda k: (k[2], k[1], k[0]))
    lines = [
        "| client | concurrency | limit | req/s (median) | client CPU ms/req | achieved ÷ limit |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for k in keys:
        sel = [r for r in rows if (r[0], r[1], r[2]) == k]
        rps = statistics.median(r[3] for r in sel)
        cpu_ms = statistics.median(r[4] for r in sel)
        ratio = statistics.median(r[5] for r in sel)
        lines.append(
            f"| {k[0]} | {k[1]} | {k[2]} | {rps:.0f} | {cpu_ms:.2f} | {ratio:.3f} |"
            if k[2] != "none"
            else f"| {k[0]} | {k[1]} | {k[2]} | {rps:.0f} | {cpu_ms:.2f} | — |"
        )
    table = "\n".join(lines)
    print(table)
    if args.write:
        cmd = f"benchmarks/client_throughput.py --n {args.n} --rounds {args.rounds} --write"
        section = (
            "## Client throughput (benchmarks/client_throughput.py)\n\n"
            f"`.venv/bin/python {cmd}`, {time.strftime('%Y-%m-%d')}, 2 cores; zero-latency "
            "aiohttp server on core 0 in its own process, "
            f"{args.n} POSTs of ~20 KB per run, one text per request, median of "
            f"{args.rounds} interleaved rounds. TeacherClient runs its whole pipeline per "
            "request (budget reserve/settle, limiter, retry wrapper, parse, validation) on the "
            "httpx API with the httpx-aiohttp transport.\n\n" + table + "\n"
        )
        write_section(ROOT / "docs" / "benchmarks.md", "## Client throughput", section)


def write_section(path: Path, heading: str, section: str) -> None:
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nMeasured on the project's machine (2 cores, no GPU). "
        "Each section names the command that produced it.\n"
    )
    start = text.find(heading)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1 :] if end != -1 else "")
    path.write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()

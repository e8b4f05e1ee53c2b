"""Client throughput on loopback: TeacherClient vs a bare aiohttp client and AsyncOpenAI
+ aiolimiter, same run; and the harvest path (images) vs bare aiohttp with the same bodies.

A zero-latency server (aiohttp, its own process, pinned to core 0 when taskset exists)
answers every POST at once: OpenAI-compatible ``/v1/embeddings`` (64-d vectors, base64 when
asked, as OpenAI does) and Cohere-style ``/v2/embed`` (512-d vectors, ``base64`` when
asked, as the local teacher does). Each text client sends N POSTs of ~20 KB (one text per
request) with C concurrent tasks; the bare aiohttp client sends the same bodies and only
reads the answers, so TeacherClient ÷ bare is how close the client comes to the transport's
limit, measured in one run. The harvest rows run ``distill.harvest.harvest`` (scan result,
image reads, 96 images per request, response cache, spend ledger) over M distinct 64 px
PNGs against ``/v2/embed``, beside a bare aiohttp client posting the same request bodies
(files read, base64, JSON) at the same concurrency. Prints tables and, with --write,
replaces the "Client throughput" section of docs/benchmarks.md.

    .venv/bin/python benchmarks/client_throughput.py --n 5000 --images 5000 --write
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
    import base64, json, struct, sys
    from aiohttp import web
    VEC = [0.1] * 64
    VEC_B64 = base64.b64encode(struct.pack("<64f", *VEC)).decode()
    IMG = [0.03125] * 512
    IMG_B64 = base64.b64encode(struct.pack("<512f", *IMG)).decode()
    async def embeddings(request):
        body = await request.json()
        n = len(body["input"]) if isinstance(body["input"], list) else 1
        vec = VEC_B64 if body.get("encoding_format") == "base64" else VEC
        return web.json_response({"object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": i, "embedding": vec} for i in range(n)],
            "usage": {"prompt_tokens": n, "total_tokens": n}})
    async def embed(request):
        body = await request.json()
        items = body.get("images") or body.get("texts") or []
        n = len(items)
        types = body.get("embedding_types") or ["float"]
        rows = {t: [IMG_B64 if t == "base64" else IMG] * n for t in types}
        return web.json_response({"id": "bench", "embeddings": rows,
            "meta": {"billed_units": {"images": len(body.get("images") or []),
                                      "input_tokens": 4 * len(body.get("texts") or [])}},
            "response_type": "embeddings_by_type"})
    app = web.Application(client_max_size=2**26)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v2/embed", embed)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)


def pin_clients() -> str:
    """Keep the clients off the server's core 0 (every row alike), so the scheduler does
    not sometimes put a client beside the server: what the rounds then measure is the
    client, not where it was placed. Returns what was done, for the report."""
    if not (shutil.which("taskset") and hasattr(os, "sched_setaffinity")):
        return "clients not pinned"
    others = os.sched_getaffinity(0) - {0}
    if not others:
        return "clients not pinned (one core)"
    os.sched_setaffinity(0, others)
    return f"clients pinned to core(s) {', '.join(map(str, sorted(others)))}"


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


async def ours(url: str, n: int, conc: int, rpm: float | None,
               aiohttp_transport: bool = False) -> tuple[float, float]:
    """TeacherClient, with its default transport or (``aiohttp_transport``) the previous
    default, httpx-aiohttp's transport reading each answer whole."""
    import httpx

    from vlmclient import (
        Budget,
        Price,
        ReadingAiohttpTransport,
        TeacherClient,
        TextEmbeddingRequest,
    )

    price = Price(usd_per_1m_input_tokens=Decimal("0.02"))
    transport = (
        ReadingAiohttpTransport(limits=httpx.Limits(max_connections=conc))
        if aiohttp_transport else None
    )
    async with TeacherClient(
        "openai:bench",
        api_key="k",
        base_url=url + "/v1",
        price=price,
        budget=Budget("100"),
        concurrency=conc,
        rpm=rpm,
        transport=transport,
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


async def ours_aiohttp(url: str, n: int, conc: int, rpm: float | None) -> tuple[float, float]:
    return await ours(url, n, conc, rpm, aiohttp_transport=True)


async def bare(url: str, n: int, conc: int, rpm: float | None) -> tuple[float, float]:
    """The transport's limit: the same bodies TeacherClient sends, answers only read."""
    import json

    import aiohttp

    headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(text: str) -> None:
            body = {"model": "bench", "input": [text], "encoding_format": "base64"}
            data = json.dumps(body, separators=(",", ":")).encode()
            async with session.post(url + "/v1/embeddings", data=data, headers=headers) as r:
                await r.read()
                r.raise_for_status()

        await post("warm up")
        queue = list(range(n))
        t0, c0 = time.perf_counter(), cpu()

        async def worker() -> None:
            while queue:
                await post(f"{queue.pop()} {TEXT}")

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


IMAGES_PER_REQUEST = 96  # Cohere v4's (and the local teacher's) limit per request
IMAGE_SIDE = 64


def make_images(root: Path, m: int) -> Path:
    """``m`` distinct 64 px noise PNGs (incompressible, ~12 KB each) in DATA/<class>/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(m):
        folder = root / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")
    return root


async def harvest_path(url: str, data: Path, conc: int, work: Path) -> tuple[float, float, str]:
    """``distill.harvest.harvest`` end to end into a fresh cache: (wall, CPU, time line)."""
    from cache import ResponseCache, SpendLedger
    from distill.data import scan
    from distill.harvest import harvest
    from vlmclient import Budget, Price, TeacherClient

    dataset = scan(data)
    price = Price(usd_per_image=Decimal("0.0001"), usd_per_1m_input_tokens=Decimal("0.1"))
    with ResponseCache(work / "responses") as cache, SpendLedger(work / "ledger.jsonl") as ledger:
        async with TeacherClient(
            "local:bench", api_key="k", base_url=url, price=price, budget=Budget("1000"),
            cache=cache, ledger=ledger, concurrency=conc, batch_size=IMAGES_PER_REQUEST,
        ) as client:
            t0, c0 = time.perf_counter(), cpu()
            result = await harvest(dataset, client, cache_dir=work, timings=client.timings)
            wall, cpu_s = time.perf_counter() - t0, cpu() - c0
    if result.bought != len(dataset.samples) + len(dataset.class_names):
        raise RuntimeError(f"harvest bought {result.bought} items: {result.failed[:3]}")
    return wall, cpu_s, client.timings.line(wall)


async def bare_images(url: str, data: Path, conc: int) -> tuple[float, float]:
    """The same /v2/embed bodies (files read, base64 data URIs, JSON), answers only read."""
    import base64
    import json

    import aiohttp

    from distill.data import scan

    paths = [s.path for s in scan(data).samples]
    chunks = [paths[i : i + IMAGES_PER_REQUEST] for i in range(0, len(paths), IMAGES_PER_REQUEST)]
    headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(chunk: list[Path]) -> None:
            uris = [
                "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")
                for p in chunk
            ]
            body = {
                "model": "bench", "input_type": "search_document", "images": uris,
                "embedding_types": ["base64"],
            }
            data = json.dumps(body, separators=(",", ":")).encode()
            async with session.post(url + "/v2/embed", data=data, headers=headers) as r:
                await r.read()
                r.raise_for_status()

        await post(chunks[0][:1])
        queue = list(reversed(chunks))
        t0, c0 = time.perf_counter(), cpu()

        async def worker() -> None:
            while queue:
                await post(queue.pop())

        await asyncio.gather(*(worker() for _ in range(conc)))
        return time.perf_counter() - t0, cpu() - c0


Row = dict[str, object]


def main() -> None:
    import statistics
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=24000.0, help="requests/min for the rate test")
    ap.add_argument("--images", type=int, default=5000, help="images for the harvest rows")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    port = free_port()
    proc = start_server(port)
    pinned = pin_clients()
    print(pinned, flush=True)
    url = f"http://127.0.0.1:{port}"
    rows: list[Row] = []
    harvest_rows: list[Row] = []
    lines_seen: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="client-throughput-"))
    load_before = os.getloadavg()[0]
    try:
        for conc in args.concurrency:
            for rnd in range(args.rounds):
                for name, fn in (
                    ("TeacherClient", ours), ("aiohttp (bare)", bare),
                    ("TeacherClient (aiohttp transport)", ours_aiohttp),
                    ("AsyncOpenAI", baseline),
                ):
                    if name in ("AsyncOpenAI", "TeacherClient (aiohttp transport)") and conc != 64:
                        continue
                    wall, cpu_s = asyncio.run(fn(url, args.n, conc, None))
                    rows.append({"client": name, "conc": conc, "limit": "none", "round": rnd,
                                 "rps": args.n / wall, "cpu_ms": cpu_s / args.n * 1000,
                                 "ratio": 0.0})
                    print(rows[-1], flush=True)
        n_rate = int(args.rate / 60 * 10)  # about 10 s at the configured rate
        for rnd in range(args.rounds):
            for name, fn in (("TeacherClient", ours), ("AsyncOpenAI+aiolimiter", baseline)):
                wall, cpu_s = asyncio.run(fn(url, n_rate, 64, args.rate))
                rows.append({"client": name, "conc": 64, "limit": f"{args.rate:.0f}/min",
                             "round": rnd, "rps": n_rate / wall,
                             "cpu_ms": cpu_s / n_rate * 1000,
                             "ratio": (n_rate / wall) * 60 / args.rate})
                print(rows[-1], flush=True)
        if args.images:
            data = make_images(scratch / "data", args.images)
            conc = 16  # vlmclient.DEFAULT_CONCURRENCY
            for rnd in range(args.rounds):
                work = Path(tempfile.mkdtemp(dir=scratch))
                wall, cpu_s, line = asyncio.run(harvest_path(url, data, conc, work))
                shutil.rmtree(work)
                lines_seen.append(line)
                harvest_rows.append({"client": "harvest (TeacherClient + cache + ledger)",
                                     "round": rnd, "ips": args.images / wall,
                                     "cpu_ms": cpu_s / args.images * 1000})
                print(harvest_rows[-1], line, flush=True)
                wall, cpu_s = asyncio.run(bare_images(url, data, conc))
                harvest_rows.append({"client": "aiohttp (bare, same bodies)", "round": rnd,
                                     "ips": args.images / wall,
                                     "cpu_ms": cpu_s / args.images * 1000})
                print(harvest_rows[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    load_after = os.getloadavg()[0]

    def bare_ratio(client: str, conc: int) -> str:
        """Median over rounds of req/s ÷ the bare client's req/s in the same round."""
        pairs = [
            (r["rps"], b["rps"])
            for r in rows
            for b in rows
            if r["client"] == client and b["client"] == "aiohttp (bare)"
            and r["conc"] == b["conc"] == conc and r["round"] == b["round"]
            and r["limit"] == b["limit"] == "none"
        ]
        if not pairs:
            return "—"
        return f"{statistics.median(float(a) / float(b) for a, b in pairs):.2f}"  # type: ignore[arg-type]

    keys = sorted(
        {(str(r["client"]), int(r["conc"]), str(r["limit"])) for r in rows},  # type: ignore[call-overload]
        key=lambda k: (k[2], k[1], k[0]),
    )
    lines = [
        "| client | concurrency | limit | req/s (median) | client CPU ms/req | ÷ bare aiohttp "
        "| achieved ÷ limit |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for k in keys:
        sel = [r for r in rows if (r["client"], r["conc"], r["limit"]) == k]
        rps = statistics.median(float(r["rps"]) for r in sel)  # type: ignore[arg-type]
        cpu_ms = statistics.median(float(r["cpu_ms"]) for r in sel)  # type: ignore[arg-type]
        ratio = statistics.median(float(r["ratio"]) for r in sel)  # type: ignore[arg-type]
        vs_bare = bare_ratio(k[0], k[1]) if k[2] == "none" else "—"
        achieved = f"{ratio:.3f}" if k[2] != "none" else "—"
        lines.append(
            f"| {k[0]} | {k[1]} | {k[2]} | {rps:.0f} | {cpu_ms:.2f} | {vs_bare} | {achieved} |"
        )
    table = "\n".join(lines)
    print(table)
    harvest_table = ""
    if harvest_rows:
        names = list(dict.fromkeys(str(r["client"]) for r in harvest_rows))
        per_round = [
            float(h["ips"]) / float(b["ips"])  # type: ignore[arg-type]
            for h in harvest_rows
            for b in harvest_rows
            if h["client"] == names[0] and b["client"] == names[1] and h["round"] == b["round"]
        ]
        hl = [
            "| path | images/s (median) | client CPU ms/image | ÷ bare aiohttp |",
            "|---|---:|---:|---:|",
        ]
        for name in names:
            sel = [r for r in harvest_rows if r["client"] == name]
            ips = statistics.median(float(r["ips"]) for r in sel)  # type: ignore[arg-type]
            cpu_ms = statistics.median(float(r["cpu_ms"]) for r in sel)  # type: ignore[arg-type]
            vs = f"{statistics.median(per_round):.2f}" if name == names[0] else "1"
            hl.append(f"| {name} | {ips:.0f} | {cpu_ms:.3f} | {vs} |")
        harvest_table = "\n".join(hl)
        print(harvest_table)
        print(lines_seen[len(lines_seen) // 2])
    print(f"1-minute load average {load_before:.1f} before, {load_after:.1f} after")
    if args.write:
        cmd = (
            f"benchmarks/client_throughput.py --n {args.n} --rounds {args.rounds} "
            f"--images {args.images} --rate {args.rate:.0f} "
            f"--concurrency {' '.join(map(str, args.concurrency))} --write"
        )
        section = (
            "## Client throughput (benchmarks/client_throughput.py)\n\n"
            f"`.venv/bin/python {cmd}`, {time.strftime('%Y-%m-%d')}, 2 cores; zero-latency "
            f"aiohttp server on core 0 in its own process, {pinned}, "
            f"{args.n} POSTs of ~20 KB per run, one text per request, median of "
            f"{args.rounds} interleaved rounds. TeacherClient runs its whole pipeline per "
            "request (budget reserve/settle, limiter, retry wrapper, parse, validation) on the "
            "httpx API with its default transport (`vlmclient/http11.py`; the row "
            "\"TeacherClient (aiohttp transport)\" is the same client on the previous "
            "default, httpx-aiohttp's transport); the bare aiohttp client sends the "
            "same bodies and only reads the answers (the transport's limit; ÷ bare is the "
            "median of per-round ratios). 1-minute load average "
            f"{load_before:.1f} before, {load_after:.1f} after: the machine is shared, "
            "compare the ratios rather than the absolute rates.\n\n" + table + "\n"
        )
        if harvest_table:
            section += (
                f"\nHarvest path: `distill.harvest.harvest` over {args.images} distinct "
                f"{IMAGE_SIDE} px PNGs, {IMAGES_PER_REQUEST} images per request, concurrency "
                "16, into a fresh response cache and spend ledger each round (store export "
                "included), against the same server's `/v2/embed` (512-d vectors as base64); "
                "the bare aiohttp client posts the same bodies (files read, base64, JSON). "
                "Where the harvest's time went (`harvest -v`'s line, middle round): "
                f"`{lines_seen[len(lines_seen) // 2]}`.\n\n" + harvest_table + "\n"
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
        rest = "\n" + text[end + 1 :] if end != -1 else ""  # a blank line before the next
        text = text[:start] + section + rest
    path.write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()

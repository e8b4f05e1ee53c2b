"""kill -9 of a harvest at random moments, each followed by a resume: what is lost, what is
paid twice.

A hash teacher with added latency serves on 127.0.0.1 in this process (it keeps its own
bill). A ``vlm-distill harvest`` subprocess is killed with SIGKILL at a random moment after
it started buying (seeded), ``kills`` times; every kill is followed by a resume, and the
last run finishes. Measured per kill and in total:

- billed requests missing from the ledger (the server billed them, the client never
  recorded them): these can only be requests in flight at the kill, so at most
  ``--concurrency`` per kill;
- items paid twice (server-billed images minus distinct images): at most the items of the
  requests in flight at the kills;
- torn ledger lines left by a kill mid-write (the reader skips them);
- what the resume charged for the killed run's open reservations (ledger outcome
  ``orphaned``, at the reserved worst case), which keeps the ledger at or above the bill.

    .venv/bin/python benchmarks/crash_resume.py --kills 5 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOKEN = "crash-bench-token"
ORPHANED = "orphaned"  # cache.coordination.ORPHANED (imported late: ROOT is put on the path above)


@dataclass
class Kill:
    run: int
    after_s: float  # seconds after the run's first ledger record
    ledger_ok_at_kill: int
    missing_from_ledger: int  # billed by the server, not in the ledger (new at this kill)
    torn_lines: int


@dataclass
class CrashResult:
    kills: list[Kill] = field(default_factory=list)
    runs: int = 0
    concurrency: int = 0
    batch_size: int = 0
    items: int = 0
    billed_requests: int = 0
    billed_images: int = 0
    paid_twice_items: int = 0
    missing_from_ledger: int = 0
    missing_usd: str = "0"  # what the server billed for the requests missing from the ledger
    rebought_after_ok: int = 0  # items recorded ok in the ledger, but bought again
    ledger_usd: str = "0"
    # charged by the next run for the killed run's open reservations (outcome "orphaned")
    orphaned_usd: str = "0"
    server_usd: str = "0"
    final_exit: int = -1
    seconds: float = 0.0

    @property
    def max_missing_per_kill(self) -> int:
        return max((k.missing_from_ledger for k in self.kills), default=0)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_missing_per_kill"] = self.max_missing_per_kill
        return d


def _harvest_cmd(url: str, data: Path, cache: Path, concurrency: int, batch: int) -> list[str]:
    argv = [
        "harvest", str(data), "--teacher", "local:hash", "--base-url", url, "--cache",
        str(cache), "--budget", "5", "--concurrency", str(concurrency), "--batch-size",
        str(batch),
    ]  # fmt: skip
    code = f"import sys; from distill.cli import main; sys.exit(main({argv!r}))"
    return [sys.executable, "-c", code]


def _ledger_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def run(
    *,
    kills: int = 5,
    seed: int = 0,
    per_class: int = 25,
    concurrency: int = 4,
    batch_size: int = 2,
    latency_ms: float = 40.0,
    max_delay_s: float = 0.8,
    workdir: Path | None = None,
) -> CrashResult:
    """Harvest, SIGKILL at ``kills`` random moments with a resume after each, then finish."""
    from pydantic import SecretStr

    from cache import CacheDir, read_ledger
    from distill.data import scan
    from distill.data.digits import make_digits
    from distill.server import Faults, HashBackend, ServerConfig, ServerThread, create_app

    rng = random.Random(seed)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="crash-resume-"))
    data = make_digits(tmp / "digits", size=16, per_class=per_class)
    n_images = len(scan(data).samples)
    cache = tmp / "cache"
    ledger_path = CacheDir(cache).ledger
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLM_DISTILL_TEACHER_TOKEN": TOKEN}
    config = ServerConfig(token=SecretStr(TOKEN), faults=Faults(latency_ms=latency_ms))
    app = create_app(config, HashBackend(dim=32))
    result = CrashResult(concurrency=concurrency, batch_size=batch_size, items=n_images)
    start = time.monotonic()

    def ledger_ids() -> set[str]:
        return {r.request_id for r in read_ledger(ledger_path).records if r.request_id}

    with ServerThread(app) as server:
        bill = app.state.teacher.billing
        cmd = _harvest_cmd(server.base_url, data, cache, concurrency, batch_size)
        missing_before = 0
        while len(result.kills) < kills:
            result.runs += 1
            lines_at_start = _ledger_lines(ledger_path)
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            # a random moment once this run is buying (its first record is on disk)
            while _ledger_lines(ledger_path) == lines_at_start and proc.poll() is None:
                time.sleep(0.005)
            first = time.monotonic()
            time.sleep(rng.uniform(0.0, max_delay_s))
            if proc.poll() is not None:  # finished before the kill: start over, fresh cache
                raise RuntimeError(
                    "the harvest finished before the kill; use more data (--per-class) "
                    "or more latency"
                )
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            ok_at_kill = sum(
                1 for r in read_ledger(ledger_path).records if r.outcome == "ok"
            )
            time.sleep(latency_ms / 1000 * 3)  # let requests in flight at the kill finish
            billed = {b.request_id for b in bill.bills()}
            missing = len(billed - ledger_ids())
            torn = len(read_ledger(ledger_path).problems)
            after = round(time.monotonic() - first, 3)
            result.kills.append(
                Kill(result.runs, after, ok_at_kill, missing - missing_before, torn)
            )
            missing_before = missing
        result.runs += 1
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=600)
        result.final_exit = done.returncode
        bills = bill.bills()

    records = read_ledger(ledger_path).records
    ok_ids = {r.request_id for r in records if r.outcome == "ok"}
    result.billed_requests = len(bills)
    result.billed_images = sum(b.images for b in bills)
    result.paid_twice_items = result.billed_images - n_images
    recorded = ledger_ids()
    missing_bills = [b for b in bills if b.request_id not in recorded]
    result.missing_from_ledger = len(missing_bills)
    result.missing_usd = str(sum((b.usd for b in missing_bills), Decimal(0)))
    ok_images = sum(r.items for r in records if r.outcome == "ok" and r.kind == "image_embedding")
    # killed after the ledger write and before the cache write: recorded, then bought again
    result.rebought_after_ok = ok_images - n_images
    result.ledger_usd = str(sum((Decimal(r.cost_usd) for r in records), Decimal(0)))
    result.orphaned_usd = str(
        sum((Decimal(r.cost_usd) for r in records if r.outcome == ORPHANED), Decimal(0))
    )
    result.server_usd = str(sum((b.usd for b in bills), Decimal(0)))
    result.seconds = round(time.monotonic() - start, 1)
    assert ok_ids <= {b.request_id for b in bills}, "the ledger records a request never billed"
    return result


def table(r: CrashResult) -> str:
    rows = [
        "| kill | run | moment (s after first record) | ok records at kill | billed, not in ledger"
        " | torn ledger lines |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, k in enumerate(r.kills, 1):
        rows.append(
            f"| {i} | {k.run} | {k.after_s:.3f} | {k.ledger_ok_at_kill} | "
            f"{k.missing_from_ledger} | {k.torn_lines} |"
        )
    bound = r.concurrency * r.batch_size * len(r.kills)
    rows += [
        "",
        f"{r.items} images, concurrency {r.concurrency}, batch {r.batch_size}; "
        f"{len(r.kills)} kills, {r.runs} runs, final exit {r.final_exit}, {r.seconds} s.",
        f"Billed requests {r.billed_requests}; missing from the ledger {r.missing_from_ledger} "
        f"(max {r.max_missing_per_kill} per kill, bound {r.concurrency}); images billed "
        f"{r.billed_images}, paid twice {r.paid_twice_items} (bound {bound}), of which "
        f"{r.rebought_after_ok} were in the ledger but not yet cached at a kill; "
        f"ledger ${r.ledger_usd} (of which ${r.orphaned_usd} charged for killed runs' "
        f"in-flight reservations) >= server ${r.server_usd}; ledger without those "
        f"+ missing ${r.missing_usd} = server.",
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=25)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = run(
        kills=args.kills,
        seed=args.seed,
        per_class=args.per_class,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
    )
    print(json.dumps(r.as_dict(), indent=1) if args.json else table(r))


if __name__ == "__main__":
    main()

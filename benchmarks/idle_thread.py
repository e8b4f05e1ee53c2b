"""What a live in-process teacher server costs torch training beside it (no HTTP).

Each mode runs in a fresh process: load the mini-clip backend, run a few inference calls
through an executor, then time ERM steps of tf_efficientnet_lite0 (32 px, batch 96,
channels_last, two torch threads) while the backend stays open:

- ``none``: no backend at all;
- ``idle-pool``: the calls ran in a ThreadPoolExecutor(1) that stays alive, idle (the
  backends' design until 2026-12-04);
- ``backend``: the calls ran through the backend's own executor (a thread per call).

    .venv/bin/python benchmarks/idle_thread.py WEIGHTS [--rounds 2] [--steps 60]
    # WEIGHTS: a mini-clip teacher, e.g. vlm-distill-demo/teacher/digits-*.safetensors

Modes alternate, so machine drift hits them alike; run it alone on the machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODES = ("none", "idle-pool", "backend")


def one(mode: str, weights: str, steps: int) -> float:
    """Mean ms per ERM step in this process, after 10 warm-up steps."""
    from concurrent.futures import ThreadPoolExecutor

    import timm
    import torch

    from distill.server import make_backend

    backend = None
    if mode != "none":
        backend = make_backend("mini-clip", weights=weights)
        ex = ThreadPoolExecutor(1) if mode == "idle-pool" else backend.executor
        assert ex is not None
        for _ in range(5):
            ex.submit(backend.embed_texts, ["a photo of a one"] * 32).result()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=10)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(96, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (96,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(10):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return 1000 * (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one child process
    args = ap.parse_args()
    if args.mode:
        print(f"{one(args.mode, args.weights, args.steps):.0f}")
        return
    results: dict[str, list[str]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, __file__, args.weights, "--mode", mode, "--steps",
                 str(args.steps)], capture_output=True, text=True, check=True,
            ).stdout.split()[-1]
            results[mode].append(out)
            print(f"{mode:<10} {out} ms/step", flush=True)
    for mode, values in results.items():
        print(f"{mode:<10} ms per ERM step: {', '.join(values)}")


if __name__ == "__main__":
    main()

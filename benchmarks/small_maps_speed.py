"""Step time of the default student with and without the trainer's CPU speed-ups.

The speed-ups: convolutions on small maps take shortcuts (``distill.train.small_maps``:
depthwise convolutions skip the kernel taps a map smaller than the kernel never reaches,
2026-12-06 morning; strided depthwise convolutions with one output pixel and 1x1
convolutions on maps of at most 16 pixels, 2026-12-06 afternoon), and Adam runs fused
(``distill.train.optim.adam``). All compute the same function; this measures what they
save. Variants, each a fresh student from the same seed, run in interleaved blocks of
``--block`` steps (first step of a block untimed) so that machine noise hits them alike:

- ``plain``: plain convolutions, torch's default (unfused) Adam (the trainer until
  2026-12-06);
- ``depthwise``: the stride-1 depthwise shortcut and fused Adam (the trainer of commit
  ee9fb3d);
- ``all``: every shortcut and fused Adam (the trainer now).

One step = the trainer's ERM task (frozen BatchNorm, channels_last, as the trainer runs the
default student on the CPU): forward, cross-entropy, backward, Adam step on random inputs.

    .venv/bin/python benchmarks/small_maps_speed.py   # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/small_maps_speed.py --no-docs --sizes 32
    .venv/bin/python benchmarks/small_maps_speed.py --runs DATA CACHE TEACHER --target rot0

``--runs``: whole ``distill.train.train`` runs instead (ERM, the ADiP table's settings at
32 px), alternating ``depthwise`` / ``all``, each timed by its own ``wall_time_s``; printed,
not written to the docs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docs_section import measured_line  # noqa: E402  (benchmarks/ is on sys.path)

from distill.train.small_maps import (  # noqa: E402
    SmallMapDepthwiseConv2d,
    SmallMapDepthwiseConv2dSame,
    SmallMapPointwiseConv2d,
    use_plain_convs,
    use_small_map_convs,
)
from distill.train.student import Student, build_student, check_student  # noqa: E402
from distill.train.task import Batch, ErmTask  # noqa: E402
from vlmclient.errors import ConfigurationError  # noqa: E402

START = "<!-- small_maps_speed:start -->"
END = "<!-- small_maps_speed:end -->"
VARIANTS = ("plain", "depthwise", "all")


def depthwise_only(model: nn.Module) -> int:
    """The shortcuts of commit ee9fb3d: stride-1 depthwise convolutions only."""
    use_small_map_convs(model)
    kept = 0
    for m in model.modules():
        if isinstance(m, SmallMapDepthwiseConv2d) and m.stride == (1, 1):
            kept += 1
        elif isinstance(m, (SmallMapDepthwiseConv2d, SmallMapDepthwiseConv2dSame,
                            SmallMapPointwiseConv2d)):
            use_plain_convs(m)
    return kept


def student(model: str, variant: str) -> tuple[Student, torch.optim.Optimizer]:
    torch.manual_seed(0)
    s = build_student(model, method="erm", num_classes=10)
    use_plain_convs(s)
    if variant == "depthwise":
        depthwise_only(s)
    elif variant == "all":
        use_small_map_convs(s)
    s.to(memory_format=torch.channels_last)
    params = ErmTask().configure(s)
    return s, torch.optim.Adam(params, lr=5e-4, fused=(variant != "plain") or None)


def measure(model: str, size: int, batch: int, rounds: int, block: int) -> dict[str, float]:
    task = ErmTask()
    runs = {v: student(model, v) for v in VARIANTS}
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    b = Batch(images=x, labels=torch.randint(0, 10, (batch,)))
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds + 1):  # round 0 warms up
        for v in VARIANTS:
            s, opt = runs[v]
            for j in range(block):
                t0 = time.perf_counter()
                task.set_mode(s)
                loss = task.losses(s, b)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if r > 0 and j > 0:
                    times[v].append(time.perf_counter() - t0)
    return {v: statistics.median(t) for v, t in times.items()}


def whole_runs(args: argparse.Namespace) -> None:
    """Alternate whole ERM runs with the trainer of commit ee9fb3d (stride-1 depthwise
    shortcut only) and as now; print each run's wall time and accuracy."""
    import tempfile
    from contextlib import ExitStack
    from unittest import mock

    import distill.train.student as student_module
    from distill.train.config import TrainConfig
    from distill.train.trainer import train

    data, cache, teacher = args.runs
    times: dict[str, list[float]] = {"before": [], "now": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for variant in ("before", "now"):
                cfg = TrainConfig(data=data, cache=cache, teacher=teacher, method="erm",
                                  out=f"{tmp}/{variant}-{r}", test_domains=(args.target,),
                                  steps=args.steps, image_size=32, lr=5e-4, views=4,
                                  batch_per_domain=32, eval_every=75, threads=args.threads)
                with ExitStack() as stack:
                    if variant == "before":
                        stack.enter_context(mock.patch.object(
                            student_module, "use_small_map_convs", depthwise_only))
                    m = train(cfg)
                times[variant].append(float(m["wall_time_s"]))
                print(f"round {r} {variant:6s}: {m['wall_time_s']:.1f} s, ID {m['mean_id']:.3f} "
                      f"OOD {m['mean_ood']:.3f}", flush=True)
    b, n = statistics.median(times["before"]), statistics.median(times["now"])
    print(f"median: before {b:.1f} s, now {n:.1f} s, speed-up {b / n:.2f}x")


def render(rows: list[tuple[int, dict[str, float]]], args: argparse.Namespace) -> str:
    lines = [
        "## Convolutions on small maps, and fused Adam",
        START,
        "",
        f"Reproduce: `.venv/bin/python benchmarks/small_maps_speed.py --model {args.model} "
        f"--sizes {','.join(map(str, args.sizes))} --batch {args.batch} --rounds {args.rounds} "
        f"--block {args.block}`.",
        "",
        f"`{args.model}` (packaged ImageNet weights), the trainer's ERM step (BatchNorm "
        f"frozen, channels_last) on random input, batch {args.batch}, torch threads "
        f"{torch.get_num_threads()}; the three variants in interleaved blocks of "
        f"{args.block} steps (first untimed), median step time over {args.rounds} rounds. "
        "`plain`: plain convolutions and torch's default Adam (the trainer until "
        "2026-12-06); `depthwise`: stride-1 depthwise convolutions skip the kernel taps a "
        "map smaller than the kernel never reaches, and `torch.optim.Adam(fused=True)` "
        "(`distill/train/optim.py`; the trainer of commit ee9fb3d); `all`: also strided "
        "depthwise convolutions with one output pixel as a sum over the taps that reach "
        "the map, and 1x1 convolutions on maps of at most 16 pixels as a matrix product "
        "(`distill/train/small_maps.py`; the trainer now). Same function, same gradients "
        "(tests/train/test_small_maps.py).",
        "",
        "| input | plain (ms/step) | depthwise (ms/step) | all (ms/step) | "
        "speed-up over depthwise | over plain |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for size, r in rows:
        plain, dw, both = (r[v] * 1000 for v in VARIANTS)
        lines.append(f"| {size} px | {plain:.0f} | {dw:.0f} | {both:.0f} | "
                     f"{dw / both:.2f}× | {plain / both:.2f}× |")
    lines += [
        "",
        measured_line(),
        END,
    ]
    return "\n".join(lines) + "\n"


def write_docs(section: str) -> None:
    from docs_section import replace_section

    replace_section(ROOT / "docs" / "benchmarks.md", START, END, section, "Benchmarks")


def sizes(text: str) -> list[int]:
    """argparse type of --sizes: pixel sizes of 1 or more, all read before any is measured."""
    from benchmarks.adip_table import count

    return [count(s) for s in text.split(",")]


def block(text: str) -> int:
    """argparse type of --block: 2 or more (a block's first step is not timed)."""
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be 2 or more (its first step is untimed), "
                                         f"not {text}")
    return value


def main() -> None:
    from benchmarks.adip_table import count

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--sizes", type=sizes, default="32,64")
    ap.add_argument("--batch", type=count, default=96)
    ap.add_argument("--rounds", type=count, default=5)
    ap.add_argument("--block", type=block, default=4)
    ap.add_argument("--threads", type=count, default=2)
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--runs", nargs=3, metavar=("DATA", "CACHE", "TEACHER"),
                    help="time whole ERM runs on this data, cache and teacher instead")
    ap.add_argument("--target", default="rot0", help="with --runs: the held-out domain")
    ap.add_argument("--steps", type=count, default=300, help="with --runs: steps per run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.runs:
        whole_runs(args)
        return
    try:  # a traceback once measured: a pretrained tag timm lacks, a ViT made for 224 px
        for size in args.sizes:
            check_student(args.model, size, student_flag="--model", size_flag="--sizes")
    except ConfigurationError as exc:
        ap.error(str(exc))
    rows: list[tuple[int, dict[str, Any]]] = []
    for size in args.sizes:
        r = measure(args.model, size, args.batch, args.rounds, args.block)
        rows.append((size, r))
        print(f"{size} px: " + ", ".join(f"{v} {t * 1000:.1f} ms" for v, t in r.items()),
              flush=True)
    if not args.no_docs:
        write_docs(render(rows, args))
        print("written: docs/benchmarks.md")


if __name__ == "__main__":
    main()

"""Training speed of the default student on this machine: images/s, ADiP step ÷ ERM step.

Runs the trainer's own tasks (``distill.train.task``) on random 64 px batches of 96 images (three
source domains × 32, the paper's batch), with teacher targets of dimension 384 (the
pseudo-clip teacher's). One step = zero_grad, forward + loss (the task's), backward, Adam
step. ADiP Distill, ADiP Align and ERM run in interleaved blocks of 4 steps (D D D D,
A A A A, E E E E, D ...; the first step of a block untimed) after warm-up rounds, so machine
noise hits them alike; the figure is the median step time.
Variants: fp32, channels_last, bf16 autocast, channels_last + bf16.

    .venv/bin/python benchmarks/train_speed.py            # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/train_speed.py --no-docs --pairs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docs_section import measured_line  # noqa: E402  (benchmarks/ is on sys.path)

from distill.train.student import build_student, check_student  # noqa: E402
from distill.train.task import AlignTask, Batch, DistillTask, ErmTask  # noqa: E402
from vlmclient.errors import ConfigurationError  # noqa: E402

START = "<!-- train_speed:start -->"
END = "<!-- train_speed:end -->"


def measure(model: str, size: int, batch: int, pairs: int, warmup: int,
            channels_last: bool, bf16: bool, dim: int = 384, classes: int = 10,
            block: int = 4) -> dict:
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(classes, dim), dim=1)
    tasks = {"distill": DistillTask(lam=0.5), "align": AlignTask(lam=0.5), "erm": ErmTask()}
    students = {
        "distill": build_student(model, method="adip", num_classes=classes, text=text),
        "align": build_student(model, method="adip", num_classes=classes, text=text),
        "erm": build_student(model, method="erm", num_classes=classes),
    }
    opts = {}
    for k, s in students.items():
        if channels_last:
            s.to(memory_format=torch.channels_last)
        opts[k] = torch.optim.Adam(tasks[k].configure(s), lr=5e-5)
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    b = Batch(images=x, labels=torch.randint(0, classes, (batch,)),
              image_t=torch.nn.functional.normalize(torch.randn(batch, dim), dim=1))
    times: dict[str, list[float]] = {k: [] for k in tasks}
    # Blocks of `block` steps per kind, kinds alternating: alternating every single step
    # makes the three models' activations evict each other from the allocator's free
    # lists and measured a several-fold slowdown that no training run has; the first step
    # of each block is not timed.
    for r in range(warmup + pairs):
        for k in ("distill", "align", "erm"):
            s, task, opt = students[k], tasks[k], opts[k]
            for j in range(block):
                t0 = time.perf_counter()
                task.set_mode(s)
                with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
                    loss = task.losses(s, b)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if r >= warmup and j > 0:
                    times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [d / e for d, e in zip(times["distill"], times["erm"], strict=True)]
    return {
        "img_s": {k: batch / v for k, v in med.items()},
        "step_s": med,
        "ratio": med["distill"] / med["erm"],
        "ratio_pairwise": statistics.median(ratios),
    }


def render(rows: list[tuple[str, dict]], args: argparse.Namespace, base: dict) -> str:
    lines = [
        START,
        "## Trainer speed (default student)",
        "",
        f"Reproduce: `.venv/bin/python benchmarks/train_speed.py --model {args.model} "
        f"--size {args.size} --batch {args.batch} --pairs {args.pairs} --warmup {args.warmup}`.",
        "",
        f"`{args.model}` with the packaged ImageNet weights, {args.size}×{args.size} random "
        f"input, batch {args.batch} (3 domains × 32), teacher dimension 384, "
        f"torch threads {torch.get_num_threads()}. One step = the trainer's task loss, "
        "backward, Adam step. The three step kinds run in interleaved blocks of 4 steps "
        f"(first untimed); medians of {3 * args.pairs} timed steps each after "
        f"{args.warmup} warm-up round(s). Data loading is not "
        "included (decoding 64 px PNGs costs well under 1 ms per image).",
        "",
        "| variant | ERM img/s | ADiP Distill img/s | ADiP Align img/s | Distill ÷ ERM step "
        "(medians) | (pairwise median) | ERM speed-up over fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['img_s']['erm']:.1f} | {r['img_s']['distill']:.1f} | "
            f"{r['img_s']['align']:.1f} | {r['ratio']:.3f} | {r['ratio_pairwise']:.3f} | "
            f"{r['img_s']['erm'] / base['img_s']['erm']:.2f}× |"
        )
    lines += [
        "",
        "ADiP's Distill step costs what an ERM step costs (target ≤ 1.10): the projection "
        "and two cosines are nothing next to the backbone. The Align step (frozen backbone, "
        "no backward through it) is several times cheaper.",
        "The trainer turns channels_last on by default for convnets on the CPU. bf16 "
        "autocast stays opt-in (`--bf16`) until an accuracy check on the benchmark table "
        "shows it keeps accuracy.",
        "",
        measured_line(": the machine is shared, compare ratios"),
        END,
    ]
    return "\n".join(lines) + "\n"


def write_docs(section: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text("utf-8") if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, "utf-8")


VARIANTS = ("fp32", "channels_last", "bf16", "channels_last+bf16")


def variants(text: str) -> list[str]:
    """argparse type of --variants: names of :data:`VARIANTS` (a misspelt one was measured
    as fp32 and reported under its misspelt name)."""
    names = text.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(repr(n) for n in unknown)}; choose from {', '.join(VARIANTS)}")
    return names


def main() -> None:
    from benchmarks.adip_table import count, non_negative

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--size", type=count, default=64)
    ap.add_argument("--batch", type=count, default=96)
    ap.add_argument("--pairs", type=count, default=5, help="rounds of timed blocks")
    ap.add_argument("--warmup", type=non_negative, default=1, help="untimed rounds")
    ap.add_argument("--variants", type=variants, default=",".join(VARIANTS))
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    try:  # a traceback once measured: a pretrained tag timm lacks, a ViT made for 224 px
        check_student(args.model, args.size, student_flag="--model", size_flag="--size")
    except ConfigurationError as exc:
        ap.error(str(exc))
    rows = []
    for name in args.variants:
        r = measure(args.model, args.size, args.batch, args.pairs, args.warmup,
                    channels_last="channels_last" in name, bf16="bf16" in name)
        rows.append((name, r))
        print(f"{name:22s} ERM {r['img_s']['erm']:7.1f} img/s  Distill {r['img_s']['distill']:7.1f}"
              f"  Align {r['img_s']['align']:7.1f}  Distill/ERM {r['ratio']:.3f} "
              f"(pairwise {r['ratio_pairwise']:.3f})", flush=True)
    if not args.no_docs:
        write_docs(render(rows, args, rows[0][1]))
        print("written: docs/benchmarks.md")


if __name__ == "__main__":
    main()

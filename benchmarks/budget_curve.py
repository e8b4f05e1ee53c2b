"""OOD accuracy against dollars spent: random vs uncertainty vs coreset selection, label-free
vs labelled, with the mini-clip digits teacher served on loopback, on the offline digits.

The teacher (:mod:`distill.teacher.miniclip`) is fitted once under OUT/teacher (a rerun
refits nothing) on a pool of scikit-learn digits that the benchmark does not deal out; the
script checks that by content hash before it buys anything (:mod:`digits_teacher`).

For each seed, strategy and budget (a fraction of what buying every training image costs),
a fresh client with a hard Budget buys teacher image embeddings in rounds
(:func:`distill.labelfree.rounds.harvest_rounds`: round 1 random, later rounds picked by the student
trained on what was bought). Then a final student is trained on the bought images only:

- label-free: soft targets = the teacher's zero-shot probabilities (no human label used);
- labelled: the same plus cross-entropy on the images' true labels;
- with ``--self-train``, also label-free with self-training on the unbought pool images
  (:func:`distill.labelfree.selftrain.self_train`: their pixels are free, only the teacher
  costs), reported as the strategy ``<strategy>+self-train``.

It is evaluated on the OOD domains (never bought, never trained on). The dollars are what
the client's Budget settled: the local server's real bill ($0.0001 per image).

    .venv/bin/python benchmarks/budget_curve.py --quick   # ~10-15 min on 2 cores
    .venv/bin/python benchmarks/budget_curve.py           # 30/class, 200 steps: ~30-45 min
    .venv/bin/python benchmarks/budget_curve.py --tiny --seeds 1 --no-docs  # smoke test

Writes runs/budget_curve/results.json, docs/budget_curve.png and the "## Budget curve"
section of docs/results.md (between its markers; numbers only from this run), which states
the issue-12 goal (:data:`GOAL`) as met or not, computed from the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "budget-curve-local-token"
STRATEGIES = ("random", "uncertainty", "coreset")
SECTION = "## Budget curve"
START = "<!-- budget_curve:start -->"
END = "<!-- budget_curve:end -->"
GOAL = (
    "Budget curve: some selection reaches the accuracy of buying every image at half the "
    "spend (labelled and label-free)"
)


def budget_fractions(text: str) -> list[float]:
    """argparse type of --fractions: numbers above 0 and at most 1 (1 = every image)."""
    values = [float(x) for x in text.split(",")]
    bad = [x for x in values if not 0 < x <= 1]
    if bad:
        raise argparse.ArgumentTypeError(
            f"each fraction must be above 0 and at most 1, not {', '.join(map(str, bad))}")
    return values


def share(text: str) -> float:
    """argparse type of --average: a number from 0 to 1."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, not {text}")
    return value


def _args() -> argparse.Namespace:
    from benchmarks.adip_table import count, non_negative

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small pool and few steps (~15 min)")
    p.add_argument("--tiny", action="store_true", help="a smoke test: 3 images per class, "
                   "a 3-step teacher, a random-init small student, a few steps (numbers mean "
                   "nothing; use with --no-docs)")
    p.add_argument("--seeds", type=count, default=3)
    p.add_argument("--first-seed", type=non_negative, default=0,
                   help="seeds are FIRST_SEED .. FIRST_SEED + SEEDS - 1 (default 0): more "
                   "seeds for an earlier run, or one run split over processes")
    p.add_argument("--self-train", action="store_true",
                   help="add label-free students self-trained on the unbought pool images")
    p.add_argument("--average", type=share, default=0.0, metavar="F",
                   help="final students: average the weights of the last F of the steps "
                   "(train_student's average; default 0: the last step's weights)")
    p.add_argument("--final-steps", type=count, metavar="N",
                   help="steps of the final students (default: the mode's)")
    p.add_argument("--strategies", type=lambda t: t.split(","),
                   help=f"selections below the full budget, comma-separated (default: "
                   f"{','.join(STRATEGIES)})")
    p.add_argument("--fractions", type=budget_fractions,
                   help="budget fractions, comma-separated (default: the mode's)")
    p.add_argument("--threads", type=count, default=2, help="torch threads (default: 2)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "budget_curve",
                   help="results.json goes here; the teacher is fitted under OUT/teacher")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    return p.parse_args()


def settings(quick: bool, tiny: bool = False) -> dict[str, Any]:
    if tiny:  # a smoke test of the script: a random-init small student, a 3-step teacher
        return {
            "per_class": 3, "size": 32, "fractions": [0.5, 1.0], "rounds": 2,
            "round_steps": 2, "final_steps": 3, "student": "mobilenetv3_small_100",
            "teacher_steps": 3,
        }  # fmt: skip
    if quick:
        return {
            "per_class": 10, "size": 32, "fractions": [0.25, 0.5, 1.0], "rounds": 3,
            "round_steps": 15, "final_steps": 60, "student": "tf_efficientnet_lite0",
        }  # fmt: skip
    return {
        "per_class": 30, "size": 32, "fractions": [0.125, 0.25, 0.5, 1.0], "rounds": 4,
        "round_steps": 40, "final_steps": 200, "student": "tf_efficientnet_lite0",
    }  # fmt: skip


async def run_one(
    pool: Any, url: str, teacher: str, cfg: dict[str, Any], strategy: str, fraction: float,
    seed: int, workdir: Path,
) -> dict[str, Any]:  # fmt: skip
    """One budgeted selection run; returns the bought ids and the dollars spent."""
    from cache import MemoryCache
    from distill.labelfree.rounds import harvest_rounds
    from vlmclient import Budget, TeacherClient

    per_image = Decimal("0.0001")
    # The prompts' tokens cost a few millionths of a dollar: add them to the cap.
    cap = per_image * round(fraction * len(pool.samples)) + Decimal("0.00001")
    client = TeacherClient(teacher, base_url=url, budget=Budget(cap), cache=MemoryCache())
    async with client:
        res = await harvest_rounds(
            pool, client, cache_dir=workdir / f"{strategy}-{fraction}-{seed}", strategy=strategy,
            rounds=cfg["rounds"], round_steps=cfg["round_steps"], student=cfg["student"],
            pretrained=True, image_size=cfg["size"], seed=seed,
        )  # fmt: skip
    return {"bought": res.bought_ids, "spent": res.spent_usd, "cap": cap}


def main() -> int:
    args = _args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch
    from digits_teacher import digits_benchmark, teacher_record
    from pydantic import SecretStr

    from distill.data import scan
    from distill.labelfree.pseudolabel import embedding_labels
    from distill.labelfree.rounds import load_pixels, predict_probs, train_student
    from distill.labelfree.selftrain import self_train
    from distill.server import ServerConfig, ServerThread, create_app, make_backend
    from vlmclient import Budget, TeacherClient

    torch.set_num_threads(args.threads)
    cfg = settings(args.quick, args.tiny)
    if args.fractions:
        cfg["fractions"] = sorted(args.fractions)
    cfg["self_train"] = args.self_train
    cfg["average"] = args.average
    if args.final_steps is not None:
        cfg["final_steps"] = args.final_steps
    if args.strategies:
        unknown = sorted(set(args.strategies) - set(STRATEGIES))
        if unknown:
            sys.exit(f"budget_curve: unknown strategies {unknown}; known: {list(STRATEGIES)}")
    cfg["strategies"] = [s for s in STRATEGIES if s in (args.strategies or STRATEGIES)]
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    root, weights, manifest, overlap, teacher = digits_benchmark(
        args.out, cfg["per_class"], cfg["size"], "budget-curve-", cfg.get("teacher_steps"))
    work = root.parent
    data = scan(root)
    train_domains, ood_domains = ("upright", "colour"), ("inverted", "rotated")
    pool, ood = data.in_domains(train_domains), data.in_domains(ood_domains)
    os.environ["VLM_DISTILL_TEACHER_TOKEN"] = TOKEN
    rows: list[dict[str, Any]] = []
    backend = make_backend("mini-clip", weights=weights)
    torch.set_num_threads(args.threads)  # the backend sets its own count, process-wide
    with ServerThread(create_app(ServerConfig(token=SecretStr(TOKEN)), backend)) as server:
        # Every pool embedding once (to train the final students from what each run bought)
        # and the OOD teacher zero-shot accuracy for reference; separate, unlimited client.
        async def everything() -> tuple[Any, Any]:
            async with TeacherClient(teacher, base_url=server.base_url, budget=Budget()) as c:
                _, zp = await embedding_labels(pool, c, pool.class_names)
                ol, _ = await embedding_labels(ood, c, ood.class_names)
                return zp, ol

        pool_probs, ood_labels = asyncio.run(everything())
        teacher_ood = float(np.mean([
            lb.label == s.label for lb, s in zip(ood_labels, ood.samples, strict=True)
        ]))  # fmt: skip
        print(f"pool {len(pool.samples)} images, OOD {len(ood.samples)}; "
              f"teacher zero-shot OOD acc {teacher_ood:.3f}", flush=True)
        row_of = {s.id: i for i, s in enumerate(pool.samples)}
        pool_px = load_pixels(pool, cfg["size"])
        ood_px = load_pixels(ood, cfg["size"])
        pool_y = [int(s.label) for s in pool.samples]  # type: ignore[arg-type]
        ood_y = np.array([s.label for s in ood.samples])

        def ood_acc(model: Any) -> float:
            return float(np.mean(predict_probs(model, ood_px).argmax(1) == ood_y))

        def final_student(bought: list[str], labelled: bool, seed: int) -> Any:
            idx = [row_of[i] for i in bought]
            return train_student(
                pool_px[idx], pool_probs[idx],
                labels=[pool_y[i] for i in idx] if labelled else None,
                steps=cfg["final_steps"], student=cfg["student"], pretrained=True, seed=seed,
                average=cfg["average"],
            )  # fmt: skip

        def self_trained(bought: list[str], seed: int, first: Any) -> tuple[float, int, int]:
            """``first``: the label-free final student of the same images and seed. Returns
            the OOD accuracy, the self-labelled images and how many of their labels are
            right (the pool's true labels: for the record only, training never sees them)."""
            idx = [row_of[i] for i in bought]
            free = sorted(set(range(len(pool.samples))) - set(idx))
            out = self_train(pool_px[idx], pool_probs[idx], pool_px[free], first=first,
                             steps=cfg["final_steps"], student=cfg["student"],
                             pretrained=True, seed=seed,
                             average=cfg["average"])  # fmt: skip
            right = sum(pool_y[free[k]] == int(y)
                        for k, y in zip(out.kept, out.pseudo_labels, strict=True))
            return ood_acc(out.student), out.added, right

        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for fraction in cfg["fractions"]:
                for strategy in cfg["strategies"] if fraction < 1.0 else ("random",):
                    r = asyncio.run(run_one(
                        pool, server.base_url, teacher, cfg, strategy, fraction, seed, work
                    ))  # fmt: skip
                    assert r["spent"] <= r["cap"], "the budget was exceeded"
                    kinds = ["label-free", "labelled"]
                    if cfg["self_train"] and fraction < 1.0:
                        kinds.append("self-train")
                    label_free = None  # the label-free student: self-training's first
                    for kind in kinds:
                        added = right = None
                        if kind == "self-train":
                            acc, added, right = self_trained(r["bought"], seed, label_free)
                        else:
                            model = final_student(r["bought"], kind == "labelled", seed)
                            label_free = model if kind == "label-free" else label_free
                            acc = ood_acc(model)
                        name = strategy if fraction < 1.0 else "all"
                        row = {
                            "seed": seed, "fraction": fraction,
                            "strategy": f"{name}+self-train" if added is not None else name,
                            "labels": "labelled" if kind == "labelled" else "label-free",
                            "images": len(r["bought"]), "spent_usd": str(r["spent"]),
                            "cap_usd": str(r["cap"]), "ood_acc": acc,
                        }  # fmt: skip
                        if added is not None:
                            row["self_labelled"] = added
                            row["self_labels_right"] = right
                        rows.append(row)
                        print(json.dumps(row), f"[{time.time() - t0:.0f}s]", flush=True)
    backend.close()
    result = {
        "settings": cfg, "quick": args.quick, "tiny": args.tiny, "seeds": args.seeds,
        "first_seed": args.first_seed,
        "threads": args.threads, "train_domains": train_domains, "ood_domains": ood_domains,
        "pool_images": len(pool.samples), "ood_images": len(ood.samples),
        "teacher": teacher_record(teacher, weights, manifest, overlap),
        "teacher_zeroshot_ood_acc": teacher_ood, "rows": rows,
        "seconds": round(time.time() - t0),
        "cpu_seconds": round(time.process_time()),
    }  # fmt: skip
    result["goal"] = goal(summarise(rows))
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(" ".join(reading(result, summarise(rows))), flush=True)
    if not args.no_docs:
        write_docs(result)
    print(f"done in {time.time() - t0:.0f}s", flush=True)
    return 0


def summarise(rows: list[dict[str, Any]]) -> dict[tuple[str, str, float], dict[str, float]]:
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["labels"], r["strategy"], r["fraction"]), []).append(r)
    out = {}
    for key, g in groups.items():
        accs = [r["ood_acc"] for r in g]
        out[key] = {
            "mean": statistics.mean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "usd": statistics.mean(float(r["spent_usd"]) for r in g),
            "images": statistics.mean(r["images"] for r in g),
            "n": len(g),
        }
    return out


def goal(s: dict[tuple[str, str, float], dict[str, float]]) -> dict[str, Any]:
    """The issue-12 goal (:data:`GOAL`) computed from the summary: for label-free and for
    labelled, does some selection at half the spend reach (mean >= ) the mean accuracy of
    buying every image? ``met`` is None when a setting lacks the 0.5 or the 1.0 fraction."""
    out: dict[str, Any] = {"goal": GOAL}
    verdicts: list[bool | None] = []
    for labels in ("label-free", "labelled"):
        full = s.get((labels, "all", 1.0))
        half = {k[1]: v for k, v in s.items() if k[0] == labels and k[2] == 0.5}
        if full is None or not half:
            out[labels] = None
            verdicts.append(None)
            continue
        best = max(sorted(half), key=lambda n: half[n]["mean"])
        reached = [n for n in sorted(half) if half[n]["mean"] >= full["mean"]]
        out[labels] = {
            "all": full["mean"], "all_std": full["std"], "best_at_half": best,
            "best_at_half_acc": half[best]["mean"], "best_at_half_std": half[best]["std"],
            "reached_by": reached,
        }
        verdicts.append(bool(reached))
    out["met"] = None if None in verdicts else all(verdicts)
    return out


def reading(result: dict[str, Any], s: dict[tuple[str, str, float], dict[str, float]]) -> list[str]:
    """Sentences computed from the numbers (so a re-run rewrites them with its own)."""
    chance = 1 / 10  # ten digit classes
    g = goal(s)
    verdict = {True: "**met**", False: "**not met**", None: "**not measured**"}[g["met"]]
    out = [
        f"Reading (computed): chance is {chance:.2f}; the teacher's zero-shot OOD accuracy is "
        f"{result['teacher_zeroshot_ood_acc']:.3f}.",
        "",
        f"Goal (issue 12): \"{GOAL}\": {verdict}.",
    ]
    for labels in ("label-free", "labelled"):
        gl = g[labels]
        if gl is None:
            out.append(f"{labels}: not measured (no 0.5 or no 1.0 budget fraction in this run).")
            continue
        half = [v["std"] for k, v in s.items() if k[0] == labels and k[2] == 0.5]
        reached = gl["reached_by"]
        out.append(
            f"{labels}: buying every image gives {gl['all']:.3f} ± {gl['all_std']:.3f}; at half "
            f"the spend the best selection is {gl['best_at_half']} with "
            f"{gl['best_at_half_acc']:.3f} ± {gl['best_at_half_std']:.3f}, so "
            + (f"{', '.join(reached)} reach{'es' if len(reached) == 1 else ''} it"
               if reached else "no selection reaches it")
            + f"; spreads across seeds at half the spend are {min(half):.3f}-{max(half):.3f}"
            + ", so differences smaller than that are noise"
            + (
                "; every mean here is within noise of chance: this comparison shows nothing."
                if max(v["mean"] for k, v in s.items() if k[0] == labels)
                <= chance + max([*half, gl["all_std"]])
                else "."
            )
        )
    out += self_label_lines(result["rows"])
    out.append("")
    return out


def self_label_lines(rows: list[dict[str, Any]]) -> list[str]:
    """How right the self-given labels were, per selection (rows that recorded it)."""
    tally: dict[str, list[int]] = {}
    for r in rows:
        if r.get("self_labels_right") is not None:
            t = tally.setdefault(r["strategy"], [0, 0, 0])
            t[0] += r["self_labels_right"]
            t[1] += r["self_labelled"]
            t[2] += 1
    if not tally:
        return []
    parts = [
        f"{name} {right} of {given} ({right / given:.1%}, {n} runs)" if given
        else f"{name} none given ({n} runs)"
        for name, (right, given, n) in sorted(tally.items())
    ]  # fmt: skip
    return [f"Self-given labels that are right (true labels, never used in training): "
            f"{'; '.join(parts)}."]  # fmt: skip


def command_flags(result: dict[str, Any]) -> str:
    """The flags of the run that made ``result`` (for the docs' "Produced by")."""
    flags = [f for f in ("quick", "tiny") if result.get(f)]
    out = "".join(f" --{f}" for f in flags)
    if result["settings"].get("self_train"):
        out += " --self-train"
    if result["settings"].get("average"):
        out += f" --average {result['settings']['average']:g}"
    default_cfg = settings(bool(result.get("quick")), bool(result.get("tiny")))
    default = default_cfg["fractions"]
    if result["settings"]["final_steps"] != default_cfg["final_steps"]:
        out += f" --final-steps {result['settings']['final_steps']}"
    if result["settings"].get("strategies", list(STRATEGIES)) != list(STRATEGIES):
        out += " --strategies " + ",".join(result["settings"]["strategies"])
    if result["settings"]["fractions"] != default:
        out += " --fractions " + ",".join(f"{f:g}" for f in result["settings"]["fractions"])
    if result.get("threads", 2) != 2:
        out += f" --threads {result['threads']}"
    if result.get("first_seed"):
        out += f" --first-seed {result['first_seed']}"
    return out + (f" --seeds {result['seeds']}" if result["seeds"] != 3 else "")


def write_docs(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarise(result["rows"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, labels in zip(axes, ("label-free", "labelled"), strict=True):
        full = s.get((labels, "all", 1.0))
        for strategy in sorted({k[1] for k in s if k[0] == labels and k[1] != "all"}):
            pts = sorted((k[2], v) for k, v in s.items() if k[0] == labels and k[1] == strategy)
            if full is not None:
                pts.append((1.0, full))
            xs = [v["usd"] for _, v in pts]
            ax.errorbar(xs, [v["mean"] for _, v in pts], yerr=[v["std"] for _, v in pts],
                        marker="o", capsize=3, label=strategy)  # fmt: skip
        ax.axhline(result["teacher_zeroshot_ood_acc"], ls="--", c="grey", label="teacher")
        ax.set_title(labels)
        ax.set_xlabel("dollars spent")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("OOD accuracy")
    axes[0].legend()
    fig.tight_layout()
    docs = ROOT / "docs"
    fig.savefig(docs / "budget_curve.png", dpi=110)
    cfg = result["settings"]
    tch = result["teacher"]
    lines = [
        SECTION,
        START,
        "",
        f"Produced by `benchmarks/budget_curve.py{command_flags(result)}` "
        f"({result['seconds']} s wall, {result['cpu_seconds']} s CPU, torch threads: "
        f"{result['threads']}). Digits (scikit-learn), {cfg['size']} px; "
        f"pool = {', '.join(result['train_domains'])} ({result['pool_images']} images), "
        f"OOD = {', '.join(result['ood_domains'])} ({result['ood_images']} images). "
        f"Teacher `{tch['name']}`: the mini-clip digits teacher (a small CNN fitted into the "
        f"frozen MiniLM text space, {tch['steps']} steps, on {tch['pool_images']} "
        "scikit-learn digits that this benchmark does not deal out: checked by content hash, "
        f"{tch['pool_shares_with_benchmark']} shared; "
        "see \"How the mini-clip teacher was made\" below), served on 127.0.0.1 at $0.0001 "
        "per image; its zero-shot OOD accuracy through the HTTP API is "
        f"{result['teacher_zeroshot_ood_acc']:.3f}. Student {cfg['student']} (packaged "
        "ImageNet weights, trained by `distill.labelfree.rounds.train_student`: BatchNorm "
        "frozen, Adam at lr 5e-4 after a warm-up over a tenth of the steps, each batch "
        "augmented by the views' recipe without flip"
        + (f"; the final students' weights are the mean of the weights after each of their "
           f"last {cfg['average']:g} of the steps, `average={cfg['average']:g}`"
           if cfg.get("average") else "")
        + "), "
        f"{cfg['rounds']} selection rounds with {cfg['round_steps']} "
        f"steps between rounds, {cfg['final_steps']} final steps; "
        f"mean ± std over {result['seeds']} seeds. `all` = every pool image bought."
        + (" `+self-train`: label-free, then self-trained on the pool images the budget did "
           "not buy (`distill.labelfree.selftrain.self_train`: a first student trained on "
           "the teacher's targets labels them, the ones it gives a top probability of at "
           "least 0.9 join the bought ones with that label, and a fresh student of the same "
           "recipe trains on both; no teacher call and no human label for them)."
           if cfg.get("self_train") else ""),
        "",
        "| labels | selection | budget fraction | images | spent (USD) | OOD accuracy |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (labels, strategy, fraction), v in sorted(s.items(), key=lambda kv: (kv[0][0],
                                                  kv[0][2], kv[0][1])):  # fmt: skip
        lines.append(
            f"| {labels} | {strategy} | {fraction:g} | {v['images']:.0f} | {v['usd']:.4f} | "
            f"{v['mean']:.3f} ± {v['std']:.3f} |"
        )
    lines += ["", "![budget curve](budget_curve.png)", ""]
    lines += reading(result, s)
    lines.append(END)
    from docs_section import replace_section

    replace_section(docs / "results.md", START, END, "\n".join(lines) + "\n", "Results")


if __name__ == "__main__":
    sys.exit(main())

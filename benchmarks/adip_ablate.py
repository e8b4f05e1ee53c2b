"""Ablations of the ADiP trainer: one change at a time against a base config, several seeds.

Trains from an already harvested cache (run the demo or `vlm-distill harvest` first), so it
never calls a teacher. Each variant is the base TrainConfig plus the overrides named on the
command line; every run is kept under WORK/<variant>-s<seed> and reused when it was made
against the same teacher with the same settings (else it is deleted and trained again).

    .venv/bin/python benchmarks/adip_ablate.py DATA --cache CACHE --teacher local:mini-clip \\
        --test-domains rotated --seeds 3 \\
        --variant base --variant 'bn-train:freeze_bn=false' --variant 'lr5e-4:lr=5e-4' \\
        --variant 'erm:method=erm' --variant 'kd:method=kd'

Prints a table (mean ± std of ID and OOD accuracy over seeds) and writes WORK/ablate.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'name:key=value,key=value' -> (name, overrides); values are JSON when they parse."""
    name, _, rest = text.partition(":")
    overrides: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, _, raw = part.partition("=")
        try:
            overrides[key.strip()] = json.loads(raw)
        except ValueError:
            overrides[key.strip()] = raw
    return name, overrides


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    m = 100 * statistics.mean(values)
    return f"{m:.1f}" if len(values) < 2 else f"{m:.1f} ± {100 * statistics.stdev(values):.1f}"


def check_variants(ap: argparse.ArgumentParser, args: argparse.Namespace,
                   variants: list[tuple[str, dict[str, Any]]], base: dict[str, Any]) -> None:
    """Exit 2 unless every variant makes a valid TrainConfig under its own name: found
    before the first one trains, not after the ones before it did (hours)."""
    from pydantic import ValidationError

    from distill.train.config import TrainConfig

    names = [name for name, _ in variants]
    for name in names:
        if names.count(name) > 1:  # one WORK/<name>-s<seed> for both: each deletes the other's
            ap.error(f"--variant {name!r} is named twice; give each variant its own name")
    for name, overrides in variants:
        try:
            TrainConfig(data=str(args.data), cache=str(args.cache), teacher=args.teacher,
                        out=str(args.work / f"{name}-s0"), test_domains=tuple(args.test_domains),
                        threads=args.threads, **{**base, **overrides})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "(the config)"
            ap.error(f"--variant {name}: {where}: {first['msg']}")


def main() -> None:
    from benchmarks.adip_table import count

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--test-domains", nargs="+", required=True)
    ap.add_argument("--seeds", type=count, default=3)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "ablate")
    ap.add_argument("--base", default="", help="overrides of every variant: key=value,...")
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from benchmarks.adip_table import finished_run
    from distill.train.config import TrainConfig
    from distill.train.trainer import train

    torch.set_num_threads(args.threads)
    _, base = parse_variant(":" + args.base)
    variants = [parse_variant(text) for text in args.variant]
    check_variants(ap, args, variants, base)
    rows: dict[str, Any] = {}
    for name, overrides in variants:
        ids: list[float] = []
        oods: list[float] = []
        notes: list[Any] = []
        for seed in range(args.seeds):
            out = args.work / f"{name}-s{seed}"
            settings: dict[str, Any] = {
                "test_domains": tuple(args.test_domains), "seed": seed,
                "threads": args.threads, **base, **overrides,
            }
            found = finished_run(out, args.teacher, settings)
            if found is not None:
                m = found
            else:
                fields: dict[str, Any] = {
                    "data": str(args.data), "cache": str(args.cache), "teacher": args.teacher,
                    "out": str(out), **settings, "resume": (out / "checkpoint").exists(),
                }
                t = time.time()
                m = train(TrainConfig(**fields))
                print(f"{name} seed {seed}: ID {m['mean_id']:.3f} OOD {m['mean_ood']:.3f} "
                      f"({time.time() - t:.0f} s)", flush=True)
            ids.append(m["mean_id"])
            oods.append(m["mean_ood"])
            notes.append(m.get("stages"))
        rows[name] = {"overrides": overrides, "id": ids, "ood": oods, "stages": notes}
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "ablate.json").write_text(json.dumps({"base": base, "rows": rows}, indent=2,
                                                      default=str))
    print("\n| variant | overrides | ID | OOD |\n|---|---|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['overrides'] or '-'} | {fmt(r['id'])} | {fmt(r['ood'])} |")


if __name__ == "__main__":
    main()

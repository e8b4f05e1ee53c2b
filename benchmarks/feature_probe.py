"""What trained students' features hold about the held-out domain (no training of students).

For each finished run folder (``vlm-distill train`` / ``adip_ablate.py``), on the target
domains' images (view 0):

- ``head``: the run's own accuracy (its linear head, or ADiP's cos(P·f, T_c));
- ``probe``: a linear probe on the pooled backbone features f, fitted and scored on the
  target domain itself (5-fold cross-validated logistic regression): how much of the
  class the features still separate there, whatever the head does; ``probe10``: the same
  probe fitted on 10 target images per class (fewer when a class has fewer than 11) and
  scored on the rest (mean of 5 draws), which separates students where the full probe
  saturates;
- ``centroid``: nearest class mean of f, the means taken on the source domains' held-out
  images: whether the source's class geometry carries over without any target label;
- for ADiP runs, ``cos(z,T_y)`` and ``cos(z,I)``: the target images' projected features z = P·f
  against their class prompt and against the teacher's own embedding of the same image
  (when the store holds the target images).

A probe well above ``head`` means the features separate the classes but the head (the
frozen P and the prompts, for ADiP) reads them wrong on the new domain.

    .venv/bin/python benchmarks/feature_probe.py DATA RUN... [--store STORE] [--threads 2]
    # e.g. runs/mnist-geom/mnist runs/ablate-mnist-imgtgt/{erm,adip,adip-lam0}-s{0,1,2,3,4}

``--pretrained NAME`` adds the packaged ImageNet backbone before any training as a baseline
(probe and centroid only; it has no head), at the first run's image size.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def features(student: Any, info: dict[str, Any], samples: list[Any]) -> dict[str, np.ndarray]:
    """Pooled features, logits and (ADiP) projected embeddings of view 0 of ``samples``."""
    import torch

    from distill.data.loaders import eval_loader
    from distill.train.evaluate import to_input

    out: dict[str, list[np.ndarray]] = {"f": [], "logits": [], "z": []}
    loader = eval_loader(samples, image_size=info["image_size"], batch_size=256)
    with torch.no_grad():
        for batch in loader:
            x = to_input(batch["image"], info["mean"], info["std"])
            f = student(x, output="features")
            out["f"].append(f.numpy())
            out["logits"].append(student.logits(f).numpy())
            if student.proj is not None:
                out["z"].append(student.embedding(f).numpy())
    return {k: np.concatenate(v) for k, v in out.items() if v}


def _probe() -> Any:
    """The linear probe: a logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))


def probe_accuracy(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """5-fold cross-validated accuracy of the probe (fewer folds for a class under 5)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    clf = _probe()
    folds = StratifiedKFold(n_splits=min(5, int(np.bincount(y).min())), shuffle=True,
                            random_state=seed)
    return float(np.mean(cross_val_score(clf, x, y, cv=folds)))


def few_shot_probe(x: np.ndarray, y: np.ndarray, shots: int = 10, draws: int = 5) -> float:
    """The probe fitted on ``shots`` images per class, scored on the rest; mean of draws."""
    shots = min(shots, int(np.bincount(y).min()) - 1)  # leave each class one to score
    accs = []
    for d in range(draws):
        rng = np.random.default_rng(d)
        train = np.concatenate([rng.choice(np.flatnonzero(y == c), shots, replace=False)
                                for c in np.unique(y)])
        test = np.setdiff1d(np.arange(len(y)), train)
        clf = _probe()
        clf.fit(x[train], y[train])
        accs.append(float(np.mean(clf.predict(x[test]) == y[test])))
    return float(np.mean(accs))


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def centroid_accuracy(src: np.ndarray, src_y: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Nearest class mean (cosine) with the means of the source features."""
    classes = np.unique(src_y)
    means = unit(np.stack([src[src_y == c].mean(0) for c in classes]))
    return float(np.mean(classes[(unit(x) @ means.T).argmax(1)] == y))


def measure(student: Any, info: dict[str, Any], data: Any, store: Any) -> dict[str, Any]:
    from distill.data import split_sources

    target = [s for s in data.samples if s.domain in info["test_domains"]]
    _, held = split_sources(data.samples, info["train_domains"],
                            fraction=info["holdout_fraction"],
                            seed=info.get("split_seed", info["seed"]))
    y = np.array([s.label for s in target])
    sy = np.array([s.label for s in held])
    t, s = features(student, info, target), features(student, info, list(held))
    row: dict[str, Any] = {
        "head": float(np.mean(t["logits"].argmax(1) == y)) if info["method"] != "none" else None,
        "probe": probe_accuracy(t["f"], y),
        "probe10": few_shot_probe(t["f"], y),
        "centroid": centroid_accuracy(s["f"], sy, t["f"], y),
    }
    if "z" in t and store is not None:
        text = unit(np.asarray(store.text_embeddings, dtype=np.float32))
        z = unit(t["z"])
        row["cos(z,T_y)"] = float(np.mean(np.sum(z * text[y], 1)))
        have = set(store.image_ids)
        keep = [i for i, smp in enumerate(target) if smp.id in have]
        if keep:
            img = unit(store.gather(store.rows_of([target[i].id for i in keep]), 0))
            row["cos(z,I)"] = float(np.mean(np.sum(z[keep] * img, 1)))
    return row


def main() -> None:
    import torch

    from cache.store import EmbeddingStore
    from distill.data import scan
    from distill.train.evaluate import load_run_student

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="the dataset folder the runs were trained on")
    ap.add_argument("runs", type=Path, nargs="+", help="finished run folders")
    ap.add_argument("--store", type=Path, help="the teacher's embedding store (for cos(z,I))")
    ap.add_argument("--pretrained", metavar="NAME", help="add this packaged backbone untrained")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = scan(args.data)
    store = EmbeddingStore.open(args.store) if args.store else None
    groups: dict[str, list[dict[str, Any]]] = {}
    jobs: list[tuple[str, Any, dict[str, Any]]] = []
    if args.pretrained:
        from distill.train.student import build_student, norm_stats

        info = json.loads((args.runs[0] / "run.json").read_text("utf-8"))
        student = build_student(args.pretrained, method="erm",
                                num_classes=len(info["class_names"]), pretrained=True).eval()
        mean, std = norm_stats(student.backbone)
        jobs.append((f"{args.pretrained} untrained", student,
                     {**info, "method": "none", "mean": mean, "std": std}))
    for run in args.runs:
        jobs.append((run.name, *load_run_student(run)))
    for name, student, info in jobs:
        row = {k: v for k, v in measure(student, info, data, store).items() if v is not None}
        groups.setdefault(re.sub(r"-s\d+$", "", name), []).append(row)
        print(name, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    keys = ["head", "probe", "probe10", "centroid", "cos(z,T_y)", "cos(z,I)"]
    print("\n| run | n | " + " | ".join(keys) + " |")
    print("|---|---:|" + "---:|" * len(keys))
    for name, rows in groups.items():
        cells = []
        for k in keys:
            vals = [r[k] for r in rows if k in r]
            if not vals:
                cells.append("")
                continue
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            scale = 1 if k.startswith("cos") else 100
            fmt = "{:.1f} ± {:.1f}" if scale == 100 else "{:.3f} ± {:.3f}"
            cells.append(fmt.format(scale * statistics.mean(vals), scale * sd))
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

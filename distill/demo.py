"""The whole product on the embedded default, in one call.

Builds the bundled digits domains, fits the mini-clip teacher on the digits the demo does
not deal out (once: a second run loads it from the work folder), starts it on a free
loopback port (token-protected, stopped when harvesting ends), harvests K views of every
image under a simulated budget, trains the teacher zero-shot / ERM / KD / ADiP students
from the cache, and writes a run folder with the resolved config, the ledger, metrics and
plots. A second run reuses the cache and the teacher, and spends $0.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill.train.config import Method

from cache import read_ledger
from cache.layout import LEDGER_FILE

__all__ = ["METHOD_NAMES", "DemoConfig", "HarvestStopped", "demo_teacher_fitted", "run_demo"]

METHOD_NAMES = {"zeroshot": "teacher zero-shot", "erm": "ERM", "kd": "KD", "adip": "ADiP"}
TEST_DOMAIN = "rotated"  # the held-out (out-of-distribution) domain of the digits


class HarvestStopped(Exception):
    """The demo's harvest did not finish (a budget stop, a signal, an error it printed):
    nothing is trained; ``code`` is the harvest's exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"harvest exited with {code}")
        self.code = code


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path = Path("vlm-distill-demo")
    budget: Decimal = Decimal("0.50")  # --budget: cap on the demo cache's ledger, reruns included
    run_budget: Decimal | None = None  # --run-budget: cap on one run's harvest
    per_class: int = 20  # digits per class and domain: 4 domains x 10 classes x 20 = 800
    image_size: int = 32  # the digits' size on disk (what the teacher is shown)
    # --student-size: the student's input size (None: image_size). The loader resizes the
    # 32 px digits; at 64 px the frozen ImageNet features read them far better and every
    # student gains out of domain, at about twice the training time (docs/results.md).
    student_size: int | None = None
    student: str = "tf_efficientnet_lite0"
    steps_align: int = 150
    steps_distill: int = 250
    steps: int = 400  # ERM and KD
    # Small 32 px images: DomainBed trains its small-image datasets at 1e-3; at the paper's
    # 5e-5 a few hundred steps barely move the student (docs/results.md, ablations).
    lr: float = 5e-4
    # KD trains at ERM's lr, as in the official code (None: TrainConfig.lr). Without the
    # trainer's lr warm-up it once collapsed to one class here at 5e-4 and ran at lr × τ;
    # with the warm-up it trains at 5e-4 on every seed, and better than at lr × τ on the
    # demo and both ADiP-table benchmarks (docs/results.md).
    lr_kd: float | None = None
    eval_every: int = 100
    methods: tuple[Method, ...] = ("zeroshot", "erm", "kd", "adip")
    test_domains: tuple[str, ...] = (TEST_DOMAIN,)
    seed: int = 0
    # --seeds: train each student with seeds seed .. seed+seeds-1 and report mean ± std
    # (one seed's out-of-domain order is noise here: docs/results.md)
    seeds: int = 1
    backend: str = "mini-clip"
    views: int = 4  # teacher views per image (view 0 + 3 seeded augmentations)
    teacher_steps: int | None = None  # mini-clip fitting steps (None: its default)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, (Path, Decimal)) else v) for k, v in asdict(self).items()
        }


def run_demo(
    cfg: DemoConfig,
    *,
    harvest: Callable[[list[str]], int],
    on_method: Callable[[str], Any] | None = None,
    progress_factory: Callable[[str], Any] | None = None,
    teacher_waiting: Callable[[], Any] | None = None,
    teacher_fitting: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Run the demo; ``harvest`` runs the harvest command (the CLI passes its own ``main``).
    ``teacher_waiting`` is called when another demo in the work folder is fitting the
    teacher: this one waits for that fit and loads its teacher; ``teacher_fitting`` when
    this one fits it."""
    import torch
    from pydantic import SecretStr

    from distill.server import ServerConfig, ServerThread, create_app, make_backend
    from distill.train.config import TrainConfig
    from distill.train.trainer import train

    work = cfg.workdir
    data = work / "data" / "digits"
    cache = work / "cache"
    run = new_run_folder(work / "runs")
    (run / "config.json").write_text(
        json.dumps({**cfg.to_json(), "cache": str(cache)}, indent=2) + "\n"
    )
    ensure_demo_data(data, cfg)

    weights = (fit_demo_teacher(work, cfg, waiting=teacher_waiting, fitting=teacher_fitting)
               if cfg.backend == "mini-clip" else None)
    # A fitted teacher is harvested under a name that holds its weights' hash, so a refit
    # never reads an earlier fit's cached embeddings.
    teacher = f"local:{cfg.backend}"
    if weights is not None:
        from distill.teacher.miniclip import teacher_name

        teacher = teacher_name(weights)
    token = secrets.token_urlsafe(24)
    old_token = os.environ.get("VLM_DISTILL_TEACHER_TOKEN")
    os.environ["VLM_DISTILL_TEACHER_TOKEN"] = token
    t0 = time.time()
    # The backend sets torch's process-wide thread count for its own inference; the
    # students train afterwards with what the caller had, not the teacher's setting.
    threads = torch.get_num_threads()
    backend = None
    try:
        backend = make_backend(cfg.backend, weights=weights)
        with ServerThread(create_app(ServerConfig(token=SecretStr(token)), backend)) as server:
            code = harvest(
                [
                    "harvest",
                    str(data),
                    "--teacher",
                    teacher,
                    "--base-url",
                    server.base_url,
                    "--cache",
                    str(cache),
                    "--budget",
                    str(cfg.budget),
                    "--views",
                    str(cfg.views),
                    # The server listens on a new free port each run, and a non-default
                    # endpoint is part of every cache key: name the endpoint instead, so a
                    # second run finds what the first bought. The teacher's name already
                    # holds its weights' hash.
                    "--cache-namespace",
                    "vlm-distill-demo",
                    *([] if cfg.run_budget is None else ["--run-budget", str(cfg.run_budget)]),
                ]
            )
    finally:
        if backend is not None:
            backend.close()  # no inference call left running when the students train
        torch.set_num_threads(threads)
        if old_token is None:
            os.environ.pop("VLM_DISTILL_TEACHER_TOKEN", None)
        else:
            os.environ["VLM_DISTILL_TEACHER_TOKEN"] = old_token
    harvest_s = time.time() - t0
    if code != 0:
        raise HarvestStopped(code)

    results: dict[str, Any] = {}  # method -> the first seed's result (plots, tables)
    per_seed: dict[str, list[dict[str, Any]]] = {}
    folders: dict[str, Path] = {}
    for method in cfg.methods:
        if on_method is not None:
            on_method(method)
        # the teacher's zero-shot accuracy does not depend on the seed
        seeds = [cfg.seed + k for k in range(1 if method == "zeroshot" else cfg.seeds)]
        runs = []
        for seed in seeds:
            out = run / method if len(seeds) == 1 else run / f"{method}-s{seed}"
            folders.setdefault(method, out)
            tc = TrainConfig(
                data=str(data),
                cache=str(cache),
                teacher=teacher,
                out=str(out),
                method=method,
                student=cfg.student,
                image_size=cfg.student_size or cfg.image_size,
                steps_align=cfg.steps_align,
                steps_distill=cfg.steps_distill,
                steps=cfg.steps,
                lr=cfg.lr,
                lr_kd=cfg.lr_kd,
                eval_every=cfg.eval_every,
                test_domains=cfg.test_domains,
                seed=seed,
            )
            label = method if len(seeds) == 1 else f"{method} s{seed}"
            hook = progress_factory(label) if progress_factory is not None else None
            runs.append({**train(tc, progress=hook), "seed": seed})
            if hook is not None and hasattr(hook, "close"):
                hook.close()
        results[method] = runs[0]
        per_seed[method] = runs

    shutil.copyfile(cache / LEDGER_FILE, run / LEDGER_FILE)
    summary = {
        "harvest_s": round(harvest_s, 1),
        "methods": {m: method_summary(runs) for m, runs in per_seed.items()},
    }
    (run / "metrics.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    plots = _plots(run, results, folders, cfg.budget)
    return {"run": run, "cache": cache, "data": data, "results": results, "plots": plots, **summary}


def ensure_demo_data(data: Path, cfg: DemoConfig) -> None:
    """The demo's digits at ``cfg``'s size, in ``data``: kept when an earlier run made them
    alike, made (again) otherwise. A run of another size (``--quick``, 8 a class, then the
    full 20) used to train on the earlier run's digits while its config.json said its own.
    The same digits are the same files, so the cache still has what was bought for them."""
    from distill.data import META_FILE, DataError
    from distill.data.digits import make_digits
    from distill.locks import held_lock

    def made() -> bool:
        try:
            meta = json.loads((data / META_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return False
        want = {"size": cfg.image_size, "per_class": cfg.per_class, "seed": cfg.seed}
        return isinstance(meta, dict) and all(meta.get(k) == v for k, v in want.items())

    # the lock `data make-digits` holds on the folder OUT goes in: a second demo on this
    # --workdir waits for the first to make the digits, then finds them made
    data.parent.mkdir(parents=True, exist_ok=True)
    with held_lock(data.parent):
        if made():
            return
        try:
            make_digits(data, size=cfg.image_size, per_class=cfg.per_class, seed=cfg.seed,
                        force=data.exists())  # fmt: skip
        except DataError:
            # Another demo in this folder made them meanwhile (where no lock can be
            # taken): "not empty; pass --force" named a flag the demo does not have.
            if not made():
                raise


def new_run_folder(runs: Path) -> Path:
    """A new folder under ``runs`` named by the time, never one another run has: a demo
    started in the same second as another wrote its files into the other's folder."""
    runs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1, 1000):
        run = runs / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            run.mkdir()
        except FileExistsError:
            continue
        return run
    raise FileExistsError(errno.EEXIST, "no free run folder name", str(runs / stamp))


def demo_teacher_fitted(work: Path, cfg: DemoConfig) -> Path | None:
    """The teacher :func:`fit_demo_teacher` will load from ``work/teacher``, or None when
    it will fit one (none yet, other ``--teacher-steps``, an edited or torn manifest)."""
    from distill.teacher.miniclip import fitted_teacher

    return fitted_teacher("digits", work / "teacher", seed=cfg.seed, steps=cfg.teacher_steps)


def fit_demo_teacher(
    work: Path, cfg: DemoConfig, *, waiting: Callable[[], Any] | None = None,
    fitting: Callable[[], Any] | None = None,
) -> Path:
    """The demo's mini-clip teacher: loaded from ``work/teacher`` or fitted there once
    (``fitting`` is called first; a demo started beside one fitting it calls ``waiting``
    and waits for that fit).

    Its pool is the scikit-learn digits the demo's data builder does not deal out (checked
    by content hash in the tests), so the teacher never saw a training or test image.
    """
    from distill.teacher.miniclip import ensure_teacher
    from distill.teacher.pool import PoolSpec

    # Cut against the largest demo (per_class 20): a --quick demo deals a subset of it.
    spec = PoolSpec(seed=cfg.seed, digits_per_class=max(cfg.per_class, 20))
    return ensure_teacher("digits", work / "teacher", seed=cfg.seed, steps=cfg.teacher_steps,
                          spec=spec, waiting=waiting, fitting=fitting)


def method_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's line of metrics.json: its one run's figures, or with several seeds the
    mean of theirs plus each seed's (``seeds``) and the standard deviations.

    >>> method_summary([{"seed": 0, "mean_id": 0.5, "mean_ood": 0.25, "wall_time_s": 2.0},
    ...                 {"seed": 1, "mean_id": 0.7, "mean_ood": 0.35, "wall_time_s": 3.0}])
    ... # doctest: +NORMALIZE_WHITESPACE
    {'mean_id': 0.6, 'mean_ood': 0.3, 'id': None, 'ood': None, 'wall_time_s': 5.0,
     'std_id': 0.141, 'std_ood': 0.071, 'seeds': [{'seed': 0, 'mean_id': 0.5,
     'mean_ood': 0.25}, {'seed': 1, 'mean_id': 0.7, 'mean_ood': 0.35}]}
    """
    import statistics

    first = runs[0]
    out: dict[str, Any] = {
        "mean_id": first.get("mean_id"),
        "mean_ood": first.get("mean_ood"),
        "id": first.get("id"),
        "ood": first.get("ood"),
        "wall_time_s": first.get("wall_time_s"),
    }
    if len(runs) == 1:
        return out
    ids = [float(r["mean_id"]) for r in runs]
    oods = [float(r["mean_ood"]) for r in runs]
    out.update(
        mean_id=round(statistics.mean(ids), 4),
        mean_ood=round(statistics.mean(oods), 4),
        id=None,  # per domain: see each seed's run folder
        ood=None,
        wall_time_s=sum(float(r.get("wall_time_s") or 0.0) for r in runs),
        std_id=round(statistics.stdev(ids), 3),
        std_ood=round(statistics.stdev(oods), 3),
        seeds=[
            {"seed": r.get("seed"), "mean_id": r["mean_id"], "mean_ood": r["mean_ood"]}
            for r in runs
        ],
    )
    return out


def _plots(
    run: Path, results: dict[str, Any], folders: dict[str, Path], budget: Decimal
) -> list[Path]:
    from distill.plots import plot_accuracy, plot_losses, plot_spend, plots_available

    if not plots_available():
        return []
    made = [
        plot_losses(
            {m: folders[m] / "log.jsonl" for m in results if m != "zeroshot"},
            run / "losses.png",
        ),
        plot_accuracy(
            {METHOD_NAMES.get(m, m): r for m, r in results.items()},
            run / "accuracy.png",
        ),
        plot_spend(read_ledger(run / LEDGER_FILE).records, budget, run / "spend.png"),
    ]
    return [p for p in made if p is not None]

"""The training loop: ADiP (Align, Distill, Predict) and the ERM / KD baselines, one loop.

Read it top to bottom in :func:`train`: find the teacher's cached embeddings, split the data
(DomainBed: 20 % of every source domain held out as in-domain validation, target domains
out-of-distribution), build the student, then for every stage: step, evaluate per domain
every ``eval_every`` steps, checkpoint, keep the best (or SWAD-averaged) weights. The paid
teacher is never called here: every target comes from the memory-mapped EmbeddingStore.

Run folder::

    config.json      the resolved TrainConfig
    log.jsonl        one line per step: stage, step, each loss term, lr, time
    evals.jsonl      one line per evaluation: per-domain ID/OOD accuracy and loss
    checkpoint/      model.safetensors, optim.pt, best.safetensors, state.json (resume)
    model.safetensors, run.json, metrics.json   the final student and its accuracy

Multi-process: under ``torchrun --nproc_per_node N`` (env RANK / WORLD_SIZE) the model is
wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU), every rank reads its own
shard of every source domain with ``ceil(batch_per_domain / N)`` images per domain per step
(so the global batch stays what one process would use), and only rank 0 evaluates and
writes. Multi-node is plain torchrun: on every node run, with the same DATA, cache and
run folder on shared storage (or copied; rank 0's node writes the run folder)::

    torchrun --nnodes 2 --node_rank {0|1} --nproc_per_node 4 \
        --rdzv_backend c10d --rdzv_endpoint HOST0:29500 "$(which vlm-distill)" train DATA ...

Resuming with SWAD restarts the weight average at the resumed step (the segments before a
crash are not checkpointed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache import atomic_write
from cache.layout import STORES_DIR
from cache.swap import exchange
from distill.data import DataError, Dataset, Sample, scan, split_holdout
from distill.data.loaders import train_loader
from distill.train.config import TrainConfig
from distill.train.evaluate import (
    RUN_FILE,
    WEIGHTS_FILE,
    evaluate_samples,
    mean_accuracy,
    to_input,
    zeroshot_by_domain,
)
from distill.train.student import Student, build_student, is_convnet, norm_stats
from distill.train.swad import Average, LossValley, update_bn
from distill.train.task import Batch, make_task
from vlmclient.errors import ConfigurationError

__all__ = [
    "CHECKPOINT_DIR",
    "LOG_FILE",
    "METRICS_FILE",
    "Progress",
    "dist_env",
    "find_store",
    "open_store",
    "train",
]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "log.jsonl"
EVALS_FILE = "evals.jsonl"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Progress:
    """What the progress hook is told (on rank 0): after every step and evaluation."""

    event: str  # "start" | "step" | "eval" | "stage_end" | "done"
    stage: str
    step: int  # steps done in this stage
    total: int  # steps of this stage
    losses: dict[str, float] = field(default_factory=dict)
    mean_id: float | None = None  # last evaluation
    mean_ood: float | None = None


ProgressHook = Callable[[Progress], None]


# ------------------------------------------------------------------------- teacher store


def _no_store_message(teacher: str, dataset: Dataset, cache: Path) -> str:
    return (
        f"no cached teacher embeddings for this dataset and teacher ({teacher!r}, "
        f"dataset fingerprint {dataset.fingerprint()[:12]}) in {cache / STORES_DIR}: run "
        f"`vlm-distill harvest {dataset.root} --teacher {teacher} --cache {cache}` first"
    )


def find_store(cache_dir: str | os.PathLike[str], teacher: str, dataset: Dataset) -> Path:
    """The store under ``<cache>/stores/*`` holding ``teacher``'s embeddings of ``dataset``.

    Matches ``meta.json``'s ``teacher`` and ``dataset_fingerprint``; when several match
    (harvested twice) the newest wins. ConfigurationError when none does.
    """
    cache = Path(cache_dir)
    fp = dataset.fingerprint()
    found: list[tuple[float, Path]] = []
    for meta_path in sorted((cache / STORES_DIR).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if meta.get("teacher") == teacher and meta.get("dataset_fingerprint") == fp:
            found.append((float(meta.get("created", 0.0)), meta_path.parent))
    if not found:
        raise ConfigurationError(_no_store_message(teacher, dataset, cache))
    return max(found)[1]


def open_store(path: str | os.PathLike[str]) -> Any:
    """Open an EmbeddingStore; ConfigurationError when it is missing or unreadable."""
    from cache.store import EmbeddingStore, StoreError

    try:
        return EmbeddingStore.open(path)
    except StoreError as exc:
        raise ConfigurationError(str(exc)) from exc


def check_store(store: Any, teacher: str, dataset: Dataset, needed: list[Sample]) -> None:
    """Refuse a store of another teacher, other classes, or lacking the training images."""
    meta = store.meta
    if meta.get("teacher") != teacher:
        raise ConfigurationError(
            f"the store at {store.path} holds embeddings of teacher {meta.get('teacher')!r}, "
            f"not {teacher!r}; pass the teacher it was harvested with or harvest again"
        )
    if tuple(store.class_names) != tuple(dataset.class_names):
        raise ConfigurationError(
            f"the store at {store.path} was harvested for classes "
            f"{list(store.class_names)[:5]}..., this dataset has "
            f"{list(dataset.class_names)[:5]}...; harvest this dataset"
        )
    have = set(store.image_ids)
    missing = [s.id for s in needed if s.id not in have]
    if missing:
        raise ConfigurationError(
            f"the store at {store.path} lacks teacher embeddings for {len(missing)} training "
            f"image(s) of this dataset, e.g. {missing[:3]} (dataset fingerprint "
            f"{dataset.fingerprint()[:12]}, store's {str(meta.get('dataset_fingerprint'))[:12]})"
            "; harvest this dataset first"
        )


# ------------------------------------------------------------------------ distributed


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def _init_dist(world: int) -> bool:
    """Initialise the process group under torchrun; True when this call created it."""
    import torch.distributed as dist

    if world <= 1 or dist.is_initialized():
        return False
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _broadcast_state(student: Student, world: int) -> None:
    """Give every rank rank 0's weights (after rank 0 picked the stage's final weights)."""
    if world <= 1:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(student.state_dict().values()):
            dist.broadcast(t, src=0)


# ------------------------------------------------------------------------ checkpoints


def _state_dict(student: Student) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path))


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def _save_checkpoint(
    out: Path,
    student: Student,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None,
    best: dict[str, torch.Tensor] | None,
) -> None:
    """Write checkpoint/ atomically: build checkpoint.tmp, then swap it in."""
    final = out / CHECKPOINT_DIR
    tmp = out / (CHECKPOINT_DIR + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _save_weights(_state_dict(student), tmp / WEIGHTS_FILE)
    if best is not None:
        _save_weights(best, tmp / "best.safetensors")
    extra = {"torch_rng": torch.get_rng_state()}
    if optimizer is not None:
        extra["optimizer"] = optimizer.state_dict()
    torch.save(extra, tmp / "optim.pt")
    _write_json(tmp / "state.json", state)  # last: a folder with state.json is complete
    if final.exists() and exchange(tmp, final):
        # One step, no moment without a checkpoint; ``tmp`` now holds the previous one.
        shutil.rmtree(tmp, ignore_errors=True)
        return
    # No RENAME_EXCHANGE on this system: two renames; _recover_checkpoint mends a crash
    # between them.
    old = out / (CHECKPOINT_DIR + ".old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


_CHECKPOINT_FILES = (WEIGHTS_FILE, "optim.pt", "state.json")


def _recover_checkpoint(out: Path) -> None:
    """Mend what a save killed mid-way left: if checkpoint/ is missing, the complete one of
    checkpoint.tmp (the new, finished) or checkpoint.old (the previous) takes its place;
    then both leftovers go. Without this a --resume silently restarted from step 0."""
    final = out / CHECKPOINT_DIR
    tmp, old = out / (CHECKPOINT_DIR + ".tmp"), out / (CHECKPOINT_DIR + ".old")
    if not final.exists():
        for candidate in (tmp, old):
            if all((candidate / f).is_file() for f in _CHECKPOINT_FILES):
                os.replace(candidate, final)
                log.warning("recovered %s from an interrupted checkpoint save", final)
                break
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


def _check_checkpoint(ckpt: Path) -> None:
    missing = [f for f in _CHECKPOINT_FILES if not (ckpt / f).is_file()]
    if missing:
        raise ConfigurationError(
            f"cannot resume from {ckpt}: it is incomplete (missing {', '.join(missing)}); "
            "move it aside to start the run again"
        )


def _truncate_log(path: Path, stage_names: list[str], stage_index: int, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (a crashed run's tail)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
            pos = (stage_names.index(rec["stage"]), int(rec["step"]))
        except (ValueError, KeyError):
            continue
        if pos < (stage_index, step):
            keep.append(line)
    atomic_write(path, "".join(x + "\n" for x in keep))


# ------------------------------------------------------------------------- the loop


def _resolve_domains(ds: Dataset, cfg: TrainConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    all_domains = tuple(ds.domains)
    for d in (cfg.train_domains or ()) + (cfg.test_domains or ()):
        if d not in all_domains:
            raise ConfigurationError(f"unknown domain {d!r}; this dataset has {all_domains}")
    test = tuple(cfg.test_domains or ())
    if cfg.train_domains is not None:
        train_d = tuple(cfg.train_domains)
        if cfg.test_domains is None:
            test = tuple(d for d in all_domains if d not in train_d)
    else:
        train_d = tuple(d for d in all_domains if d not in test)
    if not train_d:
        raise ConfigurationError("no training domain left: every domain is a test domain")
    return train_d, test


def _autocast(device: torch.device, bf16: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _trainable(student: Student) -> dict[str, torch.Tensor]:
    return {n: p for n, p in student.named_parameters() if p.requires_grad}


def train(config: TrainConfig, *, progress: ProgressHook | None = None) -> dict[str, Any]:
    """Train (or, for ``method="zeroshot"``, only score the teacher) and return metrics.

    Writes the run folder described in the module docstring (rank 0 only). With
    ``config.resume`` it continues from ``checkpoint/`` at the step it was written.

    >>> cfg = TrainConfig(data="DATA", cache="cache", teacher="local:pseudo-clip",
    ...                   out="runs/adip", steps_align=200, steps_distill=400)
    >>> metrics = train(cfg)  # doctest: +SKIP
    >>> metrics["mean_ood"], metrics["teacher_zeroshot"]["mean_ood"]  # doctest: +SKIP
    """
    t_start = time.time()
    rank, world, local_rank = dist_env()
    created_group = _init_dist(world)
    try:
        metrics = _train(config, progress, rank, world, local_rank, t_start)
        # Leave together: a rank that tears the group down while rank 0 still evaluates
        # and writes can abort in gloo's threads ("terminate called without an active
        # exception").
        _barrier(world)
        return metrics
    finally:
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


class AlignStop:
    """Align's stopping rule: stop when the mean loss of the last ``window`` steps improved
    by less than ``min_delta`` on the window before it (Align only fits one linear layer on
    frozen features, so it converges; a fixed step count left P barely trained)."""

    def __init__(self, window: int, min_delta: float) -> None:
        self.window = window
        self.min_delta = min_delta
        self.losses: list[float] = []
        self.stopped_at: int | None = None
        self.windows: list[float] = []

    def update(self, loss: float) -> bool:
        """Record one step's loss; True when Align has converged."""
        self.losses.append(loss)
        n = len(self.losses)
        if n % self.window:
            return False
        self.windows.append(float(np.mean(self.losses[-self.window:])))
        if len(self.windows) >= 2 and self.windows[-2] - self.windows[-1] < self.min_delta:
            self.stopped_at = n
            return True
        return False

    def describe(self, max_steps: int) -> dict[str, Any]:
        return {"converged": self.stopped_at is not None,
                "steps_run": self.stopped_at or len(self.losses), "max_steps": max_steps,
                "final_window_loss": self.windows[-1] if self.windows else None,
                "window": self.window, "min_delta": self.min_delta}


def _train(
    config: TrainConfig,
    progress: ProgressHook | None,
    rank: int,
    world: int,
    local_rank: int,
    t_start: float,
) -> dict[str, Any]:
    main = rank == 0
    hook = progress if (progress is not None and main) else None
    if config.threads:
        torch.set_num_threads(config.threads)
    device = (
        torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    )

    # 1. Data: source domains (train + 20 % held out as ID validation), target domains (OOD).
    # Read on this machine, never uploaded: a manifest of absolute paths (as select
    # writes) is fine here.
    ds = scan(config.data, allow_outside_paths=True)
    labelled = [s for s in ds.samples if s.label is not None]
    if not labelled:
        raise DataError(f"{config.data}: no labelled images; the trainer needs class labels")
    train_domains, test_domains = _resolve_domains(ds, config)
    src = [s for s in labelled if s.domain in train_domains]
    train_s, hold_s = split_holdout(src, fraction=config.holdout_fraction, seed=config.split_seed)
    ood_s = [s for s in labelled if s.domain in test_domains]

    # 2. Teacher targets: the harvested store for (teacher, dataset), checked.
    if config.store is not None:
        store_path = Path(config.store)
    else:
        assert config.cache is not None
        store_path = find_store(config.cache, config.teacher, ds)
    store = open_store(store_path)
    check_store(store, config.teacher, ds, list(train_s))
    views = min(config.views or store.views, store.views)
    rows = store.rows_of([s.id for s in train_s])
    text = torch.from_numpy(np.array(store.text_embeddings, dtype=np.float32))

    in_store = set(store.image_ids)

    def zs(samples: list[Sample]) -> dict[str, dict[str, float]]:
        return zeroshot_by_domain(store, [s for s in samples if s.id in in_store])

    teacher_zs = {"id": zs(list(hold_s)), "ood": zs(ood_s)}
    teacher_zs["mean_id"] = mean_accuracy(teacher_zs["id"])  # type: ignore[assignment]
    teacher_zs["mean_ood"] = mean_accuracy(teacher_zs["ood"])  # type: ignore[assignment]

    out = Path(config.out)
    base_info: dict[str, Any] = {
        "method": config.method,
        "student": config.student,
        "teacher": config.teacher,
        "teacher_fingerprint": store.meta.get("teacher_fingerprint"),
        "dataset_fingerprint": ds.fingerprint(),
        "store": str(store_path),
        "class_names": list(ds.class_names),
        "train_domains": list(train_domains),
        "test_domains": list(test_domains),
        "holdout_fraction": config.holdout_fraction,
        "seed": config.seed,
        "split_seed": config.split_seed,
        "image_size": config.image_size,
        "n_train": len(train_s),
        "n_id": len(hold_s),
        "n_ood": len(ood_s),
    }

    if config.method == "zeroshot":
        metrics = {**base_info, "id": teacher_zs["id"], "ood": teacher_zs["ood"],
                   "mean_id": teacher_zs["mean_id"], "mean_ood": teacher_zs["mean_ood"],
                   "teacher_zeroshot": teacher_zs, "wall_time_s": time.time() - t_start}
        if main:
            out.mkdir(parents=True, exist_ok=True)
            config.model_copy(update={"train_domains": train_domains,
                                      "test_domains": test_domains,
                                      "store": str(store_path)}).write(out)
            _write_json(out / METRICS_FILE, metrics)
        return metrics

    # 3. Student: timm backbone + P and the text head (ADiP) or a linear head (ERM, KD).
    torch.manual_seed(config.seed)
    student = build_student(
        config.student, method=config.method, num_classes=len(ds.class_names), text=text,
        pretrained=config.pretrained, weights_file=config.student_weights,
        weights_dir=config.weights_dir,
    )
    mean, std = norm_stats(student.backbone)
    conv = is_convnet(student.backbone)
    channels_last = config.channels_last if config.channels_last is not None else conv
    freeze_bn = config.freeze_bn
    student.to(device)
    if channels_last:
        student.to(memory_format=torch.channels_last)
    resolved = config.model_copy(update={
        "train_domains": train_domains, "test_domains": test_domains,
        "store": str(store_path), "views": views, "channels_last": channels_last,
        "freeze_bn": freeze_bn, "resume": False,
    })
    info = {**base_info, "mean": list(mean), "std": list(std), "channels_last": channels_last,
            "views": views}

    # 4. Resume, or refuse to overwrite an unfinished run.
    stages = config.stages()
    ckpt = out / CHECKPOINT_DIR
    start_stage, start_step = 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    best_acc = -1.0
    resume_extra: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    stage_notes: list[dict[str, Any]] = []
    if main:
        _recover_checkpoint(out)
    _barrier(world)
    if ckpt.exists() and not config.resume:
        raise ConfigurationError(
            f"{out} already holds a checkpoint; pass --resume to continue it or choose "
            "another --out"
        )
    if config.resume and ckpt.exists():
        _check_checkpoint(ckpt)
        state = json.loads((ckpt / "state.json").read_text("utf-8"))
        for key in ("teacher_fingerprint", "dataset_fingerprint", "method", "student"):
            if state.get(key) != info.get(key):
                raise ConfigurationError(
                    f"cannot resume {out}: its {key} is {state.get(key)!r}, this run's is "
                    f"{info.get(key)!r}"
                )
        student.load_state_dict(_load_weights(ckpt / WEIGHTS_FILE))
        start_stage, start_step = int(state["stage_index"]), int(state["step"])
        best_acc = float(state.get("best_acc", -1.0))
        history = list(state.get("history", []))
        stage_notes = list(state.get("stage_notes", []))
        if (ckpt / "best.safetensors").is_file():
            best_state = _load_weights(ckpt / "best.safetensors")
        resume_extra = torch.load(ckpt / "optim.pt", map_location="cpu", weights_only=True)
        if resume_extra is not None and "torch_rng" in resume_extra:
            torch.set_rng_state(resume_extra["torch_rng"])
        log.info("resuming %s at stage %d step %d", out, start_stage, start_step)
        if main:
            _truncate_log(out / LOG_FILE, [name for name, _ in stages], start_stage, start_step)
    elif config.resume and main:
        # Nothing to resume from: the run starts at step 0, so any log lines are its own
        # unsaved past and would be written again.
        _truncate_log(out / LOG_FILE, [name for name, _ in stages], 0, 0)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        resolved.write(out)
    _barrier(world)

    eval_kw: dict[str, Any] = {"image_size": config.image_size, "mean": mean, "std": std,
                               "batch_size": config.eval_batch_size,
                               "channels_last": channels_last, "bf16": config.bf16,
                               "num_workers": config.num_workers}
    last_eval: dict[str, Any] = {}
    log_file = open(out / LOG_FILE, "a", encoding="utf-8") if main else None  # noqa: SIM115
    evals_file = open(out / EVALS_FILE, "a", encoding="utf-8") if main else None  # noqa: SIM115
    groups = [[i for i, s in enumerate(train_s) if s.domain == d] for d in train_domains]
    per_rank_batch = -(-config.batch_per_domain // world)
    images_seen = 0
    train_time = 0.0

    def evaluate(stage: str, step: int) -> dict[str, Any]:
        res = {"stage": stage, "step": step,
               "id": evaluate_samples(student, hold_s, **eval_kw),
               "ood": evaluate_samples(student, ood_s, **eval_kw)}
        res["mean_id"] = mean_accuracy(res["id"])
        res["mean_ood"] = mean_accuracy(res["ood"])
        losses = [v["loss"] for v in res["id"].values()]
        res["id_loss"] = float(np.mean(losses)) if losses else float("nan")
        return res

    try:
        # 5. Stages: Align then Distill (ADiP), or the one stage of ERM / KD.
        for si in range(start_stage, len(stages)):
            stage, n_steps = stages[si]
            task = make_task(stage, lam=config.lam, text=text.to(device),
                             kd_temperature=config.kd_temperature, freeze_bn=freeze_bn)
            params = task.configure(student)
            lr = config.lr_align if stage == "align" else config.lr
            optimizer = torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
            stopper = (
                AlignStop(config.align_window, config.align_min_delta)
                if stage == "align" and config.align_min_delta > 0 else None
            )
            p_init = (
                student.proj.weight.detach().clone()
                if stage == "align" and student.proj is not None else None
            )
            first = start_step if si == start_stage else 0
            if si == start_stage and resume_extra and "optimizer" in resume_extra and first > 0:
                optimizer.load_state_dict(resume_extra["optimizer"])
            if si != start_stage or first == 0:
                best_state, best_acc = None, -1.0
            model: torch.nn.Module = student
            if world > 1:
                from torch.nn.parallel import DistributedDataParallel

                model = DistributedDataParallel(
                    student, device_ids=[local_rank] if device.type == "cuda" else None
                )
            loader = train_loader(
                train_s, groups, image_size=config.image_size,
                batch_per_domain=per_rank_batch, store=store if task.needs_targets else None,
                rows=rows, views=views, seed=config.seed + 1000 * si, start_step=first,
                rank=rank, world_size=world, num_workers=config.num_workers, hflip=ds.hflip,
            )
            batches = iter(loader)
            valley = (
                LossValley(config.swad_n_converge, config.swad_n_tolerance,
                           config.swad_tolerance_ratio)
                if config.swad else None
            )
            segment = Average()
            if hook:
                hook(Progress("start", stage, first, n_steps))
            for step in range(first, n_steps):
                t0 = time.perf_counter()
                raw = next(batches)
                t_data = time.perf_counter() - t0
                batch = Batch(
                    images=to_input(raw["image"], mean, std,
                                    channels_last=channels_last).to(device),
                    labels=raw["label"].to(device),
                    image_t=raw["image_t"].to(device) if "image_t" in raw else None,
                )
                task.set_mode(student)
                with _autocast(device, config.bf16):
                    losses = task.losses(model, batch)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                optimizer.step()
                dt = time.perf_counter() - t0
                train_time += dt
                images_seen += len(raw["label"]) * world
                if valley is not None:
                    segment.update(_trainable(student), step=step)
                values = {k: float(v.detach()) for k, v in losses.items()}
                if log_file is not None:
                    log_file.write(json.dumps({
                        "stage": stage, "step": step, **values, "lr": lr,
                        "time": time.time(), "step_s": round(dt, 5), "data_s": round(t_data, 5),
                    }) + "\n")
                if hook:
                    hook(Progress("step", stage, step + 1, n_steps, values,
                                  last_eval.get("mean_id"), last_eval.get("mean_ood")))

                converged = stopper is not None and stopper.update(values["loss"])
                if step % config.eval_every == 0 or step == n_steps - 1 or converged:
                    if main:
                        last_eval = evaluate(stage, step)
                        history.append({k: last_eval[k] for k in
                                        ("stage", "step", "mean_id", "mean_ood", "id_loss")})
                        assert evals_file is not None and log_file is not None
                        evals_file.write(json.dumps(last_eval) + "\n")
                        evals_file.flush()
                        log_file.flush()
                        if valley is not None:
                            valley.update_and_evaluate(segment, last_eval["id_loss"])
                        acc = last_eval["mean_id"] if last_eval["mean_id"] is not None else 0.0
                        if valley is None and config.select == "best_id" and acc > best_acc:
                            best_acc = acc
                            best_state = _state_dict(student)
                        _save_checkpoint(out, student, {
                            **info, "stage_index": si, "stage": stage, "step": step + 1,
                            "best_acc": best_acc, "history": history,
                            "stage_notes": stage_notes, "time": time.time(),
                        }, optimizer, best_state)
                        if hook:
                            hook(Progress("eval", stage, step + 1, n_steps, values,
                                          last_eval["mean_id"], last_eval["mean_ood"]))
                    segment = Average()
                    _barrier(world)
                if converged:
                    break

            # End of stage: SWAD average, or the best in-domain checkpoint, or the last.
            note: dict[str, Any] = {"stage": stage, "steps": n_steps}
            if stopper is not None:
                note["align"] = stopper.describe(n_steps)
            if p_init is not None and student.proj is not None:
                # How far Align moved P from its random start (1.0 = not at all).
                note["proj_cos_to_init"] = float(torch.nn.functional.cosine_similarity(
                    student.proj.weight.detach().flatten(), p_init.flatten(), dim=0))
            if main:
                if valley is not None:
                    params_avg = valley.final_params()
                    note["selected"] = "swad"
                    note["swad"] = valley.describe()
                    if params_avg is not None:
                        with torch.no_grad():
                            named = dict(student.named_parameters())
                            for k, v in params_avg.items():
                                named[k].copy_(v.to(named[k].dtype))
                    if stage != "align" and not freeze_bn:
                        bn_inputs = (
                            to_input(b["image"], mean, std, channels_last=channels_last).to(device)
                            for b in loader
                        )
                        note["bn_batches"] = update_bn(student, bn_inputs, config.swad_bn_steps)
                elif config.select == "best_id" and best_state is not None:
                    student.load_state_dict(best_state)
                    note["selected"] = "best_id"
                    note["best_id"] = best_acc
                else:
                    note["selected"] = "last"
                stage_notes.append(note)
                _save_checkpoint(out, student, {
                    **info, "stage_index": si + 1, "stage": stage, "step": 0,
                    "best_acc": -1.0, "history": history, "stage_notes": stage_notes,
                    "time": time.time(),
                }, None, None)
                if hook:
                    hook(Progress("stage_end", stage, n_steps, n_steps, {},
                                  last_eval.get("mean_id"), last_eval.get("mean_ood")))
            _broadcast_state(student, world)
            _barrier(world)
            best_state, best_acc = None, -1.0
            del model
    finally:
        if log_file is not None:
            log_file.close()
        if evals_file is not None:
            evals_file.close()

    # 6. Predict: the final student, scored per domain beside the teacher's zero-shot.
    if not main:
        return {}
    final = evaluate("final", sum(n for _, n in stages))
    _save_weights(_state_dict(student), out / WEIGHTS_FILE)
    _write_json(out / RUN_FILE, info)
    metrics = {
        **info,
        "id": final["id"], "ood": final["ood"],
        "mean_id": final["mean_id"], "mean_ood": final["mean_ood"],
        "teacher_zeroshot": teacher_zs,
        "stages": stage_notes,
        "history": history,
        "wall_time_s": time.time() - t_start,
        "train_images_per_s": images_seen / train_time if train_time else None,
        "config": resolved.model_dump(mode="json"),
    }
    _write_json(out / METRICS_FILE, metrics)
    if hook:
        hook(Progress("done", "final", 0, 0, {}, final["mean_id"], final["mean_ood"]))
    return metrics

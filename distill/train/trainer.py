"""The training loop: ADiP (Align, Distill, Predict) and the ERM / KD baselines, one loop.

Read it top to bottom in :func:`_train`: split the data (DomainBed: 20 % of every source
domain held out as in-domain validation, target domains out-of-distribution), find the
teacher's cached embeddings, build the student, resume, then for every stage: step,
evaluate per domain every ``eval_every`` steps, checkpoint, and end with the best (or
SWAD-averaged) weights. The paid teacher is never called here: every target comes from the
memory-mapped EmbeddingStore. The parts live beside this module: ``prepare`` (data split,
student), ``targets`` (the teacher's store), ``checkpoints`` (save, resume), ``stages``
(Align's stopping rule, evaluation, end-of-stage selection), ``distributed`` (torchrun).

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

A resumed stage ends as an uninterrupted one would: the checkpoint keeps the stage's own
state (SWAD's loss valley, its segments and running average; Align's stopping-rule windows;
P before Align), see ``checkpoints.py``. With ``proj_init="lstsq"`` P is fitted by least
squares before Align's first step (``stages.fit_projection``); a resumed Align is not fitted
again, its P is in the checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import torch

from distill.data.loaders import PixelCache, train_loader
from distill.train.checkpoints import (
    CHECKPOINT_DIR,
    RunState,
    resume_or_start,
    run_lock,
    save_checkpoint,
    state_dict,
    write_final_student,
    write_json,
)
from distill.train.config import EVALS_FILE, LOG_FILE, METRICS_FILE, TrainConfig
from distill.train.distributed import (
    barrier,
    broadcast_flag,
    broadcast_state,
    dist_env,
    init_group,
    wrap_ddp,
)
from distill.train.evaluate import WEIGHTS_FILE
from distill.train.optim import adam
from distill.train.prepare import (
    DataSplit,
    InputFormat,
    build,
    check_shards,
    resolve,
    run_info,
    split_data,
)
from distill.train.stages import (
    PROJ_FIT_BATCHES,
    AlignStop,
    Evaluator,
    fit_projection,
    restore_stage,
    select_weights,
    stage_note,
    stage_state,
    trainable,
)
from distill.train.student import Student
from distill.train.swad import Average, LossValley
from distill.train.targets import TeacherTargets, class_mean_images, load_targets
from distill.train.task import AlignTask, Batch, make_task
from vlmclient.errors import ConfigurationError, VLMError

__all__ = [
    "EVALS_FILE",
    "LOG_FILE",
    "METRICS_FILE",
    "DivergedError",
    "Progress",
    "ProgressHook",
    "train",
]

log = logging.getLogger("distill.train.trainer")



class DivergedError(VLMError):
    """The loss became NaN or infinite: every later step would train on garbage."""


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
    created_group = init_group(world)
    try:
        # rank 0 writes the run folder: no second process may write it at the same time
        with run_lock(Path(config.out)) if rank == 0 else nullcontext():
            metrics = _train(config, progress, rank, world, local_rank, t_start)
        # Leave together: a rank that tears the group down while rank 0 still evaluates
        # and writes can abort in gloo's threads ("terminate called without an active
        # exception").
        barrier(world)
        return metrics
    finally:
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(
    config: TrainConfig,
    progress: ProgressHook | None,
    rank: int,
    world: int,
    local_rank: int,
    t_start: float,
) -> dict[str, Any]:
    main = rank == 0
    notify = progress if (progress is not None and main) else _quiet
    if config.threads:
        torch.set_num_threads(config.threads)
    device = (
        torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    )
    out = Path(config.out)

    # 1. Data: source domains (train + 20 % held out as ID validation), target domains (OOD).
    split = split_data(config)
    # 2. Teacher targets: the harvested store for (teacher, dataset), checked.
    targets = load_targets(config, split.dataset, split.train, split.holdout, split.ood)
    if targets.left_out:
        split = split.without(targets.left_out)
        if main:
            n, them = len(targets.left_out), "it" if len(targets.left_out) == 1 else "them"
            log.warning(
                "left out %d image%s whose pixels cannot be decoded (%s%s), as the harvest "
                "did: replace %s with a good copy and harvest again to train on %s",
                n, "s" * (n > 1), ", ".join(targets.left_out[:3]),
                f" and {n - 3} more" if n > 3 else "", them, them,
            )  # fmt: skip
    info = run_info(config, split, targets)
    if config.method == "zeroshot":
        return _zeroshot_only(config, split, targets, info, main=main, t_start=t_start)
    check_shards(split, world)  # each process trains on its share of every source domain

    # 3. Student: timm backbone + P and the text head (ADiP) or a linear head (ERM, KD).
    student, fmt = build(config, len(split.dataset.class_names), targets.text, device)
    resolved = resolve(config, split, targets, fmt)  # what config.json records
    info = {**info, "mean": list(fmt.mean), "std": list(fmt.std),
            "channels_last": fmt.channels_last, "views": targets.views}

    # 4. Resume, or refuse to overwrite an unfinished or a finished run.
    stages = config.stages()
    run = resume_or_start(out, resume=config.resume, info=info, student=student,
                          stage_names=[name for name, _ in stages],
                          log_files=[out / LOG_FILE, out / EVALS_FILE],
                          main=main, world=world, config=resolved.model_dump(mode="json"),
                          done_file=out / METRICS_FILE)
    run.started = t_start
    if main:
        out.mkdir(parents=True, exist_ok=True)
        resolved.write(out)
    barrier(world)

    # Decoded pixels of every view, kept for the run: epochs, stages and evaluations after
    # the first read them instead of decoding PNGs again (same pixels, so same results).
    pixels = PixelCache()
    evaluate = Evaluator(split.holdout, split.ood, config.image_size, fmt,
                         config.eval_batch_size, config.bf16, config.num_workers, pixels)
    last_eval: dict[str, Any] = {}
    groups = split.domain_groups()
    per_rank_batch = -(-config.batch_per_domain // world)  # the global batch stays the same

    image_means = (
        class_mean_images(targets.store, targets.rows, [s.label for s in split.train],
                          len(split.dataset.class_names), targets.views)
        if config.image_targets == "class-mean" and config.method == "adip" else None
    )  # fmt: skip
    with _RunLogs(out if main else None) as logs:
        # 5. Stages: Align then Distill (ADiP), or the one stage of ERM / KD.
        for si in range(run.stage_index, len(stages)):
            stage, n_steps = stages[si]
            first = run.step if si == run.stage_index else 0
            freeze_bn = config.stage_freezes_bn(stage, bool(resolved.freeze_bn))
            task = make_task(stage, lam=config.lam, text=targets.text.to(device),
                             kd_temperature=config.kd_temperature,
                             kd_logit_scale=config.kd_logit_scale,
                             freeze_bn=freeze_bn,
                             image_targets=config.image_targets,
                             text_loss=config.text_loss, image_means=image_means)
            optimizer = adam(task.configure(student), lr=config.stage_lr(stage),
                             weight_decay=config.weight_decay)
            if first > 0 and run.optimizer is not None:
                optimizer.load_state_dict(run.optimizer)
            if first == 0:
                run.reset_best()  # a stage keeps its own best weights
            stopper = (
                AlignStop(config.align_window, config.align_min_delta)
                if stage == "align" and config.align_min_delta > 0 else None
            )
            # the stage's batch stream from a given step (its training, and SWAD's BN pass)
            stage_loader = partial(
                train_loader, split.train, groups, image_size=config.image_size,
                batch_per_domain=per_rank_batch,
                store=targets.store if task.needs_targets else None, rows=targets.rows,
                views=targets.views, seed=config.seed + 1000 * si,
                rank=rank, world_size=world, num_workers=config.num_workers,
                hflip=split.dataset.hflip, cache=pixels,
            )
            to_batch = partial(_batch, fmt=fmt, device=device)
            proj_fit: dict[str, Any] | None = None
            if stage == "align" and first == 0 and config.proj_init == "lstsq":
                # P starts at its least-squares fit on the stage's first batches (a resumed
                # Align has P in its checkpoint). Own loader, torch's RNG left as it was:
                # the steps read the same batches and draws as with a random P.
                assert isinstance(task, AlignTask)
                with torch.random.fork_rng(devices=[]):
                    fit_batches = islice(stage_loader(start_step=0), PROJ_FIT_BATCHES)
                    proj_fit = fit_projection(
                        student, task, map(to_batch, fit_batches), world=world,
                        autocast=partial(_autocast, device, config.bf16),
                    )
                    del fit_batches  # its DataLoader workers end here, not at the stage's end
                if main:
                    log.info("proj_init lstsq: P fitted on %d rows (%d batches); mean "
                             "cos(PF, I_t) %s at random init, %s fitted", proj_fit["rows"],
                             proj_fit["batches"], proj_fit["image_cos_random"],
                             proj_fit["image_cos"])
            p_init = (
                student.proj.weight.detach().clone()
                if stage == "align" and student.proj is not None else None
            )
            model = wrap_ddp(student, world, local_rank, device)
            batches = iter(stage_loader(start_step=first))
            valley = (
                LossValley(config.swad_n_converge, config.swad_n_tolerance,
                           config.swad_tolerance_ratio)
                if config.swad else None
            )
            if first > 0 and run.stage_state is not None:
                # The checkpoint was written at an evaluation, so the segment is empty.
                valley, p_init = restore_stage(run.stage_state, run.stage_tensors,
                                               stopper=stopper, valley=valley, p_init=p_init)
                proj_fit = run.stage_state.get("proj_fit")
            # A checkpoint written as the stage's rule ended it (a dead valley, Align settled)
            # resumes into the end of the stage, not into more steps.
            ended = (valley is not None and valley.dead_valley) or (
                stopper is not None and stopper.stopped_at is not None)
            segment = Average()
            notify(Progress("start", stage, first, n_steps))
            done = first  # steps of this stage done (the stage may stop before n_steps)
            for step in range(first, first if ended else n_steps):
                done = step + 1
                t0 = time.perf_counter()
                raw = next(batches)
                t_data = time.perf_counter() - t0
                batch = to_batch(raw)
                task.set_mode(student)
                with _autocast(device, config.bf16):
                    losses = task.losses(model, batch)
                # rank 0's loss decides for every rank (NaN reaches all weights through the
                # gradient all-reduce anyway): nothing non-finite is stepped on or saved
                if broadcast_flag(main and not bool(torch.isfinite(losses["loss"])), world):
                    raise DivergedError(_diverged(config, out, stage, step, losses, run))
                optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(losses["loss"])
                lr = config.lr_at(stage, step)  # from the step: a resumed stage agrees
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.step()
                dt = time.perf_counter() - t0
                run.train_s += dt
                run.images_seen += len(raw["label"]) * world
                if valley is not None:
                    segment.update(trainable(student), step=step)
                values = {k: float(v.detach()) for k, v in losses.items()}
                logs.step({
                    "stage": stage, "step": step, **values, "lr": lr,
                    "time": time.time(), "step_s": round(dt, 5), "data_s": round(t_data, 5),
                })
                notify(Progress("step", stage, step + 1, n_steps, values,
                                last_eval.get("mean_id"), last_eval.get("mean_ood")))

                # Align settled: rank 0's rule decides for every rank (the ranks' losses
                # differ, and a rank leaving the loop alone would hang the others)
                stop = stopper is not None and broadcast_flag(stopper.update(values["loss"]),
                                                              world)
                if step % config.eval_every == 0 or step == n_steps - 1 or stop:
                    if main:
                        last_eval = evaluate(student, stage, step)
                        run.record(last_eval)
                        logs.evaluation(last_eval)
                        if valley is not None:
                            id_loss = last_eval["id_loss"]
                            valley.update_and_evaluate(
                                segment, float("nan") if id_loss is None else id_loss
                            )
                        elif config.select == "best_id":
                            run.keep_if_best(last_eval["mean_id"] or 0.0, student)
                        kept, kept_tensors = stage_state(stopper, valley, p_init, proj_fit)
                        state = run.to_json(info, si, stage, step + 1, time.time(), kept)
                        save_checkpoint(out, student, state, optimizer, run.best_state,
                                        kept_tensors)
                        notify(Progress("eval", stage, step + 1, n_steps, values,
                                        last_eval["mean_id"], last_eval["mean_ood"]))
                    segment = Average()
                    barrier(world)
                    # A dead valley takes no more steps into SWAD's average: stop, as the
                    # official trainer does (rank 0 decides; every rank leaves together).
                    if valley is not None:
                        stop = broadcast_flag(main and valley.dead_valley, world) or stop
                if stop:
                    break

            # End of stage: SWAD average, or the best in-domain checkpoint, or the last.
            if main:
                note = stage_note(  # before the swap
                    stage, n_steps, student, stopper, p_init,
                    proj_init=config.proj_init if stage == "align" else None, proj_fit=proj_fit,
                )
                # SWAD's BN pass reads the batches after the stage's last step, from a loader
                # of its own: the training iterator's position depended on its workers'
                # prefetch and on whether this process took the steps (a resume at the
                # stage's end took none), so the statistics did too
                bn_loader = (
                    None if valley is None or stage == "align" or freeze_bn
                    else stage_loader(start_step=done)
                )
                note.update(select_weights(
                    student, run, valley=valley, select=config.select, bn_loader=bn_loader,
                    bn_steps=config.swad_bn_steps, fmt=fmt, device=device,
                ))
                run.finish_stage(note)
                state = run.to_json(info, si + 1, stage, 0, time.time())
                save_checkpoint(out, student, state, None, None)
                notify(Progress("stage_end", stage, done, n_steps, {},
                                last_eval.get("mean_id"), last_eval.get("mean_ood")))
            broadcast_state(student, world)
            barrier(world)
            del model

    # 6. Predict: the final student, scored per domain beside the teacher's zero-shot.
    if not main:
        return {}
    final = evaluate(student, "final", sum(n for _, n in stages))
    metrics = _write_final(
        out, student, info, final, teacher_zeroshot=targets.zeroshot, run=run,
        resolved=resolved,
        images_per_s=run.images_seen / run.train_s if run.train_s else None,
    )
    notify(Progress("done", "final", 0, 0, {}, final["mean_id"], final["mean_ood"]))
    return metrics


def _write_final(
    out: Path,
    student: Student,
    info: dict[str, Any],
    final: dict[str, Any],
    *,
    teacher_zeroshot: dict[str, Any],
    run: RunState,
    resolved: TrainConfig,
    images_per_s: float | None,
) -> dict[str, Any]:
    """Write the final student, run.json and metrics.json; return the metrics."""
    write_final_student(out, state_dict(student), info)
    metrics = {
        **info,
        "id": final["id"], "ood": final["ood"],
        "mean_id": final["mean_id"], "mean_ood": final["mean_ood"],
        "teacher_zeroshot": teacher_zeroshot,
        "stages": run.stage_notes,
        "history": run.history,
        "wall_time_s": run.wall_s(time.time()),  # every process of the run
        "train_images_per_s": images_per_s,
        "config": resolved.model_dump(mode="json"),
    }
    write_json(out / METRICS_FILE, metrics)
    return metrics


def _zeroshot_only(
    config: TrainConfig,
    split: DataSplit,
    targets: TeacherTargets,
    info: dict[str, Any],
    *,
    main: bool,
    t_start: float,
) -> dict[str, Any]:
    """``method="zeroshot"``: the teacher's own accuracy as the run's metrics; no student."""
    out = Path(config.out)
    if main and ((out / CHECKPOINT_DIR).exists() or (out / WEIGHTS_FILE).exists()):
        # a trained run's folder: its config.json and metrics.json would be replaced by
        # the teacher's, leaving weights and metrics that disagree
        raise ConfigurationError(
            f"{out} holds a trained run; the teacher's zero-shot goes in another --out"
        )
    zs = targets.zeroshot
    metrics = {**info, "id": zs["id"], "ood": zs["ood"], "mean_id": zs["mean_id"],
               "mean_ood": zs["mean_ood"], "teacher_zeroshot": zs,
               "wall_time_s": time.time() - t_start}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        config.model_copy(update={"train_domains": split.train_domains,
                                  "test_domains": split.test_domains,
                                  "store": str(targets.path)}).write(out)
        write_json(out / METRICS_FILE, metrics)
    return metrics


def _batch(raw: dict[str, Any], *, fmt: InputFormat, device: torch.device) -> Batch:
    """A loader's batch on the device, its images normalised in the student's format."""
    return Batch(
        images=fmt.input(raw["image"], device),
        labels=raw["label"].to(device),
        image_t=raw["image_t"].to(device) if "image_t" in raw else None,
        views=raw["view"].to(device),
    )


def _quiet(progress: Progress) -> None:
    """The progress hook of other ranks and of callers who gave none."""


def _autocast(device: torch.device, bf16: bool) -> AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _diverged(
    config: TrainConfig, out: Path, stage: str, step: int, losses: dict[str, Any],
    run: RunState,
) -> str:
    values = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in losses.items())
    last = run.history[-1] if run.history else None  # every evaluation writes a checkpoint
    kept = (
        f"the checkpoint in {out} (after {last['stage']} step {last['step']}) holds the "
        "last weights saved"
        if last is not None else "no checkpoint was written"
    )
    if step == 0:
        # the stage's first loss, from weights no step of it has moved: no lr would help
        why = (
            f"--kd-temperature {config.kd_temperature:g} and --kd-logit-scale "
            f"{config.kd_logit_scale:g}: logits divided by a tiny temperature, or scaled past "
            "the float range, are infinite" if stage == "kd"
            else "the weights the stage starts from (--weights, or the stage before)"
        )
        return (
            f"training diverged at {stage} step 0 ({values}): the loss is not a number at "
            f"the stage's first step, before any weight moved, so nothing was trained or "
            f"saved; {kept}. The step size is not the cause: check {why}"
        )
    return (
        f"training diverged at {stage} step {step} ({values}): the loss is no longer a "
        f"number, so nothing more was trained or saved; {kept}. Lower the learning rate "
        f"({_lr_flag(config, stage)} {config.stage_lr(stage):g} for this stage) and train "
        "into a new --out"
    )


def _lr_flag(config: TrainConfig, stage: str) -> str:
    """The flag that sets ``stage``'s learning rate (see TrainConfig.stage_lr)."""
    if stage == "align":
        return "--lr-align"
    return "--lr-kd" if stage == "kd" and config.lr_kd is not None else "--lr"


class _RunLogs:
    """Rank 0's log.jsonl (a line per step) and evals.jsonl (a line per evaluation), opened
    for appending; with ``out=None`` (the other ranks) nothing is written."""

    def __init__(self, out: Path | None) -> None:
        self._files = ExitStack()  # closes both in __exit__
        self._log: IO[str] | None = None
        self._evals: IO[str] | None = None
        if out is not None:
            self._log = self._files.enter_context(
                open(out / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115
            )
            self._evals = self._files.enter_context(
                open(out / EVALS_FILE, "a", encoding="utf-8")  # noqa: SIM115
            )

    def step(self, record: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(json.dumps(record) + "\n")

    def evaluation(self, record: dict[str, Any]) -> None:
        """Write an evaluation and flush both files (the steps before it are on disk)."""
        if self._evals is not None and self._log is not None:
            self._evals.write(json.dumps(record) + "\n")
            self._evals.flush()
            self._log.flush()

    def __enter__(self) -> _RunLogs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._files.close()

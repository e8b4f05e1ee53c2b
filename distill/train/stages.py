"""Around a stage's steps: Align's stopping rule, P's least-squares start (``proj_init
lstsq``), the evaluations during training, and the weights a stage ends with (the SWAD
average, the best in-domain evaluation, or the last).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from distill.data import Sample
from distill.data.loaders import PixelCache
from distill.train.checkpoints import RunState
from distill.train.distributed import all_reduce_sum
from distill.train.evaluate import evaluate_samples, mean_accuracy
from distill.train.prepare import InputFormat
from distill.train.student import Student
from distill.train.swad import LossValley, update_bn
from distill.train.task import AlignTask, Batch

__all__ = [
    "PROJ_FIT_BATCHES",
    "PROJ_FIT_RIDGE",
    "AlignStop",
    "Evaluator",
    "fit_projection",
    "restore_stage",
    "select_weights",
    "stage_note",
    "stage_state",
    "trainable",
]


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

    def to_state(self) -> dict[str, Any]:
        """What a resumed stage needs to go on counting windows where this one stopped."""
        return {"losses": list(self.losses), "windows": list(self.windows),
                "stopped_at": self.stopped_at}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`to_state`'s record."""
        self.losses = [float(x) for x in state["losses"]]
        self.windows = [float(x) for x in state["windows"]]
        self.stopped_at = state["stopped_at"]

    def describe(self, max_steps: int) -> dict[str, Any]:
        """What the rule decided, for the stage note."""
        return {"converged": self.stopped_at is not None,
                "steps_run": self.stopped_at or len(self.losses), "max_steps": max_steps,
                "final_window_loss": self.windows[-1] if self.windows else None,
                "window": self.window, "min_delta": self.min_delta}


# proj_init="lstsq": the batches of Align's own stream P is fitted on (its first ones: 4,800
# rows at the default 32 images x 3 source domains), and the ridge, relative to the mean
# variance of a (centred) feature: eps = PROJ_FIT_RIDGE x trace(Fc^T Fc) / d
PROJ_FIT_BATCHES = 50
PROJ_FIT_RIDGE = 1e-3


def fit_projection(
    student: Student,
    task: AlignTask,
    batches: Iterable[Batch],
    *,
    world: int = 1,
    ridge: float = PROJ_FIT_RIDGE,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> dict[str, Any]:
    """Set P (weight and bias) to the ridge least-squares map from the backbone's features
    to the image term's L2-normalised targets over ``batches`` (``proj_init="lstsq"``).

    The features are Align's: the backbone in ``task``'s mode (BatchNorm frozen or not, as
    Align runs it; running statistics a BatchNorm in train mode moves are put back), under
    ``autocast``, no gradient; the targets and the rows that count are the image term's
    (``image_targets``: every row, view 0 only, the teacher-correct ones; or the class
    prototypes). With F the features and Y the targets, both centred on their means over
    the rows, W solves (FᵀF + εI) W = FᵀY in float64, ε = ``ridge`` · trace(FᵀF) / d (d:
    the feature width), and the bias maps the mean feature to the mean target. Under
    torchrun every rank adds up the same sums over its own rows, so all fit the same P.

    Returns the note: the batches and rows (over every rank) fitted on, ``ridge``, and the
    mean cos(PF, I_t) over the rows (rank 0's) of P as it was (its random init) and as
    fitted. No row to fit on (every target masked out): P is left as it was.
    """
    proj, text = student.proj, student.text
    if proj is None or text is None:
        raise ValueError("fit_projection needs an ADiP student (P and the text head)")
    device = proj.weight.device
    kept_buffers = {k: v.detach().clone() for k, v in student.backbone.named_buffers()}
    feats: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    n_batches = 0
    with torch.no_grad():
        for batch in batches:
            task.set_mode(student)
            with autocast():
                f = student.features(batch.images).float()
            y, mask = task.image_term_targets(batch, text)
            y = torch.nn.functional.normalize(y.float(), dim=-1)
            if mask is not None:
                f, y = f[mask], y[mask]
            feats.append(f)
            targets.append(y)
            n_batches += 1
        for k, v in student.backbone.named_buffers():
            v.copy_(kept_buffers[k])
        d, dim = proj.in_features, proj.out_features
        f = torch.cat(feats) if feats else torch.zeros(0, d, device=device)
        y = torch.cat(targets) if targets else torch.zeros(0, dim, device=device)
        f64, y64 = f.double(), y.double()
        sums = [torch.tensor([float(len(f))], dtype=torch.float64, device=device),
                f64.sum(0), y64.sum(0), f64.t() @ f64, f64.t() @ y64]
        all_reduce_sum(sums, world)
        n = float(sums[0].item())
        note: dict[str, Any] = {"batches": n_batches, "rows": int(n), "ridge": ridge}
        if n == 0:
            return {**note, "image_cos_random": None, "image_cos": None}

        def mean_cos() -> float | None:
            if not len(f):
                return None
            return float(torch.nn.functional.cosine_similarity(proj(f), y, dim=-1).mean())

        note["image_cos_random"] = mean_cos()
        mu_f, mu_y = sums[1] / n, sums[2] / n
        gram = sums[3] - n * torch.outer(mu_f, mu_f)
        cross = sums[4] - n * torch.outer(mu_f, mu_y)
        scale = float(torch.trace(gram)) / d
        eps = ridge * scale if scale > 0 else ridge
        eye = torch.eye(d, dtype=torch.float64, device=device)
        w = torch.linalg.solve(gram + eps * eye, cross)  # (d, D)
        bias = mu_y - mu_f @ w
        proj.weight.copy_(w.t().to(proj.weight.dtype))
        proj.bias.copy_(bias.to(proj.bias.dtype))
        note["image_cos"] = mean_cos()
    return note


@dataclass(frozen=True)
class Evaluator:
    """Scores the student per domain on the ID hold-out and on the OOD domains."""

    holdout: Sequence[Sample]
    ood: Sequence[Sample]
    image_size: int
    fmt: InputFormat
    batch_size: int
    bf16: bool
    num_workers: int
    cache: PixelCache | None = None  # the run's decoded pixels, shared with training

    def _score(self, student: Student, samples: Sequence[Sample]) -> dict[str, dict[str, float]]:
        return evaluate_samples(
            student, samples, image_size=self.image_size, mean=self.fmt.mean,
            std=self.fmt.std, batch_size=self.batch_size,
            channels_last=self.fmt.channels_last, bf16=self.bf16, num_workers=self.num_workers,
            cache=self.cache,
        )

    def __call__(self, student: Student, stage: str, step: int) -> dict[str, Any]:
        """One line of evals.jsonl: per-domain accuracy and loss, their means, the mean ID
        loss (what SWAD watches)."""
        by_id, by_ood = self._score(student, self.holdout), self._score(student, self.ood)
        losses = [v["loss"] for v in by_id.values()]
        return {"stage": stage, "step": step, "id": by_id, "ood": by_ood,
                "mean_id": mean_accuracy(by_id), "mean_ood": mean_accuracy(by_ood),
                # None without ID images: a bare NaN is not JSON (strict readers refuse it)
                "id_loss": float(np.mean(losses)) if losses else None}


def trainable(student: Student) -> dict[str, torch.Tensor]:
    """The parameters this stage trains, by name (what SWAD averages)."""
    return {n: p for n, p in student.named_parameters() if p.requires_grad}


def stage_note(
    stage: str,
    n_steps: int,
    student: Student,
    stopper: AlignStop | None,
    p_init: torch.Tensor | None,
    *,
    proj_init: str | None = None,
    proj_fit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The head of a finished stage's note: its steps, Align's stopping, how P started
    (``proj_init``, and with ``lstsq`` the fit's note, see :func:`fit_projection`), how far
    P moved."""
    note: dict[str, Any] = {"stage": stage, "steps": n_steps}
    if stopper is not None:
        note["align"] = stopper.describe(n_steps)
    if proj_init is not None:
        note["proj_init"] = proj_init
    if proj_fit is not None:
        note["proj_fit"] = proj_fit
    if p_init is not None and student.proj is not None:
        # How far Align moved P from where it started, its random init or its least-squares
        # fit (1.0 = not at all).
        note["proj_cos_to_init"] = float(torch.nn.functional.cosine_similarity(
            student.proj.weight.detach().flatten(), p_init.flatten(), dim=0))
    return note


def stage_state(
    stopper: AlignStop | None,
    valley: LossValley | None,
    p_init: torch.Tensor | None,
    proj_fit: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """What a checkpoint keeps of a stage in progress, as (JSON, tensors): Align's stopping
    rule, SWAD's loss valley with its averages, P before the stage and the note of its
    least-squares fit (for the stage note; a resumed Align does not fit P again)."""
    meta: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    if proj_fit is not None:
        meta["proj_fit"] = proj_fit
    if stopper is not None:
        meta["align_stop"] = stopper.to_state()
    if valley is not None:
        meta["swad"], averages = valley.to_state()
        tensors.update({f"swad/{k}": v for k, v in averages.items()})
    if p_init is not None:
        tensors["p_init"] = p_init.detach().contiguous().cpu()
    return meta, tensors


def restore_stage(
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    *,
    stopper: AlignStop | None,
    valley: LossValley | None,
    p_init: torch.Tensor | None,
) -> tuple[LossValley | None, torch.Tensor | None]:
    """Undo :func:`stage_state` for a resumed stage: the stopper in place; returns the
    valley and P's starting weights to go on with."""
    if stopper is not None and "align_stop" in meta:
        stopper.restore(meta["align_stop"])
    if valley is not None and "swad" in meta:
        averages = {k.removeprefix("swad/"): v for k, v in tensors.items()
                    if k.startswith("swad/")}
        valley = LossValley.from_state(meta["swad"], averages, valley.n_converge,
                                       valley.n_tolerance, valley.tolerance_ratio)
    if p_init is not None and "p_init" in tensors:
        p_init = tensors["p_init"].to(p_init.device)
    return valley, p_init


def select_weights(
    student: Student,
    run: RunState,
    *,
    valley: LossValley | None,
    select: str,
    bn_loader: Iterable[dict[str, torch.Tensor]] | None,
    bn_steps: int,
    fmt: InputFormat,
    device: torch.device,
) -> dict[str, Any]:
    """Load the weights the stage ends with into ``student`` and say which they are.

    With SWAD: the LossValley average, then BatchNorm statistics re-estimated over
    ``bn_steps`` batches of ``bn_loader`` (averaged backbone weights need statistics of their
    own; None: keep them, as for frozen BN or Align, which averages only P).
    Else, with ``select="best_id"``: the weights of the best mean ID accuracy. Else the last
    weights.
    """
    note: dict[str, Any] = {}
    if valley is not None:
        params_avg = valley.final_params()
        note["selected"] = "swad"
        note["swad"] = valley.describe()
        if params_avg is not None:
            with torch.no_grad():
                named = dict(student.named_parameters())
                for k, v in params_avg.items():
                    named[k].copy_(v.to(named[k].dtype))
        if bn_loader is not None:
            # Iterated only here: a new pass over the loader draws from torch's RNG.
            inputs = (fmt.input(b["image"], device) for b in bn_loader)
            note["bn_batches"] = update_bn(student, inputs, bn_steps)
    elif select == "best_id" and run.best_state is not None:
        student.load_state_dict(run.best_state)
        note["selected"] = "best_id"
        note["best_id"] = run.best_acc
    else:
        note["selected"] = "last"
    return note

"""SWAD: dense stochastic weight averaging with the LossValley rule (Cha et al., NeurIPS 2021).

The official ADiP code reports SWAD models. The trainer averages the weights after every
step into a *segment*; at every evaluation the segment (with the in-domain validation loss)
goes to :class:`LossValley` and a new segment starts. LossValley waits until the loss
stops falling (the oldest of the last ``n_converge`` segments has the lowest loss), then
averages segments while the smoothed loss stays under ``(1 + tolerance_ratio)`` × the loss
at convergence, and stops for good once it rises above ("dead valley"); the trainer then
ends the stage, as the official trainer does ("SWAD valley is dead -> early stop"): no later
step could enter the average.

This is a port of ``domainbed/swad.py`` (``LossValley``) and ``swa_utils.AveragedModel`` of
the SWAD code, on dicts of tensors instead of model copies, with their quirks kept: an
average starts empty (``n = 0``, so its first update *replaces* the seed weights) and
averages of segments weigh each segment equally.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import swa_utils

__all__ = ["Average", "LossValley", "update_bn"]


class Average:
    """Running mean of named tensors, with the first and last step it covers."""

    def __init__(self, init: dict[str, torch.Tensor] | None = None) -> None:
        self.params: dict[str, torch.Tensor] = (
            {k: v.detach().clone().float() for k, v in init.items()} if init else {}
        )
        self.n = 0
        self.start_step = -1
        self.end_step = -1
        self.end_loss = float("nan")

    def update(
        self,
        params: dict[str, torch.Tensor],
        *,
        step: int | None = None,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> None:
        """Fold one set of weights into the mean (the first update copies them)."""
        for name, value in params.items():
            v = value.detach().float()
            if self.n == 0 or name not in self.params:
                self.params[name] = v.clone()
            else:
                self.params[name].add_(v - self.params[name], alpha=1.0 / (self.n + 1))
        self.n += 1
        if step is not None:
            start_step = end_step = step
        if start_step is not None and self.start_step == -1:
            self.start_step = start_step
        if end_step is not None:
            self.end_step = end_step

    def add(self, other: Average) -> None:
        """Fold another average in as one item (AveragedModel.update_parameters(avg))."""
        self.update(other.params, start_step=other.start_step, end_step=other.end_step)


class LossValley:
    """Chooses the averaging range from the validation loss of consecutive segments."""

    def __init__(self, n_converge: int = 3, n_tolerance: int = 6, tolerance_ratio: float = 0.3):
        self.n_converge = n_converge
        self.n_tolerance = n_tolerance
        self.tolerance_ratio = tolerance_ratio
        self.converge_q: deque[Average] = deque(maxlen=n_converge)
        self.smooth_q: deque[Average] = deque(maxlen=n_tolerance)
        self.final: Average | None = None
        self.converge_step: int | None = None
        self.dead_valley = False
        self.dead_at_step: int | None = None  # the last step of the segment that ended it
        self.threshold: float | None = None

    @property
    def is_converged(self) -> bool:
        return self.converge_step is not None

    def _smooth_loss(self, idx: int) -> float:
        return min(m.end_loss for m in list(self.smooth_q)[idx:])

    def update_and_evaluate(self, segment: Average, val_loss: float) -> None:
        """Hand over a finished segment and its in-domain validation loss."""
        if self.dead_valley:
            return
        segment.end_loss = float(val_loss)
        self.converge_q.append(segment)
        self.smooth_q.append(segment)

        if not self.is_converged:
            if len(self.converge_q) < self.n_converge:
                return
            min_idx = int(np.argmin([m.end_loss for m in self.converge_q]))
            if min_idx != 0:
                return
            untilmin = self.converge_q[0]
            self.converge_step = untilmin.end_step
            self.final = Average(untilmin.params)
            self.threshold = float(np.mean([m.end_loss for m in self.converge_q])) * (
                1.0 + self.tolerance_ratio
            )
            if self.n_tolerance < self.n_converge:
                for i in range(self.n_converge - self.n_tolerance):
                    self.final.add(self.converge_q[1 + i])
            elif self.n_tolerance > self.n_converge:
                converge_idx = self.n_tolerance - self.n_converge
                q = list(self.smooth_q)[: converge_idx + 1]
                start_idx = 0
                for i in reversed(range(len(q))):
                    if q[i].end_loss > self.threshold:
                        start_idx = i + 1
                        break
                for m in q[start_idx + 1 :]:
                    self.final.add(m)
            return

        assert self.converge_step is not None and self.threshold is not None
        if self.smooth_q[0].end_step < self.converge_step:
            return
        if self._smooth_loss(0) > self.threshold:
            self.dead_valley = True
            self.dead_at_step = segment.end_step
            return
        assert self.final is not None
        self.final.add(self.smooth_q[0])

    def to_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Everything :meth:`from_state` needs to continue the rule after a resume: a
        JSON-able description and the averages' tensors (named ``"<average>/<param>"``).
        The two queues share segments; each is stored once."""
        averages: list[Average] = []

        def index(a: Average) -> int:
            for i, b in enumerate(averages):
                if b is a:
                    return i
            averages.append(a)
            return len(averages) - 1

        meta: dict[str, Any] = {
            "converge_q": [index(a) for a in self.converge_q],
            "smooth_q": [index(a) for a in self.smooth_q],
            "final": None if self.final is None else index(self.final),
            "converge_step": self.converge_step, "dead_valley": self.dead_valley,
            "dead_at_step": self.dead_at_step, "threshold": self.threshold,
        }  # fmt: skip
        meta["averages"] = [
            {"n": a.n, "start_step": a.start_step, "end_step": a.end_step,
             "end_loss": None if np.isnan(a.end_loss) else a.end_loss}
            for a in averages
        ]  # fmt: skip
        tensors = {f"{i}/{name}": v.contiguous()
                   for i, a in enumerate(averages) for name, v in a.params.items()}
        return meta, tensors

    @classmethod
    def from_state(
        cls,
        meta: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        n_converge: int = 3,
        n_tolerance: int = 6,
        tolerance_ratio: float = 0.3,
    ) -> LossValley:
        """The rule as :meth:`to_state` saw it."""
        valley = cls(n_converge, n_tolerance, tolerance_ratio)
        averages = []
        for i, rec in enumerate(meta["averages"]):
            a = Average()
            prefix = f"{i}/"
            a.params = {k[len(prefix):]: v.clone() for k, v in tensors.items()
                        if k.startswith(prefix)}
            a.n, a.start_step, a.end_step = rec["n"], rec["start_step"], rec["end_step"]
            a.end_loss = float("nan") if rec["end_loss"] is None else float(rec["end_loss"])
            averages.append(a)
        valley.converge_q.extend(averages[i] for i in meta["converge_q"])
        valley.smooth_q.extend(averages[i] for i in meta["smooth_q"])
        valley.final = None if meta["final"] is None else averages[meta["final"]]
        valley.converge_step = meta["converge_step"]
        valley.dead_valley = bool(meta["dead_valley"])
        valley.dead_at_step = meta["dead_at_step"]
        valley.threshold = meta["threshold"]
        return valley

    def final_params(self) -> dict[str, torch.Tensor] | None:
        """The averaged weights (the last segment's if the loss never converged)."""
        if not self.is_converged:
            return self.converge_q[-1].params if self.converge_q else None
        assert self.final is not None and self.threshold is not None
        if not self.dead_valley:
            self.smooth_q.popleft()
            while self.smooth_q:
                if self._smooth_loss(0) > self.threshold:
                    break
                self.final.add(self.smooth_q.popleft())
        return self.final.params

    def describe(self) -> dict[str, object]:
        """What the rule decided, for the run log."""
        return {
            "converged": self.is_converged,
            "converge_step": self.converge_step,
            "dead_valley": self.dead_valley,
            "dead_at_step": self.dead_at_step,
            "threshold": self.threshold,
            "averaged_segments": None if self.final is None else self.final.n,
            "start_step": None if self.final is None else self.final.start_step,
            "end_step": None if self.final is None else self.final.end_step,
        }


def update_bn(model: nn.Module, batches: Iterable[torch.Tensor], n_steps: int) -> int:
    """Re-estimate BatchNorm running statistics over at most ``n_steps`` input tensors of
    ``batches``, with :func:`torch.optim.swa_utils.update_bn` (a cumulative mean).

    Returns the number of batches used (0 when the model has no BatchNorm or ``n_steps``
    is 0: the statistics are then left alone). torch's function reads the whole loader and
    takes tensors, not our dict batches: the caller maps batches to inputs, and this caps
    the count and reports it.
    """
    if n_steps <= 0 or not any(isinstance(m, _BatchNorm) for m in model.modules()):
        return 0
    used = 0

    def counted() -> Iterator[torch.Tensor]:
        nonlocal used
        for x in itertools.islice(batches, n_steps):
            used += 1
            yield x

    swa_utils.update_bn(counted(), model)
    return used

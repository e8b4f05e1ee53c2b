"""What each training stage trains and which losses count: ADiP Align / Distill, ERM, KD.

A task says three things, so the trainer's loop stays the same for every method:

- ``configure(student)``: set ``requires_grad`` and return the parameters the optimizer gets;
- ``set_mode(student)``: train mode, with BatchNorm in eval mode when ``freeze_bn``;
- ``losses(model, batch)``: a dict of named losses; ``"loss"`` is the one that is optimised.

Align (official ``DFC_STAGE1``): only P trains; the backbone's parameters are frozen.
Distill (``DFC_STAGE2``): P frozen, the whole backbone trains with the same loss. In both
stages, and for ERM / KD, the official code keeps every BatchNorm layer in eval mode
(ImageNet running statistics, ``ResNet.freeze_bn`` in ``domainbed/networks/networks.py``,
which wraps every student there); ``freeze_bn=True`` does the same and is the default.
Predict: no training; ``Student.logits`` gives 100·cos(P f(x), T_c).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distill.train.losses import adip_loss, ce_loss, kd_loss, teacher_logits
from distill.train.student import LOGIT_SCALE, Student

__all__ = [
    "IMAGE_TARGETS",
    "TEXT_LOSSES",
    "AlignTask",
    "Batch",
    "DistillTask",
    "ErmTask",
    "KdTask",
    "Task",
    "freeze_batchnorm",
    "image_target_mask",
    "make_task",
    "unwrap",
]


@dataclass
class Batch:
    """One training batch on the device: normalised images, labels, teacher image targets."""

    images: torch.Tensor
    labels: torch.Tensor
    image_t: torch.Tensor | None = None
    views: torch.Tensor | None = None  # teacher view of each image (0: the image itself)


def unwrap(model: nn.Module) -> Student:
    """The Student a training step calls, itself or inside DistributedDataParallel."""
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    if not isinstance(inner, Student):
        raise TypeError(f"expected a Student (or DDP around one), got {type(inner).__name__}")
    return inner


def freeze_batchnorm(module: nn.Module) -> None:
    """Every BatchNorm layer of ``module`` in eval mode (its running statistics used and
    kept), the rest as it is."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _set_grad(params: object, flag: bool) -> None:
    for p in params:  # type: ignore[attr-defined]
        p.requires_grad_(flag)


class Task(Protocol):
    """A training stage: what trains, in which mode, and which losses count."""

    name: str
    needs_targets: bool

    def configure(self, student: Student) -> list[nn.Parameter]: ...

    def set_mode(self, student: Student) -> None: ...

    def losses(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]: ...


class _TrainMode:
    """Whole student in train mode; BatchNorm in eval mode when ``freeze_bn`` (default)."""

    needs_targets = False

    def __init__(self, *, freeze_bn: bool = True) -> None:
        self.freeze_bn = freeze_bn

    def set_mode(self, student: Student) -> None:
        student.train()
        if self.freeze_bn:
            freeze_batchnorm(student.backbone)


IMAGE_TARGETS = ("all", "view0", "teacher-correct", "class-mean")
TEXT_LOSSES = ("cosine", "softmax")


def image_target_mask(kind: str, batch: Batch, text: torch.Tensor) -> torch.Tensor | None:
    """Which rows' teacher image embeddings ADiP's image term pulls to (None: every row).

    ``view0``: only rows whose input is view 0, the image itself (the cropped views'
    embeddings are left out); ``teacher-correct``: only rows whose teacher embedding the
    teacher's own zero-shot classifier, argmax_c cos(I_t, T_c), gives the true class.
    ``class-mean`` keeps every row (its target is replaced, not masked: see _AdipTask).

    >>> t = torch.eye(2)
    >>> b = Batch(images=t, labels=torch.tensor([0, 0]), image_t=t, views=torch.tensor([0, 2]))
    >>> image_target_mask("view0", b, t).tolist()
    [True, False]
    >>> image_target_mask("teacher-correct", b, t).tolist()
    [True, False]
    """
    if kind in ("all", "class-mean"):
        return None
    if kind == "view0":
        if batch.views is None:
            raise ValueError("image_targets='view0' needs the batch's views")
        return batch.views == 0
    assert batch.image_t is not None
    return teacher_logits(batch.image_t, text.to(batch.image_t.device)).argmax(-1) == batch.labels


class _AdipTask(_TrainMode):
    needs_targets = True

    def __init__(
        self, *, lam: float = 0.5, freeze_bn: bool = True, image_targets: str = "all",
        text_loss: str = "cosine", image_means: torch.Tensor | None = None,
    ) -> None:
        super().__init__(freeze_bn=freeze_bn)
        if image_targets not in IMAGE_TARGETS:
            raise ValueError(f"image_targets must be one of {IMAGE_TARGETS}, "
                             f"not {image_targets!r}")
        if (image_targets == "class-mean") != (image_means is not None):
            raise ValueError("image_targets='class-mean' goes with image_means (C, D), "
                             "and image_means with it only")
        self.image_means = image_means
        if text_loss not in TEXT_LOSSES:
            raise ValueError(f"text_loss must be one of {TEXT_LOSSES}, not {text_loss!r}")
        self.lam = lam
        self.image_targets = image_targets
        self.text_loss = text_loss

    def image_term_targets(
        self, batch: Batch, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the image term pulls each row of ``batch`` to, as (targets (B, D), mask (B,)
        or None: every row counts): the teacher's image embeddings, or with ``class-mean``
        the prototypes of the rows' classes; the mask of ``image_targets`` (see
        :func:`image_target_mask`). ``text``: the student's class-prompt embeddings."""
        assert batch.image_t is not None
        mask = image_target_mask(self.image_targets, batch, text)
        image_t = batch.image_t
        if self.image_means is not None:  # class-mean: the teacher's prototype of the class
            image_t = self.image_means.to(image_t.device)[batch.labels]
        return image_t, mask

    def losses(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        student = unwrap(model)
        assert batch.image_t is not None and student.text is not None
        emb = model(batch.images, output="embedding")
        image_t, mask = self.image_term_targets(batch, student.text)
        classes = student.text if self.text_loss == "softmax" else None
        return adip_loss(emb, image_t, student.text[batch.labels], self.lam, mask,
                         text_classes=classes, labels=batch.labels)


class AlignTask(_AdipTask):
    """ADiP stage 1: train P only; the backbone's parameters are frozen.

    BatchNorm is in the same mode as in stage 2 (frozen by default, as the official code),
    so stage 2 starts from exactly the features P was aligned to.
    """

    name = "align"

    def configure(self, student: Student) -> list[nn.Parameter]:
        _set_grad(student.parameters(), False)
        assert student.proj is not None
        _set_grad(student.proj.parameters(), True)
        return list(student.proj.parameters())


class DistillTask(_AdipTask):
    """ADiP stage 2: P frozen, the backbone trains with the same loss."""

    name = "distill"

    def configure(self, student: Student) -> list[nn.Parameter]:
        _set_grad(student.parameters(), False)
        _set_grad(student.backbone.parameters(), True)
        return list(student.backbone.parameters())


class ErmTask(_TrainMode):
    """ERM: linear head + cross-entropy, full fine-tune."""

    name = "erm"

    def configure(self, student: Student) -> list[nn.Parameter]:
        _set_grad(student.parameters(), True)
        return [p for p in student.parameters() if p.requires_grad]

    def losses(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        return ce_loss(model(batch.images), batch.labels)


class KdTask(ErmTask):
    """KD: CE + λ·KL to the teacher's zero-shot distribution (from cached embeddings)."""

    name = "kd"
    needs_targets = True

    def __init__(
        self, text: torch.Tensor, *, lam: float = 0.5, temperature: float = 0.1,
        freeze_bn: bool = True, logit_scale: float = LOGIT_SCALE,
    ) -> None:
        super().__init__(freeze_bn=freeze_bn)
        self.text = text
        self.lam = lam
        self.temperature = temperature
        self.logit_scale = logit_scale

    def losses(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        assert batch.image_t is not None
        t = teacher_logits(batch.image_t, self.text.to(batch.image_t.device),
                           self.logit_scale)
        return kd_loss(model(batch.images), batch.labels, t, lam=self.lam,
                       temperature=self.temperature)


def make_task(
    stage: str,
    *,
    lam: float,
    text: torch.Tensor,
    kd_temperature: float,
    freeze_bn: bool,
    image_targets: str = "all",
    text_loss: str = "cosine",
    image_means: torch.Tensor | None = None,
    kd_logit_scale: float = LOGIT_SCALE,
) -> Task:
    """The task of a stage name ("align", "distill", "erm", "kd"). ``image_means`` (C, D):
    the teacher's image prototypes, for ``image_targets="class-mean"``."""
    if stage == "align":
        return AlignTask(lam=lam, freeze_bn=freeze_bn, image_targets=image_targets,
                         text_loss=text_loss, image_means=image_means)
    if stage == "distill":
        return DistillTask(lam=lam, freeze_bn=freeze_bn, image_targets=image_targets,
                           text_loss=text_loss, image_means=image_means)
    if stage == "erm":
        return ErmTask(freeze_bn=freeze_bn)
    if stage == "kd":
        return KdTask(text, lam=lam, temperature=kd_temperature, freeze_bn=freeze_bn,
                      logit_scale=kd_logit_scale)
    raise ValueError(f"unknown stage {stage!r}")

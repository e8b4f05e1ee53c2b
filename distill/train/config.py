"""The trainer's configuration: one frozen pydantic model, written resolved beside every run.

Defaults follow the official VL2V-ADiP code (Adam, lr 5e-5, weight decay 0, 32 images per
source domain per step, lambda 0.5, 5,001 steps per stage, evaluation every 200 steps, SWAD
LossValley with n_converge 3, n_tolerance 6, tolerance_ratio 0.3). ``None`` means "unset:
resolve at run time" (train/test domains from the data, channels_last from the model type,
the store from the cache folder); the resolved values are what ``config.json`` records.

>>> cfg = TrainConfig(data="DATA", teacher="local:pseudo-clip", out="runs/a", cache="cache")
>>> cfg.method, cfg.lr, cfg.batch_per_domain
('adip', 5e-05, 32)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CONFIG_FILE", "DEFAULT_STUDENT", "Method", "TrainConfig", "load_config"]

CONFIG_FILE = "config.json"
DEFAULT_STUDENT = "tf_efficientnet_lite0"
Method = Literal["adip", "kd", "erm", "zeroshot"]


class TrainConfig(BaseModel):
    """Everything that decides what a training run does (frozen; ``None`` = resolve later)."""

    # allow_inf_nan=False: "--lr nan" or "lr: .inf" in a config file is a usage error (exit 2)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    data: str = Field(description="DATA folder or CSV manifest (distill.data.scan)")
    teacher: str = Field(description="teacher name as harvested, e.g. local:pseudo-clip")
    out: str = Field(description="run folder: checkpoints, logs, metrics, config.json")
    cache: str | None = Field(None, description="cache folder holding stores/<slug>")
    store: str | None = Field(None, description="EmbeddingStore path; overrides --cache lookup")
    method: Method = "adip"
    student: str = DEFAULT_STUDENT
    student_weights: str | None = Field(
        None, description="weights file for the student backbone (safetensors or .pth)"
    )
    pretrained: bool = Field(
        True, description="use packaged ImageNet weights when the student has them"
    )
    weights_dir: str | None = Field(
        None, description="where converted packaged weights are cached (default ~/.cache)"
    )
    train_domains: tuple[str, ...] | None = None
    test_domains: tuple[str, ...] | None = None
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    steps_align: int = Field(5001, ge=0)
    steps_distill: int = Field(5001, ge=0)
    steps: int = Field(5001, ge=0, description="steps of the one-stage methods (erm, kd)")
    image_size: int = Field(64, ge=8)
    lam: float = Field(0.5, ge=0.0, le=1.0, description="ADiP image/text weight; KD weight")
    kd_temperature: float = Field(0.1, gt=0.0)
    lr: float = Field(5e-5, gt=0.0, description="learning rate (Distill, ERM, KD)")
    lr_align: float = Field(
        1e-3, gt=0.0, description="learning rate of Align (only the projection P trains)"
    )
    align_min_delta: float = Field(
        1e-3, ge=0.0,
        description="Align stops early when its mean loss over a window of steps improves "
        "by less than this (0: run every --steps-align step)",
    )
    align_window: int = Field(25, ge=1, description="steps per window of the Align stopping rule")
    weight_decay: float = Field(0.0, ge=0.0)
    batch_per_domain: int = Field(32, ge=1, description="images per source domain per step")
    views: int | None = Field(None, ge=1, description="teacher views used (default: all)")
    eval_every: int = Field(200, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    select: Literal["best_id", "last"] = Field(
        "best_id", description="weights kept at a stage's end without SWAD"
    )
    swad: bool = False
    swad_n_converge: int = Field(3, ge=1)
    swad_n_tolerance: int = Field(6, ge=1)
    swad_tolerance_ratio: float = Field(0.3, ge=0.0)
    swad_bn_steps: int = Field(100, ge=0, description="batches to re-estimate BN after SWAD")
    freeze_bn: bool = Field(
        True, description="BatchNorm in eval mode (ImageNet statistics) in every stage, "
        "as the official VL2V-ADiP code does for every student"
    )
    channels_last: bool | None = Field(None, description="None: True for convnets")
    bf16: bool = Field(False, description="bfloat16 autocast for forward and loss")
    num_workers: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1, description="torch threads (default: torch's)")
    seed: int = 0
    split_seed: int = Field(0, description="seed of the ID hold-out split (fixed across runs)")
    resume: bool = False

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.store is None and self.cache is None:
            raise ValueError("give --cache DIR (to find the teacher store) or --store PATH")
        if self.train_domains is not None and self.test_domains is not None:
            both = set(self.train_domains) & set(self.test_domains)
            if both:
                raise ValueError(f"domains both train and test: {sorted(both)}")
        return self

    def stages(self) -> list[tuple[str, int]]:
        """(stage name, steps) in the order they run."""
        if self.method == "adip":
            return [("align", self.steps_align), ("distill", self.steps_distill)]
        if self.method in ("erm", "kd"):
            return [(self.method, self.steps)]
        return []

    def write(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` into ``folder`` (atomically) and return its path."""
        # Imported here: ``cache`` loads numpy and diskcache, and the CLI imports this
        # module to build its flags.
        from cache import atomic_write

        path = Path(folder) / CONFIG_FILE
        return atomic_write(path, json.dumps(self.model_dump(mode="json"), indent=2) + "\n")


def load_config(run: str | os.PathLike[str]) -> TrainConfig:
    """The resolved config of a run folder."""
    path = Path(run) / CONFIG_FILE
    return TrainConfig.model_validate_json(path.read_text("utf-8"))

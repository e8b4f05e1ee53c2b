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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cache import atomic_write
from distill.cli.validate import MAX_STEPS

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_STUDENT",
    "EVALS_FILE",
    "LOG_FILE",
    "METRICS_FILE",
    "Method",
    "TrainConfig",
    "files_of_no_run",
    "warmup_factor",
]

CONFIG_FILE = "config.json"
# What else a run writes at its top level from its start (the trainer's log files), and
# at its end
LOG_FILE = "log.jsonl"
EVALS_FILE = "evals.jsonl"
METRICS_FILE = "metrics.json"
DEFAULT_STUDENT = "tf_efficientnet_lite0"
Method = Literal["adip", "kd", "erm", "zeroshot"]
# Past these no machine trains: torch asked for 100,000 OpenMP threads failed (a MemoryError,
# a segfault), 100,000 DataLoader workers were forked until the machine ran out, and a
# billion images a domain were listed in Python at the first step (the OOM killer), after
# the data was scanned and the run folder written.
MAX_THREADS = 256
MAX_WORKERS = 256
MAX_BATCH_PER_DOMAIN = 4096
# a student's input side in pixels; the bound of the demo's --student-size and of harvest
# --select-image-size too (distill.cli.validate.MAX_STUDENT_SIZE)
MAX_IMAGE_SIZE = 1024
# Every count of steps, batches or evaluations below stops at MAX_STEPS (100,000; the bound
# of fit-teacher --steps too): 10**23 steps trained for ever without a word, and 10**23
# SWAD evaluations were a traceback (a deque that long) after the data was read.


# fields of every config.json a run writes (TrainConfig.write: all its fields; these five
# name the data, teacher, method, student and run folder)
_RUN_CONFIG_KEYS = frozenset({"data", "teacher", "method", "student", "out"})


def files_of_no_run(out: str | os.PathLike[str]) -> list[str]:
    """The files in folder ``out`` a run starting there writes over (its config.json, and
    log.jsonl and evals.jsonl, emptied at step 0), when no run wrote them: there is no
    config.json of a run beside them (a folder of something else given as ``--out``).
    [] for a missing folder, and for a run's own files (one killed before its first
    checkpoint is started again over them)."""
    folder = Path(out)
    present = [n for n in (CONFIG_FILE, LOG_FILE, EVALS_FILE) if (folder / n).exists()]
    if not present:
        return []
    try:
        config = json.loads((folder / CONFIG_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return present
    if isinstance(config, dict) and config.keys() >= _RUN_CONFIG_KEYS:
        return []
    return present


def warmup_factor(step: int, warmup: int) -> float:
    """The fraction of its lr that 0-based ``step`` trains at under a linear warm-up over
    ``warmup`` steps (1 from then on, and always when ``warmup`` <= 0).

    >>> [warmup_factor(k, 4) for k in (0, 3, 9)], warmup_factor(0, 0)
    ([0.25, 1.0, 1.0], 1.0)
    """
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


class TrainConfig(BaseModel):
    """Everything that decides what a training run does (frozen; ``None`` = resolve later)."""

    # allow_inf_nan=False: "--lr nan" or "lr: .inf" in a config file is a usage error (exit 2)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # The descriptions are the help of `vlm-distill train`, whose flags are generated from
    # these fields (distill/cli/train.py): declare a new option here and nowhere else.
    data: str = Field(description="data folder or CSV manifest")
    teacher: str = Field(description="teacher as harvested, e.g. local:pseudo-clip")
    out: str = Field(description="run folder: checkpoints, logs, metrics, config.json")
    cache: str | None = Field(None, description="cache folder the harvest wrote (holds stores/)")
    store: str | None = Field(
        None, description="EmbeddingStore folder (overrides the --cache lookup)"
    )
    class_file: str | None = Field(
        None, description="class names, one per line: the list and order the store was "
        "harvested with (`harvest --class-file`, or the *.classes.txt `harvest --select` "
        "writes beside its manifest); default: the class folders (or manifest labels) sorted"
    )
    method: Method = Field("adip", description="what to train")
    student: str = Field(DEFAULT_STUDENT, description="timm model name")
    student_weights: str | None = Field(
        None, description="weights file for the student backbone (safetensors or .pth)"
    )
    pretrained: bool = Field(
        True, description="use packaged ImageNet weights when the student has them "
        "(tf_efficientnet_lite0, also named tf_efficientnet_lite0.in1k); any other student "
        "starts from random init, with a note unless --no-pretrained or --weights (config.json "
        "records false)"
    )
    weights_dir: str | None = Field(
        None, description="where converted packaged weights are cached (default ~/.cache)"
    )
    train_domains: tuple[str, ...] | None = Field(
        None, description="source domains, space- or comma-separated "
        "(default: every domain not in --test-domains)"
    )
    test_domains: tuple[str, ...] | None = Field(
        None, description="target (OOD) domains (default: every domain not in --train-domains)"
    )
    holdout_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="fraction of the source domains held out as ID test"
    )
    steps_align: int = Field(
        5001, ge=0, le=MAX_STEPS,
        description=f"ADiP stage 1 (Align) steps, a maximum: see --align-min-delta (0 to "
        f"{MAX_STEPS:,})",
    )
    steps_distill: int = Field(
        5001, ge=0, le=MAX_STEPS, description=f"ADiP stage 2 (Distill) steps (0 to {MAX_STEPS:,})"
    )
    steps: int = Field(
        5001, ge=0, le=MAX_STEPS,
        description=f"steps of the one-stage methods (erm, kd) (0 to {MAX_STEPS:,})",
    )
    image_size: int = Field(
        64, ge=8, le=MAX_IMAGE_SIZE,
        description=f"student input size in pixels (8 to {MAX_IMAGE_SIZE})",
    )  # fmt: skip
    lam: float = Field(
        0.5, ge=0.0, le=1.0, description="ADiP image-vs-text weight; KD's KL weight"
    )
    image_targets: Literal["all", "view0", "teacher-correct", "class-mean"] = Field(
        "all",
        description="teacher image embeddings ADiP's image term pulls to: all (official), "
        "view0 (only the images themselves, not their cropped views), teacher-correct "
        "(only those the teacher's zero-shot classifier gets right), class-mean (the mean "
        "of the class's embeddings over the training images and views, the same target "
        "for every image of a class)",
    )
    text_loss: Literal["cosine", "softmax"] = Field(
        "cosine",
        description="ADiP's text term: cosine (official: -cos(PF, T_y)) or softmax (an "
        "ablation: cross-entropy of 100 cos(PF, T_c) over every class prompt)",
    )
    proj_init: Literal["random", "lstsq"] = Field(
        "random",
        description="ADiP's projection P before Align: random (official: nn.Linear's own "
        "init) or lstsq (an ablation: the ridge least-squares map from the frozen "
        "backbone's features to the image term's L2-normalised teacher targets over the "
        "first 50 batches of Align's stream, fitted once when the run starts; Align then "
        "trains from there)",
    )
    kd_temperature: float = Field(0.1, gt=0.0, description="KD softmax temperature")
    kd_logit_scale: float = Field(
        100.0, gt=0.0,
        description="scale s of KD's teacher logits s·cos(I_t, T_c) before the temperature "
        "(official: CLIP's learned logit scale, 100). ADiP never uses it: its losses are "
        "cosines and its Predict argmax does not depend on a scale",
    )
    lr: float = Field(5e-5, gt=0.0, description="learning rate of Distill, ERM and KD")
    lr_align: float = Field(
        1e-3, gt=0.0, description="learning rate of Align (only the projection P trains)"
    )
    lr_kd: float | None = Field(
        None,
        gt=0.0,
        description="learning rate of KD (unset: lr). KD divides the student's logits by "
        "the temperature in both terms, which multiplies its effective step by "
        "1/kd_temperature: a lr that suits ERM can collapse KD",
    )
    warmup: int = Field(
        40, ge=0, le=MAX_STEPS,
        description="steps of a linear learning-rate warm-up at the start of every stage "
        "(step k trains at lr x min(1, (k+1)/warmup); 0: none). Adam's first step moves "
        "every weight by about the full lr, which at lr 5e-4 with BatchNorm frozen can "
        "leave the student's output constant",
    )
    align_min_delta: float = Field(
        1e-3, ge=0.0,
        description="Align stops early when its mean loss over a window of steps improves "
        "by less than this (0: run every --steps-align step)",
    )
    align_window: int = Field(
        25, ge=1, le=MAX_STEPS, description="steps per window of the Align stopping rule"
    )
    weight_decay: float = Field(0.0, ge=0.0, description="Adam weight decay")
    batch_per_domain: int = Field(
        32, ge=1, le=MAX_BATCH_PER_DOMAIN,
        description=f"images per source domain per step (1 to {MAX_BATCH_PER_DOMAIN})",
    )
    views: int | None = Field(
        None, ge=1, description="teacher views to use (default: all cached)"
    )
    eval_every: int = Field(200, ge=1, le=MAX_STEPS, description="steps between evaluations")
    eval_batch_size: int = Field(256, ge=1, description="images per evaluation batch")
    select: Literal["best_id", "last"] = Field(
        "best_id", description="weights kept at a stage's end without SWAD"
    )
    swad: bool = Field(False, description="SWAD weight averaging (LossValley)")
    swad_n_converge: int = Field(
        3, ge=1, le=MAX_STEPS,
        description="SWAD LossValley: evaluations that decide the loss has converged"
    )
    swad_n_tolerance: int = Field(
        6, ge=1, le=MAX_STEPS,
        description="SWAD LossValley: evaluations over the threshold that end averaging"
    )
    swad_tolerance_ratio: float = Field(
        0.3, ge=0.0, description="SWAD LossValley: threshold = converged loss x (1 + this)"
    )
    swad_bn_steps: int = Field(
        100, ge=0, le=MAX_STEPS, description="batches to re-estimate BN after SWAD"
    )
    freeze_bn: bool | None = Field(
        None, description="BatchNorm in eval mode (its pretrained statistics) in every "
        "stage, as the official VL2V-ADiP code does for every (pretrained) student; "
        "--no-freeze-bn trains them (default: frozen when the student starts from weights, "
        "trained when it starts at random, whose statistics are placeholders)"
    )
    bn_train_stage: Literal["align", "distill"] | None = Field(
        None, description="ADiP only, an ablation: BatchNorm trained (batch statistics) in "
        "this stage alone and frozen in the other (default: --freeze-bn's choice in both, "
        "frozen as in the official code)"
    )
    channels_last: bool | None = Field(
        None, description="channels-last memory format (default: on for convnets)"
    )
    bf16: bool = Field(False, description="bfloat16 autocast for forward and loss")
    num_workers: int = Field(
        0, ge=0, le=MAX_WORKERS, description=f"DataLoader workers (0 to {MAX_WORKERS})"
    )
    threads: int | None = Field(
        None, ge=1, le=MAX_THREADS,
        description=f"torch CPU threads, 1 to {MAX_THREADS} (default: torch's)",
    )
    seed: int = Field(
        0, ge=0, lt=2**32, description="seed of the student's initialisation and of the batches"
    )
    split_seed: int = Field(
        0, ge=0, lt=2**32, description="seed of the ID hold-out split (fixed across runs)"
    )
    resume: bool = Field(False, description="continue from RUN/checkpoint")

    @field_validator("data", "out", "cache", "store", "class_file", "student_weights",
                     "weights_dir", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        """A ``pathlib.Path`` is taken as its text (pydantic's str field refused it)."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    def _check_out_not_in_cache(self, out: str) -> None:
        """--out may not be the cache folder, a folder a cache tool replaces or deletes
        (its ``stores/``, ``responses/``, ``select/``: a harvest swaps a store folder whole,
        and the finished run inside went with it), or the --store folder."""
        from cache.layout import RESPONSES_DIR, SELECT_DIR, STORES_DIR

        places = []
        if self.cache is not None:
            cache = os.path.realpath(self.cache)
            if out == cache:
                raise ValueError(
                    f"--out {self.out} is the cache folder {self.cache}: put the run "
                    "folder elsewhere"
                )
            places += [os.path.join(cache, d) for d in (STORES_DIR, RESPONSES_DIR, SELECT_DIR)]
        if self.store is not None:
            places.append(os.path.realpath(self.store))
        for place in places:
            if os.path.commonpath([place, out]) == place:
                raise ValueError(
                    f"--out {self.out} is inside {place}, which the cache tools replace "
                    "(a harvest swaps a store folder whole: the run would go with it): put "
                    "the run folder elsewhere"
                )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.store is None and self.cache is None:
            raise ValueError("give --cache DIR (to find the teacher store) or --store PATH")
        # a domain named twice, or both train and test, is refused by resolve_domains on
        # the domains named: a flag's commas split a name that has one ("Paris, France")
        data, out = os.path.realpath(self.data), os.path.realpath(self.out)
        if os.path.isdir(data) and os.path.commonpath([data, out]) == data:
            # its checkpoint/ and plots would be read as a class of images by the next scan
            # (DATA itself too: a folder above DATA is fine, the run writes beside it)
            where = "the" if out == data else "inside the"
            raise ValueError(
                f"--out {self.out} is {where} data folder {self.data}: put the run "
                "folder elsewhere"
            )
        self._check_out_not_in_cache(out)
        if self.bn_train_stage is not None and self.method != "adip":
            raise ValueError(
                f"--bn-train-stage names one of ADiP's two stages; --method {self.method} "
                "has none: drop it (--no-freeze-bn trains BatchNorm in every stage)"
            )
        if self.holdout_fraction == 0 and self.method != "zeroshot":
            # no in-domain images are held out: nothing to select weights by
            if self.swad:
                raise ValueError(
                    "--swad follows the in-domain validation loss, and --holdout-fraction 0 "
                    "holds no images out: drop one of them"
                )
            if self.select == "best_id" and "select" in self.model_fields_set:
                raise ValueError(
                    "--select best_id picks weights by in-domain accuracy, and "
                    "--holdout-fraction 0 holds no images out: pass --select last"
                )
            # the default follows: every stage keeps its last weights (said in config.json)
            object.__setattr__(self, "select", "last")
        return self

    def stages(self) -> list[tuple[str, int]]:
        """(stage name, steps) in the order they run."""
        if self.method == "adip":
            return [("align", self.steps_align), ("distill", self.steps_distill)]
        if self.method in ("erm", "kd"):
            return [(self.method, self.steps)]
        return []

    def stage_freezes_bn(self, stage: str, frozen: bool) -> bool:
        """Whether ``stage`` keeps BatchNorm frozen: ``frozen`` (the run's resolved
        ``freeze_bn``) in every stage, unless ``bn_train_stage`` names the one that trains it."""
        if self.bn_train_stage is None:
            return frozen
        return stage != self.bn_train_stage

    def stage_lr(self, stage: str) -> float:
        """The learning rate of a stage: ``lr_align`` for Align, ``lr_kd`` (when set) for
        KD, ``lr`` otherwise."""
        if stage == "align":
            return self.lr_align
        if stage == "kd" and self.lr_kd is not None:
            return self.lr_kd
        return self.lr

    def lr_at(self, stage: str, step: int) -> float:
        """The learning rate of ``step`` (0-based, within its stage): the stage's lr,
        ramped up linearly over the first ``warmup`` steps.

        >>> cfg = TrainConfig(data="D", teacher="t", out="o", cache="c", lr=1e-3, warmup=4)
        >>> [cfg.lr_at("erm", k) for k in (0, 1, 3, 10)]
        [0.00025, 0.0005, 0.001, 0.001]
        """
        return self.stage_lr(stage) * warmup_factor(step, self.warmup)

    def write(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` into ``folder`` (atomically) and return its path."""
        path = Path(folder) / CONFIG_FILE
        return atomic_write(path, json.dumps(self.model_dump(mode="json"), indent=2) + "\n")


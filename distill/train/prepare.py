"""Before the first step: the data split, the student, and the run's description.

DomainBed's protocol: the source (training) domains lose 20 % of their images to an
in-domain (ID) validation split, fixed by ``split_seed``; the target domains are
out-of-distribution (OOD) and never trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from distill.data import DataError, Dataset, Sample, scan, split_sources
from distill.data.dataset import DataArgumentError, class_key, label_first
from distill.train.config import TrainConfig
from distill.train.evaluate import to_input
from distill.train.student import (
    Student,
    build_student,
    is_convnet,
    norm_stats,
    starts_from_weights,
)
from distill.train.targets import TeacherTargets
from vlmclient.errors import ConfigurationError

__all__ = [
    "DataSplit",
    "InputFormat",
    "build",
    "check_shards",
    "resolve",
    "resolve_domains",
    "run_info",
    "split_data",
]


@dataclass(frozen=True)
class DataSplit:
    """The labelled images of a run, by role."""

    dataset: Dataset
    train_domains: tuple[str, ...]
    test_domains: tuple[str, ...]
    train: tuple[Sample, ...]  # source domains minus the hold-out
    holdout: tuple[Sample, ...]  # ID validation
    ood: list[Sample]  # target domains

    def without(self, ids: Collection[str]) -> DataSplit:
        """The split with the images ``ids`` left out of every role (their pixels cannot
        be decoded: the store was harvested without them). Left out after the split, so
        the hold-out of every other image is the one the whole data set gives: eval takes
        it as it is. ConfigurationError when a source domain has no image left."""
        out = replace(self, train=tuple(s for s in self.train if s.id not in ids),
                      holdout=tuple(s for s in self.holdout if s.id not in ids),
                      ood=[s for s in self.ood if s.id not in ids])  # fmt: skip
        _check_sources(out.train, out.train_domains, self.dataset)
        return out

    def domain_groups(self) -> list[list[int]]:
        """Indices into ``train`` of each training domain (one batch slice per domain)."""
        return [[i for i, s in enumerate(self.train) if s.domain == d]
                for d in self.train_domains]


def resolve_domains(ds: Dataset, cfg: TrainConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train domains, test domains): what the config names, the rest of the data's
    domains filling the side left unset."""
    all_domains = tuple(ds.domains)
    named_train = _known(cfg.train_domains, all_domains)
    named_test = _known(cfg.test_domains, all_domains)
    # checked on the domains named, not the flag's comma-split parts: "Paris, France" and
    # "Paris, Texas" share the part "Paris" (until 2026-12-06 refused as named twice, or
    # as both train and test)
    for flag, named in (("--train-domains", named_train), ("--test-domains", named_test)):
        if named == ():  # `--test-domains "$TEST"` with TEST unset, or ","
            raise ConfigurationError(
                f"{flag} names no domain: name one or more of {all_domains}, or leave it out"
            )
        names = named or ()
        twice = sorted({d for d in names if names.count(d) > 1})
        if twice:  # a source named twice got two groups of the batch: twice its share
            raise ConfigurationError(f"{flag} names {', '.join(twice)} twice")
    both = set(named_train or ()) & set(named_test or ())
    if both:
        raise ConfigurationError(f"domains both train and test: {sorted(both)}")
    test = named_test or ()
    if named_train is not None:
        train_d = named_train
        if cfg.test_domains is None:
            test = tuple(d for d in all_domains if d not in train_d)
    else:
        train_d = tuple(d for d in all_domains if d not in test)
    if not train_d:
        raise ConfigurationError("no training domain left: every domain is a test domain")
    return train_d, test


def _known(named: tuple[str, ...] | None, domains: tuple[str, ...]) -> tuple[str, ...] | None:
    """The dataset's domains a flag names. The flag's commas list several domains, so a
    domain whose name has one ("Paris, France") arrives in parts: parts that are no domain
    are joined again with the ones after them until they name one. ConfigurationError for
    a name that stays unknown. Spaces around a name are dropped when no domain has them
    ("a, b" names a and b), and a blank part names nothing ("a, ,b" as "a,,b")."""
    if named is None:
        return None
    # compared after NFC: a domain folder copied from macOS is named in NFD
    by_key = {class_key(d): d for d in domains}
    out: list[str] = []
    i = 0
    while i < len(named):
        match = _match(named, i, by_key)
        if match is not None:
            i, domain = match
            out.append(domain)
        elif named[i].strip():
            raise ConfigurationError(f"unknown domain {named[i]!r}; this dataset has {domains}")
        else:
            i += 1
    return tuple(out)


def _match(parts: tuple[str, ...], i: int, by_key: dict[str, str]) -> tuple[int, str] | None:
    """(index after its last part, domain) of the domain ``parts[i:]`` begin with: the
    parts joined as given (a name with a comma), else without the spaces around them (the
    space after a comma in "a, b"). None when they begin with no domain."""
    for strip in (False, True):
        for j in range(i, len(parts)):
            name = class_key(",".join(parts[i : j + 1]))
            name = name.strip() if strip else name
            if name in by_key:
                return j + 1, by_key[name]
    return None


def split_data(config: TrainConfig) -> DataSplit:
    """Scan ``config.data`` and split its labelled images into train / ID / OOD."""
    # Read on this machine, never uploaded: a manifest of absolute paths (as select
    # writes) is fine here.
    ds = scan(config.data, class_file=config.class_file, allow_outside_paths=True)
    labelled = [s for s in ds.samples if s.label is not None]
    if not labelled:
        if ds.samples:  # images, none labelled: say how to label them (exit 2)
            raise DataArgumentError(
                label_first(ds, config.data, config.class_file, teacher=config.teacher,
                            cache=config.cache or "CACHE")
            )  # fmt: skip
        raise DataError(f"{config.data}: no labelled images; the trainer needs class labels")
    train_domains, test_domains = resolve_domains(ds, config)
    train, holdout = split_sources(
        labelled, train_domains, fraction=config.holdout_fraction, seed=config.split_seed
    )
    _check_sources(train, train_domains, ds)
    ood = [s for s in labelled if s.domain in test_domains]
    return DataSplit(ds, train_domains, test_domains, train, holdout, ood)


def _check_sources(train: tuple[Sample, ...], train_domains: tuple[str, ...], ds: Dataset) -> None:
    empty = sorted(set(train_domains) - {s.domain for s in train})
    if empty:
        # every step draws a batch from each source domain: found here, before anything
        # is written (it was a traceback from the batch sampler, naming an index)
        raise ConfigurationError(
            f"source domain(s) {empty} of {ds.root} have no labelled images to train "
            "on; label them, or name the source domains with --train-domains"
        )


def check_shards(split: DataSplit, world: int) -> None:
    """ConfigurationError when a source domain has fewer training images than there are
    processes: each process trains on its own share of every source domain, and an empty
    share ended that process in a traceback from the batch sampler, after config.json and
    the logs were written."""
    if world <= 1:
        return
    for domain, group in zip(split.train_domains, split.domain_groups(), strict=True):
        if len(group) < world:
            n = len(group)
            raise ConfigurationError(
                f"source domain {domain!r} has {n} training image{'s' * (n != 1)}, fewer "
                f"than the {world} processes: each process trains on its own share of every "
                "source domain; start fewer processes (torchrun --nproc_per_node) or give "
                "it more images"
            )


def store_content(store: Any) -> str:
    """A digest of what a store teaches beyond its teacher and dataset fingerprints: the
    class-prompt embeddings (another --prompt) and the image files' content digest (images
    replaced and harvested again). A resume refuses a store whose content changed."""
    from distill.data.content import CONTENT_KEY, FILES_KEY

    digest = hashlib.sha256(np.ascontiguousarray(store.text_embeddings).tobytes())
    files = store.meta.get(FILES_KEY)
    if isinstance(files, dict):
        digest.update(str(files.get(CONTENT_KEY)).encode())
    return digest.hexdigest()[:16]


def run_info(config: TrainConfig, split: DataSplit, targets: TeacherTargets) -> dict[str, Any]:
    """What a run is (method, models, data, split): the head of run.json, metrics.json and
    every checkpoint's state.json."""
    return {
        "method": config.method,
        "student": config.student,
        "teacher": config.teacher,
        "teacher_fingerprint": targets.store.meta.get("teacher_fingerprint"),
        "dataset_fingerprint": split.dataset.fingerprint(),
        "store": str(targets.path),
        "store_content": store_content(targets.store),
        "class_names": list(split.dataset.class_names),
        # set: the class list was fixed by a file (eval reads data with class_names)
        "class_file": config.class_file,
        "train_domains": list(split.train_domains),
        "test_domains": list(split.test_domains),
        "holdout_fraction": config.holdout_fraction,
        "seed": config.seed,
        "split_seed": config.split_seed,
        "image_size": config.image_size,
        "n_train": len(split.train),
        "n_id": len(split.holdout),
        "n_ood": len(split.ood),
        # images of the data left out of every role: their pixels cannot be decoded (the
        # store was harvested without them); eval leaves them out too
        "left_out": list(targets.left_out),
    }


@dataclass(frozen=True)
class InputFormat:
    """How images become the student's input: its normalisation and memory format."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool

    def input(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 (B, 3, H, W) images -> the student's normalised input on ``device``."""
        return to_input(images, self.mean, self.std, channels_last=self.channels_last).to(device)


def build(
    config: TrainConfig, num_classes: int, text: torch.Tensor, device: torch.device
) -> tuple[Student, InputFormat]:
    """The student (timm backbone + P and the text head for ADiP, a linear head for ERM and
    KD), seeded with ``config.seed`` and moved to ``device``."""
    torch.manual_seed(config.seed)
    student = build_student(
        config.student, method=config.method, num_classes=num_classes, text=text,
        pretrained=config.pretrained, weights_file=config.student_weights,
        weights_dir=config.weights_dir,
    )
    _check_input_size(student, config)
    mean, std = norm_stats(student.backbone)
    conv = is_convnet(student.backbone)
    channels_last = config.channels_last if config.channels_last is not None else conv
    student.to(device)
    if channels_last:
        student.to(memory_format=torch.channels_last)
    return student, InputFormat(mean, std, channels_last)


def _check_input_size(student: Student, config: TrainConfig) -> None:
    """ConfigurationError unless the backbone takes ``config.image_size`` inputs: a ViT
    built for 224 px failed at the first step with an AssertionError traceback, after the
    run folder was written. One image through it, before anything is written."""
    size = config.image_size
    was_training = student.backbone.training
    student.backbone.eval()  # BatchNorm in train mode refuses a batch of one
    try:
        with torch.no_grad():
            student.backbone(torch.zeros(1, 3, size, size))
    except Exception as exc:  # timm raises AssertionError, RuntimeError, ValueError
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ConfigurationError(
            f"student {config.student} does not take {size} px inputs ({why}); pick "
            "another --image-size or student"
        ) from None
    finally:
        student.backbone.train(was_training)


def resolve(
    config: TrainConfig, split: DataSplit, targets: TeacherTargets, fmt: InputFormat
) -> TrainConfig:
    """The config with what was left to the run filled in (domains, store, views,
    channels_last, freeze_bn; pretrained as it happened): what config.json records.
    ``resume`` is dropped: it is how the run was started, not what it is."""
    freeze_bn = config.freeze_bn
    if freeze_bn is None:
        freeze_bn = starts_from_weights(config.student, pretrained=config.pretrained,
                                        weights_file=config.student_weights)
    # pretrained as it happened: packaged weights asked for and found (a student without
    # any starts from random init, and config.json said pretrained: true)
    pretrained = starts_from_weights(config.student, pretrained=config.pretrained)
    return config.model_copy(update={
        "pretrained": pretrained,
        "train_domains": split.train_domains, "test_domains": split.test_domains,
        "store": str(targets.path), "views": targets.views,
        "channels_last": fmt.channels_last, "freeze_bn": freeze_bn, "resume": False,
    })

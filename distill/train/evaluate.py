"""Per-domain accuracy: of a student (ID = held-out source images, OOD = target domains) and
of the teacher's zero-shot classifier rebuilt from cached embeddings.

The loss reported beside the accuracy is the cross-entropy of the prediction logits (the
DomainBed evaluator's loss), which SWAD's LossValley watches on the in-domain split.

>>> res = evaluate_run("runs/adip", "DATA")  # doctest: +SKIP
>>> res["mean_ood"]  # doctest: +SKIP
0.71
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from math import isfinite
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distill.data import (
    DEFAULT_DOMAIN,
    DataError,
    Dataset,
    Sample,
    Samples,
    display,
    scan,
    split_sources,
)
from distill.data.dataset import class_key
from distill.data.loaders import PixelCache, eval_loader
from distill.train.losses import teacher_logits
from distill.train.student import Student, build_student
from vlmclient.errors import ConfigurationError

__all__ = [
    "RUN_FILE",
    "WEIGHTS_FILE",
    "check_store_matches",
    "evaluate_run",
    "evaluate_samples",
    "load_run_student",
    "mean_accuracy",
    "to_input",
    "zeroshot_by_domain",
]

RUN_FILE = "run.json"
WEIGHTS_FILE = "model.safetensors"
# what evaluate_run reads of run.json beside the student (split_seed is optional: older
# runs split by seed)
_EVAL_KEYS = ("train_domains", "holdout_fraction", "seed", "image_size", "mean", "std")


def to_input(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> normalised float32, channels_last when asked."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    x = (images.float() / 255.0 - m) / s
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _autocast(device: torch.device, bf16: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


@torch.no_grad()
def evaluate_samples(
    student: Student,
    samples: Sequence[Sample],
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    channels_last: bool = False,
    bf16: bool = False,
    num_workers: int = 0,
    cache: PixelCache | None = None,
    left_out: list[str] | None = None,
) -> dict[str, dict[str, float]]:
    """{domain: {"acc", "loss", "n"}} over the labelled samples (view 0, eval mode).

    With ``left_out`` (a list) the images whose pixels cannot be decoded are not scored
    but their ids added to it (without it the first one raises DataError); a file that
    cannot be read at all raises either way."""
    labelled = [s for s in samples if s.label is not None]
    if not labelled:
        return {}
    was_training = student.training
    student.eval()
    domains = sorted({s.domain for s in labelled})
    correct = dict.fromkeys(domains, 0)
    loss = dict.fromkeys(domains, 0.0)
    count = dict.fromkeys(domains, 0)
    names = [s.domain for s in labelled]
    device = next(student.parameters()).device
    try:
        loader = eval_loader(labelled, image_size=image_size, batch_size=batch_size,
                             num_workers=num_workers, cache=cache,
                             leave_out=left_out is not None)  # fmt: skip
        for batch in loader:
            if left_out is not None:
                left_out.extend(labelled[i].id for i in batch["left_out"])
                if "image" not in batch:
                    continue  # not one image of the batch decodes
            x = to_input(batch["image"], mean, std, channels_last=channels_last).to(device)
            with _autocast(device, bf16):
                logits = student(x)
            logits = logits.float().cpu()
            y = batch["label"]
            hit = (logits.argmax(dim=1) == y).tolist()
            ce = F.cross_entropy(logits, y, reduction="none").tolist()
            for i, h, c in zip(batch["index"].tolist(), hit, ce, strict=True):
                d = names[i]
                correct[d] += int(h)
                loss[d] += c
                count[d] += 1
    finally:
        student.train(was_training)
    return {
        d: {"acc": correct[d] / count[d], "loss": loss[d] / count[d], "n": count[d]}
        for d in domains
        if count[d]  # a domain whose every image was left out
    }


def zeroshot_by_domain(
    store: Any, samples: Sequence[Sample], rows: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """Teacher zero-shot accuracy per domain: argmax_c cos(I_t(x), T_c), view 0.

    ``rows`` are the samples' store rows (looked up by id when not given; samples the store
    lacks are then left out).
    """
    labelled = [s for s in samples if s.label is not None]
    if rows is None:
        have = set(store.image_ids)
        labelled = [s for s in labelled if s.id in have]
    if not labelled:
        return {}
    r = store.rows_of([s.id for s in labelled]) if rows is None else rows
    image_t = torch.from_numpy(store.gather(r, 0))
    text = torch.from_numpy(np.asarray(store.text_embeddings, dtype=np.float32))
    logits = teacher_logits(image_t, text)
    y = torch.tensor([s.label for s in labelled])
    hit = (logits.argmax(dim=1) == y).tolist()
    ce = F.cross_entropy(logits, y, reduction="none").tolist()
    out: dict[str, dict[str, float]] = {}
    for s, h, c in zip(labelled, hit, ce, strict=True):
        d = out.setdefault(s.domain, {"acc": 0.0, "loss": 0.0, "n": 0})
        d["acc"] += h
        d["loss"] += c
        d["n"] += 1
    for d in out.values():
        d["acc"] /= d["n"]
        d["loss"] /= d["n"]
    return dict(sorted(out.items()))


def mean_accuracy(by_domain: dict[str, dict[str, float]]) -> float | None:
    """Unweighted mean over domains (DomainBed averages domains, not images)."""
    if not by_domain:
        return None
    return float(np.mean([v["acc"] for v in by_domain.values()]))


def load_run_student(run: str | os.PathLike[str]) -> tuple[Student, dict[str, Any]]:
    """The trained student of a run folder and its run.json description."""
    folder = Path(run)
    info_path = folder / RUN_FILE
    weights = folder / WEIGHTS_FILE
    if not info_path.is_file() or not weights.is_file():
        # a RUN argument that names no run: a usage error (exit 2)
        if _method_of(folder) == "zeroshot":  # the user did run `train`, as told below
            raise ConfigurationError(
                f"{folder} is a `train --method zeroshot` run: the teacher's own accuracy, "
                "no student to evaluate (its metrics.json has the scores); `eval RUN DATA "
                "--store STORE` of a trained run shows the teacher's beside the student's"
            )
        raise ConfigurationError(
            f"{folder} is not a finished training run (no {RUN_FILE} / {WEIGHTS_FILE}); "
            "run `vlm-distill train` first"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        info = json.loads(info_path.read_text("utf-8"))
        bad = _bad_run_key(info)
        if bad is not None:  # hand-edited, or of an older version: it was a traceback
            raise DataError(
                f"{folder} is not a readable training run ({RUN_FILE}: {bad}); train it again"
            )
        _check_run_student(folder, info["student"])
        state = load_file(str(weights))
        text = state.get("text")
        student = build_student(
            info["student"], method=info["method"], num_classes=len(info["class_names"]),
            text=text, pretrained=False,
        )
        student.load_state_dict(state)
    except (SafetensorError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        # a damaged or foreign file under the run's names (a copy cut short, another tool's)
        why = " ".join(str(exc).split())[:200]  # torch's load errors span several lines
        raise DataError(
            f"{folder} is not a readable training run ({RUN_FILE} / {WEIGHTS_FILE}: "
            f"{type(exc).__name__}: {why}); train it again"
        ) from None
    student.eval()
    return student, info


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and isfinite(value)


def _per_channel(value: object, nonzero: bool) -> bool:
    """A normalisation's numbers: one for every channel (RGB), or one for all."""
    return (isinstance(value, list) and len(value) in (1, 3)
            and all(_number(v) and (v != 0 or not nonzero) for v in value))  # fmt: skip


# the run.json keys eval and pseudolabel read, and what each must be (a key that is absent
# is the caller's to judge: older runs lack some)
_RUN_KEY_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "class_names": (lambda v: _strings(v) and bool(v), "a list of class names"),
    "method": (lambda v: isinstance(v, str), "a method name"),
    "train_domains": (_strings, "a list of domain names"),
    "test_domains": (lambda v: v is None or _strings(v), "a list of domain names"),
    "holdout_fraction": (lambda v: _number(v) and 0 <= v < 1, "a fraction below 1"),
    "seed": (_whole, "a whole number"),
    "split_seed": (_whole, "a whole number"),
    "image_size": (lambda v: _whole(v) and v > 0, "a positive whole number"),
    "mean": (lambda v: _per_channel(v, nonzero=False), "a list of three numbers"),
    "std": (lambda v: _per_channel(v, nonzero=True), "a list of three non-zero numbers"),
    "left_out": (lambda v: v is None or _strings(v), "a list of image ids"),
    "channels_last": (lambda v: isinstance(v, bool), "true or false"),
}


def _bad_run_key(info: object) -> str | None:
    """What is wrong with a run.json's content, naming the key (None when nothing is):
    a value of the wrong type was a traceback deep in eval, or worse a silent misreading
    ("train_domains": "dom1" read as the domains d, o, m and 1)."""
    if not isinstance(info, dict):
        return f"not a JSON object but {type(info).__name__}"
    for key, (ok, what) in _RUN_KEY_TYPES.items():
        if key in info and not ok(info[key]):
            return f"{key!r} is {json.dumps(info[key])[:60]}, expected {what}"
    return None


def _check_run_student(folder: Path, name: object) -> None:
    """DataError unless timm here can build the run's student: a model a timm upgrade
    renamed or dropped was "Unknown model" and "train it again", and a hub name (never
    one the trainer accepts) went to the network."""
    import timm

    if isinstance(name, str) and timm.is_model(name):
        return
    raise DataError(
        f"{folder}: its student {name!r} is not a model this timm "
        f"({timm.__version__}) can build: install the timm version the run was trained with"
    )


def _method_of(folder: Path) -> object:
    """The method a run folder's config.json names (None when it cannot be read)."""
    from distill.train.config import CONFIG_FILE

    try:
        config = json.loads((folder / CONFIG_FILE).read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return config.get("method") if isinstance(config, dict) else None


def check_store_matches(store: Any, ds: Dataset) -> None:
    """ConfigurationError unless ``store`` holds the teacher's embeddings of ``ds``'s own
    images: its rows are looked up by image id, so a store of another dataset whose ids
    happen to match, or of files since replaced, would score other images. The store of
    the same dataset has its file digests checked; for another dataset (a manifest of some
    of its images, say) every image must be a file of the store's data folder under its id.
    """
    from distill.data.content import check_files

    have = store.meta.get("dataset_fingerprint")
    if have == ds.fingerprint():
        check_files(store.meta, ds, f"the store at {store.path}")
        return
    root = store.meta.get("dataset_root")
    base = Path(root) if isinstance(root, str) and store.meta.get("layout") != "manifest" else None
    foreign = [s.id for s in ds.samples if base is None
               or os.path.realpath(base / s.id) != os.path.realpath(s.path)]
    if foreign:
        raise ConfigurationError(
            f"the store at {store.path} was harvested from another dataset (fingerprint "
            f"{str(have)[:12]}, this data's {ds.fingerprint()[:12]}) and does not hold "
            f"these images under their ids (e.g. {', '.join(foreign[:3])}); pass the store "
            f"that `vlm-distill harvest {ds.root}` wrote"
        )


def _refuse_other_classes(data: str | os.PathLike[str], classes: Sequence[str]) -> None:
    """ConfigurationError when DATA has images, all of classes outside the run's list
    (scanned with that list, nothing was left: a usage error, exit 2); returns otherwise."""
    try:
        ds = scan(data, allow_outside_paths=True)
    except DataError:
        return
    per = ds.counts()
    found: dict[str, int] = {}
    for counts in per.values():
        for name, n in counts.items():
            found[name] = found.get(name, 0) + n
    shown = ", ".join(f"{display(name)} ({n})" for name, n in sorted(found.items())[:10])
    raise ConfigurationError(
        f"no image of {display(os.fspath(data))} is of a class the run was trained on "
        f"({', '.join(map(display, classes[:10]))}{', ...' if len(classes) > 10 else ''}, "
        f"its --class-file); it has {shown}{', ...' if len(found) > 10 else ''}: evaluate "
        "on data with the run's classes"
    )


def _one_domain(ds: Dataset, info: dict[str, Any]) -> Dataset:
    """``ds`` with its images in the domain its folder names, when it is one domain's
    folder of a DomainBed set (``eval RUN DATA/sketch``: read as DATA/<class>/<image>,
    domain "all"). Its rows were labelled "all", and a training domain's folder was OOD.
    A run trained on one-domain data (its domain is "all") keeps the scan's."""
    run_domains = [*info["train_domains"], *(info.get("test_domains") or ())]
    if ds.layout != "single" or DEFAULT_DOMAIN in run_domains:
        return ds
    by_key = {class_key(d): d for d in run_domains}
    name = by_key.get(class_key(ds.root.name), ds.root.name)  # the run's spelling
    return replace(
        ds,
        samples=Samples(Sample(s.id, s.path, s.label, name) for s in ds.samples),
        domains=(name,),
        left_out=tuple((name, c, n) for _, c, n in ds.left_out),
    )


def _ids_in_store(ds: Dataset, store: Any) -> Dataset:
    """One domain's folder (``eval RUN DATA/sketch --store S``) with the ids its images
    have in a store harvested from the whole DomainBed DATA (``sketch/<class>/<image>``):
    read alone they lack the domain, and the store was refused as another dataset's."""
    root = store.meta.get("dataset_root")
    if (
        ds.layout != "single"
        or store.meta.get("layout") != "domainbed"
        or not isinstance(root, str)
        or os.path.realpath(root) != os.path.realpath(ds.root.parent)
    ):
        return ds
    folder = ds.root.name
    ids = (Sample(f"{folder}/{s.id}", s.path, s.label, s.domain) for s in ds.samples)
    return replace(ds, samples=Samples(ids))


def _json_losses(by_domain: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """``by_domain`` with a loss that is not a number (logits that overflowed: a damaged
    weights file) as None: eval.json and ``--json`` had a bare ``Infinity``, not JSON."""
    return {d: {**v, "loss": v["loss"] if np.isfinite(v["loss"]) else None}
            for d, v in by_domain.items()}  # fmt: skip


def _class_difference(run: Sequence[str], data: Sequence[str]) -> str:
    """What differs between the run's class list and the data's: the names only one has,
    else the order (the first place they differ).

    >>> _class_difference(["a", "b"], ["a", "b", "x"])
    "the data has 1 class the run was not trained on: 'x'"
    >>> _class_difference(["a", "b"], ["b", "a"])
    "the same names in another order (class 0 is 'a' in the run, 'b' here)"
    """
    extra = [c for c in data if class_key(c) not in set(map(class_key, run))]
    missing = [c for c in run if class_key(c) not in set(map(class_key, data))]
    parts = []
    for names, what in ((extra, "the data has {n} class{es} the run was not trained on"),
                        (missing, "the run's {n} class{es} missing from the data")):
        if names:
            shown = ", ".join(map(repr, names[:5])) + (", ..." if len(names) > 5 else "")
            parts.append(what.format(n=len(names), es="es" * (len(names) != 1)) + ": " + shown)
    if parts:
        return "; ".join(parts)
    pairs = enumerate(zip(run, data, strict=False))
    i = next(k for k, (a, b) in pairs if class_key(a) != class_key(b))
    return f"the same names in another order (class {i} is {run[i]!r} in the run, {data[i]!r} here)"


def evaluate_run(
    run: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    batch_size: int = 256,
    store: Any = None,
) -> dict[str, Any]:
    """Per-domain accuracy of a run's student on a dataset.

    Domains the run trained on count as ID: when DATA is the training dataset only their
    held-out 20 % is scored (the same split as training), otherwise all their images. On the
    training dataset OOD is the run's test domains, as in its metrics.json; a domain it
    neither trained nor tested on (``--train-domains`` and ``--test-domains`` both given) is
    scored apart under ``excluded`` (and ``mean_excluded``). On other data every domain not
    trained on is OOD and ``excluded`` is empty. With ``store`` (the teacher's
    EmbeddingStore) the teacher's zero-shot accuracy is added on the same images. A run
    trained with ``--class-file`` reads DATA with the class list it trained on: images of
    other classes are left out, and ``classes_left_out`` says how many files of which class.
    """
    student, info = load_run_student(run)
    missing = [k for k in _EVAL_KEYS if k not in info]
    if missing:  # a hand-edited or foreign run.json: it was a KeyError traceback further on
        raise DataError(
            f"{run} is not a readable training run ({RUN_FILE} / {WEIGHTS_FILE}: KeyError: "
            f"{missing[0]!r}); train it again"
        )
    # a run trained with --class-file reads the data with its class list, as it trained
    classes = info["class_names"] if info.get("class_file") else None
    try:
        ds = scan(data, classes=classes, allow_outside_paths=True)  # read here, never uploaded
    except DataError:
        if classes is None:
            raise
        _refuse_other_classes(data, classes)  # when every image is of another class
        raise
    if not any(s.label is not None for s in ds.samples):
        # nothing to score (an unlabelled pool): it was exit 0, an empty table, and the
        # run's eval.json replaced by nulls
        raise ConfigurationError(
            f"{display(os.fspath(data))} has no labelled image ({len(ds.samples)} images, "
            "none with a class label): eval scores images whose class it knows; give "
            "labelled data (class folders, or a CSV manifest with a label column)"
        )
    ds = _one_domain(ds, info)
    # compared after NFC: the run's data and this copy of it (from macOS) may spell a
    # class differently
    run_classes = tuple(map(class_key, info["class_names"]))
    if classes is None and set(map(class_key, ds.class_names)) < set(run_classes):
        # data lacking some of the run's classes (a test domain without one): read with
        # the run's list, so each class has the label the student gives it (it was refused)
        ds = _one_domain(scan(data, classes=info["class_names"], allow_outside_paths=True), info)
    if tuple(map(class_key, ds.class_names)) != run_classes:
        # the wrong data for this run: a usage error (exit 2), not a failure to retry
        raise ConfigurationError(
            "this data's classes are not the run's: "
            f"{_class_difference(info['class_names'], ds.class_names)}; evaluate on data "
            "with the run's classes (class folders, or a CSV manifest, with the same names)"
        )
    same = ds.fingerprint() == info.get("dataset_fingerprint")
    if store is not None:
        if not same:
            ds = _ids_in_store(ds, store)
        check_store_matches(store, ds)
        if info.get("teacher") and store.meta.get("teacher") != info["teacher"]:
            # its zero-shot would be shown as the run's teacher's
            raise ConfigurationError(
                f"the store at {store.path} holds teacher {store.meta.get('teacher')!r}; "
                f"the run was distilled from {info['teacher']!r}: pass that teacher's store"
            )
    train_domains = set(info["train_domains"])
    trained = {class_key(d) for d in train_domains}  # a domain copied from macOS: NFD
    id_samples: Sequence[Sample] = [s for s in ds.samples if class_key(s.domain) in trained]
    ood_samples = [s for s in ds.samples if class_key(s.domain) not in trained]
    excluded: list[Sample] = []
    tested = info.get("test_domains")
    if same and isinstance(tested, list):
        # the run's own OOD (its metrics.json's): a domain left out of both lists is not
        # out-of-distribution to this run, it is unused; scored apart, never averaged in
        excluded = [s for s in ood_samples if s.domain not in tested]
        ood_samples = [s for s in ood_samples if s.domain in tested]
    if same:  # the training data: its hold-out alone, taken as the trainer took it
        seed = info.get("split_seed", info["seed"])
        _, id_samples = split_sources(
            ds.samples, train_domains, fraction=info["holdout_fraction"], seed=seed
        )
    # images whose pixels cannot be decoded, left out of the store by the harvest: of the
    # run's own data as it left them out (after its split), and those the store lists
    skip = {str(i) for i in info.get("left_out") or ()} if same else set()
    if store is not None:
        from distill.data.content import left_out

        skip |= set(left_out(store.meta, ds))
    if skip:
        id_samples = [s for s in id_samples if s.id not in skip]
        ood_samples = [s for s in ood_samples if s.id not in skip]
        excluded = [s for s in excluded if s.id not in skip]
    # and those found as they are read (data no harvest checked, a file damaged since):
    # left out of every count, as train leaves out what the harvest left out
    undecodable: list[str] = []
    kw: dict[str, Any] = {
        "image_size": info["image_size"], "mean": info["mean"], "std": info["std"],
        "batch_size": batch_size, "channels_last": info.get("channels_last", False),
        "left_out": undecodable,
    }
    scores = {
        part: _json_losses(evaluate_samples(student, samples, **kw))
        for part, samples in (("id", id_samples), ("ood", ood_samples), ("excluded", excluded))
    }
    if undecodable:  # the teacher's column over the same images
        gone = set(undecodable)
        id_samples = [s for s in id_samples if s.id not in gone]
        ood_samples = [s for s in ood_samples if s.id not in gone]
        excluded = [s for s in excluded if s.id not in gone]
    result: dict[str, Any] = {
        "run": str(run), "data": str(data), "method": info["method"],
        "student": info["student"], "same_dataset": same,
        # the student cannot predict them: scored, every one would be a miss
        "classes_left_out": ds.left_out_classes(),
        # files the scan could not use (unreadable, cut short, not images): not scored;
        # those of classes the run's class list leaves out are in classes_left_out
        "files_skipped": [{"path": p, "reason": why} for p, why in ds.unreadable()],
        # images whose pixels cannot be decoded (the harvest left them out, or found so
        # here): not scored
        "images_left_out": sorted(skip.union(undecodable)),
        **scores,
    }
    result["mean_id"] = mean_accuracy(result["id"])
    result["mean_ood"] = mean_accuracy(result["ood"])
    result["mean_excluded"] = mean_accuracy(result["excluded"])
    if store is not None:
        zs: dict[str, Any] = {"id": zeroshot_by_domain(store, id_samples),
                              "ood": zeroshot_by_domain(store, ood_samples),
                              "excluded": zeroshot_by_domain(store, excluded)}
        for part in ("id", "ood", "excluded"):
            zs[f"mean_{part}"] = mean_accuracy(zs[part])
        zs["teacher"], zs["store"] = store.meta.get("teacher"), str(store.path)
        # images the store lacks (added to DATA after the harvest): the teacher's scores
        # are over the others, the student's over all
        have = set(store.image_ids)
        scored = (*id_samples, *ood_samples, *excluded)
        zs["images_missing"] = sum(s.label is not None and s.id not in have for s in scored)
        result["teacher_zeroshot"] = zs
    return result

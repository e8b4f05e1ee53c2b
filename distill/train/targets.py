"""The teacher's side of a training run: its harvested EmbeddingStore, found and checked, and
what the trainer takes from it (image targets by row, class-prompt text embeddings, and the
teacher's own zero-shot accuracy on the same splits).

The paid teacher is never called here: everything comes from the memory-mapped store that
``vlm-distill harvest`` wrote under ``<cache>/stores/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from cache.layout import STORES_DIR
from distill.data import Dataset, Sample
from distill.data.content import check_files, left_out
from distill.train.config import TrainConfig
from distill.train.evaluate import mean_accuracy, zeroshot_by_domain
from vlmclient.errors import ConfigurationError

if TYPE_CHECKING:
    from cache.store import EmbeddingStore

__all__ = [
    "TeacherTargets",
    "check_store",
    "class_mean_images",
    "find_store",
    "load_targets",
    "open_store",
    "teacher_zeroshot",
]


def _no_store_message(teacher: str, dataset: Dataset, cache: Path) -> str:
    return (
        f"no cached teacher embeddings for this dataset and teacher ({teacher!r}, "
        f"dataset fingerprint {dataset.fingerprint()[:12]}) in {cache / STORES_DIR}: run "
        f"`vlm-distill harvest {dataset.root} --teacher {teacher} --cache {cache}` first"
    )


def _class_file_hint(cache: Path, teacher: str, dataset: Dataset) -> str | None:
    """When a store of ``teacher`` in ``cache`` was harvested from this very data with a
    class file (another class list or order: ``harvest --class-file``, or the full list of
    ``harvest --select``'s manifest), what to pass to train; None when there is none."""
    import shlex

    from distill.data import DataError, read_class_file, scan

    here = os.path.realpath(dataset.root)
    for meta_path in sorted((cache / STORES_DIR).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
            root, names = meta["dataset_root"], [str(n) for n in meta["class_names"]]
            if meta.get("teacher") != teacher or os.path.realpath(root) != here:
                continue
            if names == list(dataset.class_names):
                continue  # the same classes: the data itself changed
            # the only difference is the class list when the data read with it is the store's
            again = scan(dataset.root, classes=names, allow_outside_paths=True)
        except (OSError, ValueError, KeyError, TypeError, DataError):
            continue
        if again.fingerprint() != meta.get("dataset_fingerprint"):
            continue
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        try:  # the data's own class list (folders, or the manifest's labels)
            own = list(scan(dataset.root, allow_outside_paths=True).class_names) == names
        except (OSError, DataError):
            own = False
        if own:  # harvested without a class file: this run's --class-file is the odd one
            return (
                f"the teacher embeddings of this data in {meta_path.parent} were harvested "
                f"with the data's own class list ({len(names)} classes: {shown}), not with "
                "this run's --class-file: drop --class-file (or harvest again with it)"
            )
        beside = dataset.root.parent / f"{dataset.root.stem}.classes.txt"  # as select writes
        try:
            named = list(read_class_file(beside)) == names
        except DataError:
            named = False
        what = (
            f"--class-file {shlex.quote(str(beside))}" if named
            else "--class-file FILE, the class file the harvest was given"
        )
        return (
            f"the teacher embeddings of this data in {meta_path.parent} were harvested with "
            f"a class file ({len(names)} classes in this order: {shown}), not with this run's "
            f"class list: pass {what}"
        )
    return None


def find_store(cache_dir: str | os.PathLike[str], teacher: str, dataset: Dataset) -> Path:
    """The store under ``<cache>/stores/*`` holding ``teacher``'s embeddings of ``dataset``.

    Matches ``meta.json``'s ``teacher`` and ``dataset_fingerprint`` (ids, labels, domains);
    when several match, a store harvested from this dataset's own folder comes first (a
    copy of the data elsewhere, with one image changed, has the same fingerprint: its
    newer store was taken and this data refused as changed), then the newest.
    ConfigurationError when none does.
    """
    cache = Path(cache_dir)
    fp = dataset.fingerprint()
    here = os.path.realpath(dataset.root)
    found: list[tuple[bool, float, Path]] = []
    for meta_path in sorted((cache / STORES_DIR).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict):
            continue
        if meta.get("teacher") == teacher and meta.get("dataset_fingerprint") == fp:
            root = meta.get("dataset_root")
            own = isinstance(root, str) and os.path.realpath(root) == here
            try:
                created = float(meta.get("created", 0.0))
            except (TypeError, ValueError):
                created = 0.0
            found.append((own, created, meta_path.parent))
    if not found:
        hint = _class_file_hint(cache, teacher, dataset)
        raise ConfigurationError(hint or _no_store_message(teacher, dataset, cache))
    return max(found)[2]


def open_store(path: str | os.PathLike[str]) -> EmbeddingStore:
    """Open an EmbeddingStore; ConfigurationError when it is missing or unreadable."""
    from cache.store import EmbeddingStore, StoreError

    try:
        return EmbeddingStore.open(path)
    except StoreError as exc:
        raise ConfigurationError(str(exc)) from exc


def check_store(
    store: EmbeddingStore, teacher: str, dataset: Dataset, needed: Sequence[Sample]
) -> None:
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
            f"{list(dataset.class_names)[:5]}...; harvest this dataset (or, when it was "
            "harvested with --class-file, pass the same --class-file)"
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


def teacher_zeroshot(
    store: EmbeddingStore, holdout: Sequence[Sample], ood: Sequence[Sample]
) -> dict[str, Any]:
    """The teacher's zero-shot accuracy per domain on the ID hold-out and the OOD domains
    (images the store lacks are left out), with the mean of each."""
    in_store = set(store.image_ids)

    def score(samples: Sequence[Sample]) -> dict[str, dict[str, float]]:
        return zeroshot_by_domain(store, [s for s in samples if s.id in in_store])

    by_split = {"id": score(holdout), "ood": score(ood)}
    return {**by_split, "mean_id": mean_accuracy(by_split["id"]),
            "mean_ood": mean_accuracy(by_split["ood"])}


@dataclass(frozen=True)
class TeacherTargets:
    """The checked store and what training reads from it."""

    store: EmbeddingStore
    path: Path
    views: int  # teacher views used per image (config.views, else all the store holds)
    rows: npt.NDArray[np.int64]  # store row of every training sample, in order
    # ids of the images the store was written without (their pixels cannot be decoded):
    # not in ``rows`` or ``zeroshot``; the run leaves them out (DataSplit.without)
    left_out: tuple[str, ...]
    text: torch.Tensor  # (C, D) class-prompt embeddings, float32
    zeroshot: dict[str, Any]  # teacher_zeroshot() on the run's splits


def load_targets(
    config: TrainConfig,
    dataset: Dataset,
    train: Sequence[Sample],
    holdout: Sequence[Sample],
    ood: Sequence[Sample],
) -> TeacherTargets:
    """Find (``config.store`` or the lookup in ``config.cache``), open and check the store."""
    if config.store is not None:
        path = Path(config.store)
    else:
        assert config.cache is not None  # TrainConfig refuses neither store nor cache
        path = find_store(config.cache, config.teacher, dataset)
    store = open_store(path)
    skip = set(left_out(store.meta, dataset))
    if skip:
        train, holdout, ood = ([s for s in part if s.id not in skip]
                               for part in (train, holdout, ood))  # fmt: skip
    check_store(store, config.teacher, dataset, train)
    # Same ids, labels and domains (the fingerprint) is not enough: a file replaced in place
    # would train on the teacher's targets of the old image. The digests cover the dataset
    # the store was harvested from, so they are compared only when that is this dataset
    # (not for a part of it given with --store, e.g. a manifest of some of its images).
    if store.meta.get("dataset_fingerprint") == dataset.fingerprint():
        check_files(store.meta, dataset, f"the store at {path}")
    if config.views is not None and config.views > store.views:
        # Not capped silently: the run would be another run than the one asked for.
        raise ConfigurationError(
            f"--views {config.views} asks for more teacher views than the store at {path} "
            f"holds ({store.views}); harvest with `--views {config.views}` first (the views "
            f"already bought are reused), or pass --views {store.views} or less"
        )
    return TeacherTargets(
        store=store,
        path=path,
        views=config.views or store.views,
        rows=store.rows_of([s.id for s in train]),
        left_out=tuple(sorted(skip)),
        text=torch.from_numpy(np.array(store.text_embeddings, dtype=np.float32)),
        zeroshot=teacher_zeroshot(store, holdout, ood),
    )


def class_mean_images(
    store: Any, rows: npt.NDArray[np.int64], labels: Sequence[int | None], num_classes: int,
    views: int,
) -> torch.Tensor:
    """(C, D) the teacher's image prototype of each class: the normalised mean of its unit
    image embeddings over the training rows and their first ``views`` views. A class no row
    has gets a zero vector (its cosine to anything is 0).

    >>> class _Store:
    ...     def gather(self, rows, view):
    ...         return np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])[rows]
    >>> class_mean_images(_Store(), np.array([0, 1, 2]), [0, 1, 1], 3, 1).tolist()
    [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    """
    if any(label is None for label in labels):
        raise ValueError("class-mean image targets need every training image's label")
    y = np.asarray(labels, dtype=np.int64)
    total: npt.NDArray[np.float64] | None = None
    for view in range(views):
        v = np.asarray(store.gather(rows, view), dtype=np.float64)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        sums = np.zeros((num_classes, v.shape[1]))
        np.add.at(sums, y, v)
        total = sums if total is None else total + sums
    assert total is not None, "views must be >= 1"
    norm = np.linalg.norm(total, axis=1, keepdims=True)
    return torch.from_numpy(np.where(norm > 0, total / np.maximum(norm, 1e-12), 0.0)).float()

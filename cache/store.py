"""EmbeddingStore: one dataset's teacher embeddings as a memory-mapped matrix, for training.

A store is a directory::

    meta.json         format_version, teacher, fingerprints, dim, format, views, ...
    image_ids.json    row i of the image matrix is image_ids[i]
    images.npy        (N, K, D) codes: float16, uint8 (float8 e4m3) or int8
    images_scale.npy  (N, K) float32 per-row scales (int8 only)
    texts.npy         (C, D) float32 class-prompt text embeddings

Random 256-row gathers from the memory map run at >1 M rows/s here, over 10x per-key
cache gets (benchmarks/store_vs_cache.py). A store is written atomically: built in
``<dir>.tmp-<pid>-<hex>`` and swapped into place in one step (``renameat2`` with
``RENAME_EXCHANGE``; two renames where that is missing), so a reader sees the old store or
the new one, never half of one and never none; leftovers of a killed writer are repaired
or removed by the next open (cache/swap.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .atomic import fsync_directory
from .codecs import VectorFormat, check_format, dequantize, quantize, storage_dtype
from .swap import exchange, leftover_name, recover

__all__ = ["FORMAT_VERSION", "EmbeddingStore", "StoreError"]

FORMAT_VERSION: Final = 1
_META: Final = "meta.json"
_IDS: Final = "image_ids.json"
_IMAGES: Final = "images.npy"
_SCALES: Final = "images_scale.npy"
_TEXTS: Final = "texts.npy"


class StoreError(ValueError):
    """A store cannot be written (bad input) or read (missing or inconsistent files)."""


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def _save_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        # ensure_ascii: image ids of non-UTF-8 file names carry lone surrogates, which
        # only an escaped form can hold; json.load gives the same strings back.
        json.dump(obj, fh, ensure_ascii=True, allow_nan=False, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _normalise(vectors: npt.NDArray[np.float32], what: str) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if (norms == 0).any():
        raise StoreError(f"{what} has an all-zero vector, which cannot be normalised")
    out: npt.NDArray[np.float32] = (vectors / norms).astype(np.float32)
    return out


class EmbeddingStore:
    """Read access to a written store; build one with :meth:`write`, read with :meth:`open`.

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     s = EmbeddingStore.write(d + "/s", image_ids=["a.jpg", "b.jpg"],
    ...         image_vectors=np.eye(2, 4, dtype=np.float32)[:, None, :],
    ...         text_vectors=np.eye(1, 4, dtype=np.float32), class_names=["cat"],
    ...         prompts=["a photo of a cat"], teacher="local:pseudo-clip",
    ...         teacher_fingerprint="t", dataset_fingerprint="d")
    ...     s.gather(s.rows_of(["b.jpg"])).tolist()
    [[0.0, 1.0, 0.0, 0.0]]
    """

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        image_ids: list[str],
        images: np.ndarray,
        scales: np.ndarray | None,
        texts: npt.NDArray[np.float32],
    ):
        # Use open() or write(); this only wires already-validated parts together.
        self.path = path
        self.meta = meta
        self.image_ids = image_ids
        self._images = images
        self._scales = scales
        self._texts = texts
        self._row: dict[str, int] = {image_id: i for i, image_id in enumerate(image_ids)}
        self.format: VectorFormat = check_format(str(meta["format"]))
        self.class_names: list[str] = list(meta["class_names"])
        self.prompts: list[str] = list(meta["prompts"])

    # -- writing ---------------------------------------------------------------------------
    @classmethod
    def write(
        cls,
        path: str | os.PathLike[str],
        *,
        image_ids: Sequence[str],
        image_vectors: npt.ArrayLike,
        text_vectors: npt.ArrayLike,
        class_names: Sequence[str],
        prompts: Sequence[str],
        teacher: str,
        teacher_fingerprint: str,
        dataset_fingerprint: str,
        fmt: str = "float16",
        normalize: bool = True,
        extra_meta: Mapping[str, Any] | None = None,
    ) -> EmbeddingStore:
        """Write a store atomically (replacing any store at ``path``) and open it.

        ``image_vectors`` is (N, K, D) (an (N, D) array means K = 1). Rows with NaN or
        infinity (an image never bought) are refused, naming the image.
        """
        target = Path(path)
        fmt_name = check_format(fmt)
        ids = [str(i) for i in image_ids]
        if len(set(ids)) != len(ids):
            raise StoreError("image_ids has duplicates")
        images = np.asarray(image_vectors, dtype=np.float32)
        if images.ndim == 2:
            images = images[:, None, :]
        if images.ndim != 3 or images.shape[0] != len(ids) or 0 in images.shape[1:]:
            raise StoreError(
                f"image_vectors must be (N={len(ids)}, K, D) with K, D > 0, got {images.shape}"
            )
        n, k, dim = images.shape
        bad = ~np.isfinite(images).all(axis=(1, 2))
        if bad.any():
            missing = [ids[i] for i in np.flatnonzero(bad)[:5]]
            raise StoreError(
                f"{int(bad.sum())} image(s) have NaN/infinite vectors (never bought?), "
                f"e.g. {missing}; harvest them before exporting"
            )
        texts = np.asarray(text_vectors, dtype=np.float32)
        if texts.ndim != 2 or texts.shape[0] != len(class_names) or (
            texts.shape[0] and texts.shape[1] != dim
        ):
            raise StoreError(
                f"text_vectors must be (C={len(class_names)}, D={dim}), got {texts.shape}"
            )
        texts = texts.reshape(len(class_names), dim)
        if not np.isfinite(texts).all():
            raise StoreError("text_vectors hold NaN/infinite values")
        if normalize:
            images = _normalise(images, "image_vectors")
            if len(texts):
                texts = _normalise(texts, "text_vectors")
        try:
            codes, scales = quantize(images, fmt_name)
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "teacher": teacher,
            "teacher_fingerprint": teacher_fingerprint,
            "dataset_fingerprint": dataset_fingerprint,
            "dim": int(dim),
            "format": fmt_name,
            "normalized": bool(normalize),
            "views": int(k),
            "n_images": int(n),
            "class_names": [str(c) for c in class_names],
            "prompts": [str(p) for p in prompts],
            "created": time.time(),
        }
        for key, value in (extra_meta or {}).items():
            if key in meta:
                raise StoreError(f"extra_meta may not override {key!r}")
            meta[key] = value

        recover(target, complete=_META)  # dead writers' leftovers
        tmp = leftover_name(target, "tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            _save_npy(tmp / _IMAGES, codes)
            if scales is not None:
                _save_npy(tmp / _SCALES, scales.astype(np.float32))
            _save_npy(tmp / _TEXTS, texts)
            _save_json(tmp / _IDS, ids)
            _save_json(tmp / _META, meta)  # last: a directory with meta.json is complete
            fsync_directory(tmp)
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(target)

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> EmbeddingStore:
        """Open a store; ``images.npy`` is memory-mapped, not read.

        A writer replacing the store moves the old one aside for an instant; an open that
        falls into that instant waits for the new one (up to about a second).
        """
        root = Path(path)
        recover(root, complete=_META)  # a crashed writer's leftovers, or its lost store
        for _ in range(OPEN_ATTEMPTS - 1):
            try:
                return cls._open_once(root)
            except (StoreError, FileNotFoundError):
                if not any(root.parent.glob(f"{root.name}.old-*")):
                    raise  # no replacement under way: the store is missing or broken
            time.sleep(OPEN_RETRY_S)
        return cls._open_once(root)

    @classmethod
    def _open_once(cls, root: Path) -> EmbeddingStore:
        if not (root / _META).is_file():
            aside = sorted(root.parent.glob(f"{root.name}.old-*"))
            hint = f" (a previous version was left at {aside[0]})" if aside else ""
            raise StoreError(f"no embedding store at {root}{hint}")
        try:
            meta = json.loads((root / _META).read_text(encoding="utf-8"))
            ids = json.loads((root / _IDS).read_text(encoding="utf-8"))
            images = np.load(root / _IMAGES, mmap_mode="r", allow_pickle=False)
            texts = np.load(root / _TEXTS, allow_pickle=False).astype(np.float32)
            fmt = check_format(str(meta["format"]))
            scales = None
            if fmt == "int8":
                scales = np.load(root / _SCALES, mmap_mode="r", allow_pickle=False)
            version = meta.get("format_version")
            if version != FORMAT_VERSION:
                raise StoreError(f"store format_version {version!r}, expected {FORMAT_VERSION}")
            n, k, dim = int(meta["n_images"]), int(meta["views"]), int(meta["dim"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"embedding store at {root} is unreadable: {exc}") from exc
        problems = []
        if images.shape != (n, k, dim) or images.dtype != storage_dtype(fmt):
            problems.append(f"images.npy is {images.dtype}{images.shape}, meta says {fmt} "
                            f"{(n, k, dim)}")
        if not isinstance(ids, list) or len(ids) != n:
            problems.append("image_ids.json does not list one id per row")
        if texts.shape != (len(meta["class_names"]), dim):
            problems.append(f"texts.npy is {texts.shape}")
        if scales is not None and scales.shape != (n, k):
            problems.append(f"images_scale.npy is {scales.shape}, expected {(n, k)}")
        if problems:
            raise StoreError(f"embedding store at {root} is inconsistent: {'; '.join(problems)}")
        return cls(root, meta, [str(i) for i in ids], images, scales, texts)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self._images.shape[2])

    @property
    def views(self) -> int:
        """Views per image K (view 0 is the un-augmented image)."""
        return int(self._images.shape[1])

    @property
    def text_embeddings(self) -> npt.NDArray[np.float32]:
        """(C, D) float32 class-prompt embeddings, in class_names order."""
        return self._texts

    def __len__(self) -> int:
        return len(self.image_ids)

    def row_of(self, image_id: str) -> int:
        """The row of ``image_id``; KeyError if the store does not have it."""
        return self._row[image_id]

    def rows_of(self, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Rows of several ids; KeyError naming (up to five of) the missing ones."""
        row = self._row
        try:
            return np.fromiter((row[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError:
            missing = [i for i in ids if i not in row]
            raise KeyError(
                f"{len(missing)} id(s) not in store {self.path}, e.g. {missing[:5]}"
            ) from None

    def gather(
        self, rows: npt.ArrayLike, views: int | npt.ArrayLike = 0
    ) -> npt.NDArray[np.float32]:
        """(B, D) float32 vectors of ``rows``, view ``views`` (one int, or one per row)."""
        index = np.asarray(rows, dtype=np.int64)
        if index.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {index.shape}")
        n, k = self._images.shape[:2]
        if index.size and (index.min() < 0 or index.max() >= n):
            raise IndexError(f"rows must lie in [0, {n})")
        view_index: int | npt.NDArray[np.int64]
        if np.ndim(views) == 0:  # an int, numpy integer or 0-d array: one view for all rows
            view_index = int(np.asarray(views))
            if not 0 <= view_index < k:
                raise IndexError(f"view {view_index} not in [0, {k})")
        else:
            view_index = np.asarray(views, dtype=np.int64)
            if view_index.shape != index.shape:
                raise ValueError("views must be an int or one view per row")
            if view_index.size and (view_index.min() < 0 or view_index.max() >= k):
                raise IndexError(f"views must lie in [0, {k})")
        codes = self._images[index, view_index]
        scales = None if self._scales is None else self._scales[index, view_index]
        return dequantize(codes, self.format, scales)

    def __repr__(self) -> str:
        return (
            f"EmbeddingStore({str(self.path)!r}, n={len(self)}, views={self.views}, "
            f"dim={self.dim}, format={self.format!r})"
        )


REPLACE_ATTEMPTS = 20  # racing writers of one store retry this often
OPEN_ATTEMPTS = 50  # an open during a replacement waits up to OPEN_ATTEMPTS * OPEN_RETRY_S
OPEN_RETRY_S = 0.02


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing target is renamed aside first, then removed.

    Readers that already memory-mapped the old files keep valid maps (the inodes live on
    until they close them). Several writers may race (two harvests of one dataset into one
    cache finish together): each retries until its own rename lands; the last one wins.
    """
    parent = target.parent
    for _ in range(REPLACE_ATTEMPTS):
        if target.exists():
            try:
                swapped = exchange(new, target)
            except FileNotFoundError:
                continue  # the target went away meanwhile: rename into place instead
            if swapped:
                # One step: the target always names a whole store; ``new`` holds the old.
                fsync_directory(parent)
                shutil.rmtree(new, ignore_errors=True)
                return
        if not target.exists():
            try:
                os.rename(new, target)
            except OSError:
                if target.exists():
                    continue  # another writer got there first: swap with theirs
                raise
            fsync_directory(parent)
            return
        # No RENAME_EXCHANGE here: two renames, with a window recover() repairs.
        old = leftover_name(target, "old")
        try:
            os.rename(target, old)
        except FileNotFoundError:
            continue  # another writer moved it meanwhile
        try:
            os.rename(new, target)
        except OSError:
            try:
                os.rename(old, target)  # put the old store back rather than leave nothing
            except OSError:
                shutil.rmtree(old, ignore_errors=True)  # another writer's store is there now
            continue
        fsync_directory(parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    raise StoreError(
        f"could not move the new store into {target}: other writers kept replacing it"
    )

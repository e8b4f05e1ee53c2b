"""EmbeddingStore: one dataset's teacher embeddings as a memory-mapped matrix, for training.

A store is a directory::

    meta.json         format_version, teacher, fingerprints, dim, format, views, the
                      sha256 of every other file (checked on open), ...
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
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .codecs import VectorFormat, check_format, dequantize, storage_dtype
from .store_format import (
    CHECKSUMS,
    FORMAT_VERSION,
    IDS_FILE,
    IMAGES_FILE,
    META_FILE,
    SCALES_FILE,
    TEXTS_FILE,
    StoreError,
    check_extra_meta,
    check_texts,
    file_digest,
)
from .store_writer import StoreWriter
from .swap import recover

__all__ = ["FORMAT_VERSION", "EmbeddingStore", "StoreError", "StoreWriter"]

WRITE_BLOCK_ROWS = 4096  # rows encoded at a time by EmbeddingStore.write
OPEN_ATTEMPTS = 50  # an open during a replacement waits up to OPEN_ATTEMPTS * OPEN_RETRY_S
OPEN_RETRY_S = 0.02


def _identity(root: Path) -> tuple[int, int] | None:
    """The store directory's (device, inode): a writer's swap gives it a new one."""
    try:
        st = os.stat(root)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_digests(root: Path, digests: object) -> None:
    """StoreError unless every file listed in meta.json's checksums hashes to its value
    (a store written before checksums has none: nothing to check)."""
    if digests is None:
        return
    if not isinstance(digests, dict):
        raise StoreError(f"embedding store at {root} is unreadable: bad {CHECKSUMS!r} in meta")
    bad = []
    for name, expected in digests.items():
        try:
            if file_digest(root / str(name)) != expected:
                bad.append(str(name))
        except OSError as exc:
            bad.append(f"{name} ({exc.strerror or exc})")
    if bad:
        raise StoreError(
            f"embedding store at {root} is damaged: {', '.join(bad)} no longer match the "
            "checksums written with it (a changed or replaced file). Run the same harvest "
            "again: it rebuilds the store from the response cache (what the cache holds is "
            "not bought again)"
        )


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
        infinity (an image never bought) are refused, naming the image. The matrix is
        encoded block by block (:class:`StoreWriter`), so no full-size copy is made.
        """
        ids = [str(i) for i in image_ids]
        images = np.asarray(image_vectors, dtype=np.float32)
        if images.ndim == 2:
            images = images[:, None, :]
        if images.ndim != 3 or images.shape[0] != len(ids) or 0 in images.shape[1:]:
            raise StoreError(
                f"image_vectors must be (N={len(ids)}, K, D) with K, D > 0, got {images.shape}"
            )
        _, k, dim = images.shape
        texts = check_texts(text_vectors, class_names, dim)
        check_extra_meta(extra_meta)
        with StoreWriter(
            path, image_ids=ids, views=k, dim=dim, fmt=fmt, normalize=normalize
        ) as writer:
            for start in range(0, len(ids), WRITE_BLOCK_ROWS):
                writer.put_rows(start, images[start : start + WRITE_BLOCK_ROWS])
            writer.commit(
                text_vectors=texts,
                class_names=class_names,
                prompts=prompts,
                teacher=teacher,
                teacher_fingerprint=teacher_fingerprint,
                dataset_fingerprint=dataset_fingerprint,
                extra_meta=extra_meta,
            )
        return cls.open(path)

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> EmbeddingStore:
        """Open a store; ``images.npy`` is memory-mapped, not read.

        A writer replacing the store moves the old one aside for an instant; an open that
        falls into that instant waits for the new one (up to about a second).
        """
        root = Path(path)
        recover(root, complete=META_FILE)  # a crashed writer's leftovers, or its lost store
        for attempt in range(OPEN_ATTEMPTS):
            before = _identity(root)
            try:
                store = cls._open_once(root)
            except (StoreError, FileNotFoundError):
                replaced = _identity(root) != before
                if attempt == OPEN_ATTEMPTS - 1 or not (
                    replaced or any(root.parent.glob(f"{root.name}.old-*"))
                ):
                    raise  # no replacement under way: the store is missing or broken
            else:
                # a writer that swapped the store in while its files were opened one by
                # one mixed two versions (meta.json of one, images.npy of the other)
                if _identity(root) == before or attempt == OPEN_ATTEMPTS - 1:
                    return store
            time.sleep(OPEN_RETRY_S)
        raise AssertionError("unreachable")

    @classmethod
    def _open_once(cls, root: Path) -> EmbeddingStore:
        if not (root / META_FILE).is_file():
            aside = sorted(root.parent.glob(f"{root.name}.old-*"))
            hint = f" (a previous version was left at {aside[0]})" if aside else ""
            raise StoreError(f"no embedding store at {root}{hint}")
        try:
            meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
            ids = json.loads((root / IDS_FILE).read_text(encoding="utf-8"))
            images = np.load(root / IMAGES_FILE, mmap_mode="r", allow_pickle=False)
            texts = np.load(root / TEXTS_FILE, allow_pickle=False).astype(np.float32)
            fmt = check_format(str(meta["format"]))
            scales = None
            if fmt == "int8":
                scales = np.load(root / SCALES_FILE, mmap_mode="r", allow_pickle=False)
            version = meta.get("format_version")
            if version != FORMAT_VERSION:
                raise StoreError(f"store format_version {version!r}, expected {FORMAT_VERSION}")
            n, k, dim = int(meta["n_images"]), int(meta["views"]), int(meta["dim"])
            n_classes, _prompts = len(meta["class_names"]), list(meta["prompts"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            if isinstance(exc, StoreError):
                raise
            # RecursionError: a JSON file nested too deep for json (damage, or crafted)
            raise StoreError(f"embedding store at {root} is unreadable: {exc}") from exc
        problems = []
        if images.shape != (n, k, dim) or images.dtype != storage_dtype(fmt):
            problems.append(f"images.npy is {images.dtype}{images.shape}, meta says {fmt} "
                            f"{(n, k, dim)}")
        if not isinstance(ids, list) or len(ids) != n:
            problems.append("image_ids.json does not list one id per row")
        if texts.shape != (n_classes, dim):
            problems.append(f"texts.npy is {texts.shape}")
        if scales is not None and scales.shape != (n, k):
            problems.append(f"images_scale.npy is {scales.shape}, expected {(n, k)}")
        if problems:
            raise StoreError(f"embedding store at {root} is inconsistent: {'; '.join(problems)}")
        _check_digests(root, meta.get(CHECKSUMS))
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

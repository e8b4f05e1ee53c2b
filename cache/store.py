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

import io
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

__all__ = ["FORMAT_VERSION", "EmbeddingStore", "StoreError", "StoreWriter"]

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


def _check_texts(
    text_vectors: npt.ArrayLike, class_names: Sequence[str], dim: int
) -> npt.NDArray[np.float32]:
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
    return texts


_META_KEYS: Final = frozenset(
    {"format_version", "teacher", "teacher_fingerprint", "dataset_fingerprint", "dim",
     "format", "normalized", "views", "n_images", "class_names", "prompts", "created"}
)  # fmt: skip


def _check_extra_meta(extra_meta: Mapping[str, Any] | None) -> None:
    for key in extra_meta or {}:
        if key in _META_KEYS:
            raise StoreError(f"extra_meta may not override {key!r}")


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
        texts = _check_texts(text_vectors, class_names, dim)
        _check_extra_meta(extra_meta)
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


WRITE_BLOCK_ROWS = 4096  # rows encoded at a time by EmbeddingStore.write


class StoreWriter:
    """Builds a store piece by piece with memory bounded by the largest piece, not by N.

    Vectors go in as they arrive (:meth:`put`, :meth:`put_rows`): normalised, encoded and
    written at their place in ``images.npy`` by positional writes (a writable memory map
    would count every page written in this process's memory). :meth:`commit` adds the
    text vectors, ids and meta and swaps the finished store into place atomically, as
    :meth:`EmbeddingStore.write` does; :meth:`abort` (or leaving the ``with`` block
    without a commit) removes the half-built store. The files are the same as
    :meth:`EmbeddingStore.write`'s, byte for byte. Nothing is created until the first
    :meth:`put`, so a writer that is never fed leaves nothing behind.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        image_ids: Sequence[str],
        views: int,
        dim: int,
        fmt: str = "float16",
        normalize: bool = True,
    ):
        self.target = Path(path)
        self.format: VectorFormat = check_format(fmt)
        self.image_ids = image_ids
        if len(set(image_ids)) != len(image_ids):
            raise StoreError("image_ids has duplicates")
        if views < 1 or dim < 1:
            raise StoreError(f"views and dim must be > 0, got {views} and {dim}")
        self.views, self.dim, self.normalize = int(views), int(dim), normalize
        n = len(image_ids)
        self._written = np.zeros((n, self.views), dtype=bool)
        self._bad = np.zeros(n, dtype=bool)  # rows that had NaN or infinity
        self._zero = False  # an all-zero vector came (it cannot be normalised)
        self._tmp: Path | None = None
        self._fds: dict[str, int] = {}
        self._offsets: dict[str, int] = {}
        self._done = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.abort()

    @property
    def complete(self) -> bool:
        """Every (row, view) has a good vector."""
        return bool(self._written.all()) and not self._bad.any() and not self._zero

    def _open(self) -> None:
        recover(self.target, complete=_META)  # dead writers' leftovers
        tmp = leftover_name(self.target, "tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self._tmp = tmp
        n, k, d = len(self.image_ids), self.views, self.dim
        files: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {
            _IMAGES: (storage_dtype(self.format), (n, k, d))
        }
        if self.format == "int8":
            files[_SCALES] = (np.dtype(np.float32), (n, k))
        for name, (dtype, shape) in files.items():
            fd = os.open(tmp / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds[name] = fd
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header,
                {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": shape},
            )  # fmt: skip
            os.write(fd, header.getvalue())
            self._offsets[name] = len(header.getvalue())
            # the whole file at once (sparse): rows are then written in any order
            os.ftruncate(fd, len(header.getvalue()) + int(np.prod(shape)) * dtype.itemsize)

    def put(self, rows: npt.ArrayLike, views: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Vectors (B, D) of (row, view) pairs (``rows`` and ``views``: B ints each)."""
        row = np.asarray(rows, dtype=np.int64).reshape(-1)
        view = np.asarray(views, dtype=np.int64).reshape(-1)
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape != (len(row), self.dim) or len(view) != len(row):
            raise StoreError(
                f"put takes B rows, B views and (B, D={self.dim}) vectors, got "
                f"{len(row)}, {len(view)} and {vecs.shape}"
            )
        n = len(self.image_ids)
        if row.size and (row.min() < 0 or row.max() >= n or view.min() < 0
                         or view.max() >= self.views):  # fmt: skip
            raise IndexError(f"rows must lie in [0, {n}) and views in [0, {self.views})")
        self._put_flat(row * self.views + view, vecs)

    def put_rows(self, start: int, block: npt.ArrayLike) -> None:
        """Every view of rows ``start, start + 1, ...``: a (B, K, D) block."""
        vecs = np.asarray(block, dtype=np.float32)
        if vecs.ndim != 3 or vecs.shape[1:] != (self.views, self.dim):
            raise StoreError(
                f"put_rows takes (B, K={self.views}, D={self.dim}) blocks, got {vecs.shape}"
            )
        if start < 0 or start + len(vecs) > len(self.image_ids):
            raise IndexError(f"rows must lie in [0, {len(self.image_ids)})")
        flat = np.arange(start * self.views, (start + len(vecs)) * self.views, dtype=np.int64)
        self._put_flat(flat, vecs.reshape(-1, self.dim))

    def _put_flat(self, flat: npt.NDArray[np.int64], vecs: npt.NDArray[np.float32]) -> None:
        if not len(flat):
            return
        finite = np.isfinite(vecs).all(axis=1)
        if not finite.all():
            self._bad[flat[~finite] // self.views] = True
            flat, vecs = flat[finite], vecs[finite]
        self._written.reshape(-1)[flat] = True  # an all-zero vector is refused at commit
        if self.normalize:
            norms = np.linalg.norm(vecs, axis=-1, keepdims=True)
            nonzero = (norms != 0).reshape(-1)
            if not nonzero.all():
                self._zero = True
                flat, vecs, norms = flat[nonzero], vecs[nonzero], norms[nonzero]
            vecs = (vecs / norms).astype(np.float32)
        if not len(flat):
            return
        try:
            codes, scales = quantize(vecs, self.format)
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
        if self._tmp is None:
            self._open()
        order = np.argsort(flat, kind="stable")
        flat, codes = flat[order], codes[order]
        scales = None if scales is None else scales[order].astype(np.float32)
        # contiguous runs of slots: one write each (a response's items are usually one run)
        breaks = np.flatnonzero(np.diff(flat) != 1) + 1
        for lo, hi in zip(
            [0, *breaks.tolist()], [*breaks.tolist(), len(flat)], strict=True
        ):
            first = int(flat[lo])
            self._pwrite(_IMAGES, first * codes.itemsize * self.dim, codes[lo:hi])
            if scales is not None:
                self._pwrite(_SCALES, first * 4, scales[lo:hi])

    def _pwrite(self, name: str, offset: int, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array).tobytes()
        fd, at = self._fds[name], self._offsets[name] + offset
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, at)
            view, at = view[written:], at + written

    def commit(
        self,
        *,
        text_vectors: npt.ArrayLike,
        class_names: Sequence[str],
        prompts: Sequence[str],
        teacher: str,
        teacher_fingerprint: str,
        dataset_fingerprint: str,
        extra_meta: Mapping[str, Any] | None = None,
    ) -> Path:
        """Finish the store (every row and view must have been put) and swap it into
        place; returns its path (not opened: that reads every id, a cost a harvest need
        not pay). StoreError names up to five images that have no good vector."""
        if self._done:
            raise StoreError("this store writer has already finished")
        missing = self._bad | ~self._written.all(axis=1)
        if missing.any():
            ids = [self.image_ids[i] for i in np.flatnonzero(missing)[:5]]
            raise StoreError(
                f"{int(missing.sum())} image(s) have NaN/infinite vectors (never bought?), "
                f"e.g. {ids}; harvest them before exporting"
            )
        texts = _check_texts(text_vectors, class_names, self.dim)
        if self._zero:
            raise StoreError("image_vectors has an all-zero vector, which cannot be normalised")
        if self.normalize and len(texts):
            texts = _normalise(texts, "text_vectors")
        _check_extra_meta(extra_meta)
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "teacher": teacher,
            "teacher_fingerprint": teacher_fingerprint,
            "dataset_fingerprint": dataset_fingerprint,
            "dim": self.dim,
            "format": self.format,
            "normalized": bool(self.normalize),
            "views": self.views,
            "n_images": len(self.image_ids),
            "class_names": [str(c) for c in class_names],
            "prompts": [str(p) for p in prompts],
            "created": time.time(),
            **(extra_meta or {}),
        }
        if self._tmp is None:
            self._open()  # no images at all (an empty dataset): the files still exist
        tmp = self._tmp
        assert tmp is not None
        try:
            for fd in self._fds.values():
                os.fsync(fd)
            self._close_files()
            _save_npy(tmp / _TEXTS, texts)
            _save_json(tmp / _IDS, [str(i) for i in self.image_ids])
            _save_json(tmp / _META, meta)  # last: a directory with meta.json is complete
            fsync_directory(tmp)
            _replace_dir(tmp, self.target)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.target

    def _close_files(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def abort(self) -> None:
        """Remove what was written; the store at the target (if any) is left as it was."""
        self._done = True
        self._close_files()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


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

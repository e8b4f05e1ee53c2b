"""StoreWriter: builds an embedding store piece by piece and swaps it into place atomically.

The store's files are described in cache/store.py; the reader there and this writer share
the format of cache/store_format.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .atomic import fsync_directory
from .codecs import VectorFormat, check_format, quantize, storage_dtype
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
from .swap import exchange, leftover_name, recover

__all__ = ["StoreWriter"]


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
        recover(self.target, complete=META_FILE)  # dead writers' leftovers
        tmp = leftover_name(self.target, "tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self._tmp = tmp
        n, k, d = len(self.image_ids), self.views, self.dim
        files: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {
            IMAGES_FILE: (storage_dtype(self.format), (n, k, d))
        }
        if self.format == "int8":
            files[SCALES_FILE] = (np.dtype(np.float32), (n, k))
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
            self._pwrite(IMAGES_FILE, first * codes.itemsize * self.dim, codes[lo:hi])
            if scales is not None:
                self._pwrite(SCALES_FILE, first * 4, scales[lo:hi])

    def leave_out(self, rows: Sequence[int]) -> None:
        """Drop ``rows`` (images that could not be embedded) before :meth:`commit`: the
        store then holds the other images only, their vectors as they were put. The files
        written so far are copied without those rows, a block at a time."""
        drop = np.zeros(len(self.image_ids), dtype=bool)
        drop[np.asarray(rows, dtype=np.int64)] = True
        if not drop.any():
            return
        keep = np.flatnonzero(~drop)
        if self._tmp is not None:
            for name in list(self._fds):
                self._copy_rows(name, keep)
        self.image_ids = [self.image_ids[i] for i in keep.tolist()]
        self._written, self._bad = self._written[keep], self._bad[keep]

    def _copy_rows(self, name: str, keep: npt.NDArray[np.int64]) -> None:
        """Replace the file ``name`` by one holding only the rows ``keep`` (in order)."""
        assert self._tmp is not None
        dtype = storage_dtype(self.format) if name == IMAGES_FILE else np.dtype(np.float32)
        row_shape = (self.views, self.dim) if name == IMAGES_FILE else (self.views,)
        row_bytes = int(np.prod(row_shape)) * dtype.itemsize
        new = self._tmp / f"{name}.kept"
        fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header,
                {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": (len(keep), *row_shape)},
            )  # fmt: skip
            os.write(fd, header.getvalue())
            at = len(header.getvalue())
            os.ftruncate(fd, at + len(keep) * row_bytes)
            old, base = self._fds[name], self._offsets[name]
            # contiguous runs of kept rows, each copied in pieces of bounded size
            breaks = np.flatnonzero(np.diff(keep) != 1) + 1
            for run in np.split(keep, breaks):
                for lo in range(0, len(run), _COPY_ROWS):
                    part = run[lo : lo + _COPY_ROWS]
                    size = len(part) * row_bytes
                    data = os.pread(old, size, base + int(part[0]) * row_bytes)
                    view = memoryview(data)
                    while view:
                        written = os.pwrite(fd, view, at)
                        view, at = view[written:], at + written
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fds[name])
        os.replace(new, self._tmp / name)
        self._fds[name], self._offsets[name] = fd, len(header.getvalue())

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
        texts = check_texts(text_vectors, class_names, self.dim)
        if self._zero:
            raise StoreError("image_vectors has an all-zero vector, which cannot be normalised")
        if self.normalize and len(texts):
            texts = _normalise(texts, "text_vectors")
        check_extra_meta(extra_meta)
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
            _save_npy(tmp / TEXTS_FILE, texts)
            _save_json(tmp / IDS_FILE, [str(i) for i in self.image_ids])
            meta[CHECKSUMS] = {
                name: file_digest(tmp / name)
                for name in (IMAGES_FILE, SCALES_FILE, TEXTS_FILE, IDS_FILE)
                if (tmp / name).is_file()
            }
            _save_json(tmp / META_FILE, meta)  # last: a directory with meta.json is complete
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


_COPY_ROWS = 4096  # rows copied at a time by StoreWriter.leave_out
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

"""The embedding store a harvest produces: written as the vectors arrive
(:class:`VectorSink`, used by :func:`distill.harvest.harvest`) or built from the cache alone
(:func:`export_store`, ``vlm-distill cache export``), both a block at a time so memory does
not grow with the data set. Also where a store lives (:func:`store_dir`) and the (image,
view) items in store order (:func:`image_items`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cache import CacheLike, StoreError, StoreWriter, VectorFormat
from cache.layout import STORES_DIR
from distill.data import Dataset, class_prompts
from distill.data.content import LEFT_OUT_KEY, files_meta
from distill.view_requests import cached_view_vector, damaged, view_request
from vlmclient import (
    ConfigurationError,
    ImageEmbeddingRequest,
    InputError,
    TextEmbeddingRequest,
    Timings,
    endpoint_id,
    item_cache_key,
    prepare_item,
    teacher_fingerprint,
)
from vlmclient.providers import parse_teacher

__all__ = [
    "EXPORT_BLOCK",
    "STORE_FORMAT",
    "FilesChanged",
    "ImageItem",
    "SizesDisagree",
    "VectorSink",
    "export_store",
    "image_items",
    "keep_views",
    "store_dir",
    "store_meta",
]

STORE_FORMAT: VectorFormat = "float16"  # what harvest writes; `cache export --format` differs


@dataclass(frozen=True)
class ImageItem:
    """One (image, view) pair to embed: its row in the store and its bytes to send."""

    row: int
    view: int
    image_id: str
    path: Path


def image_items(dataset: Dataset, views: int) -> Iterator[ImageItem]:
    """Every (image, view) pair in store order (row by row), made as they are read:
    ``len(dataset.samples) * views`` of them, never all held at once."""
    for row, s in enumerate(dataset.samples):
        for v in range(views):
            yield ImageItem(row=row, view=v, image_id=s.id, path=s.path)


def store_dir(cache_dir: Path, teacher: str, dataset: Dataset) -> Path:
    """The store of ``dataset`` embedded by ``teacher`` under the cache folder."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset.root.name}-{teacher}")
    return cache_dir / STORES_DIR / f"{slug}-{dataset.fingerprint()[:12]}"


def keep_views(path: Path, teacher_fingerprint: str, views: int) -> None:
    """ConfigurationError when the store at ``path``, of the teacher with this fingerprint,
    holds more than ``views`` views of each image: for a run not given ``--views``, whose
    store of ``views`` would replace it (``train`` then used fewer views without a word).
    Called before anything is bought; a store of another teacher or endpoint, or one that
    cannot be read, is replaced as before."""
    try:
        meta = json.loads((path / "meta.json").read_text("utf-8"))
        held = int(meta["views"]) if meta["teacher_fingerprint"] == teacher_fingerprint else 0
    except (OSError, ValueError, KeyError, TypeError):
        return
    if held > views:
        raise ConfigurationError(
            f"the embedding store at {path} holds {held} views of each image and --views "
            f"was not given ({views}): pass --views {held} to keep them (the views already "
            f"bought are reused from the cache), or --views {views} to replace it with a "
            f"store of {views}"
        )


def store_meta(
    dataset: Dataset, seen: Callable[[int, str], None] | None = None
) -> dict[str, object]:
    """What a store records of its dataset beyond the fingerprint: where it was, and the
    digests of its files that tell a later train whether they still hold the same images
    (:mod:`distill.data.content`; ``seen`` as :func:`~distill.data.content.files_meta`)."""
    meta = files_meta(dataset, seen)
    return {"dataset_root": str(dataset.root), "layout": dataset.layout, **meta}


class SizesDisagree(StoreError):
    """The vectors to export come in two sizes: not the disk's fault (a server answered
    some at the wrong size; ``vlm-distill cache prune --keep-dim`` removes them)."""


class FilesChanged(StoreError):
    """Images replaced or edited on disk while they were harvested: the vectors bought
    are of their old content, which the store's file digests would not say."""


def _short(sha256: str) -> int:
    """Enough of a digest to tell a file's content changed (8 bytes a row, not 64)."""
    return int(sha256[:16], 16) or 1  # 0 means "not read yet"


class VectorSink:
    """Image vectors as they arrive: written into the store being built (when there is
    one), and which (row, view) pairs came back (one byte each, not a vector)."""

    def __init__(
        self, path: Path | None, image_ids: Sequence[str], views: int, timings: Timings
    ) -> None:
        self.path, self.image_ids, self.views, self.timings = path, image_ids, views, timings
        self.have = np.zeros((len(image_ids), views), dtype=bool)
        # each row's file content as read for its requests (0: not read yet), and the
        # rows whose file changed between two reads
        self.sources = np.zeros(len(image_ids), dtype=np.uint64)
        self.changed: set[int] = set()
        self.writer: StoreWriter | None = None
        self.error: str | None = None  # the store could not be written: said at the end
        self.sizes_disagree = False  # ... because its vectors came in two sizes
        # rows whose image cannot be decoded (why): the store is written without them
        self.left_out: dict[int, str] = {}

    @property
    def missing(self) -> int:
        """(row, view) pairs not received, those of the rows left out not counted."""
        have = self.have.copy()
        have[list(self.left_out)] = True
        return int(have.size - np.count_nonzero(have))

    def leave_out(self, item: ImageItem, why: str) -> None:
        """``item``'s image cannot be decoded: none of its views is bought, and the store
        is written without it (its meta lists it, so train and eval leave it out)."""
        self.left_out.setdefault(item.row, why)

    def read(self, items: Sequence[ImageItem], digests: Mapping[Path, str]) -> None:
        """The sha256 of the bytes each item's file held when its chunk read it."""
        for item in items:
            sha = digests.get(item.path)
            if sha is not None:
                self._saw(item.row, sha)

    def _saw(self, row: int, sha256: str) -> None:
        short = _short(sha256)
        if self.sources[row] == 0:
            self.sources[row] = short
        elif self.sources[row] != short:
            self.changed.add(row)

    def _check_changed(self) -> None:
        if self.changed:
            rows = sorted(self.changed)
            names = ", ".join(self.image_ids[r] for r in rows[:3])
            more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
            raise FilesChanged(
                f"{len(rows)} image file(s) replaced while they were harvested "
                f"({names}{more}): the answers bought are of their old content; no store "
                "was written. Run again once the data stops changing: it buys only the "
                "new content"
            )

    def put(self, items: Sequence[ImageItem], vectors: Sequence[np.ndarray]) -> None:
        rows = [i.row for i in items]
        views = [i.view for i in items]
        self.have[rows, views] = True
        if self.path is None or self.error is not None or not items:
            return
        started = time.perf_counter()
        try:
            sizes = {int(np.shape(v)[-1]) for v in vectors}
            if self.writer is not None:
                sizes.add(self.writer.dim)
            if len(sizes) > 1:
                # answers of two sizes (a server that gave some at the wrong size)
                self.sizes_disagree = True
                raise StoreError(f"image vectors come in sizes {sorted(sizes)}")
            matrix = np.stack(vectors).astype(np.float32, copy=False)
            if self.writer is None:
                self.writer = StoreWriter(
                    self.path,
                    image_ids=self.image_ids,
                    views=self.views,
                    dim=int(matrix.shape[1]),
                    fmt=STORE_FORMAT,
                )
            self.writer.put(rows, views, matrix)
        except (OSError, StoreError, ValueError) as exc:
            # Keep buying: every vector is cached as it arrives; only the export is lost.
            self.error = f"could not write the embedding store: {exc}"
            self.abort()
        finally:
            self.timings.add("store", started)

    def commit(
        self,
        *,
        text_vectors: np.ndarray,
        class_names: list[str],
        prompts: list[str],
        teacher: str,
        teacher_fingerprint: str,
        dataset: Dataset,
        check: Callable[[], None] | None = None,
    ) -> Path:
        """Write the store; ``check()`` is called after each file is hashed (it raises to
        stop: :func:`distill.workers.off_loop`)."""

        def seen(row: int, sha256: str) -> None:
            self._saw(row, sha256)
            if check is not None:
                check()

        if self.error is not None:
            cls = SizesDisagree if self.sizes_disagree else StoreError
            raise cls(self.error.removeprefix("could not write the embedding store: "))
        if self.writer is None or self.path is None:
            raise StoreError("no image vectors were written")
        rows = sorted(self.left_out)
        self.writer.leave_out(rows)
        if text_vectors.ndim == 2 and text_vectors.shape[1] != self.writer.dim:
            raise SizesDisagree(
                f"the class prompts' vectors have {text_vectors.shape[1]} values, the images' "
                f"{self.writer.dim}"
            )
        self._check_changed()
        # the digests recorded are of the files now: each must be what was sent
        try:
            meta = store_meta(dataset, seen)
        except FileNotFoundError as exc:  # not the disk's fault: the data changed
            row = next((r for r, s in enumerate(dataset.samples) if not s.path.exists()), 0)
            raise FilesChanged(
                f"image {self.image_ids[row]!r} was removed while it was harvested: no "
                "store was written. Run again once the data stops changing: it buys "
                "nothing twice"
            ) from exc
        self._check_changed()
        meta[LEFT_OUT_KEY] = [{"id": self.image_ids[r], "reason": self.left_out[r]} for r in rows]
        self.writer.commit(
            text_vectors=text_vectors.astype(np.float32),
            class_names=class_names,
            prompts=prompts,
            teacher=teacher,
            teacher_fingerprint=teacher_fingerprint,
            dataset_fingerprint=dataset.fingerprint(),
            extra_meta=meta,
        )
        return self.path

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def export_store(
    dataset: Dataset,
    cache: CacheLike,
    *,
    cache_dir: Path,
    teacher: str,
    views: int = 1,
    prompt: str = "a photo of a {}",
    params: dict[str, object] | None = None,
    fmt: VectorFormat = "float16",
    base_url: str | None = None,
    cache_namespace: str | None = None,
    keep_more_views: bool = False,
) -> tuple[Path | None, int]:
    """Build the store from cached responses only (sends nothing, needs no API key).

    ``base_url`` / ``cache_namespace`` must be those the items were bought with.
    ``keep_more_views``: refuse (:func:`keep_views`) rather than replace a store there that
    holds more views (``cache export`` not given ``--views``).
    Returns (store path or None, number of items missing from the cache). An image not
    cached whose pixels cannot be decoded is left out of the store, as the harvest leaves
    it out (listed in its meta.json's ``left_out``), not counted as missing.
    """
    provider, model = parse_teacher(teacher)
    params = params or {}
    endpoint = endpoint_id(provider, base_url, cache_namespace)

    def lookup(kind: str, item: ImageEmbeddingRequest | TextEmbeddingRequest) -> np.ndarray | None:
        key = item_cache_key(provider, model, params, kind, prepare_item(provider, item), endpoint)
        entry = cache.get(key)
        return None if entry is None else entry.vector

    prompts = class_prompts(dataset.class_names, prompt)
    texts = [lookup("text_embedding", TextEmbeddingRequest(text=p)) for p in prompts]
    missing = sum(v is None for v in texts)
    fingerprint = teacher_fingerprint(teacher, params, endpoint)
    path = store_dir(cache_dir, teacher, dataset)
    if keep_more_views:
        keep_views(path, fingerprint, views)
    ids = dataset.samples.ids
    # Read from the cache and written into the store a block at a time: memory does not
    # grow with the data set. Once an item is missing no store will be written; the rest
    # are only counted.
    pending: list[tuple[int, int, np.ndarray]] = []
    writer: StoreWriter | None = None
    left: dict[int, str] = {}  # rows whose image cannot be decoded: why
    try:
        for item in image_items(dataset, views):
            if item.row in left:
                continue
            try:
                if item.view == 0:
                    vector = lookup("image_embedding", view_request(item, dataset.hflip))
                else:  # by its content id, else by its key before content ids
                    vector = cached_view_vector(
                        cache, item, hflip=dataset.hflip, teacher=teacher, params=params,
                        endpoint=endpoint,
                    )  # fmt: skip
            except (InputError, OSError, ValueError):
                vector = None
            if vector is None:
                why = damaged(item.path)
                if why is not None:  # never bought: the harvest left it out too
                    left[item.row] = why
                    continue
                missing += 1
                pending.clear()
                continue
            if missing or not prompts:
                continue
            pending.append((item.row, item.view, vector))
            if len(pending) >= EXPORT_BLOCK:
                writer = _put_pending(writer, path, ids, views, fmt, pending)
        if missing or not prompts:
            return None, missing
        writer = _put_pending(writer, path, ids, views, fmt, pending)
        if writer is None:
            return None, len(left) * views  # no images (or none decodes): nothing to export
        rows = sorted(left)
        writer.leave_out(rows)
        writer.commit(
            text_vectors=np.stack(texts).astype(np.float32),  # type: ignore[arg-type]
            class_names=list(dataset.class_names),
            prompts=prompts,
            teacher=teacher,
            teacher_fingerprint=fingerprint,
            dataset_fingerprint=dataset.fingerprint(),
            extra_meta={
                **store_meta(dataset),
                LEFT_OUT_KEY: [{"id": ids[r], "reason": left[r]} for r in rows],
            },
        )
        return path, 0
    finally:
        if writer is not None:
            writer.abort()  # a no-op after the commit


EXPORT_BLOCK = 512  # cached vectors written to the store at a time by export_store


def _put_pending(
    writer: StoreWriter | None,
    path: Path,
    ids: Sequence[str],
    views: int,
    fmt: VectorFormat,
    pending: list[tuple[int, int, np.ndarray]],
) -> StoreWriter | None:
    if not pending:
        return writer
    rows, item_views, vectors = zip(*pending, strict=True)
    matrix = np.stack(vectors).astype(np.float32, copy=False)
    if writer is None:
        writer = StoreWriter(path, image_ids=ids, views=views, dim=int(matrix.shape[1]), fmt=fmt)
    writer.put(rows, item_views, matrix)
    pending.clear()
    return writer

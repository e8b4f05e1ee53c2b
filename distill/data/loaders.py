"""torch data loading over :mod:`distill.data` samples and an EmbeddingStore.

- Images are decoded with PIL, upright (EXIF orientation applied, as for the teacher's
  views), turned into teacher view k exactly as :mod:`distill.data.views`
  made it (so the student sees the pixels the teacher saw), resized to the student's input
  size and kept uint8 until the batch reaches the trainer (4× less to move than float).
- A :class:`PixelCache` keeps those uint8 pixels per (image, view) for the whole run, up to
  a byte budget: every later epoch, stage and evaluation reads them instead of decoding
  and re-making the view (18-45 % of a 32 px step; the pixels are the same).
- Teacher targets are gathered per batch from the memory-mapped store (one fancy-index
  read per batch), never per key from the response cache.
- :class:`DomainBatchSampler` yields DomainBed-style steps: ``batch_per_domain`` images
  from every source domain. The order is a pure function of (seed, domain, epoch), so the
  batch of any step can be reproduced: resuming at step s continues the same stream.
  Under DDP each rank reads its own shard of every domain (``indices[rank::world]``).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from distill.data import DataError, Sample, check_image
from distill.data.views import CANNOT_DECODE, load_rgb, pixels_decode, view_array

__all__ = [
    "DomainBatchSampler",
    "ImageViews",
    "PixelCache",
    "TargetCollate",
    "eval_loader",
    "load_image",
    "train_loader",
]


def load_image(sample: Sample, view: int, size: int, *, hflip: bool = True) -> np.ndarray:
    """uint8 (3, size, size) pixels of view ``view`` of a sample (upright: EXIF orientation
    applied by :func:`~distill.data.views.load_rgb`), resized bilinearly."""
    img = load_rgb(sample.path)
    if view > 0:
        img = Image.fromarray(view_array(img, sample.id, view, hflip=hflip), mode="RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


class PixelCache:
    """The student-input pixels of (image id, view, size, hflip), kept up to ``max_bytes``.

    Once the budget is spent, new pixels are made and returned but not kept: what is
    cached stays (no eviction churn), so a data set larger than the budget costs what it
    did without a cache. Each DataLoader worker process fills its own copy.

    >>> c = PixelCache(max_bytes=10)
    >>> c.get(("a", 0, 2, True), lambda: np.zeros(8, np.uint8)).shape, c.size
    ((8,), 8)
    >>> _ = c.get(("b", 0, 2, True), lambda: np.zeros(8, np.uint8)); c.size, len(c)
    (8, 1)
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._pixels: dict[tuple[str, int, int, bool], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._pixels)

    def get(self, key: tuple[str, int, int, bool], make: Callable[[], np.ndarray]
            ) -> np.ndarray:
        """The cached pixels of ``key``, or ``make()`` (kept while the budget allows)."""
        pixels = self._pixels.get(key)
        if pixels is None:
            pixels = make()
            if self.size + pixels.nbytes <= self.max_bytes:
                self._pixels[key] = pixels
                self.size += pixels.nbytes
        return pixels


def _damaged(sample: Sample, exc: DataError) -> bool:
    """True when ``exc`` (from decoding ``sample``) is of a damaged image: its bytes read,
    its header sound, its pixels not decoded (what the harvest leaves out). False when
    they decode now (a good copy put in its place meanwhile) or the file is no image (the
    harvest fails on it too); DataError when it cannot be read at all (no permission,
    gone), which is not a damaged image either."""
    if not str(exc).startswith(CANNOT_DECODE):
        return False
    try:
        data = sample.path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read image {str(sample.path)!r}: {err.strerror}") from err
    return not pixels_decode(data) and check_image(sample.path) is None


class ImageViews(torch.utils.data.Dataset[dict[str, Any]]):
    """Items are (sample index, view) pairs; each item is image, label, index and view.

    With a ``cache`` the pixels of an item are made once per run (see :class:`PixelCache`).
    With ``leave_out`` an image whose pixels cannot be decoded (its bytes read, its pixel
    data damaged: what the harvest leaves out) is an item whose image is None; a file that
    cannot be read at all still raises.
    """

    def __init__(self, samples: Sequence[Sample], image_size: int, *, hflip: bool = True,
                 cache: PixelCache | None = None, leave_out: bool = False):
        self.samples = list(samples)
        self.image_size = image_size
        self.hflip = hflip
        self.cache = cache
        self.leave_out = leave_out

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        index, view = key if isinstance(key, tuple) else (key, 0)
        s = self.samples[index]
        try:
            if self.cache is None:
                pixels = load_image(s, view, self.image_size, hflip=self.hflip)
            else:
                pixels = self.cache.get(
                    (s.id, view, self.image_size, self.hflip),
                    lambda: load_image(s, view, self.image_size, hflip=self.hflip),
                )
        except DataError as exc:
            if not (self.leave_out and _damaged(s, exc)):
                raise
            return {"image": None, "label": -1, "index": index, "view": view}
        return {
            # collate stacks the batch into new memory: the cached array is never written
            "image": torch.from_numpy(pixels),
            "label": -1 if s.label is None else s.label,
            "index": index,
            "view": view,
        }


class TargetCollate:
    """Stacks items and adds the teacher image targets of the batch from the store.

    ``rows[i]`` is the store row of sample i. With ``store=None`` no targets are added.
    """

    def __init__(self, store: Any = None, rows: np.ndarray | None = None) -> None:
        self.store = store
        self.rows = rows

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        index = np.array([it["index"] for it in items], dtype=np.int64)
        view = np.array([it["view"] for it in items], dtype=np.int64)
        out = {
            "image": torch.stack([it["image"] for it in items]),
            "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
            "index": torch.from_numpy(index),
            "view": torch.from_numpy(view),
        }
        if self.store is not None and self.rows is not None:
            vectors = self.store.gather(self.rows[index], view)
            out["image_t"] = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        return out


class DomainBatchSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Endless batches of ``batch_per_domain`` (index, view) pairs from every domain.

    ``groups`` are the sample indices of each source domain. Position p of domain d's
    stream is element p mod n of the permutation of epoch p // n, seeded by (seed, d,
    epoch); its view is drawn uniformly from [0, views) by the same generator.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[int]],
        batch_per_domain: int,
        *,
        views: int = 1,
        seed: int = 0,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.groups = [np.asarray(g, dtype=np.int64)[rank::world_size] for g in groups]
        empty = [i for i, g in enumerate(self.groups) if len(g) == 0]
        if empty:
            raise ValueError(f"source domain(s) {empty} have no training images on rank {rank}")
        self.batch = batch_per_domain
        self.views = views
        self.seed = seed
        self.step = start_step
        self._epochs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _epoch(self, d: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        key = (d, epoch)
        if key not in self._epochs:
            n = len(self.groups[d])
            rng = np.random.default_rng([self.seed, d, epoch])
            order = self.groups[d][rng.permutation(n)]
            views = rng.integers(0, self.views, size=n)
            # Keep only recent epochs: the stream only moves forward.
            for old in [k for k in self._epochs if k[0] == d and k[1] < epoch - 1]:
                del self._epochs[old]
            self._epochs[key] = (order, views)
        return self._epochs[key]

    def batch_at(self, step: int) -> list[tuple[int, int]]:
        """The (index, view) pairs of a step, domain by domain."""
        out: list[tuple[int, int]] = []
        for d, g in enumerate(self.groups):
            n = len(g)
            for p in range(step * self.batch, (step + 1) * self.batch):
                order, views = self._epoch(d, p // n)
                out.append((int(order[p % n]), int(views[p % n])))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        while True:
            yield self.batch_at(self.step)
            self.step += 1

    def __len__(self) -> int:  # endless; DataLoader only asks for len() when told to
        return 2**62


def _worker_init(worker_id: int) -> None:
    """In a DataLoader worker: SIGTERM from outside (``timeout``, ``systemctl stop``,
    Slurm's scancel signal the whole process group) ends the worker quietly, as torch's
    workers already take Ctrl-C, and leaves the stop to the trainer, which ends its workers
    itself. torch's own handler killed the worker with it, and the trainer then printed
    "DataLoader worker (pid N) is killed by signal: Terminated" after its stop message."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def train_loader(
    samples: Sequence[Sample],
    groups: Sequence[Sequence[int]],
    *,
    image_size: int,
    batch_per_domain: int,
    store: Any,
    rows: np.ndarray,
    views: int,
    seed: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    hflip: bool = True,
    cache: PixelCache | None = None,
) -> torch.utils.data.DataLoader[dict[str, Any]]:
    """An endless loader of per-domain training batches with teacher targets."""
    sampler = DomainBatchSampler(
        groups, batch_per_domain, views=views, seed=seed, start_step=start_step,
        rank=rank, world_size=world_size,
    )
    return torch.utils.data.DataLoader(
        ImageViews(samples, image_size, hflip=hflip, cache=cache),
        batch_sampler=sampler,
        collate_fn=TargetCollate(store, rows),
        num_workers=num_workers,
        persistent_workers=False,
        worker_init_fn=_worker_init,
    )


def _collate_kept(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of the items whose pixels decode (none: no "image"), and under
    ``left_out`` the indices of those left out (``ImageViews(leave_out=True)``)."""
    kept = [it for it in items if it["image"] is not None]
    out: dict[str, Any] = TargetCollate()(kept) if kept else {}
    out["left_out"] = [it["index"] for it in items if it["image"] is None]
    return out


def eval_loader(
    samples: Sequence[Sample], *, image_size: int, batch_size: int, num_workers: int = 0,
    cache: PixelCache | None = None, leave_out: bool = False,
) -> torch.utils.data.DataLoader[dict[str, Any]]:
    """Sequential view-0 batches of ``samples`` (no teacher targets). With ``leave_out``
    the images whose pixels cannot be decoded are left out of the batches, their indices
    listed under each batch's ``left_out`` (see :class:`ImageViews`)."""
    return torch.utils.data.DataLoader(
        ImageViews(samples, image_size, cache=cache, leave_out=leave_out),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=_collate_kept if leave_out else TargetCollate(),
        num_workers=num_workers,
        worker_init_fn=_worker_init,
    )

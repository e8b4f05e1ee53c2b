"""A fitted mini-clip tower's zero-shot accuracy on each domain of a benchmark folder
(``fit-teacher --benchmark DIR``).

Scored as the served teacher is read: each file decoded as the server decodes an upload
(upright, RGB; :func:`distill.data.views.load_rgb`, which the server's decoder mirrors),
brought to 32 px on its own, through the tower; each class's text prototype the MiniLM
embedding of ``"a photo of a {class}"`` (the harvest's prompt, the benchmark's class
names); the class of the nearest prototype (:func:`distill.teacher.zeroshot.zeroshot_labels`).
The images are read before the fit, so a file that does not decode is found before the
minutes of fitting, not after.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.data import DataError, class_prompts, display, scan
from distill.data.views import load_rgb
from distill.teacher.miniclip_model import MiniClipTower, encode_texts, preprocess
from distill.teacher.zeroshot import zeroshot_labels

__all__ = ["BenchmarkImages", "benchmark_zeroshot", "read_benchmark_images"]

_BATCH = 256


@dataclass(frozen=True)
class BenchmarkImages:
    """A benchmark folder's labelled images, decoded: uint8 (H, W, 3) arrays."""

    root: Path
    class_names: tuple[str, ...]
    domains: list[str]
    labels: np.ndarray
    images: list[np.ndarray]


def read_benchmark_images(bench: str | os.PathLike[str]) -> BenchmarkImages:
    """Every labelled image of the data folder ``bench`` (DataError when it has none, or
    one does not decode)."""
    ds = scan(bench)
    samples = [s for s in ds.samples if s.label is not None]
    if not samples:
        raise DataError(f"--benchmark {display(str(bench))} holds no labelled image")
    images = [np.asarray(load_rgb(s.path), dtype=np.uint8) for s in samples]
    return BenchmarkImages(Path(bench), tuple(ds.class_names), [s.domain for s in samples],
                           np.asarray([s.label for s in samples], dtype=np.int64), images)


def benchmark_zeroshot(model: MiniClipTower, text_model: Any,
                       bench: BenchmarkImages) -> dict[str, float]:
    """Zero-shot accuracy of ``model`` on each domain of ``bench`` (sorted by domain; float32
    means rounded to 4 places, as the manifest's other figures)."""
    text = encode_texts(text_model, class_prompts(bench.class_names))
    model.eval()
    vectors = []
    with torch.inference_mode():
        for i in range(0, len(bench.images), _BATCH):
            # as the server's backend: each image to [0, 1], then to 32 px on its own
            batch = torch.cat([
                preprocess(torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None])
                for img in bench.images[i : i + _BATCH]
            ])  # fmt: skip
            vectors.append(model(batch).numpy())
    hits = zeroshot_labels(np.concatenate(vectors), text) == bench.labels
    domains = np.asarray(bench.domains)
    return {d: round(float(np.mean(hits[domains == d], dtype=np.float32)), 4)
            for d in sorted(set(bench.domains))}

"""Fixtures of the trainer tests: a tiny DomainBed folder of real PNGs and a teacher store.

The images are synthetic but learnable: each class is a bright square at its own position,
each domain tints and shifts the background. The "teacher" embeds an image as its class's
text vector plus noise, so ADiP has a target that predicts the class.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.data import scan

TEACHER = "local:fake-teacher"
DIM = 16
CLASSES = ("a_circle", "b_square", "c_cross")
DOMAINS = ("dom1", "dom2", "dom3")


def _image(cls: int, dom: int, i: int, size: int = 24) -> np.ndarray:
    rng = np.random.default_rng(1000 * cls + 100 * dom + i)
    arr = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    arr[..., dom % 3] += 60  # the domain's tint
    half = size // 2
    y, x = divmod(cls, 2)
    arr[y * half : y * half + half, x * half : x * half + half] = 230
    return arr


def make_data(root: Path, per_class: int = 6) -> Path:
    for d, dom in enumerate(DOMAINS):
        for c, cls in enumerate(CLASSES):
            folder = root / dom / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(_image(c, d, i)).save(folder / f"{i:03d}.png")
    return root


def make_store(data: Path, cache: Path, *, teacher: str = TEACHER, views: int = 2,
               slug: str = "s1", fingerprint: str | None = None,
               class_file: Path | None = None) -> Path:
    """A store as harvest writes it (``class_file`` as ``harvest --class-file``)."""
    from cache.store import EmbeddingStore

    ds = scan(data, class_file=class_file)
    rng = np.random.default_rng(0)
    text = rng.standard_normal((len(ds.class_names), DIM)).astype(np.float32)
    ids = [s.id for s in ds.samples]
    vecs = np.stack([  # an unlabelled image (a manifest's empty label): noise alone
        (0 if s.label is None else text[s.label]) + 0.5 * rng.standard_normal((views, DIM))
        for s in ds.samples
    ]).astype(np.float32)
    path = cache / "stores" / slug
    EmbeddingStore.write(
        path, image_ids=ids, image_vectors=vecs, text_vectors=text,
        class_names=list(ds.class_names), prompts=[f"a photo of a {c}" for c in ds.class_names],
        teacher=teacher, teacher_fingerprint="fake-v1",
        dataset_fingerprint=fingerprint or ds.fingerprint(),
        extra_meta={"dataset_root": str(ds.root), "layout": ds.layout},
    )
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    make_store(tiny_data, cache)
    return cache


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine OpenMP's spinning threads slow tiny
    models down many times over when the cores are busy elsewhere."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

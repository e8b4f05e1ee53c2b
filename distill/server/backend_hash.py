"""HashBackend: deterministic unit vectors from SHAKE-256 of the content. No torch."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from .backend_base import ImageOut, ImageTask, decode_rgb, unit
from .config import MAX_HASH_DIM

__all__ = ["HashBackend"]

_HASH_LABELS = (
    "cat", "dog", "bird", "car", "tree", "house", "boat", "flower", "cup", "person",
)  # fmt: skip


class HashBackend:
    """Deterministic, fast, meaningless vectors: same bytes, same vector, any machine.

    >>> b = HashBackend(dim=8)
    >>> v = b.embed_texts(["hello"])[0]
    >>> v.shape, round(float((v * v).sum()), 5)
    ((8,), 1.0)
    """

    name = "hash"

    def __init__(self, dim: int = 384, max_batch: int = 256, *, decode: bool = False) -> None:
        """``decode``: decode every image's pixels first, as a provider does, and refuse
        (400) a request holding one that does not decode; by default only the bytes are
        hashed (fast, and what the tests of everything but decoding need)."""
        if not 2 <= dim <= MAX_HASH_DIM:
            raise ValueError(f"dim must be from 2 to {MAX_HASH_DIM}, not {dim}")
        self.dim = dim
        self.decode = decode
        self.max_batch = max_batch
        self.max_text_batch = max_batch
        self.executor: Executor | None = None

    def _vector(self, domain: bytes, data: bytes) -> np.ndarray:
        raw = hashlib.shake_256(domain + b"\0" + data).digest(2 * self.dim)
        v = np.frombuffer(raw, dtype="<i2").astype(np.float32) + 0.5
        return unit(v)

    def embed_images(self, tasks: Sequence[ImageTask]) -> list[ImageOut | Exception]:
        out: list[ImageOut | Exception] = []
        for t in tasks:
            if self.decode:
                img = decode_rgb(t.data)
                if isinstance(img, Exception):
                    out.append(img)
                    continue
            digest = hashlib.sha256(t.data).digest()
            label = _HASH_LABELS[digest[0] % len(_HASH_LABELS)]
            out.append(ImageOut(self._vector(b"image", t.data), label))
        return out

    def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self._vector(b"text", t.encode("utf-8")) for t in texts]

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "dim": self.dim}

    def close(self) -> None:
        pass

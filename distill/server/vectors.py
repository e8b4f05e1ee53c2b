"""Vector helpers shared by the embedding wire formats."""

from __future__ import annotations

import numpy as np

from .wire import WireError

__all__ = ["resize", "wrong_dim"]


def resize(vecs: np.ndarray, dim: int | None, native: int) -> np.ndarray:
    """Matryoshka-style shortening (``dimensions`` / ``output_dimension``), renormalised."""
    if dim is None or dim == native:
        return vecs
    if dim > native:
        raise WireError(400, f"this model's embeddings have {native} dimensions, not {dim}")
    short = vecs[:, :dim]
    out: np.ndarray = short / np.maximum(np.linalg.norm(short, axis=1, keepdims=True), 1e-12)
    return out


def wrong_dim(vecs: np.ndarray) -> np.ndarray:
    """The same vectors at half their dimension: the ``wrong_dim`` fault's answer."""
    return vecs[:, : max(1, vecs.shape[1] // 2)]

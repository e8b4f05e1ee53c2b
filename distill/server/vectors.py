"""Vector helpers shared by the embedding wire formats."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from .wire import WireError

__all__ = ["encode_rows", "resize", "wrong_dim"]


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


def encode_rows(vecs: np.ndarray, encoding: str) -> list[Any]:
    """Rows as JSON wants them: number lists (``float``), or base64 of each row's
    little-endian float32 bytes (``base64``, as OpenAI's ``encoding_format`` sends it)."""
    if encoding == "base64":
        raw = np.ascontiguousarray(vecs, dtype="<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in raw]
    return [row.tolist() for row in vecs]

"""The teacher's zero-shot classifier from embeddings: 100 · cos(image, class prompt), as
CLIP scores classes. Pseudo-labels take its argmax, harvest rounds train on its softmax,
and the mini-clip fit scores its held-out images with it."""

from __future__ import annotations

import numpy as np

__all__ = ["LOGIT_SCALE", "zeroshot_labels", "zeroshot_logits", "zeroshot_probs"]

LOGIT_SCALE = 100.0  # CLIP's logit scale: the teacher's zero-shot logits are 100 * cosine


def zeroshot_logits(image_vectors: np.ndarray, text_vectors: np.ndarray) -> np.ndarray:
    """(N, C) float64 logits 100 · cos(image_n, text_c) for (N, D) images, (C, D) texts.

    >>> zeroshot_logits(np.array([[3.0, 0.0]]), np.array([[1.0, 0.0], [1.0, 1.0]])).round(2)
    array([[100.  ,  70.71]])
    """
    img = image_vectors / np.maximum(np.linalg.norm(image_vectors, axis=1, keepdims=True), 1e-12)
    txt = text_vectors / np.maximum(np.linalg.norm(text_vectors, axis=1, keepdims=True), 1e-12)
    logits: np.ndarray = LOGIT_SCALE * img.astype(np.float64) @ txt.astype(np.float64).T
    return logits


def zeroshot_labels(image_vectors: np.ndarray, text_vectors: np.ndarray) -> np.ndarray:
    """argmax_c cos(image, text_c) for each row of ``image_vectors`` (N, D) -> (N,) ints."""
    labels: np.ndarray = np.argmax(zeroshot_logits(image_vectors, text_vectors), axis=1)
    return labels.astype(np.int64)


def zeroshot_probs(image_vectors: np.ndarray, text_vectors: np.ndarray) -> np.ndarray:
    """softmax(100 · cos(image, text)) rows (N, C) float32: the class probabilities."""
    logits = zeroshot_logits(image_vectors, text_vectors)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs: np.ndarray = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    return probs

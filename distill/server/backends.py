"""Teacher backends: the models behind the local server.

A backend does synchronous batch compute only; the app wraps it in
:class:`~distill.server.batching.MicroBatcher` so the event loop never runs a model.

- :class:`HashBackend`: deterministic unit vectors from SHAKE-256 of the content. No torch.
- :class:`PseudoClipBackend`: EfficientNet-Lite (ImageNet) + all-MiniLM-L6-v2 in one
  384-d space: ``image = normalise(softmax(logits / T) @ B)`` with ``B`` the MiniLM
  embeddings of ``"a photo of a {ImageNet class}"``.
- :class:`OpenClipBackend`: a user's own open_clip checkpoint file (never downloads).
- :class:`MiniClipBackend`: a small CNN fitted into the MiniLM text space on a teacher pool
  (``vlm-distill fit-teacher``; see :mod:`distill.teacher.miniclip`): a teacher that knows
  the classes.

torch, timm and friends are imported inside the loaders, so ``hash`` costs nothing.

This module is the registry (:func:`make_backend`); each backend lives in its own module
(``backend_hash``, ``backend_pseudo_clip``, ``backend_open_clip``, ``backend_mini_clip``)
and what they share in ``backend_base``. The names are re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .backend_base import (
    DEFAULT_TEMPERATURE,
    Backend,
    ImageDecodeError,
    ImageOut,
    ImageTask,
)
from .backend_hash import HashBackend
from .backend_mini_clip import MiniClipBackend
from .backend_open_clip import OpenClipBackend
from .backend_pseudo_clip import PseudoClipBackend
from .config import DEFAULT_HASH_DIM

__all__ = [
    "BACKENDS",
    "Backend",
    "HashBackend",
    "ImageDecodeError",
    "ImageOut",
    "ImageTask",
    "MiniClipBackend",
    "OpenClipBackend",
    "PseudoClipBackend",
    "make_backend",
]


def _hash_factory(opts: dict[str, Any]) -> Backend:
    return HashBackend(dim=opts["hash_dim"])


def _pseudo_clip_factory(opts: dict[str, Any]) -> Backend:
    return PseudoClipBackend(image_tower=opts["image_tower"], temperature=opts["temperature"])


def _open_clip_factory(opts: dict[str, Any]) -> Backend:
    if not opts["open_clip_model"] or not opts["open_clip_weights"]:
        raise ValueError("backend open-clip needs --open-clip-model and --open-clip-weights")
    return OpenClipBackend(opts["open_clip_model"], opts["open_clip_weights"])


def _mini_clip_factory(opts: dict[str, Any]) -> Backend:
    if not opts["weights"]:
        raise ValueError(
            "backend mini-clip needs --weights FILE (make one with: vlm-distill fit-teacher)"
        )
    return MiniClipBackend(opts["weights"])


_FACTORIES = {
    "pseudo-clip": _pseudo_clip_factory,
    "hash": _hash_factory,
    "open-clip": _open_clip_factory,
    "mini-clip": _mini_clip_factory,
}
BACKENDS = tuple(_FACTORIES)


def make_backend(
    name: str,
    *,
    hash_dim: int = DEFAULT_HASH_DIM,
    open_clip_model: str | None = None,
    open_clip_weights: str | Path | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    image_tower: str = "auto",
    weights: str | Path | None = None,
) -> Backend:
    """Build a backend by its CLI name (``pseudo-clip``, ``hash``, ``open-clip``,
    ``mini-clip``; ``weights`` is the mini-clip file from ``fit-teacher``).

    >>> make_backend("hash", hash_dim=16).dim
    16
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return factory(
        {
            "hash_dim": hash_dim,
            "open_clip_model": open_clip_model,
            "open_clip_weights": open_clip_weights,
            "temperature": temperature,
            "image_tower": image_tower,
            "weights": weights,
        }
    )

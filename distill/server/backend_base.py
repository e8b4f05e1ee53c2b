"""What every teacher backend shares: the protocol the server's app needs, the image task
and result types, the tuning defaults, image decoding, and the ImageNet prompt bank.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .wire import DECODE_FORMATS

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_TEXT_BATCH",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TORCH_THREADS",
    "MAX_ASPECT",
    "Backend",
    "ImageDecodeError",
    "ImageOut",
    "ImageTask",
    "centre_crop_aspect",
    "decode_batch",
    "decode_rgb",
    "imagenet_names",
    "photo_prompt",
    "unit",
]

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
# The longest side an image keeps, in multiples of its shortest, before an eval transform
# that scales the short side to the model's size and then crops the centre (timm's,
# open_clip's): see :func:`centre_crop_aspect`.
MAX_ASPECT = 16


@dataclass(frozen=True)
class ImageTask:
    """One image to embed; ``want_label`` asks for a class name too (for answers)."""

    data: bytes
    want_label: bool = False


@dataclass(frozen=True)
class ImageOut:
    """One embedded image, and its class name when one was asked for."""

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

    def close(self) -> None:
        """Release the backend; a running inference call has finished when this returns.
        The torch backends run each call in a thread of its own that exits with the call
        (:class:`~distill.server.call_thread.CallThreadExecutor`): an idle inference thread
        keeps its OpenMP team, which made torch work in the same process, such as training
        students beside a live server, about 2x slower on a 2-core machine."""
        ...


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1 (a zero vector stays zero), as float32."""
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


class ImageDecodeError(ValueError):
    """An image's bytes do not decode (a per-item error, not a failed batch)."""


def decode_rgb(data: bytes) -> Any:
    """Bytes to a loaded RGB PIL image, as the student sees the file (upright: its EXIF
    orientation applied, as a provider shows a phone photo to its model; 16-bit grey
    scaled to 8 bits, transparency on white: :func:`distill.data.views.to_rgb`); a
    per-item error for anything undecodable."""
    from PIL import Image, UnidentifiedImageError

    from distill.data.views import exif_orientation, to_rgb, upright_transpose

    try:
        with Image.open(io.BytesIO(data), formats=DECODE_FORMATS) as im:
            method = upright_transpose(exif_orientation(im))  # from the header, as load_rgb
            im.load()
            rgb = to_rgb(im)
            return rgb if method is None else rgb.transpose(method)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        # PIL's decoders raise SyntaxError/EOFError for broken data too: one image's error,
        # never the failure of the whole micro-batch (every caller batched with it: 500)
        return ImageDecodeError(f"image could not be decoded: {exc}")


def centre_crop_aspect(img: Any, max_aspect: int = MAX_ASPECT) -> Any:
    """``img`` with its long side cut, centred, to at most ``max_aspect`` times its short
    side (others unchanged): what a short-side resize and centre crop keep anyway, without
    scaling the whole of a sliver first (a 2 x 3000 PNG of a few hundred bytes became a
    256 x 384,000 image, 295 MB; a 1 x 40,000,000 one, terabytes).

    >>> from PIL import Image
    >>> centre_crop_aspect(Image.new("RGB", (3000, 2))).size
    (32, 2)
    """
    w, h = img.size
    longest = max_aspect * min(w, h)
    if w > longest:
        left = (w - longest) // 2
        return img.crop((left, 0, left + longest, h))
    if h > longest:
        top = (h - longest) // 2
        return img.crop((0, top, w, top + longest))
    return img


def decode_batch(
    tasks: Sequence[ImageTask], preprocess: Callable[[Any], Any]
) -> tuple[list[ImageOut | Exception], list[Any], list[int]]:
    """(results with decode errors filled in, preprocessed tensors, their task indices)."""
    results: list[ImageOut | Exception] = [ValueError("unset")] * len(tasks)
    tensors, slots = [], []
    for i, t in enumerate(tasks):
        img = decode_rgb(t.data)
        if isinstance(img, Exception):
            results[i] = img
            continue
        tensors.append(preprocess(img))
        slots.append(i)
    return results, tensors, slots


def imagenet_names() -> list[str]:
    """The 1000 ImageNet class names (first synonym of each), from timm."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]


def photo_prompt(name: str) -> str:
    """The prompt a class name is embedded with."""
    return f"a photo of a {name}"

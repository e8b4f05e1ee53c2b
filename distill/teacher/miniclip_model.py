"""The mini-clip model: its image tower, input preprocessing, the frozen MiniLM text tower,
and loading a fitted teacher (weights and manifest) by file.

What :mod:`distill.server.backend_mini_clip` serves with, without the fitting code of
:mod:`distill.teacher.miniclip`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EMBED_DIM",
    "IMAGE_SIZE",
    "WIDTHS",
    "MiniClipTower",
    "encode_texts",
    "load_teacher",
    "load_text_model",
    "manifest_path",
    "preprocess",
    "teacher_name",
]

IMAGE_SIZE = 32
EMBED_DIM = 384  # all-MiniLM-L6-v2
WIDTHS = (16, 32, 64, 128)


class MiniClipTower(nn.Module):
    """A stride-2 stem, then Conv-BN-ReLU stages (stride 2 between them), mean pool, and a
    linear map into the text space. Small on purpose: fitting must take under a minute on
    2 CPU cores (about 2 MFLOPs per 32 px image)."""

    def __init__(self, widths: Sequence[int] = WIDTHS, dim: int = EMBED_DIM,
                 stem_stride: int = 2) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        layers = block(3, widths[0], stem_stride)
        for cin, cout in itertools.pairwise(widths):
            layers += block(cin, cout, 2) + block(cout, cout, 1)
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(widths[-1], dim)
        # CLIP's learnable temperature, initialised to 1/0.07 and capped at 100.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))
        return F.normalize(self.proj(h), dim=-1)


def preprocess(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) floats in [0, 1] to the tower's input: 32 px, centred on 0.5."""
    if rgb.shape[-1] != IMAGE_SIZE or rgb.shape[-2] != IMAGE_SIZE:
        rgb = F.interpolate(rgb, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                            align_corners=False, antialias=True)
    return (rgb - 0.5) / 0.5


@functools.lru_cache(maxsize=1)
def load_text_model() -> Any:
    """The frozen MiniLM text tower; loaded once per process (it takes seconds)."""
    from distill.teacher.offline import load_minilm

    return load_minilm()


def encode_texts(model: Any, texts: Sequence[str]) -> np.ndarray:
    """Unit MiniLM embeddings (N, 384), as the pseudo-CLIP backend serves them."""
    out = model.encode(list(texts), batch_size=64, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


def manifest_path(weights: str | os.PathLike[str]) -> Path:
    """``teacher.safetensors`` -> ``teacher.json``."""
    return Path(weights).with_suffix(".json")


def load_teacher(weights: str | os.PathLike[str]) -> tuple[MiniClipTower, dict[str, Any]]:
    """(tower in eval mode, manifest) from a file written by :func:`fit_teacher`; refused
    when the weights are not the ones the manifest's ``weights_sha256`` names."""

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"mini-clip weights file not found: {path}")
    mpath = manifest_path(path)
    try:
        manifest = json.loads(mpath.read_text("utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError(f"a JSON {type(manifest).__name__}, not an object")
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"mini-clip manifest {mpath} missing or unreadable ({exc}); "
            "refit with: vlm-distill fit-teacher POOL --out FILE"
        ) from exc
    data = path.read_bytes()
    recorded = manifest.get("weights_sha256")
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        # the teacher is served, and its answers cached, under the name this hash makes:
        # other weights would be filed under another teacher's name (a refit over the same
        # --out cut between its two files leaves exactly this pair)
        raise FileNotFoundError(
            f"mini-clip weights {path} are not the ones its manifest {mpath} describes "
            f"(sha256 {recorded[:12]}...); refit with: vlm-distill fit-teacher POOL --out {path}"
        )
    from safetensors.torch import load as load_bytes

    from distill.teacher.offline import weights_do_not_load

    # a manifest edited by hand (another tower, no classes), or weights it has no hash of
    with weights_do_not_load(f"mini-clip weights {path} (with {mpath.name})",
                             f"refit with: vlm-distill fit-teacher POOL --out {path}"):
        names = manifest.get("class_names")
        if not isinstance(names, list) or not names or \
                not all(isinstance(n, str) for n in names):
            raise ValueError("the manifest names no classes (class_names)")
        model = MiniClipTower(manifest.get("widths", WIDTHS),
                              int(manifest.get("dim", EMBED_DIM)),
                              stem_stride=int(manifest.get("stem_stride", 2)))
        model.load_state_dict(load_bytes(data), strict=True)
    model.eval()
    return model, manifest


def teacher_name(weights: str | os.PathLike[str]) -> str:
    """The harvest teacher name for a fitted file: ``local:mini-clip-<12 hex of its hash>``.

    Cache keys include the model name, so a refitted teacher never reads an older one's
    cached embeddings.
    """
    manifest = json.loads(manifest_path(weights).read_text("utf-8"))
    return f"local:mini-clip-{manifest['weights_sha256'][:12]}"

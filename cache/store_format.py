"""The embedding store's on-disk format: file names, format version, input checks and the
error both the reader (cache/store.py) and the writer (cache/store_writer.py) raise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "CHECKSUMS",
    "FORMAT_VERSION",
    "IDS_FILE",
    "IMAGES_FILE",
    "META_FILE",
    "SCALES_FILE",
    "TEXTS_FILE",
    "StoreError",
    "check_extra_meta",
    "check_texts",
    "file_digest",
]

FORMAT_VERSION: Final = 1
META_FILE: Final = "meta.json"
IDS_FILE: Final = "image_ids.json"
IMAGES_FILE: Final = "images.npy"
SCALES_FILE: Final = "images_scale.npy"
TEXTS_FILE: Final = "texts.npy"
# meta.json's {file name: sha256} of every other file, checked on open: a bit flipped in
# the matrix or a swapped id list would otherwise train on wrong targets, silently.
# Stores written before 2026-12-06 have none and open unchecked.
CHECKSUMS: Final = "checksums"
_CHUNK: Final = 1 << 24


def file_digest(path: Path) -> str:
    """The sha256 of the file at ``path`` (hex), read in 16 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class StoreError(ValueError):
    """A store cannot be written (bad input) or read (missing or inconsistent files)."""


def check_texts(
    text_vectors: npt.ArrayLike, class_names: Sequence[str], dim: int
) -> npt.NDArray[np.float32]:
    """The (C, D) float32 class-prompt vectors, or StoreError saying what is wrong."""
    texts = np.asarray(text_vectors, dtype=np.float32)
    if texts.ndim != 2 or texts.shape[0] != len(class_names) or (
        texts.shape[0] and texts.shape[1] != dim
    ):
        raise StoreError(
            f"text_vectors must be (C={len(class_names)}, D={dim}), got {texts.shape}"
        )
    texts = texts.reshape(len(class_names), dim)
    if not np.isfinite(texts).all():
        raise StoreError("text_vectors hold NaN/infinite values")
    return texts


_RESERVED_META: Final = frozenset(
    {"format_version", "teacher", "teacher_fingerprint", "dataset_fingerprint", "dim",
     "format", "normalized", "views", "n_images", "class_names", "prompts", "created",
     CHECKSUMS}
)  # fmt: skip


def check_extra_meta(extra_meta: Mapping[str, Any] | None) -> None:
    """StoreError if ``extra_meta`` would override a key the store itself writes."""
    for key in extra_meta or {}:
        if key in _RESERVED_META:
            raise StoreError(f"extra_meta may not override {key!r}")

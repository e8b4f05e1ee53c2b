"""``POST /v2/embed``: Cohere v2 embeddings (texts[], images[] data URIs, or inputs[])."""

from __future__ import annotations

from typing import Any

import numpy as np

from .billing import count_tokens, price_embed
from .gate import Outcome
from .state import TeacherState
from .vectors import encode_rows, resize, wrong_dim
from .wire import parse_cohere_embed

__all__ = ["cohere_embed"]


async def cohere_embed(state: TeacherState, body: Any, rid: str) -> Outcome:
    """Embed, and bill per image plus input tokens as ``meta.billed_units`` says."""
    config, backend = state.config, state.backend
    req = parse_cohere_embed(
        body, max_items=config.max_items, max_images=config.max_images
    )
    vecs = resize(await state.embed_inputs(req.inputs), req.output_dimension, backend.dim)
    images = sum(len(inp.images) for inp in req.inputs)
    tokens = sum(count_tokens(inp.text) for inp in req.inputs if inp.text is not None)

    def render(v: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": rid,
            "embeddings": {t: encode_rows(v, t) for t in req.embedding_types},
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"images": images, "input_tokens": tokens},
            },
            "response_type": "embeddings_by_type",
        }
        if req.field_name == "texts":
            out["texts"] = [inp.text for inp in req.inputs]
        if req.field_name == "images":
            out["images"] = [
                {
                    "width": i.width,
                    "height": i.height,
                    "format": i.format,
                    "bit_depth": i.bit_depth,
                }
                for inp in req.inputs
                for i in inp.images
            ]
        return out

    usd = price_embed(config.pricing, images=images, input_tokens=tokens)
    return Outcome(render(vecs), images, tokens, 0, usd, render(wrong_dim(vecs)))

"""``POST /v1/embeddings``: OpenAI v1 embeddings (text; ``"modality": "image"`` for data URIs)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .billing import count_tokens, price_tokens
from .gate import Outcome
from .state import TeacherState
from .vectors import encode_rows, resize, wrong_dim
from .wire import parse_openai_embed

__all__ = ["openai_embed"]


async def openai_embed(state: TeacherState, body: Any, rid: str) -> Outcome:
    """Embed, and bill tokens only (an image counts ``image_tokens``), as ``usage`` says."""
    config, backend = state.config, state.backend
    req = parse_openai_embed(body, max_images=config.max_images)
    vecs = resize(await state.embed_inputs(req.inputs), req.dimensions, backend.dim)
    images = sum(len(inp.images) for inp in req.inputs)
    tokens = images * config.image_tokens + sum(
        count_tokens(inp.text) for inp in req.inputs if inp.text is not None
    )

    def render(v: np.ndarray) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": row}
                for i, row in enumerate(encode_rows(v, req.encoding_format))
            ],
            "model": req.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    usd = price_tokens(config.pricing, input_tokens=tokens, output_tokens=0)
    return Outcome(render(vecs), images, tokens, 0, usd, render(wrong_dim(vecs)))

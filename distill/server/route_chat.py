"""``POST /v1/chat/completions``: OpenAI chat answers to image_url (data URL) + text."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from .billing import count_tokens, price_tokens
from .gate import Outcome
from .state import TeacherState
from .wire import parse_chat

__all__ = ["chat_completions", "truncate_tokens"]

_TOKEN = re.compile(r"\w+|[^\w\s]")


def truncate_tokens(text: str, max_tokens: int | None) -> tuple[str, bool]:
    """(text cut to ``max_tokens`` tokens, whether it was cut)."""
    if max_tokens is None:
        return text, False
    matches = list(_TOKEN.finditer(text))
    if len(matches) <= max_tokens:
        return text, False
    return text[: matches[max_tokens - 1].end()], True


async def chat_completions(state: TeacherState, body: Any, rid: str) -> Outcome:
    """Answer, and bill prompt tokens (images at ``image_tokens``) plus completion tokens."""
    config = state.config
    chat = parse_chat(body, max_images=config.max_images)
    text, cut = truncate_tokens(await state.answer(chat), chat.max_tokens)
    prompt_tokens = chat.image_count * config.image_tokens + sum(
        count_tokens(t) for t in chat.prompt_texts
    )
    completion_tokens = count_tokens(text)
    out = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if cut else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    usd = price_tokens(config.pricing, input_tokens=prompt_tokens, output_tokens=completion_tokens)
    return Outcome(out, chat.image_count, prompt_tokens, completion_tokens, usd)

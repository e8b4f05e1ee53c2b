"""Cache keys: sha256 of the canonical JSON of everything that changes the answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_json", "make_key"]


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, ASCII only: equal inputs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def make_key(parts: Mapping[str, Any]) -> str:
    """The cache key of one request item.

    ``parts`` must hold provider, model, endpoint/API version, parameters and the item
    (text, prompt, or the digest of the image bytes actually sent), and never a secret.

    >>> make_key({"provider": "cohere", "model": "embed-v4.0", "text": "a cat"})[:12]
    '54a45cecc191'
    """
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()

"""Cache keys: sha256 of the canonical JSON of everything that changes the answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_json", "json_with_literals", "make_key"]

# Stands in for a value given already encoded; a NUL never appears in a provider, model,
# kind or parameter name, and a clash is detected anyway (see json_with_literals).
_MARK = "\x00vlm-distill literal\x00"


def json_with_literals(
    obj: Mapping[str, Any], literals: Mapping[str, str] | None, **dumps: Any
) -> str:
    """``json.dumps(obj, **dumps)`` where ``literals[k]`` is the JSON text of ``obj[k]``,
    encoded already by the caller (a long text is then escaped once for both the cache
    key and the request body, instead of once for each).

    The caller guarantees ``literals[k] == json.dumps(obj[k], **dumps)``; if a marker
    cannot be placed unambiguously, the whole object is encoded the plain way.

    >>> json_with_literals({"b": 1, "a": "x"}, {"a": '"x"'}, sort_keys=True)
    '{"a": "x", "b": 1}'
    """
    if not literals:
        return json.dumps(obj, **dumps)
    held = {**obj, **{k: _MARK + k for k in literals}}
    text = json.dumps(held, **dumps)
    for key, literal in literals.items():
        mark = json.dumps(_MARK + key)
        if text.count(mark) != 1:
            return json.dumps(obj, **dumps)
        text = text.replace(mark, literal)
    return text


def canonical_json(obj: Any, literals: Mapping[str, str] | None = None) -> str:
    """Sorted keys, no whitespace, ASCII only: equal inputs give equal strings.

    ``literals``: top-level values of ``obj`` given as their canonical JSON already
    (:func:`json_with_literals`); the result is the same string.
    """
    kwargs: dict[str, Any] = {
        "sort_keys": True, "separators": (",", ":"), "ensure_ascii": True, "default": str
    }
    if literals and isinstance(obj, Mapping):
        return json_with_literals(obj, literals, **kwargs)
    return json.dumps(obj, **kwargs)


def make_key(parts: Mapping[str, Any], literals: Mapping[str, str] | None = None) -> str:
    """The cache key of one request item.

    ``parts`` must hold provider, model, endpoint/API version, parameters and the item
    (text, prompt, or the digest of the image bytes actually sent), and never a secret.
    ``literals`` (optional) holds top-level values already encoded as canonical JSON;
    the key is the same as without them.

    >>> make_key({"provider": "cohere", "model": "embed-v4.0", "text": "a cat"})[:12]
    '54a45cecc191'
    """
    return hashlib.sha256(canonical_json(parts, literals).encode()).hexdigest()

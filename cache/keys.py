"""Cache keys: sha256 of the canonical JSON of everything that changes the answer."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, TypeAlias

__all__ = [
    "KeyTemplate",
    "LiteralJSON",
    "ascii_json_inner",
    "ascii_json_string",
    "canonical_json",
    "json_bytes_with_literals",
    "json_with_literals",
    "make_key",
]

# The bytes a JSON string holds as they are under ensure_ascii (json's own test: space
# to tilde, but for the quote and the backslash); the rest are escaped.
_PLAIN_BYTES = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')


def _kept_as_is(encoded: bytes) -> bool:
    """True when ``encoded`` (ASCII) holds no quote, backslash, control character or DEL
    (which ``ensure_ascii`` escapes too), so JSON keeps it as it is. A long text is looked
    at with three ``memchr`` scans and one vectorised minimum (about 2.5 us for 20 KB,
    against 5 us for ``bytes.translate``, which stays the cheaper way for short texts)."""
    if len(encoded) < 4096:
        return not encoded.translate(None, _PLAIN_BYTES)
    import numpy as np  # here: importing the keys must not import numpy

    return (b'"' not in encoded and b"\\" not in encoded and b"\x7f" not in encoded
            and int(np.frombuffer(encoded, np.uint8).min()) >= 0x20)


def ascii_json_string(text: str) -> str:
    r"""``json.dumps(text)`` (ASCII, escaped as ``ensure_ascii`` escapes it), cheaper for
    the usual text: an ASCII text with no quote, backslash or control character is only
    quoted, found by :func:`_kept_as_is` (about 2 us for 20 KB) instead of json's
    character-by-character escaping (about 25 us).

    >>> texts = ["a cat", 'a "cat"', "back\\slash", "line\nbreak", "tab\there", "café"]
    >>> all(ascii_json_string(t) == json.dumps(t) for t in texts)
    True
    """
    if text.isascii() and _kept_as_is(text.encode()):
        return f'"{text}"'
    return encode_basestring_ascii(text)


def ascii_json_inner(text: str) -> bytes:
    r"""The bytes between the quotes of ``json.dumps(text)`` (ASCII): for the usual text
    (ASCII, no quote, backslash or control character) its own bytes, encoded once and
    shared by the cache key and the request body, which each add the quotes (no copy
    of a long text to quote it, hash it or place it in a body).

    >>> texts = ["a cat", 'a "cat"', "back\\slash", "line\nbreak", "tab\there", "café"]
    >>> all(b'"' + ascii_json_inner(t) + b'"' == json.dumps(t).encode() for t in texts)
    True
    """
    if text.isascii():
        encoded = text.encode()
        if _kept_as_is(encoded):
            return encoded
    return encode_basestring_ascii(text)[1:-1].encode("ascii")


def _dumps(obj: Any, **dumps: Any) -> str:
    """``json.dumps(obj, **dumps)``; one encoder per set of options, made once (json.dumps
    makes a new encoder whenever it is given an option: about 2 us per call)."""
    try:
        encoder = _encoder(tuple(sorted(dumps.items())))
    except TypeError:  # an option that cannot be a dict key (a list of separators)
        return json.dumps(obj, **dumps)
    return encoder.encode(obj)


@functools.lru_cache(maxsize=32)
def _encoder(options: tuple[tuple[str, Any], ...]) -> json.JSONEncoder:
    # what json.dumps builds from these options (cls=None: JSONEncoder)
    kwargs = dict(options)
    if kwargs.pop("cls", None) is not None:
        raise TypeError("a custom encoder class")
    return json.JSONEncoder(**kwargs)


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
        return _dumps(obj, **dumps)
    held = {**obj, **{k: _MARK + k for k in literals}}
    text = _dumps(held, **dumps)
    for key, literal in literals.items():
        mark = json.dumps(_MARK + key)
        if text.count(mark) != 1:
            return _dumps(obj, **dumps)
        text = text.replace(mark, literal)
    return text


# A value's JSON given already: as text, or as pieces of bytes to be joined.
LiteralJSON: TypeAlias = "str | Sequence[bytes]"


def json_bytes_with_literals(
    obj: Mapping[str, Any], literals: Mapping[str, LiteralJSON] | None, **dumps: Any
) -> bytes:
    """``json.dumps(obj, **dumps).encode()``, where ``literals[k]`` is the JSON of
    ``obj[k]`` given already: as text, or as pieces of bytes to be joined (a long text
    is then escaped once for both the cache key and the request body, and copied once,
    into the body).

    The caller guarantees ``literals[k]`` (joined) ``== json.dumps(obj[k], **dumps)``
    (encoded); if a marker cannot be placed unambiguously, the whole object is encoded
    the plain way.

    >>> json_bytes_with_literals({"b": 1, "a": "x"}, {"a": [b'"', b"x", b'"']})
    b'{"b": 1, "a": "x"}'
    """
    if not literals:
        return _dumps(obj, **dumps).encode()
    held = {**obj, **{k: _MARK + k for k in literals}}
    text = _dumps(held, **dumps)
    places = []
    for key, literal in literals.items():
        mark = json.dumps(_MARK + key)
        if text.count(mark) != 1:
            return _dumps(obj, **dumps).encode()
        places.append((text.index(mark), len(mark), literal))
    places.sort(key=lambda place: place[0])
    pieces: list[bytes] = []
    start = 0
    for at, length, literal in places:
        pieces.append(text[start:at].encode())
        if isinstance(literal, str):
            pieces.append(literal.encode())
        else:
            pieces.extend(literal)
        start = at + length
    pieces.append(text[start:].encode())
    return b"".join(pieces)


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
    return _dumps(obj, **kwargs)


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


class KeyTemplate:
    """:func:`make_key` of ``parts`` plus one top-level value given as canonical JSON,
    for many values: the JSON around the value is encoded and hashed once, so a key
    costs one sha256 update over the value (a client keys every text with the same
    provider, model and parameters).

    ``KeyTemplate(parts, "text").key(lit)`` equals ``make_key({**parts, "text": v},
    {"text": lit})`` for ``lit`` the canonical JSON of ``v``. ``None`` from
    :meth:`make` when the slot cannot be placed unambiguously (then call
    :func:`make_key`).

    >>> t = KeyTemplate.make({"provider": "cohere", "model": "embed-v4.0"}, "text")
    >>> t.key('"a cat"') == make_key({"provider": "cohere", "model": "embed-v4.0", "text": "a cat"})
    True
    """

    __slots__ = ("_head", "_tail")

    def __init__(self, head: bytes, tail: bytes) -> None:
        self._head = hashlib.sha256(head)
        self._tail = tail

    @classmethod
    def make(cls, parts: Mapping[str, Any], slot: str) -> KeyTemplate | None:
        """The template of ``parts`` with the value of ``slot`` left open."""
        text = canonical_json({**parts, slot: _MARK + slot})
        mark = json.dumps(_MARK + slot)
        if text.count(mark) != 1:
            return None
        head, tail = text.split(mark)
        return cls(head.encode(), tail.encode())

    def key(self, literal: str) -> str:
        """The key with ``literal`` (canonical JSON: ASCII only) in the open slot."""
        h = self._head.copy()
        h.update(literal.encode())
        h.update(self._tail)
        return h.hexdigest()

    def key_of_string(self, inner: bytes) -> str:
        """The key with a JSON string in the open slot, given by the bytes between its
        quotes (:func:`ascii_json_inner`): hashed as they are, not copied.

        >>> t = KeyTemplate.make({"provider": "cohere"}, "text")
        >>> t.key_of_string(ascii_json_inner('a "cat"')) == t.key(json.dumps('a "cat"'))
        True
        """
        h = self._head.copy()
        h.update(b'"')
        h.update(inner)
        h.update(b'"' + self._tail)
        return h.hexdigest()

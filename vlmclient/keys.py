"""Cache keys of a teacher's answers, and the item preparation they are computed on.

A key is the sha256 of everything that changes the answer (provider, model, API version,
kind, parameters, the endpoint when it is not the provider's default, and the item as it
is sent) and nothing secret. Everything here works without a client or an API key
(``cache export`` and ``harvest`` compute keys with none at hand).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from cache.keys import KeyTemplate, ascii_json_string, make_key

from .models import (
    AnswerRequest,
    Image,
    ImageEmbeddingRequest,
    MixedEmbeddingRequest,
    TextEmbeddingRequest,
)
from .providers import Provider, parse_teacher
from .providers.base import Item

__all__ = [
    "CACHE_KEY_VERSION",
    "DEFAULT_NAMESPACE",
    "ItemT",
    "Keyer",
    "content_cache_key",
    "endpoint_id",
    "image_key_part",
    "item_cache_key",
    "key_base",
    "kind_params",
    "normalise_base_url",
    "prepare_item",
    "teacher_fingerprint",
]

CACHE_KEY_VERSION = 1
DEFAULT_NAMESPACE = "default"  # --cache-namespace value meaning "the provider's own endpoint"

ItemT = TypeVar("ItemT", bound=Item)  # one kind of request in, the same kind out


def kind_params(provider: Provider, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The params one kind of request is sent with: the provider's defaults for the kind,
    the caller's on top; ``reasoning`` only reaches answers (it cannot change an
    embedding, so it stays out of embedding bodies and cache keys)."""
    merged = {**provider.default_params.get(kind, {}), **params}
    if kind != "answer":
        merged.pop("reasoning", None)

    return merged


def normalise_base_url(url: str) -> str:
    """A base URL as it identifies a server, with no credentials.

    Scheme and host in lower case, the scheme's default port dropped, no trailing slash;
    user:password, query and fragment are dropped (they may hold keys, and a provider's
    base URL has none).

    >>> normalise_base_url("HTTPS://user:sk-1@API.Example.com:443/v1/?key=sk-2")
    'https://api.example.com/v1'
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: keep what was written, minus userinfo
        port = None
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def endpoint_id(
    provider: Provider, base_url: str | None = None, namespace: str | None = None
) -> str | None:
    """What the cache key and teacher fingerprint hold about where answers come from.

    ``None`` (nothing in the key, so keys made before endpoints were keyed stay valid)
    for the provider's own default endpoint or ``namespace="default"``; otherwise the
    explicit namespace, or the normalised base URL (never credentials).

    >>> from vlmclient.providers import get_provider
    >>> endpoint_id(get_provider("openai"), "https://api.openai.com/v1/") is None
    True
    >>> endpoint_id(get_provider("openai"), "http://gpu-box:8000/v1")
    'http://gpu-box:8000/v1'
    """
    if namespace is not None:
        return None if namespace == DEFAULT_NAMESPACE else f"namespace:{namespace}"
    if base_url is None:
        return None
    url = normalise_base_url(base_url)
    return None if url == normalise_base_url(provider.default_base_url) else url


def key_base(
    provider: Provider,
    model: str,
    params: Mapping[str, Any],
    kind: str,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """The parts of every key of one teacher; ``endpoint`` comes from :func:`endpoint_id`."""
    parts: dict[str, Any] = {
        "v": CACHE_KEY_VERSION,
        "provider": provider.name,
        "model": model,
        "api_version": provider.api_version,
        "kind": kind,
        "params": kind_params(provider, kind, params),
    }
    if endpoint is not None:  # absent for the default endpoint: old keys stay valid
        parts["endpoint"] = endpoint
    return parts


def teacher_fingerprint(
    teacher: str, params: Mapping[str, Any] | None = None, endpoint: str | None = None
) -> str:
    """What :attr:`TeacherClient.fingerprint` is for ``teacher`` (``provider:model``) with
    these ``params``; usable without a client or an API key. ``endpoint`` is
    :func:`endpoint_id` of the base URL / namespace the answers come from."""
    provider, model = parse_teacher(teacher)
    return make_key(key_base(provider, model, params or {}, "fingerprint", endpoint))


def item_cache_key(
    provider: Provider,
    model: str,
    params: Mapping[str, Any],
    kind: str,
    item: Item,
    endpoint: str | None = None,
) -> str:
    """The cache key of one prepared item: everything that changes the answer, no secret.

    Usable without a client (``cache export`` computes keys with no API key at hand).
    ``endpoint`` is :func:`endpoint_id` of the base URL / namespace the item was bought at.
    """
    parts = key_base(provider, model, params, kind, endpoint)
    if isinstance(item, TextEmbeddingRequest):
        parts["text"] = item.text
        # escaped once, shared with the request body; the key is the same
        return make_key(parts, {"text": item.json_text})
    if isinstance(item, MixedEmbeddingRequest):
        # every part, in order: the same text and image in another order is another input
        parts["parts"] = [
            {"text": p} if isinstance(p, str) else image_key_part(p) for p in item.parts
        ]
    else:
        parts.update(image_key_part(item.image))
        if isinstance(item, AnswerRequest):
            parts["prompt"] = item.prompt
            parts["max_output_tokens"] = item.max_output_tokens
    return make_key(parts)


def image_key_part(image: Image) -> dict[str, str]:
    """What a key holds of an image: its ``content_id`` when the caller named the pixels,
    else the sha256 and media type of the bytes sent (keys made before content ids)."""
    if image.content_id is not None:
        return {"content_id": image.content_id}
    return {"image_sha256": image.digest, "media_type": image.media_type}


def content_cache_key(
    provider: Provider,
    model: str,
    params: Mapping[str, Any],
    content_id: str,
    endpoint: str | None = None,
) -> str:
    """The cache key of the image embedding of an image named by ``content_id``, computed
    without the image: equal to :func:`item_cache_key` of an
    ``ImageEmbeddingRequest(image=Image(..., content_id=content_id))``."""
    parts = key_base(provider, model, params, "image_embedding", endpoint)
    parts.update({"content_id": content_id})
    return make_key(parts)


def prepare_item(provider: Provider, item: ItemT) -> ItemT:
    """The item as it will be sent (images downscaled / re-encoded to the provider's limits)."""
    if isinstance(item, TextEmbeddingRequest):
        return item
    if isinstance(item, MixedEmbeddingRequest):
        parts = tuple(p if isinstance(p, str) else provider.prepare_image(p) for p in item.parts)
        same = all(a is b for a, b in zip(parts, item.parts, strict=True))
        return item if same else item.model_copy(update={"parts": parts})
    image = provider.prepare_image(item.image)
    if image is item.image:
        return item
    # model_copy keeps the class; mypy only sees the narrowed union
    return cast(ItemT, item.model_copy(update={"image": image}))


class Keyer:
    """The cache keys of one teacher (provider, model, parameters, endpoint), as
    :func:`item_cache_key` and :func:`content_cache_key` compute them, cheaper for the
    items a client keys most: a text, and an image named by its ``content_id``. The
    JSON around the text or content id is encoded and hashed once per kind
    (:class:`cache.keys.KeyTemplate`), so such a key costs one sha256 update over the
    text (about 15 us of CPU less for a 20 KB text than building and encoding the whole
    key each time). The parameters are read once, when the keyer is made.

    >>> from vlmclient.providers import get_provider
    >>> keyer = Keyer(get_provider("openai"), "text-embedding-3-small", {}, None)
    >>> item = TextEmbeddingRequest(text="a cat")
    >>> keyer.item_key("text_embedding", item) == item_cache_key(
    ...     get_provider("openai"), "text-embedding-3-small", {}, "text_embedding", item)
    True
    """

    def __init__(
        self, provider: Provider, model: str, params: Mapping[str, Any], endpoint: str | None
    ) -> None:
        self.provider = provider
        self.model = model
        self.params = dict(params)
        self.endpoint = endpoint
        self._templates: dict[tuple[str, str], KeyTemplate | None] = {}

    def _template(self, kind: str, slot: str) -> KeyTemplate | None:
        try:
            return self._templates[kind, slot]
        except KeyError:
            base = key_base(self.provider, self.model, self.params, kind, self.endpoint)
            template = self._templates[kind, slot] = KeyTemplate.make(base, slot)
            return template

    def item_key(self, kind: str, item: Item) -> str:
        """:func:`item_cache_key` of ``item`` (prepared) for this teacher."""
        if isinstance(item, TextEmbeddingRequest):
            template = self._template(kind, "text")
            if template is not None:
                return template.key_of_string(item.json_inner)
        elif (
            isinstance(item, ImageEmbeddingRequest)
            and kind == "image_embedding"
            and item.image.content_id is not None
        ):
            return self.content_key(item.image.content_id)
        return item_cache_key(self.provider, self.model, self.params, kind, item, self.endpoint)

    def content_key(self, content_id: str) -> str:
        """:func:`content_cache_key` of ``content_id`` for this teacher."""
        template = self._template("image_embedding", "content_id")
        if template is None:
            return content_cache_key(
                self.provider, self.model, self.params, content_id, self.endpoint
            )
        return template.key(ascii_json_string(content_id))

"""How cache misses become requests: items per request, the provider's byte and token caps
per request and per input, and the :class:`CallSpec` each request is built from.

Inputs whose token bound is above the model's per-input limit
(:attr:`Provider.max_input_tokens`) are :meth:`Batcher.over_limit`: when the provider
refuses a request holding some (a 400 fails the whole request), the pipeline buys the
others without them and sends each alone, so the refusal fails only the input it is about,
named by :meth:`Batcher.too_long`. Nothing is refused before sending: the bound (a token
per UTF-8 byte) is far above most texts' real count, and no lower bound holds for every
tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import SecretStr

from .errors import BadRequestError, InputTooLongError
from .keys import kind_params
from .models import ImageEmbeddingRequest, Kind, MixedEmbeddingRequest, TextEmbeddingRequest
from .providers import CallSpec, Provider
from .providers.base import Item
from .providers.wire import text_tokens_upper_bound
from .redact import Redactor

__all__ = ["Batcher", "describe_input", "request_share"]


def request_share(provider: Provider, item: Item) -> tuple[int, int]:
    """(image bytes, tokens) one prepared item adds to a request, for the provider's
    per-request caps (``max_request_bytes``, ``max_request_tokens``)."""
    if isinstance(item, TextEmbeddingRequest):
        return 0, text_tokens_upper_bound(item.text)
    if isinstance(item, MixedEmbeddingRequest):
        images = item.images
        tokens = sum(text_tokens_upper_bound(t) for t in item.texts)
        return (
            sum(len(i.data) for i in images),
            tokens + len(images) * provider.image_request_tokens,
        )
    if isinstance(item, ImageEmbeddingRequest):
        return len(item.image.data), provider.image_request_tokens
    return len(item.image.data), 0


def image_count(item: Item) -> int:
    """Images one prepared item adds to a request, for ``max_request_images``."""
    if isinstance(item, TextEmbeddingRequest):
        return 0
    if isinstance(item, MixedEmbeddingRequest):
        return len(item.images)
    return 1


def describe_input(item: Item, redact: Redactor) -> str:
    """How an error names an input: the start of its text (secrets replaced before it is
    cut: a cut key would keep too few characters to be known) and its size.

    >>> describe_input(TextEmbeddingRequest(text="word " * 3), Redactor([]))
    "the text 'word word word ' (15 bytes)"
    """
    texts = [item.text] if isinstance(item, TextEmbeddingRequest) else (
        list(item.texts) if isinstance(item, MixedEmbeddingRequest) else [])
    text = redact(" ".join(texts))
    size = sum(len(t.encode("utf-8")) for t in texts)
    shown = repr(text[:40] + ("..." if len(text) > 40 else ""))
    images = len(item.images) if isinstance(item, MixedEmbeddingRequest) else 0
    extra = f" and {images} image{'s' * (images != 1)}" if images else ""
    return f"the text {shown} ({size:,} bytes{extra})"


class Batcher:
    """Cuts one teacher's (key, prepared item) pairs into requests and describes each."""

    def __init__(
        self,
        provider: Provider,
        model: str,
        *,
        base_url: str,
        api_key: SecretStr,
        params: Mapping[str, Any],
        batch_size: int | None,
        max_image_tokens: int | None,
        redact: Redactor,
    ) -> None:
        self.provider = provider
        self.redact = redact
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.params = params
        self.batch_size = batch_size
        self.max_image_tokens = max_image_tokens
        self._params: dict[str, dict[str, Any]] = {}

    def batch_limit(self, kind: Kind) -> int:
        """Items per request: the provider's limit, or the smaller ``batch_size``."""
        limit = self.provider.limit_for(self.model, kind)
        return min(limit, self.batch_size) if self.batch_size else limit

    def input_limit(self, kind: Kind) -> int | None:
        """The model's per-input token limit for ``kind`` (None: none that fails a request)."""
        if kind == "answer" or self.provider.max_input_tokens is None:
            return None  # (an answer is one item a request)
        return self.provider.max_input_tokens(self.model, self._kind_params(kind))

    def over_limit(self, kind: Kind, pairs: Sequence[tuple[str, Item]]) -> set[str]:
        """The keys of those ``pairs`` that may be over the model's per-input limit."""
        limit = self.input_limit(kind)
        if limit is None:
            return set()
        return {key for key, item in pairs if request_share(self.provider, item)[1] > limit}

    def too_long(self, kind: Kind, exc: BadRequestError, item: Item) -> InputTooLongError:
        """The provider's refusal ``exc`` of ``item``, sent alone and maybe over the
        per-input limit, as an :class:`InputTooLongError` that names it."""
        limit = self.input_limit(kind) or 0
        reason = str(exc.args[0]) if exc.args else str(exc)
        err = InputTooLongError(
            "", status_code=exc.status_code, provider=exc.provider, request_id=exc.request_id
        )
        err.args = (
            f"{describe_input(item, self.redact)} may be longer than the {limit:,} tokens "
            f"{self.provider.name}:{self.model} takes per input, and the provider refused "
            "it (not billed; it was sent alone, so no other input failed with it): shorten "
            f"it. {reason}",
        )
        err.limit = limit
        return err

    def chunks(self, kind: Kind, pairs: list[tuple[str, Item]]) -> list[list[tuple[str, Item]]]:
        """``pairs`` cut into requests (see :meth:`iter_chunks`)."""
        if len(pairs) == 1:  # one item is one request, whatever the caps
            self.batch_limit(kind)  # (raises for a kind the model does not offer)
            return [pairs]
        return list(self.iter_chunks(kind, pairs))

    def iter_chunks(
        self, kind: Kind, pairs: Iterable[tuple[str, Item]]
    ) -> Iterator[list[tuple[str, Item]]]:
        """``pairs`` cut into requests (batch limit, byte, token and image caps), as they
        come."""
        limit = self.batch_limit(kind)
        max_bytes = self.provider.max_request_bytes
        max_tokens = self.provider.max_request_tokens
        max_images = self.provider.max_request_images
        current: list[tuple[str, Item]] = []
        size = tokens = images = 0
        for key, item in pairs:
            n, t = request_share(self.provider, item)
            i = image_count(item)
            if current and (
                len(current) >= limit
                or (max_bytes and size + n > max_bytes)
                or (max_tokens and tokens + t > max_tokens)
                or (max_images and images + i > max_images)
            ):
                yield current
                current, size, tokens, images = [], 0, 0, 0
            current.append((key, item))
            size += n
            tokens += t
            images += i
        if current:
            yield current

    def spec(self, kind: Kind, items: Sequence[Item]) -> CallSpec:
        """What the request for ``items`` is built from (and its cost estimated on)."""
        params = self._kind_params(kind)
        return CallSpec(
            kind,
            self.model,
            list(items),
            self.base_url,
            self.api_key,
            params,
            max_image_tokens=self.max_image_tokens,
            redact=self.redact,
        )

    def _kind_params(self, kind: Kind) -> dict[str, Any]:
        params = self._params.get(kind)
        if params is None:  # merged once per kind: the same for every request
            params = self._params[kind] = kind_params(self.provider, kind, self.params)
        return params

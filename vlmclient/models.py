"""Typed requests, results, usage and prices: the data that crosses the client's boundary."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    field_validator,
    model_validator,
)

from cache.keys import ascii_json_inner
from cache.money import money_context

from .errors import InputError
from .media import MEDIA_TYPES, canonical_media_type, media_type_of

__all__ = [
    "UNIT_PRICE_FIELDS",
    "AnswerRequest",
    "AnswerResult",
    "EmbeddingResult",
    "Image",
    "ImageEmbeddingRequest",
    "Kind",
    "MixedEmbeddingRequest",
    "Price",
    "TextEmbeddingRequest",
    "Usage",
    "png_header_size",
    "sniff_media_type",
]

Kind = Literal["image_embedding", "text_embedding", "mixed_embedding", "answer"]


def sniff_media_type(data: bytes) -> str:
    """Media type from the file's magic bytes; raises :class:`InputError` for non-images.

    >>> sniff_media_type(b"\\x89PNG\\r\\n\\x1a\\n....")
    'image/png'
    """
    media_type = media_type_of(data)
    if media_type is not None:
        return media_type
    raise InputError("not a PNG, JPEG, GIF, BMP or WebP image (unknown magic bytes)")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR = struct.Struct(">I4sIIBBBBBI")  # length, type, w, h, depth, colour, ..., CRC
# (bit depth, colour type) pairs of the PNG spec: the ones PIL opens
_PNG_MODES = frozenset(
    {(1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (8, 2), (16, 2), (1, 3), (2, 3), (4, 3),
     (8, 3), (8, 4), (16, 4), (8, 6), (16, 6)}
)


def png_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG whose signature is followed by a sound IHDR chunk (length
    13, checksum right, a bit depth and colour type of the spec, filter method 0,
    non-zero size) and then directly by its first IDAT chunk: exactly what PIL reads
    before it stops at IDAT, without its ~9 us of parsing. None for anything else
    (other chunks first, damage): PIL reads those.

    >>> png_header_size(b"GIF89a") is None
    True
    """
    if len(data) < 8 + _PNG_IHDR.size + 8 or not data.startswith(_PNG_SIGNATURE):
        return None
    length, kind, width, height, depth, colour, _, filtering, _, crc = _PNG_IHDR.unpack_from(
        data, 8
    )
    if (
        length != 13
        or kind != b"IHDR"
        or zlib.crc32(data[12:29]) != crc
        or (depth, colour) not in _PNG_MODES
        or filtering != 0
        or width == 0
        or height == 0
        or data[37:41] != b"IDAT"
    ):
        return None
    return width, height


def _how_to_make(given: object) -> str:
    """How to make a :class:`Image` of what was given instead of one."""
    if isinstance(given, (str, os.PathLike)):
        return f'for a file use Image.from_path("{os.fspath(given)!s}")'
    if isinstance(given, (bytes, bytearray, memoryview)):
        return "for the bytes of an image file use Image.from_bytes(data)"
    # a PIL image, a numpy array: encode it first
    return ("encode it first, e.g. PIL's img.save(buf, 'PNG') into an io.BytesIO, then "
            "Image.from_bytes(buf.getvalue())")


def _an_image(value: object) -> object:
    """A request's ``image`` before validation: a path, bytes, a PIL image or an array
    were pydantic's "Input should be a valid dictionary or instance of Image"."""
    if isinstance(value, (Image, dict)):
        return value
    raise ValueError(
        f"image must be a vlmclient.Image, not a {type(value).__name__}; {_how_to_make(value)}"
    )


class Image(BaseModel):
    """Image bytes exactly as they will be sent, with their media type.

    ``content_id`` (optional) is the caller's stable name for the pixels, e.g. the sha256
    of a source file plus the recipe that derived the pixels from it. When it is set,
    cache keys hold it instead of the digest of the bytes, so the same pixels re-encoded
    (another format, quality or codec version) keep their cache entry, and a caller can
    look an image up (:meth:`TeacherClient.cached <vlmclient.TeacherClient.cached>`)
    without encoding it at all. Equal ids must mean equal pixels; an id is hashed into
    keys, never sent, and must hold no secret. The teacher, endpoint, kind and parameters
    stay in the key as for any item.

    >>> img = Image.from_bytes(open("cat.png", "rb").read())  # doctest: +SKIP
    >>> Image(data=jpeg, media_type="image/jpeg", content_id="view1:4f2a...")  # doctest: +SKIP
    """

    model_config = ConfigDict(frozen=True)

    data: bytes = Field(repr=False)
    media_type: str
    content_id: str | None = Field(default=None, min_length=1, max_length=512)

    @field_validator("data")
    @classmethod
    def _not_empty(cls, v: bytes) -> bytes:
        if not v:
            raise ValueError("image is empty (zero bytes)")
        return v

    @field_validator("media_type")
    @classmethod
    def _registered_name(cls, v: str) -> str:
        # "image/JPEG", "image/jpg", "image/jpeg; charset=binary" name JPEG too: what is
        # sent and keyed is the registered name, which every provider takes (Anthropic's
        # API no other spelling), and one image is cached once however it was named.
        name = canonical_media_type(v)
        if name is None:
            raise ValueError(
                f"media_type {v[:100]!r} is no image type: give one of "
                f"{', '.join(MEDIA_TYPES)} (another image type, e.g. image/tiff, is "
                "re-encoded to one of them before it is sent), or use "
                "Image.from_bytes(data), which reads the type from the bytes"
            )
        return name

    @model_validator(mode="after")
    def _type_of_the_bytes(self) -> Image:
        # a type the bytes contradict is sent as given: the provider 400s it or mis-decodes
        # it after the budget was reserved. Bytes of no known signature keep their type.
        have = media_type_of(self.data)
        if have is not None and self.media_type != have:
            raise ValueError(
                f"media_type {self.media_type!r} does not match the image: the bytes are "
                f"{have}; pass media_type={have!r} (or leave it out of Image.from_bytes)"
            )
        return self

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str | None = None) -> Image:
        """The image whose encoded file (PNG, JPEG, ...) is ``data``.

        >>> Image.from_bytes("cat.png")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        vlmclient.errors.InputError: ... not a str; for a file use Image.from_path("cat.png")
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InputError(
                f"Image.from_bytes takes the bytes of an image file, not a "
                f"{type(data).__name__}; {_how_to_make(data)}")
        data = bytes(data)
        if not data:
            raise InputError("image is empty (zero bytes)")
        return cls(data=data, media_type=media_type or sniff_media_type(data))

    @classmethod
    def from_path(cls, path: str | Path) -> Image:
        if not isinstance(path, (str, os.PathLike)):  # was pathlib's bare TypeError
            raise InputError(
                f"Image.from_path takes a file path, not a {type(path).__name__}; "
                f"{_how_to_make(path)}")
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read image {path!s}: {exc.strerror or exc}") from exc
        if not data:
            raise InputError(f"image {path!s} is empty (zero bytes)")
        try:
            return cls.from_bytes(data)
        except InputError as exc:
            raise InputError(f"{path!s}: {exc}") from exc

    @cached_property
    def digest(self) -> str:
        """sha256 of the bytes: the image's identity in cache keys (file names do not matter)."""
        return hashlib.sha256(self.data).hexdigest()

    @cached_property
    def size(self) -> tuple[int, int]:
        """(width, height) from the header, without decoding the pixels; InputError when
        the header cannot be read.

        Read once per Image: preparing an item, preparing it again in the client and
        estimating its price all ask, and each PIL header parse costs ~50 us. Kept on the
        object (not in a cache keyed by the bytes), so it lives exactly as long as they do.
        """
        from PIL import Image as PILImage  # here: importing the models must not import PIL

        size = png_header_size(self.data)
        limit = PILImage.MAX_IMAGE_PIXELS
        if size is not None and (limit is None or size[0] * size[1] <= limit):
            return size  # what PIL reads from such a header, at a tenth of the cost
        try:
            with PILImage.open(io.BytesIO(self.data)) as im:
                return int(im.width), int(im.height)
        except Exception as exc:  # PIL raises many types for bad files
            raise InputError(f"cannot read image header: {exc}") from exc


class ImageEmbeddingRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["image_embedding"] = "image_embedding"
    image: Image

    _image = field_validator("image", mode="before")(_an_image)


class TextEmbeddingRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["text_embedding"] = "text_embedding"
    text: str = Field(min_length=1)

    @cached_property
    def json_text(self) -> str:
        """The text as a JSON string, ASCII-escaped as ``json.dumps`` writes it.

        >>> print(TextEmbeddingRequest(text="a cat").json_text)
        "a cat"
        """
        return f'"{self.json_inner.decode("ascii")}"'

    @cached_property
    def json_inner(self) -> bytes:
        """The bytes between the quotes of :attr:`json_text`: escaped and encoded once
        for both the cache key and the request body, which each add the quotes (see
        ``cache.keys.ascii_json_inner``).

        >>> TextEmbeddingRequest(text="a cat").json_inner
        b'a cat'
        """
        return ascii_json_inner(self.text)


class MixedEmbeddingRequest(BaseModel):
    """One input whose texts and images, in order, are embedded into one vector.

    A product photo with its caption, a page image with its title: the provider fuses the
    parts (Cohere embed-v4.0 ``inputs[].content[]``, Voyage multimodal ``inputs[]``).
    Texts are ``str`` (raw ``bytes`` are refused, so image bytes never pass as text);
    images are :class:`Image`.

    >>> MixedEmbeddingRequest(parts=("a red running shoe", Image.from_path("shoe.jpg")))
    ... # doctest: +SKIP
    """

    model_config = ConfigDict(frozen=True)
    kind: Literal["mixed_embedding"] = "mixed_embedding"
    parts: tuple[StrictStr | Image, ...] = Field(min_length=1)

    @field_validator("parts")
    @classmethod
    def _no_empty_text(cls, v: tuple[str | Image, ...]) -> tuple[str | Image, ...]:
        for i, part in enumerate(v):
            if isinstance(part, str) and not part:
                raise ValueError(f"part {i} is an empty text")
        return v

    @property
    def texts(self) -> list[str]:
        return [p for p in self.parts if isinstance(p, str)]

    @property
    def images(self) -> list[Image]:
        return [p for p in self.parts if isinstance(p, Image)]


class AnswerRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["answer"] = "answer"
    image: Image

    _image = field_validator("image", mode="before")(_an_image)
    prompt: str = Field(min_length=1)
    max_output_tokens: int = Field(default=64, ge=1, le=65536)


class Usage(BaseModel):
    """What the provider billed (or, for providers that report nothing, what we meter)."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    image_tokens: int = 0
    images: int = 0
    image_pixels: int = 0
    characters: int = 0
    # Of input_tokens, those that stand for a surcharge, not for the prompt: a cache
    # write's extra (1.25x, 2x), US-only inference's 1.1x. A long-prompt tier is decided
    # by the prompt's own size, input_tokens less these (the vendors price "prompts up to
    # 100,000 tokens"; the multipliers apply to the rates of the prompt's tier).
    surcharge_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """The tokens that decide a long-prompt tier: input_tokens less the surcharges."""
        return self.input_tokens - self.surcharge_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in Usage.model_fields})


# Usage field -> the Price field that bills it.
UNIT_PRICE_FIELDS: dict[str, str] = {
    "images": "usd_per_image",
    "input_tokens": "usd_per_1m_input_tokens",
    "output_tokens": "usd_per_1m_output_tokens",
    "image_tokens": "usd_per_1m_image_tokens",
    "image_pixels": "usd_per_1b_pixels",
    "characters": "usd_per_1k_characters",
}

# No unit (an image, a million tokens, a thousand characters) costs more than this: a price
# above it is a typo, and one like 1e1000000 overflows the budget's arithmetic.
MAX_USD_PER_UNIT = Decimal(1_000_000)
# A price in dollars: finite, >= 0 and at most MAX_USD_PER_UNIT (a negative price would let
# a run spend past its cap while the budget counts down; 1e1000000 was a decimal.Overflow
# at the first reservation). The price-file loader refuses them with its own message
# first; this holds for prices made in code.
Amount = Annotated[Decimal, Field(ge=0, le=MAX_USD_PER_UNIT, allow_inf_nan=False)]

_M = Decimal(1_000_000)
_B = Decimal(1_000_000_000)
_K = Decimal(1000)
_ZERO = Decimal(0)


class Price(BaseModel):
    """Prices of one provider:model in USD. Every field defaults to zero.

    >>> Price(usd_per_image=Decimal("0.0001")).cost(Usage(images=3))
    Decimal('0.0003')
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    usd_per_image: Amount = Decimal(0)
    usd_per_1m_input_tokens: Amount = Decimal(0)
    usd_per_1m_output_tokens: Amount = Decimal(0)
    usd_per_1m_image_tokens: Amount = Decimal(0)
    usd_per_1b_pixels: Amount = Decimal(0)
    usd_per_1k_characters: Amount = Decimal(0)
    # Worst-case prompt tokens per image, for models whose image billing the adapter
    # cannot bound by name (an OpenAI-compatible server, a new OpenAI model). At least 1:
    # 0 would reserve every image as free.
    max_image_tokens: int | None = Field(default=None, ge=1)
    # A long-prompt tier: a request whose prompt has more than ``long_prompt_above_tokens``
    # input tokens is billed at these rates for all its input and output (Claude Haiku 5.5:
    # over 100,000). Never below the base rates, so leaving one out cannot make it free.
    long_prompt_above_tokens: int | None = Field(default=None, ge=0)
    usd_per_1m_input_tokens_long_prompt: Amount = Decimal(0)
    usd_per_1m_output_tokens_long_prompt: Amount = Decimal(0)
    verified_on: str | None = None
    # Where the prices were read: a vendor URL (primary) or "secondary: ..." when only a
    # third-party source was found; `vlm-distill providers` shows the latter unverified.
    source: str | None = None
    # Model lifecycle, from the vendor's deprecation page (YYYY-MM-DD).
    status: str | None = None
    deprecated_on: str | None = None
    shutdown_on: str | None = None
    status_source: str | None = None
    status_checked_on: str | None = None

    @property
    def verified(self) -> bool:
        """True when the prices name a primary source: a vendor page URL."""
        return str(self.source or "").startswith("https://")

    def token_rates(self, input_tokens: int) -> tuple[Decimal, Decimal]:
        """(USD per 1M input tokens, per 1M output tokens) for a prompt of ``input_tokens``.

        >>> Price(usd_per_1m_input_tokens=Decimal("0.10"), long_prompt_above_tokens=100,
        ...       usd_per_1m_input_tokens_long_prompt=Decimal("0.50")).token_rates(101)
        (Decimal('0.50'), Decimal('0'))
        """
        rate_in, rate_out = self.usd_per_1m_input_tokens, self.usd_per_1m_output_tokens
        if self.long_prompt_above_tokens is not None and (
            input_tokens > self.long_prompt_above_tokens
        ):
            rate_in = max(rate_in, self.usd_per_1m_input_tokens_long_prompt)
            rate_out = max(rate_out, self.usd_per_1m_output_tokens_long_prompt)
        return rate_in, rate_out

    def cost(self, usage: Usage) -> Decimal:
        with money_context():  # whatever precision the caller's decimal context has
            return self._cost(usage)

    def _cost(self, usage: Usage) -> Decimal:
        rate_in, rate_out = self.token_rates(usage.prompt_tokens)
        zero = self._zero_rates
        if not zero:
            return (
                self.usd_per_image * usage.images
                + rate_in * usage.input_tokens / _M
                + rate_out * usage.output_tokens / _M
                + self.usd_per_1m_image_tokens * usage.image_tokens / _M
                + self.usd_per_1b_pixels * usage.image_pixels / _B
                + self.usd_per_1k_characters * usage.characters / _K
            )
        # The same sum, term by term in the same order, where a rate that is exactly
        # Decimal(0) times a count >= 0 is the term Decimal(0) itself without the
        # multiplying and dividing (most prices have one or two rates of six): the same
        # Decimal, digits and exponent included (tests/client/test_budget.py).
        n = usage.images
        total = _ZERO if "image" in zero and n >= 0 else self.usd_per_image * n
        n = usage.input_tokens
        total += _ZERO if "input" in zero and n >= 0 else rate_in * n / _M
        n = usage.output_tokens
        total += _ZERO if "output" in zero and n >= 0 else rate_out * n / _M
        n = usage.image_tokens
        total += _ZERO if "image_tokens" in zero and n >= 0 else (
            self.usd_per_1m_image_tokens * n / _M
        )
        n = usage.image_pixels
        total += _ZERO if "pixels" in zero and n >= 0 else self.usd_per_1b_pixels * n / _B
        n = usage.characters
        total += _ZERO if "characters" in zero and n >= 0 else (
            self.usd_per_1k_characters * n / _K
        )
        return total

    @cached_property
    def _zero_rates(self) -> frozenset[str]:
        """The terms of :meth:`cost` whose rate is exactly ``Decimal(0)`` (sign, digits
        and exponent: ``Decimal("0.0")`` is not), for every prompt length."""

        def zero(rate: Decimal) -> bool:
            return rate.is_zero() and rate.as_tuple() == _ZERO.as_tuple()

        flat = self.long_prompt_above_tokens is None  # else token rates vary by prompt
        rates = {
            "image": self.usd_per_image,
            "input": self.usd_per_1m_input_tokens if flat else Decimal(1),
            "output": self.usd_per_1m_output_tokens if flat else Decimal(1),
            "image_tokens": self.usd_per_1m_image_tokens,
            "pixels": self.usd_per_1b_pixels,
            "characters": self.usd_per_1k_characters,
        }
        return frozenset(name for name, rate in rates.items() if zero(rate))


class EmbeddingResult(BaseModel):
    """One embedding. ``cost_usd`` is this item's share of its request (0 for a cache hit)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    vector: np.ndarray = Field(repr=False)
    cost_usd: Decimal = Decimal(0)
    cached: bool = False
    request_id: str | None = None

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])


class AnswerResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    cost_usd: Decimal = Decimal(0)
    cached: bool = False
    request_id: str | None = None
    usage: Usage = Usage()
    # Cut at the output-token limit (finish_reason "length", stop_reason "max_tokens",
    # finishReason "MAX_TOKENS"): the text is what came before the cut.
    truncated: bool = False

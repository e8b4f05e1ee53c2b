"""Request parsing for the two wire formats the server speaks (Cohere v2, OpenAI v1).

Pure functions from a decoded JSON body to plain dataclasses; every problem is a
:class:`WireError` carrying the HTTP status and a message for the provider's envelope.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import MAX_CHAT_TEXT_CHARS, MAX_EMBED_TEXT_CHARS

__all__ = [
    "COHERE_INPUT_TYPES",
    "DECODE_FORMATS",
    "ChatRequest",
    "CohereEmbedRequest",
    "EmbedInput",
    "ImagePart",
    "OpenAIEmbedRequest",
    "WireError",
    "check_pixels",
    "parse_chat",
    "parse_cohere_embed",
    "parse_data_uri",
    "parse_openai_embed",
]

COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")
# "base64": each vector's little-endian float32 bytes, base64-encoded (Cohere's spec says
# "the float embedding bytes" without a width or byte order; this is the layout OpenAI's
# encoding_format "base64" uses). int8/uint8/binary/ubinary are not served here.
COHERE_EMBEDDING_TYPES = ("float", "base64")
OPENAI_MAX_INPUTS = 2048
_DATA_URI = re.compile(r"^data:(image/[A-Za-z0-9.+-]+)((?:;[^;,]*)*?);base64,(.*)$", re.DOTALL)
_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp")
# The PIL decoders those types need (JPEG's opens a camera's MPO too). Only these run: a TIFF,
# ICO, TGA ... labelled image/png was decoded and billed, and PIL's EPS plugin runs
# Ghostscript. A JPEG labelled image/png still decodes, as the providers sniff the bytes.
DECODE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


class WireError(Exception):
    """A request the server refuses; ``code`` is the OpenAI error code when there is one."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass(frozen=True)
class ImagePart:
    data: bytes = field(repr=False)
    media_type: str
    width: int
    height: int
    format: str
    bit_depth: int


@dataclass(frozen=True)
class EmbedInput:
    """One thing to embed: a text, an image, or (Cohere ``inputs``) both, fused."""

    text: str | None = None
    images: tuple[ImagePart, ...] = ()


_BITS = {"1": 1, "I;16": 16, "I": 32, "F": 32}


def parse_data_uri(url: Any, where: str) -> ImagePart:
    """``data:image/png;base64,...`` to bytes plus header facts; the pixels are not decoded."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(url, str):
        raise WireError(400, f"{where}: expected a data URI string")
    m = _DATA_URI.match(url)
    if m is None:
        if url.startswith(("http://", "https://")):
            raise WireError(400, f"{where}: only data: URIs are accepted (no network here)")
        raise WireError(400, f"{where}: not a base64 image data URI (data:image/...;base64,...)")
    media_type = m.group(1).lower()
    if media_type not in _MEDIA_TYPES:
        raise WireError(400, f"{where}: unsupported image type {media_type}")
    try:
        data = base64.b64decode(m.group(3), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError(400, f"{where}: invalid base64 ({exc})") from exc
    if not data:
        raise WireError(400, f"{where}: empty image")
    try:
        with warnings.catch_warnings():
            # PIL warns above 89 MP and raises above 179 MP; the caller checks the size
            # against its own, lower limit before any pixel is decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=DECODE_FORMATS) as im:
                width, height, fmt, mode = im.width, im.height, (im.format or "").lower(), im.mode
    except Image.DecompressionBombError as exc:
        raise WireError(400, f"{where}: image too large to decode ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise WireError(400, f"{where}: image could not be decoded") from exc
    return ImagePart(data, media_type, width, height, fmt, _BITS.get(mode, 8))


def check_pixels(images: Iterable[ImagePart], *, per_image: int, per_request: int) -> None:
    """Refuse (400) an image or a request with more pixels than the server will decode.

    Uses the sizes read from the image headers, so a small file that decodes to gigabytes
    (a decompression bomb) is refused before any pixel is decoded.
    """
    total = 0
    for i, img in enumerate(images):
        pixels = img.width * img.height
        if pixels > per_image:
            raise WireError(
                400,
                f"image {i} is {img.width}x{img.height} = {pixels:,} pixels, over the limit "
                f"of {per_image:,} per image; downscale it",
            )
        total += pixels
    if total > per_request:
        raise WireError(
            400,
            f"the images of this request have {total:,} pixels, over the limit of "
            f"{per_request:,} per request; send fewer or smaller images per call",
        )


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError(400, "model is required")
    return model


def _optional_dim(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise WireError(400, f"{key} must be a positive integer")
    return value


def _image_parts(contents: Iterable[Any]) -> int:
    """How many ``image_url`` parts these content lists hold: counted before any is decoded,
    so a call over the cap costs no more than its JSON."""
    return sum(
        1
        for content in contents
        if isinstance(content, list)
        for part in content
        if isinstance(part, dict) and part.get("type") == "image_url"
    )


def _check_image_count(count: int, max_images: int) -> None:
    if count > max_images:
        raise WireError(
            400,
            f"{count:,} images in one call: at most {max_images:,} images per call; "
            "send fewer per call",
        )


def _text_chars(contents: Iterable[Any]) -> int:
    """How many characters the texts of these contents (chat messages', Cohere inputs')
    hold (a string, or the ``text`` parts of a list): counted before any image is decoded."""
    total = 0
    for content in contents:
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                if (isinstance(part, dict) and part.get("type") == "text"
                        and isinstance(part.get("text"), str)):  # fmt: skip
                    total += len(part["text"])
    return total


def _check_embed_chars(chars: int) -> None:
    """400 when the texts of one embedding call hold more than ``MAX_EMBED_TEXT_CHARS``
    characters (OpenAI's code for its own cap; Cohere's envelope has only the message)."""
    if chars > MAX_EMBED_TEXT_CHARS:
        raise WireError(
            400,
            f"{chars:,} characters of text in one call: at most {MAX_EMBED_TEXT_CHARS:,} "
            "characters per call (all inputs); send fewer or shorter texts per call",
            "max_tokens_per_request",
        )


def _text_list(value: Any, where: str, max_items: int) -> list[str]:
    if not isinstance(value, list) or not value:
        raise WireError(400, f"{where} must be a non-empty list")
    if len(value) > max_items:
        raise WireError(400, f"{where}: at most {max_items} items per call, got {len(value)}")
    for i, t in enumerate(value):
        if not isinstance(t, str) or not t:
            raise WireError(400, f"{where}[{i}] must be a non-empty string")
    return value


# ------------------------------------------------------------------ Cohere v2


@dataclass(frozen=True)
class CohereEmbedRequest:
    model: str
    input_type: str
    field_name: str  # "texts" | "images" | "inputs"
    inputs: list[EmbedInput]
    embedding_types: list[str]
    output_dimension: int | None


def _cohere_content(value: Any, where: str) -> EmbedInput:
    if not isinstance(value, dict) or not isinstance(value.get("content"), list):
        raise WireError(400, f"{where} must be an object with a content list")
    parts = value["content"]
    if not parts:
        raise WireError(400, f"{where}.content must not be empty")
    texts, images = [], []
    for j, part in enumerate(parts):
        pw = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str) or not part["text"]:
                raise WireError(400, f"{pw}.text must be a non-empty string")
            texts.append(part["text"])
        elif kind == "image_url":
            image_url = part.get("image_url")
            if not isinstance(image_url, dict):
                raise WireError(400, f"{pw}.image_url must be an object with a url")
            images.append(parse_data_uri(image_url.get("url"), f"{pw}.image_url.url"))
        else:
            raise WireError(400, f"{pw}.type must be text or image_url")
    return EmbedInput(text="\n".join(texts) if texts else None, images=tuple(images))


def parse_cohere_embed(body: Any, *, max_items: int, max_images: int) -> CohereEmbedRequest:
    """Validate a ``POST /v2/embed`` body (shape of Cohere's published spec); at most
    ``max_items`` texts, images or inputs, ``max_images`` images in all, and
    ``MAX_EMBED_TEXT_CHARS`` characters of text."""
    if not isinstance(body, dict):
        raise WireError(400, "request body must be a JSON object")
    model = _require_model(body)
    input_type = body.get("input_type")
    if input_type not in COHERE_INPUT_TYPES:
        raise WireError(
            400, f"input_type is required and must be one of {', '.join(COHERE_INPUT_TYPES)}"
        )
    given = [k for k in ("texts", "images", "inputs") if body.get(k) is not None]
    if len(given) != 1:
        raise WireError(400, "exactly one of texts, images or inputs must be given")
    field_name = given[0]
    if field_name == "texts":
        texts = _text_list(body["texts"], "texts", max_items)
        _check_embed_chars(sum(len(t) for t in texts))
        inputs = [EmbedInput(text=t) for t in texts]
    else:
        items = body[field_name]
        if not isinstance(items, list) or not items:
            raise WireError(400, f"{field_name} must be a non-empty list")
        if len(items) > max_items:
            raise WireError(400, f"{field_name}: at most {max_items} items per call")
        contents = [v.get("content") for v in items if isinstance(v, dict)]
        _check_image_count(
            len(items) if field_name == "images" else _image_parts(contents), max_images
        )
        if field_name == "inputs":  # counted before any image is decoded
            _check_embed_chars(_text_chars(contents))
        if field_name == "images":
            inputs = [
                EmbedInput(images=(parse_data_uri(u, f"images[{i}]"),))
                for i, u in enumerate(items)
            ]
        else:
            inputs = [_cohere_content(v, f"inputs[{i}]") for i, v in enumerate(items)]
    types = body.get("embedding_types") or ["float"]
    if not isinstance(types, list) or any(t not in COHERE_EMBEDDING_TYPES for t in types):
        raise WireError(
            400, "embedding_types: this server only returns 'float' and 'base64' embeddings"
        )
    return CohereEmbedRequest(
        model=model,
        input_type=input_type,
        field_name=field_name,
        inputs=inputs,
        embedding_types=list(dict.fromkeys(types)),
        output_dimension=_optional_dim(body, "output_dimension"),
    )


# ----------------------------------------------------------------- OpenAI v1


@dataclass(frozen=True)
class OpenAIEmbedRequest:
    model: str
    inputs: list[EmbedInput]
    encoding_format: str
    dimensions: int | None


def parse_openai_embed(body: Any, *, max_images: int) -> OpenAIEmbedRequest:
    """Validate a ``POST /v1/embeddings`` body.

    Text as OpenAI defines it (at most ``MAX_EMBED_TEXT_CHARS`` characters in all); as an
    extension (infinity-emb style), ``"modality": "image"`` makes each input a data URI to
    embed as an image (at most ``max_images``).
    """
    if not isinstance(body, dict):
        raise WireError(400, "request body must be a JSON object", "invalid_request_error")
    model = _require_model(body)
    raw = body.get("input")
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        raise WireError(400, "token-array inputs are not supported; send strings")
    modality = body.get("modality", "text")
    if modality == "image" and isinstance(raw, list):
        _check_image_count(len(raw), max_images)
    texts = _text_list(raw, "input", OPENAI_MAX_INPUTS)
    if modality == "image":
        inputs = [
            EmbedInput(images=(parse_data_uri(u, f"input[{i}]"),)) for i, u in enumerate(texts)
        ]
    elif modality == "text":
        _check_embed_chars(sum(len(t) for t in texts))
        inputs = [EmbedInput(text=t) for t in texts]
    else:
        raise WireError(400, "modality must be text or image")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise WireError(400, "encoding_format must be float or base64")
    return OpenAIEmbedRequest(model, inputs, fmt, _optional_dim(body, "dimensions"))


@dataclass(frozen=True)
class ChatRequest:
    model: str
    prompt: str  # the text of the last user message: what is answered
    images: tuple[ImagePart, ...]  # the images of the last user message
    prompt_texts: tuple[str, ...]  # every text in the conversation: what is billed
    image_count: int  # every image in the conversation: billed as prompt tokens
    max_tokens: int | None


def parse_chat(body: Any, *, max_images: int) -> ChatRequest:
    """Validate a ``POST /v1/chat/completions`` body with ``image_url`` data-URL parts
    (at most ``max_images`` in all its messages, and ``MAX_CHAT_TEXT_CHARS`` characters
    of text)."""
    if not isinstance(body, dict):
        raise WireError(400, "request body must be a JSON object")
    model = _require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError(400, "messages must be a non-empty list")
    if body.get("stream"):
        raise WireError(400, "stream=true is not supported by this server")
    if body.get("n") not in (None, 1):
        raise WireError(400, "only n=1 is supported")
    contents = [m.get("content") for m in messages if isinstance(m, dict)]
    _check_image_count(_image_parts(contents), max_images)
    chars = _text_chars(contents)
    if chars > MAX_CHAT_TEXT_CHARS:
        raise WireError(
            400,
            f"{chars:,} characters of text in one call: at most {MAX_CHAT_TEXT_CHARS:,} "
            "characters per call (all messages); send a shorter prompt",
            "context_length_exceeded",
        )
    max_tokens = _optional_dim(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _optional_dim(body, "max_tokens")
    all_texts: list[str] = []
    image_count = 0
    last_user: tuple[list[str], list[ImagePart]] | None = None
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise WireError(400, f"messages[{i}] must be an object with a role")
        content = msg.get("content")
        texts: list[str] = []
        images: list[ImagePart] = []
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif kind == "image_url" and isinstance(part.get("image_url"), dict):
                    url = part["image_url"].get("url")
                    images.append(parse_data_uri(url, f"{where}.image_url.url"))
                else:
                    raise WireError(400, f"{where}: expected a text or image_url part")
        elif content is not None:
            raise WireError(400, f"messages[{i}].content must be a string or a list of parts")
        all_texts.extend(texts)
        image_count += len(images)
        if msg["role"] == "user":
            last_user = (texts, images)
    if last_user is None:
        raise WireError(400, "messages must contain a user message")
    return ChatRequest(
        model=model,
        prompt="\n".join(last_user[0]),
        images=tuple(last_user[1]),
        prompt_texts=tuple(all_texts),
        image_count=image_count,
        max_tokens=max_tokens,
    )

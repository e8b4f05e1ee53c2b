"""The requests of one chunk of image views, and the cached answers found without them.

View 0 of an image is its file, keyed (as always) by the bytes sent. An augmented view
(k >= 1) is keyed by :func:`~distill.data.views.view_content_id` (source file's sha256 plus
the recipe), so its cached answer is found before the view is computed: a cached rerun
reads each file once and hashes it, and computes no view. Only the misses are computed and
encoded compactly for upload (JPEG q90 where the provider accepts JPEG).

View 0 of a file with an EXIF orientation (or of a 16-bit greyscale PNG, or of a file with
transparent pixels) is its upright 8-bit re-encoding on white
(:func:`~distill.data.views.upright_bytes`), keyed by those bytes; such a file's augmented
views name the orientation (16 bits, the white background) in their content id (they are
made from the upright 8-bit pixels on white).

A cache written before views had content ids holds them under the key of the bytes of an
uncompressed PNG (:func:`~distill.data.views.png_bytes`). A miss under the content id is
therefore looked up under that old key too before it is bought; an entry found there is
used and stored under the new key as well, so the next run computes nothing for it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from cache import CacheLike
from distill.data import DataError, sniff_image
from distill.data.views import (
    CANNOT_DECODE,
    encode_view,
    load_rgb,
    pixels_decode,
    png_bytes,
    source_decoding,
    upright_bytes,
    view_array,
    view_bytes,
    view_content_id,
    view_encoding,
)
from vlmclient import (
    ACCEPTED_MEDIA_TYPES,
    AnswerResult,
    EmbeddingResult,
    Image,
    ImageEmbeddingRequest,
    InputError,
    Kind,
    content_cache_key,
    item_cache_key,
    prepare_item,
)
from vlmclient.providers import parse_teacher

__all__ = [
    "CANNOT_PREPARE",
    "ChunkRequests",
    "ViewClient",
    "ViewItem",
    "build_requests",
    "cached_view_vector",
    "damaged",
    "upload_encoding",
    "view_request",
]

KIND: Kind = "image_embedding"
CANNOT_PREPARE = (InputError, OSError, ValueError)  # an image no retry can fix


class ViewItem(Protocol):
    """One (image, view) pair: :class:`distill.harvest_store.ImageItem` is one."""

    @property
    def view(self) -> int: ...

    @property
    def image_id(self) -> str: ...

    @property
    def path(self) -> Path: ...


class ViewClient(Protocol):
    """What building view requests needs of a client (:class:`vlmclient.TeacherClient`)."""

    @property
    def teacher(self) -> str: ...

    def prepare(self, item: ImageEmbeddingRequest) -> ImageEmbeddingRequest: ...

    def cache_key(self, kind: Kind, item: ImageEmbeddingRequest) -> str: ...

    def content_key(self, content_id: str) -> str: ...

    def cached(
        self, kind: Kind, keys: Sequence[str], fallback: Sequence[str | None] = ()
    ) -> list[EmbeddingResult | AnswerResult | None]: ...


T = TypeVar("T", bound=ViewItem)


@dataclass
class ChunkRequests(Generic[T]):
    """A chunk resolved: answers already cached, prepared requests for the rest, and the
    items that cannot be prepared (with the reason)."""

    cached: list[tuple[T, EmbeddingResult]] = field(default_factory=list)
    requests: list[ImageEmbeddingRequest] = field(default_factory=list)
    items: list[T] = field(default_factory=list)  # the item of each request
    failed: list[tuple[T, str]] = field(default_factory=list)
    views_computed: int = 0  # augmented views decoded and computed (cache misses only)
    digests: dict[Path, str] = field(default_factory=dict)  # sha256 of each file as read


def upload_encoding(teacher: str) -> str:
    """How augmented views are uploaded to ``teacher`` (``provider:model``): JPEG q90 where
    the provider accepts JPEG (ACCEPTED_MEDIA_TYPES), zlib PNG otherwise or when the
    provider is not in the table."""
    provider = teacher.partition(":")[0]
    return view_encoding(ACCEPTED_MEDIA_TYPES.get(provider, ("image/png",)))


def view_request(item: ViewItem, hflip: bool, encoding: str | None = None) -> ImageEmbeddingRequest:
    """The request for one image view, as sent before the provider's preparation: view 0
    is the file; a view k >= 1 is computed, encoded as ``encoding`` (the teacher's
    :func:`upload_encoding`, required for it) and named by its content id."""
    if item.view == 0:
        data, media_type = view_bytes(item.path, item.image_id, 0, hflip=hflip)
        return ImageEmbeddingRequest(image=Image(data=data, media_type=media_type))
    if encoding is None:
        raise ValueError("an augmented view needs the teacher's upload encoding")
    data = _read(item.path)
    orientation, sixteen_bit, transparent = source_decoding(data)
    cid = view_content_id(
        hashlib.sha256(data).hexdigest(), item.image_id, item.view, hflip=hflip,
        encoding=encoding, orientation=orientation, sixteen_bit=sixteen_bit,
        transparent=transparent,
    )  # fmt: skip
    arr = view_array(load_rgb(item.path, data), item.image_id, item.view, hflip=hflip)
    data, media_type = encode_view(arr, encoding)
    return ImageEmbeddingRequest(image=Image(data=data, media_type=media_type, content_id=cid))


def cached_view_vector(
    cache: CacheLike,
    item: ViewItem,
    *,
    hflip: bool,
    teacher: str,
    params: Mapping[str, Any],
    endpoint: str | None,
) -> np.ndarray | None:
    """The cached vector of augmented view ``item`` (k >= 1) with no client (``cache
    export``): under its content id, else under its key before content ids (the view is
    then computed); None when it is under neither."""
    provider, model = parse_teacher(teacher)
    data = _read(item.path)
    orientation, sixteen_bit, transparent = source_decoding(data)
    cid = view_content_id(
        hashlib.sha256(data).hexdigest(), item.image_id, item.view, hflip=hflip,
        encoding=upload_encoding(teacher), orientation=orientation, sixteen_bit=sixteen_bit,
        transparent=transparent,
    )  # fmt: skip
    entry = cache.get(content_cache_key(provider, model, params, cid, endpoint))
    if entry is None:
        data, media_type = view_bytes(item.path, item.image_id, item.view, hflip=hflip)
        old = prepare_item(
            provider, ImageEmbeddingRequest(image=Image(data=data, media_type=media_type))
        )
        entry = cache.get(item_cache_key(provider, model, params, KIND, old, endpoint))
    return None if entry is None else entry.vector


def _read(path: Path) -> bytes:
    """The bytes of a source image file; DataError when it cannot be read, or is no
    longer a regular file (a FIFO put in its place after the scan blocked the event loop
    in this read until something wrote to it: no Ctrl-C, no answer taken in)."""
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer (a no-op for a file)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise DataError(f"image {os.fspath(path)!r} is not a regular file")
            return f.read()
    except OSError as exc:
        raise DataError(f"cannot read image {os.fspath(path)!r}: {exc.strerror}") from exc


def _damaged_pixels(path: Path) -> str:
    return f"{CANNOT_DECODE} {os.fspath(path)!r}: its pixel data is damaged"


def damaged(path: Path) -> str | None:
    """Why the image file at ``path`` cannot be decoded (its pixel data is damaged); None
    when it decodes, or cannot be read at all (no damaged image: another failure)."""
    try:
        data = _read(path)
    except CANNOT_PREPARE:
        return None
    return None if pixels_decode(data) else _damaged_pixels(path)


def build_requests(client: ViewClient, items: Sequence[T], *, hflip: bool) -> ChunkRequests[T]:
    """Look up every augmented view by its content id first, then build (and prepare, item
    by item, so one bad image fails alone) the requests of what is not cached."""
    out: ChunkRequests[T] = ChunkRequests()
    encoding = upload_encoding(client.teacher)
    sources: dict[Path, bytes] = {}  # each file read once per chunk
    ready: list[tuple[T, bytes]] = []  # (item, source bytes)
    for item in items:
        try:
            if item.path not in sources:
                sources[item.path] = _read(item.path)
                out.digests[item.path] = hashlib.sha256(sources[item.path]).hexdigest()
            ready.append((item, sources[item.path]))
        except CANNOT_PREPARE as exc:
            out.failed.append((item, str(exc)))

    # A view's content id starts from its source file's sha256, EXIF orientation, bit
    # depth and transparency (source_decoding), found once per file and only for
    # augmented views: view 0's key hashes the bytes it sends in the client (Image.digest).
    sources_named: dict[Path, tuple[str, int, bool, bool]] = {}
    named: list[tuple[T, str]] = []
    for item, data in ready:
        if item.view > 0:
            if item.path not in sources_named:
                sources_named[item.path] = (out.digests[item.path], *source_decoding(data))
            digest, orientation, sixteen_bit, transparent = sources_named[item.path]
            cid = view_content_id(
                digest, item.image_id, item.view, hflip=hflip, encoding=encoding,
                orientation=orientation, sixteen_bit=sixteen_bit, transparent=transparent,
            )  # fmt: skip
            named.append((item, cid))
    found = client.cached(KIND, [client.content_key(cid) for _, cid in named])
    misses: dict[int, str] = {}  # id(item) -> content id, for augmented views not cached
    for (item, cid), result in zip(named, found, strict=True):
        if isinstance(result, EmbeddingResult):
            out.cached.append((item, result))
        else:
            misses[id(item)] = cid

    pending: list[tuple[T, ImageEmbeddingRequest, str, str | None]] = []
    firsts: list[tuple[T, ImageEmbeddingRequest, str, bytes]] = []  # view 0: (.., key, file)
    for item, data in ready:
        if item.view > 0 and id(item) not in misses:
            continue  # cached: no view computed
        try:
            if item.view == 0:
                media_type = sniff_image(data[:32])
                if media_type is None:
                    raise DataError(
                        f"{os.fspath(item.path)!r} is not a PNG, JPEG, GIF, BMP or WebP image"
                    )
                # upright 8-bit on white if the file has an EXIF orientation, 16-bit grey
                # levels or transparency; else the file's own bytes
                blob, media_type = upright_bytes(data, media_type, os.fspath(item.path))
                request = ImageEmbeddingRequest(image=Image(data=blob, media_type=media_type))
                request = client.prepare(request)
                firsts.append((item, request, client.cache_key(KIND, request), data))
                continue
            cid = misses[id(item)]
            # from the bytes the content id names (the file may have been replaced since)
            arr = view_array(load_rgb(item.path, data), item.image_id, item.view, hflip=hflip)
            out.views_computed += 1
            blob, media_type = encode_view(arr, encoding)
            request = client.prepare(
                ImageEmbeddingRequest(image=Image(data=blob, media_type=media_type, content_id=cid))
            )
            pending.append((item, request, client.content_key(cid), _legacy_key(client, arr)))
        except CANNOT_PREPARE as exc:
            out.failed.append((item, str(exc)))

    # View 0 found in the cache is taken from there; the rest are decoded in full before
    # they are sent, as an augmented view is: a file whose pixel data is damaged is
    # reported and never bought (a provider refuses it or embeds garbage, and the student
    # cannot read it). Only what is bought is decoded: a cached rerun decodes nothing.
    if firsts:
        found = client.cached(KIND, [key for _, _, key, _ in firsts])
        for (item, request, _, data), result in zip(firsts, found, strict=True):
            if isinstance(result, EmbeddingResult):
                out.cached.append((item, result))
            elif pixels_decode(data):
                out.requests.append(request)
                out.items.append(item)
            else:
                out.failed.append((item, _damaged_pixels(item.path)))

    if pending:
        found = client.cached(
            KIND, [key for _, _, key, _ in pending], [old for _, _, _, old in pending]
        )
        for (item, request, _, _), result in zip(pending, found, strict=True):
            if isinstance(result, EmbeddingResult):
                out.cached.append((item, result))
            else:
                out.requests.append(request)
                out.items.append(item)
    return out


def _legacy_key(client: ViewClient, arr: np.ndarray) -> str | None:
    """The key this view had before content ids (the bytes of an uncompressed PNG), or
    None when that PNG cannot be prepared for this provider."""
    old = ImageEmbeddingRequest(image=Image(data=png_bytes(arr), media_type="image/png"))
    try:
        return client.cache_key(KIND, client.prepare(old))
    except CANNOT_PREPARE:
        return None

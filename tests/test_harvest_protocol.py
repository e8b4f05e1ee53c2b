"""``distill.harvest`` depends on the HarvestClient protocol, not on TeacherClient.

The client here has the protocol's members and nothing else (``__slots__``, no
``__getattr__``): a harvest that reached for anything more (``client.provider``, a private
attribute) would fail with AttributeError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np

from cache import EmbeddingStore
from distill.data import scan
from distill.data.digits import make_digits
from distill.harvest import HarvestClient, harvest, store_dir
from vlmclient import (
    AnswerResult,
    EmbeddingResult,
    Image,
    ImageEmbeddingRequest,
    Kind,
    TextEmbeddingRequest,
)

DIM = 8


def vector(content: bytes) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(content).digest()[: DIM * 4], dtype=np.uint32).astype(
        np.float32
    )


class Spent:
    __slots__ = ("spent",)

    def __init__(self) -> None:
        self.spent = Decimal(0)


class MinimalClient:
    """Only what HarvestClient declares; bills $0.001 per item."""

    __slots__ = ("budget", "concurrency", "fingerprint", "images", "overrun", "sent",
                 "storage_problem", "teacher")

    def __init__(self) -> None:
        self.teacher = "minimal:embedder"
        self.fingerprint = "minimal-v1"
        self.concurrency = 2
        self.budget = Spent()
        self.overrun: Exception | None = None
        self.storage_problem: str | None = None
        self.sent: list[str] = []
        self.images: list[Image] = []  # every image sent, as sent

    async def embed_images(
        self, requests: Sequence[ImageEmbeddingRequest]
    ) -> list[EmbeddingResult]:
        self.sent += [r.image.digest for r in requests]
        self.images += [r.image for r in requests]
        self.budget.spent += Decimal("0.001") * len(requests)
        return [EmbeddingResult(vector=vector(r.image.data)) for r in requests]

    async def embed_texts(self, requests: Sequence[TextEmbeddingRequest]) -> list[EmbeddingResult]:
        self.budget.spent += Decimal("0.001") * len(requests)
        return [EmbeddingResult(vector=vector(r.text.encode())) for r in requests]

    def batch_limit(self, kind: Kind) -> int:
        return 3

    def prepare(self, item: ImageEmbeddingRequest) -> ImageEmbeddingRequest:
        return item

    def cache_key(self, kind: Kind, item: ImageEmbeddingRequest) -> str:
        return f"{kind}:{item.image.content_id or item.image.digest}"

    def content_key(self, content_id: str) -> str:
        return f"image_embedding:{content_id}"

    def cached(
        self, kind: Kind, keys: Sequence[str], fallback: Sequence[str | None] = ()
    ) -> list[EmbeddingResult | AnswerResult | None]:
        return [None] * len(keys)  # no cache: everything is bought

    def plan(
        self, kind: Kind, requests: Sequence[ImageEmbeddingRequest | TextEmbeddingRequest]
    ) -> tuple[int, Decimal]:
        return len(requests), Decimal("0.001") * len(requests)


async def test_harvest_runs_on_any_client_of_the_protocol(tmp_path: Path) -> None:
    data = scan(make_digits(tmp_path / "digits", size=16, per_class=1, domains=("upright",)))
    client = MinimalClient()
    assert isinstance(client, HarvestClient)  # runtime_checkable: the members are there

    result = await harvest(data, client, cache_dir=tmp_path / "cache")

    assert result.complete and result.store_path == store_dir(
        tmp_path / "cache", client.teacher, data
    )
    assert result.bought == len(data.samples) + len(data.class_names)
    assert result.spent_usd == Decimal("0.001") * result.bought
    assert sorted(client.sent) == sorted(
        hashlib.sha256(s.path.read_bytes()).hexdigest() for s in data.samples
    )
    store = EmbeddingStore.open(result.store_path)
    assert store.meta["teacher_fingerprint"] == "minimal-v1"
    first = data.samples[0]
    expected = vector(first.path.read_bytes())
    [got] = store.gather([store.row_of(first.id)])
    np.testing.assert_allclose(got, expected / np.linalg.norm(expected), atol=1e-2)


async def test_the_trainer_regenerates_exactly_the_pixels_sent_for_each_view(
    tmp_path: Path,
) -> None:
    """A provider outside the accepted-formats table gets views as lossless PNG: decoding
    what the harvest sent gives, pixel for pixel, what the trainer's loader makes of the
    same (image, view), found by the view's content id."""
    import io

    from PIL import Image as PILImage

    from distill.data.loaders import load_image
    from distill.data.views import view_content_id

    data = scan(make_digits(tmp_path / "digits", size=16, per_class=1, domains=("upright",)))
    client = MinimalClient()
    result = await harvest(data, client, cache_dir=tmp_path / "cache", views=3)
    assert result.complete and result.views_computed == 2 * len(data.samples)

    sent = {im.content_id: im for im in client.images if im.content_id is not None}
    assert len(sent) == 2 * len(data.samples)
    for s in data.samples:
        digest = hashlib.sha256(s.path.read_bytes()).hexdigest()
        for k in (1, 2):
            cid = view_content_id(digest, s.id, k, hflip=data.hflip, encoding="png-zlib")
            image = sent[cid]
            assert image.media_type == "image/png"
            shown = np.asarray(PILImage.open(io.BytesIO(image.data)).convert("RGB"))
            trained = load_image(s, k, shown.shape[0], hflip=data.hflip).transpose(1, 2, 0)
            np.testing.assert_array_equal(trained, shown)


async def test_harvest_takes_the_cache_folder_as_text(tmp_path: Path) -> None:
    """Before: cache_dir="..." was a TypeError inside store_dir, after the images were read."""
    data = scan(make_digits(tmp_path / "digits", size=16, per_class=1, domains=("upright",)))
    result = await harvest(data, MinimalClient(), cache_dir=str(tmp_path / "cache"))
    assert result.complete and result.store_path == store_dir(
        tmp_path / "cache", MinimalClient().teacher, data)

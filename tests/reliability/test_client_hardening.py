"""Client rules that fuzzing turned up: a provider's absurd Retry-After must not stall the
client beyond the retry policy's cap (an infinite or day-long pause held every task)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import FakeClock, hash_vector
from vlmclient import Price, RateLimiter, RetryPolicy, TeacherClient, TextEmbeddingRequest
from vlmclient.providers.wire import parse_retry_after
from vlmclient.retry import MAX_RETRY_AFTER


@pytest.mark.parametrize("value", ["1e400", "inf", "86400", "Wed, 21 Oct 2099 07:28:00 GMT"])
async def test_absurd_retry_after_pauses_at_most_the_cap(value: str) -> None:
    clock = FakeClock()
    start = clock.now
    replies = iter(
        [
            httpx.Response(429, json={"message": "slow down"}, headers={"Retry-After": value}),
            httpx.Response(
                200,
                json={"id": "r1", "embeddings": {"float": [hash_vector("x")]},
                      "meta": {"billed_units": {"input_tokens": 1}}},
            ),
        ]
    )
    async with TeacherClient(
        "local:hash",
        api_key="t",
        transport=httpx.MockTransport(lambda request: next(replies)),
        price=Price(usd_per_1m_input_tokens=1),
        limiter=RateLimiter(clock=clock, sleep=clock.sleep),
        retry=RetryPolicy(sleep=clock.sleep),
    ) as client:
        [out] = await client.embed_texts([TextEmbeddingRequest(text="x")])
    assert out.dim == 8
    # the retry waits at most the cap, and so does the pause it puts on every other task
    assert clock.now - start <= MAX_RETRY_AFTER + 1


@pytest.mark.parametrize("value", ["1e400", "inf", "-inf", "nan"])
def test_non_finite_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": value})) is None
    assert parse_retry_after(httpx.Headers({"retry-after-ms": value})) is None


def test_store_keeps_ids_of_non_utf8_file_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Harvest crashed at its very end (UnicodeEncodeError) when a file name was not UTF-8."""
    import os

    import numpy as np

    from cache import EmbeddingStore

    ids = ["cat/1.png", os.fsdecode(b"dog/caf\xe9.png"), "dog/ünï cödé.png"]
    EmbeddingStore.write(
        tmp_path / "store",
        image_ids=ids,
        image_vectors=np.eye(3, 4, dtype=np.float32)[:, None, :],
        text_vectors=np.eye(2, 4, dtype=np.float32),
        class_names=["cat", "dog"],
        prompts=["a photo of a cat", "a photo of a dog"],
        teacher="local:hash",
        teacher_fingerprint="f",
        dataset_fingerprint="d",
    )
    assert EmbeddingStore.open(tmp_path / "store").image_ids == ids


def test_image_sizes_do_not_keep_images_alive() -> None:
    """image_size had an lru_cache keyed by the image bytes: 4,096 photos stayed in memory."""
    import io
    import os
    import tracemalloc

    from PIL import Image as PILImage

    from vlmclient import Image
    from vlmclient.providers.images import image_size

    buf = io.BytesIO()
    PILImage.new("RGB", (64, 48)).save(buf, "PNG")
    header = buf.getvalue()
    tracemalloc.start()
    try:
        for _ in range(40):
            data = header[:-12] + os.urandom(1_000_000) + header[-12:]  # ~1 MB each
            assert image_size(Image(data=data, media_type="image/png")) == (64, 48)
            del data
        current, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 5_000_000, f"{current / 1e6:.0f} MB still held after 40 MB of images"

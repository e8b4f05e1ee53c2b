"""One call with more images than the client sends at once (concurrency x batch limit):
the real TeacherClient against the real local teacher on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import vlmclient.client as client_module
from cache import ResponseCache
from tests.conftest import make_image_requests
from tests.e2e.conftest import local_teacher
from vlmclient import TeacherClient


@pytest.fixture
def prepared(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many items the client has prepared (downscaled / re-encoded for sending)."""
    count = [0]
    real = client_module.prepare_item

    def counting(provider: Any, item: Any) -> Any:
        count[0] += 1
        return real(provider, item)

    monkeypatch.setattr(client_module, "prepare_item", counting)
    return count


async def test_a_big_call_sends_its_first_request_before_its_last_image_is_prepared(
    monkeypatch: pytest.MonkeyPatch, prepared: list[int], tmp_path: Path
) -> None:
    """``embed_images`` of 100,000 images prepared every one (decoded, downscaled and
    re-encoded where the provider needs it) before the first request: nothing was sent,
    paid or cached for the whole time, and every prepared copy was held at once. The
    items are now prepared a window (concurrency x batch limit) ahead of sending."""
    n = 96
    seen_at_first: list[int] = []

    def wrap(app: Any) -> Any:
        async def noting(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].startswith("/v") and not seen_at_first:
                seen_at_first.append(prepared[0])
            await app(scope, receive, send)

        return noting

    with local_teacher(monkeypatch, wrap=wrap) as teacher, \
            ResponseCache(tmp_path / "cache") as cache:  # fmt: skip
        async with TeacherClient(
            "local:hash", base_url=teacher.url, cache=cache, concurrency=2, batch_size=4
        ) as client:
            out = await client.embed_images(make_image_requests(n))
            # at most 2 x concurrency batches prepared ahead of the answers
            assert seen_at_first and seen_at_first[0] <= 2 * 2 * 4, seen_at_first
            assert prepared[0] == n  # each item prepared once
            assert len(out) == n and not any(r.cached for r in out)
            assert client.stats.requests_sent == n // 4 and client.stats.items_bought == n
            # the same keys as one item at a time: a second call is all cache hits
            again = await client.embed_images(make_image_requests(n))
            assert all(r.cached for r in again) and client.stats.cache_hits == n
            assert [r.vector.tolist() for r in again] == [r.vector.tolist() for r in out]
        assert teacher.billing()["requests"] == n // 4


async def test_an_item_repeated_far_apart_in_a_big_call_is_bought_once(
    monkeypatch: pytest.MonkeyPatch, prepared: list[int]
) -> None:
    """Without a cache, a repeat in a later window shares the first one's purchase
    (single-flight), as it did when the whole call was prepared at once."""
    reqs = make_image_requests(40)
    reqs.append(reqs[0])
    with local_teacher(monkeypatch) as teacher:
        async with TeacherClient(
            "local:hash", base_url=teacher.url, concurrency=2, batch_size=4
        ) as client:
            out = await client.embed_images(reqs)
        assert out[-1].vector.tolist() == out[0].vector.tolist()
        assert client.stats.items_bought == 40 and client.stats.shared_in_flight == 1


async def test_a_big_call_partly_cached_cuts_its_misses_into_as_few_requests(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The misses of a call prepared batch by batch are cut into requests as those of the
    whole call were: full requests across the cache hits, not one short one per batch."""
    reqs = make_image_requests(80)
    with local_teacher(monkeypatch) as teacher, ResponseCache(tmp_path / "c") as cache:
        async with TeacherClient(
            "local:hash", base_url=teacher.url, cache=cache, concurrency=16, batch_size=4
        ) as client:
            await client.embed_images(reqs[::3])  # 27 cached, scattered
            sent = client.stats.requests_sent
            out = await client.embed_images(reqs)
            assert client.stats.requests_sent - sent == 14  # the 53 misses, 4 a request
            assert sum(r.cached for r in out) == 27 and len(out) == 80


def broken_large_png() -> bytes:
    """A PNG over the 2048-px upload limit whose pixels do not decode: the client must
    downscale it before sending, and cannot."""
    from tests.labelfree.test_pseudolabel_cli import broken_large_png as make

    return make()


async def test_an_image_that_cannot_be_prepared_late_in_a_big_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A call of at most one round of requests (concurrency x batch limit) still fails
    before anything is sent; a bigger one fails when the image is reached: the requests
    sent before it are bought and cached (a rerun without it does not pay for them
    again), the misses not yet sent are not bought, and nothing is left in flight."""
    from vlmclient import Image, ImageEmbeddingRequest, InputError

    bad = ImageEmbeddingRequest(image=Image.from_bytes(broken_large_png()))
    reqs = make_image_requests(40)
    with local_teacher(monkeypatch) as teacher, ResponseCache(tmp_path / "c") as cache:
        async with TeacherClient(
            "local:hash", base_url=teacher.url, cache=cache, concurrency=2, batch_size=4
        ) as client:
            with pytest.raises(InputError, match="cannot decode"):
                await client.embed_images([*reqs[:7], bad])
            assert teacher.billing()["requests"] == 0
            with pytest.raises(InputError, match="cannot decode"):
                await client.embed_images([*reqs[:30], bad, *reqs[30:]])
            bought = client.stats.items_bought
            assert bought == 28  # the 7 requests before the batch it is in
            assert teacher.billing()["images"] == bought
            assert not client._pipeline.inflight
            out = await client.embed_images(reqs)
            assert sum(r.cached for r in out) == bought
            assert teacher.billing()["images"] == 40


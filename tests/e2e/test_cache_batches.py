"""Paid results are written to the cache once per response, in one transaction (issue 17,
item 3): the real TeacherClient against the real local teacher on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cache import CacheEntry, ResponseCache
from tests.conftest import make_image_requests
from tests.e2e.conftest import LocalTeacher
from vlmclient import TeacherClient


class CountingCache:
    """A ResponseCache that notes the size of every ``set_many`` (one call = one
    transaction in ResponseCache)."""

    def __init__(self, inner: ResponseCache) -> None:
        self.inner = inner
        self.batches: list[int] = []

    def get(self, key: str) -> CacheEntry | None:
        return self.inner.get(key)

    def set_many(self, items: Iterable[tuple[str, CacheEntry]]) -> None:
        items = list(items)
        self.batches.append(len(items))
        self.inner.set_many(items)


async def test_one_cache_transaction_per_response(
    hash_teacher: LocalTeacher, tmp_path: Path
) -> None:
    with ResponseCache(tmp_path / "cache") as inner:
        cache = CountingCache(inner)
        async with TeacherClient(
            "local:hash", base_url=hash_teacher.url, cache=cache, batch_size=4
        ) as client:
            out = await client.embed_images(make_image_requests(10))
        assert client.stats.requests_sent == 3
        assert sorted(cache.batches) == [2, 4, 4]
        assert all(inner.get(k) is not None for k in inner.iterkeys())
        assert len(inner) == 10 and not any(r.cached for r in out)

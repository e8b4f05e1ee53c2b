"""A request sent long after its keys were claimed (the process was stopped past its lease
time) claims them again and looks in the cache first: nothing another process bought
meanwhile is bought twice."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

import numpy as np
import pytest

import vlmclient.pipeline as pipeline_module
from cache import CacheEntry, MemoryCache
from tests.conftest import FakeCohere, make_image_requests
from vlmclient import Price, TeacherClient

PRICE = Price(usd_per_image=Decimal("0.001"), usd_per_1m_input_tokens=Decimal("1"))


class OtherProcessBoughtThem:
    """The claims of a process stopped after claiming: by the time it resumes, another
    process has taken the lapsed leases, bought the items and cached them."""

    def __init__(self, cache: MemoryCache, give_back: bool = False) -> None:
        self.cache = cache
        self.give_back = give_back  # the other process never came: the keys are ours
        self.calls = 0

    def claim(self, keys: Sequence[str]) -> set[str]:
        self.calls += 1
        if self.calls == 1 or self.give_back:
            return set(keys)
        self.cache.set_many(
            (k, CacheEntry(vector=np.full(8, 0.5, np.float32), meta={"cost_usd": "0.001"}))
            for k in keys if self.cache.get(k) is None
        )
        return set()

    def release(self, keys: Iterable[str]) -> None:
        pass

    def held_elsewhere(self, keys: Iterable[str]) -> set[str]:
        return set()


@pytest.fixture
def stopped_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim at t = 0, everything after at t = 100 s: past RECLAIM_AFTER_S."""
    times = iter([0.0])
    monkeypatch.setattr(pipeline_module, "_now", lambda: next(times, 100.0), raising=False)


async def test_items_another_process_bought_while_we_were_stopped_are_not_bought_again(
    fake_cohere: FakeCohere, stopped_clock: None
) -> None:
    """Before: on resume the stopped process sent the requests it had claimed without a
    new look, and the items the other process had bought were paid twice (14 in the
    2026-12-06 audit)."""
    cache = MemoryCache()
    claims = OtherProcessBoughtThem(cache)
    async with TeacherClient("local:hash", api_key="k", transport=fake_cohere.transport(),
                             price=PRICE, budget="1", cache=cache, claims=claims) as client:
        results = await client.embed_images(make_image_requests(3))
    assert fake_cohere.requests == []  # nothing sent
    assert all(r.cached for r in results)
    np.testing.assert_allclose(results[0].vector, np.full(8, 0.5))
    assert client.budget.spent == 0 and client.budget.reserved == 0


async def test_keys_still_ours_after_the_stop_are_bought_once(
    fake_cohere: FakeCohere, stopped_clock: None
) -> None:
    cache = MemoryCache()
    claims = OtherProcessBoughtThem(cache, give_back=True)
    async with TeacherClient("local:hash", api_key="k", transport=fake_cohere.transport(),
                             price=PRICE, budget="1", cache=cache, claims=claims) as client:
        results = await client.embed_images(make_image_requests(3))
    assert len(fake_cohere.requests) == 1 and not any(r.cached for r in results)
    assert claims.calls == 2  # claimed, then claimed again right before sending
    assert client.budget.spent == Decimal("0.003")

"""TeacherClient pipeline rules on httpx.MockTransport: cache, single-flight, batching, billing."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import httpx
import numpy as np
import pytest

from cache import LedgerRecord, MemoryCache
from tests.conftest import FakeCohere, ListLedger, make_image_requests
from vlmclient import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    Budget,
    ConfigurationError,
    EmbeddingResult,
    Image,
    ImageEmbeddingRequest,
    Price,
    ResponseValidationError,
    RetryPolicy,
    TeacherClient,
    TextEmbeddingRequest,
)

PRICE = Price(usd_per_image=Decimal("0.001"), usd_per_1m_input_tokens=Decimal("1"))


async def _nosleep(_: float) -> None:
    await asyncio.sleep(0)


def client(fake: FakeCohere, **kw) -> TeacherClient:
    kw.setdefault("retry", RetryPolicy(sleep=_nosleep))
    kw.setdefault("price", PRICE)
    return TeacherClient("local:hash", api_key="sk-test-secret", transport=fake.transport(), **kw)


async def test_embeds_images_and_caches_them(fake_cohere: FakeCohere) -> None:
    cache = MemoryCache()
    reqs = make_image_requests(5)
    async with client(fake_cohere, cache=cache) as c:
        first = await c.embed_images(reqs)
        again = await c.embed_images(reqs)
    assert len(fake_cohere.requests) == 1  # one batch, then all hits
    assert len(cache) == 5
    assert all(not r.cached for r in first) and all(r.cached for r in again)
    for a, b in zip(first, again, strict=False):
        np.testing.assert_array_equal(a.vector, b.vector)
    assert c.budget.spent == Decimal("0.005")
    assert c.stats.cache_hits == 5


async def test_same_bytes_under_another_name_hit(fake_cohere: FakeCohere) -> None:
    cache = MemoryCache()
    reqs = make_image_requests(1)
    async with client(fake_cohere, cache=cache) as c:
        await c.embed_images(reqs)
        copy = reqs[0].model_copy()  # same bytes, a different request object
        [r] = await c.embed_images([copy])
    assert r.cached and len(fake_cohere.requests) == 1


async def test_single_flight_shares_one_payment(fake_cohere: FakeCohere) -> None:
    fake_cohere.delay = 0.05
    reqs = make_image_requests(3)
    async with client(fake_cohere, cache=MemoryCache()) as c:
        a, b = await asyncio.gather(c.embed_images(reqs), c.embed_images(reqs))
    assert len(fake_cohere.requests) == 1
    assert fake_cohere.billed_images == 3
    assert c.budget.spent == Decimal("0.003")
    assert c.stats.shared_in_flight == 3
    for x, y in zip(a, b, strict=False):
        np.testing.assert_array_equal(x.vector, y.vector)


async def test_duplicates_inside_one_call_are_bought_once(fake_cohere: FakeCohere) -> None:
    reqs = make_image_requests(2)
    async with client(fake_cohere) as c:
        out = await c.embed_images([reqs[0], reqs[1], reqs[0]])
    assert fake_cohere.billed_images == 2
    np.testing.assert_array_equal(out[0].vector, out[2].vector)


async def test_batches_up_to_the_provider_limit(fake_cohere: FakeCohere) -> None:
    texts = [TextEmbeddingRequest(text=f"text {i}") for i in range(200)]
    async with client(fake_cohere) as c:
        out = await c.embed_texts(texts)
    assert [len(r["texts"]) for r in fake_cohere.requests] == [96, 96, 8]
    assert len(out) == 200


async def test_malformed_200_is_billed_not_cached_and_names_the_request(
    fake_cohere: FakeCohere, caplog: pytest.LogCaptureFixture
) -> None:
    fake_cohere.faults = ["malformed"]
    cache, ledger = MemoryCache(), ListLedger()
    reqs = make_image_requests(2)
    with caplog.at_level(logging.WARNING):
        async with client(
            fake_cohere, cache=cache, ledger=ledger, retry=RetryPolicy(max_attempts=1)
        ) as c:
            with pytest.raises(ResponseValidationError, match="req-1"):
                await c.embed_images(reqs)
    assert len(cache) == 0
    assert [r.outcome for r in ledger.records] == ["malformed"]
    assert c.budget.spent > 0  # billed at the worst-case estimate (body unreadable)


async def test_malformed_200_is_charged_and_not_retried(fake_cohere: FakeCohere) -> None:
    # Retry by status only (as openai-python): a billed 200 we cannot use would most
    # likely come back, and be billed, the same way again.
    fake_cohere.faults = ["malformed"]
    ledger = ListLedger()
    async with client(fake_cohere, ledger=ledger, cache=MemoryCache()) as c:
        with pytest.raises(ResponseValidationError, match="not JSON"):
            await c.embed_images(make_image_requests(2))
    assert len(fake_cohere.requests) == 1 and c.stats.retries == 0
    [rec] = ledger.records
    assert rec.outcome == "malformed" and rec.estimated  # no usage readable: the reservation
    assert Decimal(rec.cost_usd) == Decimal(rec.reserved_usd) > 0
    assert c.budget.spent == Decimal(rec.cost_usd)


async def test_wrong_dimension_is_rejected(fake_cohere: FakeCohere) -> None:
    async with client(fake_cohere, retry=RetryPolicy(max_attempts=1, sleep=_nosleep)) as c:
        await c.embed_images(make_image_requests(1))
        fake_cohere.faults = ["wrongdim"]
        with pytest.raises(ResponseValidationError, match="dimension"):
            await c.embed_images(make_image_requests(2)[1:])


async def test_nan_vectors_are_rejected(fake_cohere: FakeCohere) -> None:
    def nan(request: httpx.Request) -> httpx.Response:
        body = b'{"id": "x", "embeddings": {"float": [[NaN, 1, 2, 3, 4, 5, 6, 7]]}}'
        return httpx.Response(200, content=body)

    fake_cohere.faults = [nan]
    async with client(fake_cohere, retry=RetryPolicy(max_attempts=1)) as c:
        with pytest.raises(ResponseValidationError, match="NaN"):
            await c.embed_images(make_image_requests(1))


async def test_connection_refused_is_released(fake_cohere: FakeCohere) -> None:
    fake_cohere.faults = ["refused"]
    ledger = ListLedger()
    async with client(
        fake_cohere, budget=Budget("1"), ledger=ledger, retry=RetryPolicy(max_attempts=1)
    ) as c:
        with pytest.raises(APIConnectionError) as info:
            await c.embed_images(make_image_requests(2))
    assert info.value.sent is False
    assert c.budget.spent == 0 and c.budget.reserved == 0 and c.budget.requests == 0
    assert [(r.outcome, r.cost_usd) for r in ledger.records] == [("refused", "0")]


async def test_timeout_after_sending_is_charged(fake_cohere: FakeCohere) -> None:
    fake_cohere.faults = ["timeout"]
    ledger = ListLedger()
    async with client(
        fake_cohere, budget=Budget("1"), ledger=ledger, retry=RetryPolicy(max_attempts=1)
    ) as c:
        with pytest.raises(APITimeoutError):
            await c.embed_images(make_image_requests(2))
    assert c.budget.spent == Decimal("0.002")  # charged at the reservation (2 images)
    assert c.budget.reserved == 0
    assert [r.outcome for r in ledger.records] == ["timeout"]


async def test_dropped_connection_is_charged_then_retried(fake_cohere: FakeCohere) -> None:
    fake_cohere.faults = ["drop"]
    ledger = ListLedger()
    async with client(fake_cohere, ledger=ledger) as c:
        await c.embed_images(make_image_requests(2))
    assert [r.outcome for r in ledger.records] == ["connection", "ok"]


async def test_5xx_is_not_charged(fake_cohere: FakeCohere) -> None:
    fake_cohere.faults = [500, 503]
    async with client(fake_cohere, budget=Budget("1")) as c:
        await c.embed_images(make_image_requests(2))
    assert c.budget.spent == Decimal("0.002")
    assert c.stats.retries == 2


async def test_401_is_not_retried_and_says_so(fake_cohere: FakeCohere) -> None:
    fake_cohere.faults = [401]
    async with client(fake_cohere) as c:
        with pytest.raises(AuthenticationError, match="401"):
            await c.embed_images(make_image_requests(1))
    assert len(fake_cohere.requests) == 1


async def test_results_after_a_failed_batch_are_still_cached(fake_cohere: FakeCohere) -> None:
    cache = MemoryCache()
    fake_cohere.faults = [None, 400]
    texts = [TextEmbeddingRequest(text=f"t{i}") for i in range(100)]
    async with client(fake_cohere, cache=cache, concurrency=1) as c:
        with pytest.raises(BadRequestError, match="400"):
            await c.embed_texts(texts)
    assert len(cache) == 96


async def test_cache_write_failure_is_loud_and_results_returned(
    fake_cohere: FakeCohere, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenCache(MemoryCache):
        def set_many(self, items):  # type: ignore[no-untyped-def]
            raise OSError("disk full")

    async with client(fake_cohere, cache=BrokenCache()) as c:
        out = await c.embed_images(make_image_requests(2))
    assert len(out) == 2
    assert "PAID RESULTS NOT CACHED" in caplog.text


async def test_missing_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="CO_API_KEY"):
        TeacherClient("cohere:embed-v4.0", env={})


async def test_unknown_price_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="price-file"):
        TeacherClient("openai:my-own-model", api_key="k", env={})


async def test_secret_not_in_repr_or_errors(fake_cohere: FakeCohere) -> None:
    fake_cohere.faults = [401]
    c = client(fake_cohere)
    assert "sk-test-secret" not in repr(c)
    with pytest.raises(AuthenticationError) as info:
        await c.embed_images(make_image_requests(1))
    assert "sk-test-secret" not in str(info.value)
    await c.aclose()


async def test_ledger_records_cache_hits_as_money_saved(fake_cohere: FakeCohere) -> None:
    ledger = ListLedger()
    reqs = make_image_requests(3)
    async with client(fake_cohere, cache=MemoryCache(), ledger=ledger) as c:
        await c.embed_images(reqs)
        await c.embed_images(reqs)
    ok, hit = ledger.records
    assert ok.outcome == "ok" and ok.items == 3 and ok.request_id == "req-1"
    assert hit.outcome == "cache_hit" and Decimal(hit.saved_usd) == Decimal("0.003")


async def test_plan_counts_uncached_and_estimates(fake_cohere: FakeCohere) -> None:
    cache = MemoryCache()
    reqs = make_image_requests(4)
    async with client(fake_cohere, cache=cache) as c:
        await c.embed_images(reqs[:1])
        n, cost = c.plan("image_embedding", reqs)
    assert n == 3 and cost >= Decimal("0.003")
    assert len(fake_cohere.requests) == 1


async def test_ledger_failure_keeps_the_paid_result_and_stops_spending(
    fake_cohere: FakeCohere, caplog: pytest.LogCaptureFixture
) -> None:
    from vlmclient import SpendRecordError

    class FullDisk:
        def record(self, rec: LedgerRecord) -> None:
            raise OSError(28, "No space left on device")

    cache = MemoryCache()
    async with client(fake_cohere, cache=cache, ledger=FullDisk()) as c:
        out = await c.embed_images(make_image_requests(2))
        assert len(out) == 2 and len(cache) == 2  # paid, returned and cached
        with pytest.raises(SpendRecordError, match="ledger"):
            await c.embed_images(make_image_requests(3)[2:])
    assert "SPEND NOT RECORDED" in caplog.text
    assert len(fake_cohere.requests) == 1


async def test_cached_vectors_fix_the_expected_dimension(fake_cohere: FakeCohere) -> None:
    """A resumed run rejects a wrong-dimension first response: the cache says what is right."""
    cache = MemoryCache()
    reqs = make_image_requests(2)
    async with client(fake_cohere, cache=cache) as c:
        await c.embed_images(reqs[:1])
    fake_cohere.faults = ["wrongdim"]
    async with client(fake_cohere, cache=cache, retry=RetryPolicy(max_attempts=1)) as c:
        with pytest.raises(ResponseValidationError, match="dimension"):
            await c.embed_images(reqs)  # one hit, one new (wrong-dimension) answer
    assert len(cache) == 1


def _png(seed: int, fmt: str = "PNG") -> bytes:
    import io

    from PIL import Image as PILImage

    arr = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    PILImage.fromarray(arr).save(out, fmt)
    return out.getvalue()


async def test_a_content_id_keys_the_image_whatever_its_encoding(fake_cohere: FakeCohere) -> None:
    """Bought as a PNG named "v:1", then the same name as a JPEG is a hit: nothing sent."""
    cache = MemoryCache()
    png = ImageEmbeddingRequest(image=Image(data=_png(0), media_type="image/png", content_id="v:1"))
    jpeg = ImageEmbeddingRequest(
        image=Image(data=_png(0, "JPEG"), media_type="image/jpeg", content_id="v:1")
    )
    async with client(fake_cohere, cache=cache) as c:
        [bought] = await c.embed_images([png])
        [again] = await c.embed_images([jpeg])
        [found] = c.cached("image_embedding", [c.content_key("v:1")])
        assert c.cached("image_embedding", [c.content_key("v:2")]) == [None]
        other = png.model_copy(update={"image": png.image.model_copy(update={"content_id": "v:2"})})
        await c.embed_images([other])  # another name is another item, same bytes or not
    assert len(fake_cohere.requests) == 2
    assert again.cached and isinstance(found, EmbeddingResult) and found.cached
    np.testing.assert_array_equal(again.vector, bought.vector)
    np.testing.assert_array_equal(found.vector, bought.vector)
    assert c.stats.cache_hits == 2


async def test_cached_falls_back_to_an_old_key_and_stores_it_under_the_new_one(
    fake_cohere: FakeCohere,
) -> None:
    cache = MemoryCache()
    legacy = ImageEmbeddingRequest(image=Image(data=_png(1), media_type="image/png"))
    async with client(fake_cohere, cache=cache) as c:
        [bought] = await c.embed_images([legacy])  # cached under its bytes' key
        old, new = c.cache_key("image_embedding", legacy), c.content_key("v:1")
        assert c.cached("image_embedding", [new]) == [None]
        [found] = c.cached("image_embedding", [new], [old])
        assert new in cache  # moved: the next look needs no fallback
        [direct] = c.cached("image_embedding", [new])
    assert isinstance(found, EmbeddingResult) and isinstance(direct, EmbeddingResult)
    np.testing.assert_array_equal(found.vector, bought.vector)
    np.testing.assert_array_equal(direct.vector, bought.vector)
    assert len(fake_cohere.requests) == 1 and c.stats.cache_hits == 2


@pytest.mark.parametrize("fmt", ["float16", "int8"])
async def test_a_paid_vector_is_handed_out_as_its_cache_hits_will_be(
    fake_cohere: FakeCohere, tmp_path, fmt: str
) -> None:
    from cache import ResponseCache

    reqs = make_image_requests(3)
    with ResponseCache(tmp_path / "c", vector_format=fmt) as cache:
        async with client(fake_cohere, cache=cache) as c:
            paid = await c.embed_images(reqs)
    with ResponseCache(tmp_path / "c", vector_format=fmt) as cache:
        async with client(fake_cohere, cache=cache) as c:
            hits = await c.embed_images(reqs)
    assert len(fake_cohere.requests) == 1 and all(r.cached for r in hits)
    for a, b in zip(paid, hits, strict=True):
        assert a.vector.dtype == b.vector.dtype == np.float32
        np.testing.assert_array_equal(a.vector, b.vector)  # bit for bit

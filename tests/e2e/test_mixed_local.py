"""Mixed text+image inputs through the real TeacherClient and the real local teacher.

The server (``POST /v2/embed`` with Cohere ``inputs[].content[]``) fuses each input's
parts and bills its images and text tokens; the client's ledger must equal that bill,
its reservation must cover it, and a second call must be served from the cache.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from cache import MemoryCache
from distill.server import ServerConfig
from tests.conftest import ListLedger, make_image_requests
from tests.e2e.conftest import LocalTeacher
from vlmclient import MixedEmbeddingRequest, TeacherClient, TextEmbeddingRequest
from vlmclient.providers.local import LOCAL


async def test_mixed_inputs_are_fused_billed_and_cached(hash_teacher: LocalTeacher) -> None:
    cat, dog = (r.image for r in make_image_requests(2))
    reqs = [
        MixedEmbeddingRequest(parts=("a red square", cat)),
        MixedEmbeddingRequest(parts=(dog, "a blue circle", cat)),
        MixedEmbeddingRequest(parts=(cat, "a red square")),  # same parts, other order
    ]
    cache, ledger = MemoryCache(), ListLedger()
    async with TeacherClient(
        "local:hash", base_url=hash_teacher.url, cache=cache, ledger=ledger
    ) as client:
        fused = await client.embed_mixed(reqs)
        bill = hash_teacher.billing()
        again = await client.embed_mixed(reqs)
        [text] = await client.embed_texts([TextEmbeddingRequest(text="a red square")])
        [image] = await client.embed_images(make_image_requests(1))
    assert len(fused) == 3 and all(not r.cached for r in fused) and all(r.cached for r in again)
    assert bill["requests"] == 1 and bill["images"] == 4  # one request, every image billed
    assert hash_teacher.billing()["requests"] == 3  # the second call sent nothing
    assert client.budget.spent - text.cost_usd - image.cost_usd == Decimal(bill["usd"])
    assert client.budget.overruns == 0
    [bought] = [r for r in ledger.records if r.kind == "mixed_embedding" and r.outcome == "ok"]
    assert bought.items == 3 and Decimal(bought.cost_usd) <= Decimal(bought.reserved_usd)
    # the server fused text and image: the vector is their normalised mean
    mean = (text.vector + image.vector) / 2
    np.testing.assert_allclose(fused[0].vector, mean / np.linalg.norm(mean), rtol=1e-5)
    # two orders of the same parts are two inputs, bought and cached apart
    assert len({client.cache_key("mixed_embedding", r) for r in reqs}) == 3


async def test_mixed_requests_stay_under_the_servers_image_cap(
    hash_teacher: LocalTeacher,
) -> None:
    # 96 inputs (the per-call input cap) of 6 images: 576 images, over the local
    # server's default of 500 a call; one request of all 96 was a 400 for every input
    images = tuple(r.image for r in make_image_requests(6))
    reqs = [MixedEmbeddingRequest(parts=(f"item {i}", *images)) for i in range(96)]
    async with TeacherClient(
        "local:hash", base_url=hash_teacher.url, cache=MemoryCache(), ledger=ListLedger()
    ) as client:
        keys = [client.cache_key("mixed_embedding", r) for r in reqs]
        results = await client.embed_mixed(reqs)
        again = await client.embed_mixed(reqs)
        # the keys are per input, whatever request an input went in
        assert [client.cache_key("mixed_embedding", r) for r in reqs] == keys
    bill = hash_teacher.billing()
    assert len(results) == 96 and all(not r.cached for r in results)
    assert all(r.cached for r in again)
    assert bill["images"] == 576 and bill["requests"] == 2  # 83 inputs (498 images) + 13
    # the client's cap is the server's default (vlmclient cannot import the server)
    assert LOCAL.max_request_images == ServerConfig.model_fields["max_images"].default


async def test_text_requests_stay_under_the_servers_text_cap(
    hash_teacher: LocalTeacher,
) -> None:
    # three texts of 40% of the server's cap on the characters of one embedding call:
    # one request of all three was a 400 for every text
    from distill.server.config import MAX_EMBED_TEXT_CHARS

    size = MAX_EMBED_TEXT_CHARS * 2 // 5
    reqs = [TextEmbeddingRequest(text=f"{i} " + "x" * size) for i in range(3)]
    async with TeacherClient(
        "local:hash", base_url=hash_teacher.url, cache=MemoryCache(), ledger=ListLedger()
    ) as client:
        results = await client.embed_texts(reqs)
    assert len(results) == 3 and all(not r.cached for r in results)
    assert hash_teacher.billing()["requests"] == 2  # two texts, then one
    # the client's cap is the server's (vlmclient cannot import the server)
    assert LOCAL.max_request_tokens == MAX_EMBED_TEXT_CHARS

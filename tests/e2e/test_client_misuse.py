"""The library API used carelessly, against the real local teacher on 127.0.0.1: a client
closed while calls wait, items of the wrong type, parameters JSON cannot carry."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from cache import CacheEntry, Coordinator, MemoryCache, SpendLedger, totals
from distill.data import scan
from distill.harvest import harvest
from tests.conftest import make_image_requests
from tests.e2e.conftest import TOKEN, LocalTeacher, local_teacher
from vlmclient import (
    AnswerRequest,
    Budget,
    ConfigurationError,
    Image,
    ImageEmbeddingRequest,
    SharedBudget,
    SpendRecordError,
    TeacherClient,
    TextEmbeddingRequest,
)
from vlmclient.providers.images import prepare_for_upload

IMAGE = make_image_requests(1)[0].image
PNG = IMAGE.data


async def test_closing_a_client_while_calls_wait_for_a_slot_charges_only_what_was_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """aclose() while one request is on the wire and four wait for a slot: the four were
    never sent, so they are refused (released), not charged as possibly billed."""
    with (
        local_teacher(monkeypatch, latency_ms=300) as teacher,
        SpendLedger(tmp_path / "ledger.jsonl") as ledger,
    ):
        client = TeacherClient(
            "local:hash", api_key=TOKEN, base_url=teacher.url, budget=Budget("1.00"),
            ledger=ledger, concurrency=1, batch_size=1,
        )  # fmt: skip
        calls = [
            asyncio.ensure_future(client.embed_texts([TextEmbeddingRequest(text=f"t{i}")]))
            for i in range(5)
        ]
        while client.stats.requests_sent == 0:
            await asyncio.sleep(0.01)
        await client.aclose()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        billed = teacher.billing()["requests"]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert billed == 1 and len(refused) == 4
    assert all(isinstance(o, RuntimeError) and "closed" in str(o) for o in refused)
    recorded = totals(SpendLedger.read(tmp_path / "ledger.jsonl"))
    assert recorded.requests == billed and "cancelled" not in recorded.failures
    assert client.budget.reserved == 0 and client.stats.charged_no_answer == 0
    assert client.budget.spent == recorded.spent_usd > Decimal(0)


@pytest.mark.parametrize(
    ("call", "wrong", "says"),
    [
        ("embed_texts", "a cat", "not a str"),
        ("embed_texts", TextEmbeddingRequest(text="a cat"), "a list of TextEmbeddingRequest"),
        ("embed_texts", [{"text": "a cat"}], "request 0 is a dict"),
        ("embed_texts", ["a cat"], "request 0 is a str"),
        ("embed_texts", None, "not a NoneType"),
        ("embed_texts", [ImageEmbeddingRequest(image=IMAGE)], "use embed_images"),
        ("embed_images", [TextEmbeddingRequest(text="a")], "use embed_texts"),
        ("embed_images", [AnswerRequest(image=IMAGE, prompt="which?")], "use answer"),
        ("embed_images", [PNG], "request 0 is a bytes"),
        ("answer", [ImageEmbeddingRequest(image=IMAGE)], "use embed_images"),
        ("embed_mixed", [TextEmbeddingRequest(text="a")], "use embed_texts"),
    ],
)
async def test_requests_of_the_wrong_type_are_a_type_error_before_anything_is_sent(
    hash_teacher: LocalTeacher, call: str, wrong: object, says: str
) -> None:
    """A str, a single request, a dict, or another kind's request: a TypeError naming
    what to pass, nothing sent (an image request to embed_texts went out as a text
    request with no texts, an answer request to embed_images was a bare AssertionError)."""
    async with TeacherClient(
        "local:hash", api_key=TOKEN, base_url=hash_teacher.url, budget=Budget("1.00")
    ) as client:
        with pytest.raises(TypeError, match=re.escape(says)):
            await getattr(client, call)(wrong)
    assert client.stats.requests_sent == 0 and hash_teacher.billing()["requests"] == 0
    assert client.budget.spent == 0 and client.budget.reserved == 0


async def test_a_generator_of_requests_is_read_once(hash_teacher: LocalTeacher) -> None:
    async with TeacherClient("local:hash", api_key=TOKEN, base_url=hash_teacher.url) as client:
        got = await client.embed_texts(TextEmbeddingRequest(text=t) for t in ("a", "b"))
    assert len(got) == 2 and hash_teacher.billing()["requests"] == 1


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"dimensions": np.int64(256)}, "params['dimensions'] is a int64"),
        ({"extra": {"seed": Decimal("1")}}, "params['extra']['seed'] is a Decimal"),
        ({"temperature": float("nan")}, "params['temperature'] is nan"),
        ({"stop": ["a", object()]}, "params['stop'][1] is a object"),
        ({1: "a"}, "params key 1 is a int"),
    ],
)
async def test_params_json_cannot_carry_are_refused_when_the_client_is_made(
    hash_teacher: LocalTeacher, params: dict, says: str
) -> None:
    """Parameters go into every request body as JSON: a numpy number, a Decimal, NaN or
    a non-str key was accepted, keyed with str() (NaN as invalid JSON), then every
    request raised a bare "Object of type int64 is not JSON serializable"."""
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        TeacherClient("local:hash", api_key=TOKEN, base_url=hash_teacher.url, params=params)
    assert hash_teacher.billing()["requests"] == 0


@pytest.mark.parametrize("views", [0, -1, 2.0, "2", True])
async def test_harvest_refuses_views_that_are_not_a_whole_number_from_1(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path, views: object
) -> None:
    """``harvest(views=0)`` (the library call) bought every class prompt and no image,
    wrote no store and reported success; -1 and "2" were numpy or TypeErrors from deep
    inside. Now a ValueError before anything is bought."""
    ds = scan(digits_data)
    async with TeacherClient(
        "local:hash", api_key=TOKEN, base_url=hash_teacher.url, budget=Budget("1.00")
    ) as client:
        with pytest.raises(ValueError, match=re.escape("views must be a whole number >= 1")):
            await harvest(ds, client, cache_dir=tmp_path / "c", views=views)  # type: ignore[arg-type]
    assert hash_teacher.billing()["requests"] == 0 and client.budget.spent == 0


async def test_a_shared_budget_of_another_teacher_is_refused(
    hash_teacher: LocalTeacher, tmp_path: Path
) -> None:
    """A SharedBudget caps what the cache's ledger records for the teacher it names. Given
    to a client of another teacher (a copied line), it capped the other teacher's total:
    after a run stopped by a $0.00001 cap on local:hash, a second local:hash client given
    SharedBudget(coord, "local:other", total=$0.00001) bought on: the ledger recorded
    $0.00001644 for local:hash."""
    with (
        SpendLedger(tmp_path / "ledger.jsonl") as ledger,
        Coordinator(tmp_path / "coordination.db", ledger_path=tmp_path / "ledger.jsonl") as coord,
    ):
        budget = SharedBudget(coord, "local:other", total=Decimal("0.0000015"))
        with pytest.raises(ConfigurationError, match=re.escape("SharedBudget of local:other")):
            TeacherClient(
                "local:hash", api_key=TOKEN, base_url=hash_teacher.url, budget=budget,
                ledger=ledger, claims=coord,
            )  # fmt: skip
        # the same teacher in other spellings is fine
        for name in ("local:hash", " local:hash"):
            TeacherClient(
                name.strip(), api_key=TOKEN, base_url=hash_teacher.url,
                budget=SharedBudget(coord, "local:hash", total=Decimal("1")),
            )  # fmt: skip
    assert hash_teacher.billing()["requests"] == 0


async def test_a_closed_ledger_is_refused_before_anything_is_sent(
    hash_teacher: LocalTeacher, tmp_path: Path
) -> None:
    """The client used after the ledger's ``with`` block ended (an indent too few): the
    request went out and was billed, then "SPEND NOT RECORDED: ... is closed". Now a
    SpendRecordError before anything is reserved or sent."""
    with SpendLedger(tmp_path / "ledger.jsonl") as ledger:
        pass
    async with TeacherClient(
        "local:hash", api_key=TOKEN, base_url=hash_teacher.url, budget=Budget("1.00"),
        ledger=ledger,
    ) as client:  # fmt: skip
        with pytest.raises(SpendRecordError, match=re.escape("the spend ledger is closed")):
            await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert hash_teacher.billing()["requests"] == 0
    assert client.budget.spent == 0 and client.budget.reserved == 0


async def test_a_ledger_closed_mid_call_is_not_reported_as_nothing_sent(
    hash_teacher: LocalTeacher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger closed while a call of several requests runs, its second request's line
    refused (billed, not recorded: logged as SPEND NOT RECORDED), yet the call ended with
    "the spend ledger is closed ...; nothing was sent" (a library audit, 2026-12-08)."""
    ledger = SpendLedger(tmp_path / "ledger.jsonl")
    real, calls = SpendLedger.record, []

    def closed_at_the_second(self: SpendLedger, rec: object) -> None:
        calls.append(rec)
        if len(calls) == 2:
            self.close()  # the user's with-block ended while the call ran
        real(self, rec)  # type: ignore[arg-type]

    monkeypatch.setattr(SpendLedger, "record", closed_at_the_second)
    async with TeacherClient(
        "local:hash", api_key=TOKEN, base_url=hash_teacher.url, budget=Budget("1.00"),
        ledger=ledger, batch_size=1, concurrency=1,
    ) as client:  # fmt: skip
        with pytest.raises(SpendRecordError) as stopped:
            await client.embed_texts([TextEmbeddingRequest(text=f"cat {i}") for i in range(4)])
    assert hash_teacher.billing()["requests"] == 2  # the second billed, not recorded
    said = str(stopped.value)
    assert "nothing was sent" not in said and "already billed" in said, said


async def test_cancelling_one_call_does_not_cancel_another_sharing_its_item(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Call B asked for an item call A was buying (single-flight: one future for both);
    A was cancelled (a timeout, a task group ending), which cancelled the shared future:
    B, never cancelled itself, ended as cancelled, its other item bought for nothing.
    Now B asks again for the items it shared with A and gets every answer; each request
    the server billed is in the ledger."""
    with (
        local_teacher(monkeypatch, latency_ms=300) as teacher,
        SpendLedger(tmp_path / "ledger.jsonl") as ledger,
    ):
        async with TeacherClient(
            "local:hash", api_key=TOKEN, base_url=teacher.url, budget=Budget("1.00"),
            ledger=ledger, batch_size=1,
        ) as client:  # fmt: skip
            a = asyncio.ensure_future(client.embed_texts([TextEmbeddingRequest(text="same")]))
            while client.stats.requests_sent == 0:
                await asyncio.sleep(0.01)
            b = asyncio.ensure_future(
                client.embed_texts([TextEmbeddingRequest(text=t) for t in ("same", "other")])
            )
            while client.stats.shared_in_flight == 0:
                await asyncio.sleep(0.01)
            a.cancel()
            got = await asyncio.wait_for(b, 30)
        billed = teacher.billing()["requests"]
    assert a.cancelled() and not b.cancelled() and len(got) == 2
    assert totals(SpendLedger.read(tmp_path / "ledger.jsonl")).requests == billed == 3


async def test_plan_and_cached_refuse_what_is_not_a_list_of_their_kind(
    hash_teacher: LocalTeacher,
) -> None:
    """``plan("text_embedding", "a cat")`` was an AttributeError, an image kind's plan of
    text requests a bare AssertionError; ``cached(kind, key)`` (one key, not a list)
    looked up each of its 64 characters and answered 64 misses."""
    async with TeacherClient("local:hash", api_key=TOKEN, base_url=hash_teacher.url) as client:
        with pytest.raises(TypeError, match=re.escape("not a str")):
            client.plan("text_embedding", "a cat")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=re.escape("request 0 is a TextEmbeddingRequest")):
            client.plan("image_embedding", iter([TextEmbeddingRequest(text="a")]))
        key = client.cache_key("text_embedding", TextEmbeddingRequest(text="a"))
        with pytest.raises(TypeError, match=re.escape("cached(kind, [key])")):
            client.cached("text_embedding", key)  # type: ignore[arg-type]
        assert client.plan("text_embedding", iter([TextEmbeddingRequest(text="a")]))[0] == 1
    assert hash_teacher.billing()["requests"] == 0


async def test_a_hook_that_raises_on_a_cache_hit_does_not_lose_the_hits_ledger_line(
    hash_teacher: LocalTeacher, tmp_path: Path
) -> None:
    """An ``on_event`` hook that raised on "hit" skipped that hit's ledger line (the
    ledger's hit count came out short), where a bought answer's line is written before
    its event; the items to buy that came with the hit were left in flight, unbought, so
    asking for one again waited forever. Now the hit's line is written first, the hook's
    error still reaches the caller, and nothing is left in flight."""

    failing = True

    def hook(name: str, n: int) -> None:
        if name == "hit" and failing:
            raise RuntimeError("hook failed")

    requests = [TextEmbeddingRequest(text="a cat")]
    other = TextEmbeddingRequest(text="a dog")
    with SpendLedger(tmp_path / "ledger.jsonl") as ledger:
        async with TeacherClient(
            "local:hash", api_key=TOKEN, base_url=hash_teacher.url, budget=Budget("1.00"),
            ledger=ledger, cache=MemoryCache(), on_event=hook,
        ) as client:  # fmt: skip
            await client.embed_texts(requests)
            with pytest.raises(RuntimeError, match="hook failed"):
                await client.embed_texts([*requests, other])
            key = client.cache_key("text_embedding", requests[0])
            with pytest.raises(RuntimeError, match="hook failed"):
                client.cached("text_embedding", [key])
            failing = False
            # the miss that came with the failed hit was not left in flight, unbought
            await asyncio.wait_for(client.embed_texts([other]), 30)
    assert client.stats.cache_hits == 2
    assert totals(SpendLedger.read(tmp_path / "ledger.jsonl")).cache_hits == 2
    assert hash_teacher.billing()["requests"] == 2


class _CachedMeanwhile:
    """A real Coordinator's claims, where another process caches ``first`` (and lets go
    of it) between this process's cache look and its claim: the claim finds it cached."""

    def __init__(self, coord: Coordinator, cache: MemoryCache, first: str) -> None:
        self.coord, self.cache, self.first = coord, cache, first

    def claim(self, keys: Sequence[str]) -> set[str]:
        if self.first in keys and self.cache.get(self.first) is None:
            vector = np.full(64, 0.125, np.float32)
            entry = CacheEntry(vector=vector, meta={"cost_usd": "0.00001"})
            self.cache.set_many([(self.first, entry)])
        return self.coord.claim(keys)

    def release(self, keys: Iterable[str]) -> None:
        self.coord.release(keys)

    def held_elsewhere(self, keys: Iterable[str]) -> set[str]:
        return self.coord.held_elsewhere(keys)


async def test_a_hook_that_raises_on_a_hit_found_at_the_claim_leaves_nothing_claimed(
    hash_teacher: LocalTeacher, tmp_path: Path
) -> None:
    """An item another process cached between this call's cache look and its claim is a
    hit served at the claim. An ``on_event`` hook that raised on that "hit" left the
    other items of the call leased to this process and in flight, unbought: asking for
    one again waited forever, and so did every other process sharing the cache. Now, as
    for a hit found at the first look, the hook's error reaches the caller and nothing
    is left claimed or in flight."""
    failing = True

    def hook(name: str, n: int) -> None:
        if name == "hit" and failing:
            raise RuntimeError("hook failed")

    cat, dog = TextEmbeddingRequest(text="a cat"), TextEmbeddingRequest(text="a dog")
    cache = MemoryCache()
    db = tmp_path / "coordination.db"
    with (
        SpendLedger(tmp_path / "ledger.jsonl") as ledger,
        Coordinator(db, ledger_path=tmp_path / "ledger.jsonl") as coord,
        Coordinator(db, ledger_path=tmp_path / "ledger.jsonl") as other,
    ):
        async with TeacherClient(
            "local:hash", api_key=TOKEN, base_url=hash_teacher.url, budget=Budget("1.00"),
            ledger=ledger, cache=cache, on_event=hook, claims=coord,
        ) as client:  # fmt: skip
            dog_key = client.cache_key("text_embedding", dog)
            client._pipeline._claims = _CachedMeanwhile(
                coord, cache, client.cache_key("text_embedding", cat)
            )
            with pytest.raises(RuntimeError, match="hook failed"):
                await client.embed_texts([cat, dog])
            assert other.held_elsewhere([dog_key]) == set()  # not left leased to us
            failing = False
            [got] = await asyncio.wait_for(client.embed_texts([dog]), 5)
    assert not got.cached and client.stats.cache_hits == 1
    assert client.budget.reserved == 0
    assert hash_teacher.billing()["requests"] == 1
async def test_an_image_of_another_type_is_re_encoded_for_the_local_teacher(
    hash_teacher: LocalTeacher,
) -> None:
    """``Image(tiff_bytes, media_type="image/TIFF")`` to ``local:hash``: its default
    preparation kept any type it was given, so the TIFF went out as ``data:image/tiff``
    and came back a 400 "unsupported image type" (every other provider re-encodes it).
    Now it is re-encoded to a type the teacher takes, and embedded."""
    buf = io.BytesIO()
    PILImage.new("RGB", (8, 6), (200, 10, 10)).save(buf, "TIFF")
    tiff = Image(data=buf.getvalue(), media_type="image/TIFF")
    assert prepare_for_upload(tiff).media_type in {"image/png", "image/jpeg"}
    async with TeacherClient(
        "local:hash", api_key=TOKEN, base_url=hash_teacher.url, budget=Budget("1.00")
    ) as client:
        [got] = await client.embed_images([ImageEmbeddingRequest(image=tiff)])
    assert got.vector.shape == (64,) and hash_teacher.billing()["requests"] == 1

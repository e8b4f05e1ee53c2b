"""Mixed text+image embedding inputs (issue 15): one vector from texts and images in order.

Wire bodies against the published specs (Cohere ``inputs[].content[]``, Voyage
``inputs[].content[]``), worst-case estimates, cache keys, and the real TeacherClient
against a loopback server that bills like Voyage: cached, budgeted, retried, billed;
refused before anything is sent where a teacher cannot fuse inputs.
"""

from __future__ import annotations

import base64
import math
from decimal import Decimal
from typing import Any

import httpx
import jsonschema
import pydantic
import pytest

from cache import MemoryCache
from tests.conftest import FakeClock, ListLedger
from tests.providers.conftest import (
    COHERE_SPEC,
    body_of,
    call_spec,
    client_for,
    image,
    shared_spec,
    validator_for,
    vector,
    voyage_doc,
)
from tests.providers.loopback import loopback
from vlmclient import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    Image,
    ImageEmbeddingRequest,
    MixedEmbeddingRequest,
    Price,
    RateLimiter,
    TeacherClient,
    Usage,
)
from vlmclient.client import item_cache_key
from vlmclient.prices import PriceTable
from vlmclient.providers import PROVIDERS, cohere, get_provider, voyage
from vlmclient.providers.images import image_size

CAT = image((64, 48), seed=1)
DOG = image((40, 30), seed=2)


def mixed(*parts: str | Image) -> MixedEmbeddingRequest:
    return MixedEmbeddingRequest(parts=parts)


# -- the request type -----------------------------------------------------------------


def test_request_keeps_parts_in_order_and_refuses_what_is_not_text_or_image() -> None:
    req = mixed("a cat", CAT, "on a mat", DOG)
    assert req.texts == ["a cat", "on a mat"] and req.images == [CAT, DOG]
    assert req.kind == "mixed_embedding"
    with pytest.raises(pydantic.ValidationError):
        MixedEmbeddingRequest(parts=())
    with pytest.raises(pydantic.ValidationError, match="empty text"):
        mixed("a cat", "")
    with pytest.raises(pydantic.ValidationError):
        MixedEmbeddingRequest(parts=(CAT.data,))  # raw bytes are not quietly a text


def test_cache_key_covers_every_part_in_order() -> None:
    provider = get_provider("cohere")

    def key(item: Any, kind: str = "mixed_embedding") -> str:
        return item_cache_key(provider, "embed-v4.0", {}, kind, item)

    base = key(mixed("a cat", CAT))
    assert key(mixed("a cat", CAT)) == base
    assert (
        len(
            {
                base,
                key(mixed(CAT, "a cat")),  # order changes the input
                key(mixed("a cat", DOG)),
                key(mixed("a dog", CAT)),
                key(mixed("a cat", CAT, "a cat")),
                key(ImageEmbeddingRequest(image=CAT), "image_embedding"),
            }
        )
        == 6
    )


# -- wire bodies ----------------------------------------------------------------------

COHERE_EMBED = "#/paths/~1v2~1embed/post/requestBody/content/application~1json/schema"


def with_discriminators(node: Any) -> Any:
    """The spec with OpenAPI ``oneOf`` + ``discriminator`` turned into JSON Schema.

    jsonschema ignores ``discriminator``; Cohere's ``EmbedContent`` parts have no required
    fields, so a text part matches both ``EmbedText`` and ``EmbedImage`` and plain
    ``oneOf`` refuses every body. OpenAPI picks the branch by the ``type`` property.
    """
    if isinstance(node, list):
        return [with_discriminators(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: with_discriminators(v) for k, v in node.items()}
    disc = out.get("discriminator")
    if "oneOf" in out and isinstance(disc, dict) and disc.get("mapping"):
        prop, mapping = disc["propertyName"], disc["mapping"]
        del out["oneOf"], out["discriminator"]
        out["required"] = [prop]
        out["properties"] = {prop: {"enum": list(mapping)}}
        out["allOf"] = [
            {"if": {"properties": {prop: {"const": value}}}, "then": {"$ref": ref}}
            for value, ref in mapping.items()
        ]
    return out


def cohere_validator() -> jsonschema.Draft202012Validator:
    return validator_for(with_discriminators(shared_spec(COHERE_SPEC)), COHERE_EMBED)


@pytest.mark.parametrize("params", [{}, {"output_dimension": 512, "embedding_types": "int8"}])
def test_cohere_body_is_inputs_with_content_parts(params: dict[str, Any]) -> None:
    items = [mixed("a red shoe", CAT), mixed(DOG, "two", "texts")]
    body = body_of(
        cohere.build_request(call_spec("cohere", "mixed_embedding", "embed-v4.0", items, params))
    )
    assert set(body) >= {"model", "input_type", "inputs", "embedding_types"}
    assert "texts" not in body and "images" not in body
    assert body["input_type"] == "search_document"
    assert body["embedding_types"][0] == "float"
    first, second = body["inputs"]
    assert first["content"][0] == {"type": "text", "text": "a red shoe"}
    assert first["content"][1]["type"] == "image_url"
    assert first["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert [p["type"] for p in second["content"]] == ["image_url", "text", "text"]
    cohere_validator().validate(body)
    body["inputs"][0]["content"][0] = {"type": "video", "video": "x"}
    with pytest.raises(jsonschema.ValidationError):
        cohere_validator().validate(body)


def test_voyage_body_is_inputs_with_content_parts() -> None:
    items = [mixed("a red shoe", CAT), mixed(DOG, "a dog")]
    spec = call_spec("voyage", "mixed_embedding", "voyage-multimodal-3", items, {})
    body = body_of(voyage.build_request(spec))
    validator_for(voyage_doc(), "#/request").validate(body)
    pieces = [[p["type"] for p in inp["content"]] for inp in body["inputs"]]
    assert pieces == [["text", "image_base64"], ["image_base64", "text"]]
    assert body["inputs"][0]["content"][0]["text"] == "a red shoe"


def test_voyage_schema_rejects_a_bad_mixed_body() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validator_for(voyage_doc(), "#/request").validate({"inputs": [{"content": []}]})


# -- estimates ------------------------------------------------------------------------


def test_cohere_estimate_is_each_parts_own_rule() -> None:
    items = [mixed("a red shoe", CAT), mixed(DOG, "δύο")]
    spec = call_spec("cohere", "mixed_embedding", "embed-v4.0", items)
    image_tokens = sum(
        math.ceil(max(w * h, cohere.MIN_IMAGE_PIXELS) / cohere.PIXELS_PER_IMAGE_TOKEN)
        for w, h in (image_size(CAT), image_size(DOG))
    )
    text_tokens = len(b"a red shoe") + 1 + len("δύο".encode()) + 1
    assert cohere.estimate_usage(spec) == Usage(
        images=2, image_tokens=image_tokens, input_tokens=text_tokens
    )


def test_voyage_estimate_is_pixels_plus_text_tokens() -> None:
    spec = call_spec("voyage", "mixed_embedding", "voyage-multimodal-3", [mixed("a cat", CAT)])
    assert voyage.estimate_usage(spec) == Usage(
        input_tokens=len(b"a cat") + 1, image_pixels=voyage.MIN_BILLED_PIXELS
    )


# -- refused where a teacher cannot fuse inputs ---------------------------------------

UNSUPPORTED = [
    "cohere:embed-english-v3.0",  # Embed v3: one image per call, never fused with text
    "openai:text-embedding-3-small",
    "jina:jina-clip-v2",
    "vertex:multimodalembedding@001",
    "nomic:nomic-embed-vision-v1.5",
    "anthropic:claude-haiku-4-5",
    "gemini:gemini-2.5-flash-lite",
]


@pytest.mark.parametrize("teacher", UNSUPPORTED)
async def test_teachers_that_cannot_fuse_are_refused_before_sending(teacher: str) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    ledger = ListLedger()
    price = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_image=Decimal("0.001"))
    async with client_for(
        teacher, handler, price=price, ledger=ledger, env={"VERTEX_PROJECT": "p"}
    ) as client:
        with pytest.raises(ConfigurationError, match="does not offer mixed embeddings"):
            await client.embed_mixed([mixed("a cat", CAT)])
    assert sent == [] and ledger.records == [] and client.budget.spent == 0


def test_providers_that_fuse_are_cohere_voyage_and_local() -> None:
    fusing = {n for n, p in PROVIDERS.items() if "mixed_embedding" in p.kinds}
    assert fusing == {"cohere", "voyage", "local"}
    assert "mixed_embedding" in PROVIDERS["cohere"].kinds_for("embed-v4.0")


# -- the real client against a loopback server that bills like Voyage -----------------

VOYAGE_PRICE = PriceTable.default().lookup("voyage", "voyage-multimodal-3")


class VoyageStandIn:
    """``POST /multimodalembeddings`` billing text tokens (words) and clamped pixels."""

    def __init__(self, faults: list[int] | None = None) -> None:
        self.faults = list(faults or [])
        self.billed = Decimal(0)
        self.pixels_per_request: list[int] = []

    def __call__(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert path == "/multimodalembeddings"
        if self.faults:
            return self.faults.pop(0), {"detail": "busy"}
        words = pixels = 0
        for inp in body["inputs"]:
            for piece in inp["content"]:
                if piece["type"] == "text":
                    words += len(piece["text"].split())
                else:
                    b64 = piece["image_base64"].partition(",")[2]
                    img = Image.from_bytes(base64.b64decode(b64))
                    pixels += voyage.billed_pixels(*image_size(img))
        self.pixels_per_request.append(pixels)
        self.billed += VOYAGE_PRICE.cost(Usage(input_tokens=words, image_pixels=pixels))
        data = [
            {"object": "embedding", "embedding": vector(i), "index": i}
            for i in range(len(body["inputs"]))
        ]
        usage = {"text_tokens": words, "image_pixels": pixels, "total_tokens": words}
        return 200, {"object": "list", "data": data, "model": body["model"], "usage": usage}


def voyage_client(url: str, **kw: Any) -> TeacherClient:
    return TeacherClient(
        "voyage:voyage-multimodal-3",
        api_key="pa-secret-key-123",
        base_url=url,
        price=VOYAGE_PRICE,
        **kw,
    )


async def test_voyage_mixed_is_bought_once_billed_and_cached() -> None:
    stand_in = VoyageStandIn()
    cache, ledger = MemoryCache(), ListLedger()
    reqs = [mixed("a red shoe", CAT), mixed(DOG, "a brown dog"), mixed(CAT, "a red shoe")]
    with loopback(stand_in) as server:
        async with voyage_client(server.url, cache=cache, ledger=ledger) as client:
            first = await client.embed_mixed(reqs)
            again = await client.embed_mixed(reqs)
    assert len(server.requests) == 1  # one request for three inputs; the second call is hits
    assert [r.cached for r in first] == [False] * 3 and all(r.cached for r in again)
    assert [r.vector.tolist() for r in again] == [r.vector.tolist() for r in first]
    assert client.budget.spent == stand_in.billed > 0
    assert client.budget.overruns == 0
    [bought] = [r for r in ledger.records if r.outcome == "ok"]
    assert bought.kind == "mixed_embedding" and bought.items == 3
    assert Decimal(bought.cost_usd) == stand_in.billed <= Decimal(bought.reserved_usd)


async def test_voyage_mixed_is_retried_after_a_503_and_billed_once() -> None:
    stand_in = VoyageStandIn(faults=[503])
    with loopback(stand_in) as server:
        async with voyage_client(server.url) as client:
            [out] = await client.embed_mixed([mixed("a cat", CAT)])
    assert len(server.requests) == 2 and client.stats.retries == 1
    assert out.dim == 8 and client.budget.spent == stand_in.billed


async def test_voyage_mixed_over_budget_sends_nothing() -> None:
    stand_in = VoyageStandIn()
    with loopback(stand_in) as server:
        async with voyage_client(server.url, budget=Budget("0.0000001")) as client:
            with pytest.raises(BudgetExceededError):
                await client.embed_mixed([mixed("a cat", CAT)])
    assert server.requests == [] and stand_in.billed == 0


async def test_voyage_mixed_requests_are_cut_by_the_320k_token_cap() -> None:
    # 30 inputs of 4 images: each image may count 3,572 tokens, so 120 images cannot go
    # in one request (428,640 > 320,000); no request holds more than 89 images.
    stand_in = VoyageStandIn()
    reqs = [
        mixed(f"item {i}", *(image((8, 8), seed=10 * i + j) for j in range(4))) for i in range(30)
    ]
    with loopback(stand_in) as server:
        async with voyage_client(server.url) as client:
            out = await client.embed_mixed(reqs)
    assert len(out) == 30
    per_request = [sum(len(i["content"]) - 1 for i in body["inputs"]) for body in server.bodies]
    assert len(per_request) == 2 and sum(per_request) == 120
    assert max(per_request) * voyage.IMAGE_TOKENS <= voyage.MAX_REQUEST_TOKENS


async def test_voyage_mixed_requests_are_rate_limited() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, clock=clock, sleep=clock.sleep)
    stand_in = VoyageStandIn()
    reqs = [mixed(f"a cat {i}", CAT) for i in range(3)]
    with loopback(stand_in) as server:
        async with voyage_client(server.url, limiter=limiter, batch_size=1) as client:
            await client.embed_mixed(reqs)
    assert len(server.requests) == 3
    assert clock.now - 1000.0 >= 2.0  # three requests at 60/min: paced a second apart


async def test_cohere_mixed_requests_are_cut_by_the_image_bytes_cap() -> None:
    # 3 inputs of two ~3 MB photos: 18 MB of files cannot go in one request (v4 caps the
    # images of a call at 20 MB, read as base64: ~15 MB of files).
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = body_of(request)
        sent.append(body)
        n = len(body["inputs"])
        return httpx.Response(
            200,
            json={
                "id": f"r{len(sent)}",
                # embed-v4.0's default length, which the client expects of it
                "embeddings": {"float": [vector(i, 1536) for i in range(n)]},
                "meta": {"billed_units": {"images": 2 * n, "image_tokens": 2 * n * 6000}},
            },
        )

    reqs = [
        mixed(f"photo {i}", image((1000, 1000), seed=2 * i), image((1000, 1000), seed=2 * i + 1))
        for i in range(3)
    ]
    sizes = [sum(len(p.data) for p in r.images) for r in reqs]
    assert sum(sizes) > cohere.MAX_REQUEST_IMAGE_BYTES >= max(sizes)
    price = PriceTable.default().lookup("cohere", "embed-v4.0")
    async with client_for("cohere:embed-v4.0", handler, price=price) as client:
        out = await client.embed_mixed(reqs)
    assert len(out) == 3 and len(sent) == 2
    for body in sent:
        urls = [
            p["image_url"]["url"] for i in body["inputs"] for p in i["content"] if "image_url" in p
        ]
        assert sum(len(u) for u in urls) <= 20 * 1024 * 1024
    assert client.budget.overruns == 0

"""Issue 15's expected options: Anthropic's workspace usage-limit 400 is a quota error,
Cohere's output_dimension / embedding_types are checked options, Nomic's texts-only
dimensionality is refused, Vertex warns about its 32-token text limit and paces itself
at its lowest documented quota by default."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import httpx
import pytest

from tests.providers.conftest import (
    COHERE_SPEC,
    body_of,
    call_spec,
    image,
    nosleep,
    shared_spec,
    validator_for,
    vector,
)
from vlmclient import (
    AnswerRequest,
    ConfigurationError,
    ImageEmbeddingRequest,
    Price,
    QuotaExceededError,
    TeacherClient,
    TextEmbeddingRequest,
)
from vlmclient.providers import cohere, nomic, vertex
from vlmclient.retry import RetryPolicy

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))


def _client(teacher: str, handler, **kw) -> TeacherClient:  # type: ignore[no-untyped-def]
    kw.setdefault("price", PRICE)
    return TeacherClient(
        teacher,
        api_key="test-key",
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(sleep=nosleep),
        **kw,
    )


async def test_anthropic_usage_limit_400_is_a_quota_error_and_not_retried() -> None:
    sent: list[httpx.Request] = []
    message = (
        "You have reached your specified API usage limits. You will regain access on "
        "2026-12-01 at 00:00 UTC."
    )

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(
            400,
            json={"type": "error", "error": {"type": "invalid_request_error", "message": message}},
        )

    item = AnswerRequest(image=image(), prompt="?", max_output_tokens=4)
    async with _client("anthropic:claude-haiku-4-5", handler) as client:
        with pytest.raises(QuotaExceededError, match="regain access on 2026-12-01") as info:
            await client.answer([item])
    assert len(sent) == 1 and info.value.status_code == 400
    assert "Anthropic console" in str(info.value)
    assert client.budget.spent == 0


@pytest.mark.parametrize("dim", [256, 1536])
def test_cohere_output_dimension_is_sent_and_conforms(dim: int) -> None:
    items = [TextEmbeddingRequest(text="a cat")]
    spec = call_spec("cohere", "text_embedding", "embed-v4.0", items, {"output_dimension": dim})
    body = body_of(cohere.build_request(spec))
    assert body["output_dimension"] == dim and body["embedding_types"] == ["float"]
    doc = shared_spec(COHERE_SPEC)
    validator_for(
        doc, "#/paths/~1v2~1embed/post/requestBody/content/application~1json/schema"
    ).validate(body)


@pytest.mark.parametrize(
    ("model", "params", "match"),
    [
        ("embed-v4.0", {"output_dimension": 300}, "one of"),
        ("embed-english-v3.0", {"output_dimension": 256}, "fixed size"),
    ],
)
async def test_cohere_bad_output_dimension_sends_nothing(
    model: str, params: dict, match: str
) -> None:
    sent: list[httpx.Request] = []
    async with _client(f"cohere:{model}", sent.append, params=params) as client:  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match=match):
            await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert sent == [] and client.budget.spent == 0 and client.budget.reserved == 0


def test_cohere_embedding_types_keep_float_first() -> None:
    items = [ImageEmbeddingRequest(image=image())]
    spec = call_spec(
        "cohere", "image_embedding", "embed-v4.0", items, {"embedding_types": ["int8"]}
    )
    assert body_of(cohere.build_request(spec))["embedding_types"] == ["float", "int8"]


@pytest.mark.parametrize("kind", ["text_embedding", "image_embedding"])
async def test_nomic_dimensionality_other_than_768_is_refused(kind: str) -> None:
    sent: list[httpx.Request] = []
    async with _client(
        "nomic:nomic-embed-vision-v1.5",
        sent.append,  # type: ignore[arg-type]
        params={"dimensionality": 256},
    ) as client:
        with pytest.raises(ConfigurationError, match="texts only"):
            if kind == "text_embedding":
                await client.embed_texts([TextEmbeddingRequest(text="a cat")])
            else:
                await client.embed_images([ImageEmbeddingRequest(image=image())])
    assert sent == []
    assert nomic.IMAGE_DIM == 768


def test_vertex_warns_when_a_text_may_pass_32_tokens(caplog: pytest.LogCaptureFixture) -> None:
    params = {"project": "p", "location": "us-central1"}
    long_text = "a photo of a " + " ".join(["very"] * 40) + " small dog"
    with caplog.at_level(logging.WARNING, logger="vlmclient"):
        for text in ("a photo of a dog", long_text):
            spec = call_spec(
                "vertex",
                "text_embedding",
                "multimodalembedding@001",
                [TextEmbeddingRequest(text=text)],
                params,
            )
            vertex.build_request(spec)
    assert len(caplog.records) == 1 and "32 tokens" in caplog.text


def test_vertex_paces_at_120_rpm_unless_told_otherwise() -> None:
    env = {"VERTEX_ACCESS_TOKEN": "ya29.test"}
    client = TeacherClient("vertex:multimodalembedding@001", env=env, price=PRICE)
    assert vertex.VERTEX.default_rpm == 120
    assert client.rpm == 120
    faster = TeacherClient("vertex:multimodalembedding@001", env=env, price=PRICE, rpm=600)
    assert faster.rpm == 600
    other = TeacherClient("cohere:embed-v4.0", env={"CO_API_KEY": "k"}, price=PRICE)
    assert other.rpm is None


async def test_cohere_sends_output_dimension_through_the_client() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        return httpx.Response(
            200,
            json={
                "id": "e1",
                "embeddings": {"float": [vector(0, 256)]},
                "meta": {"billed_units": {"input_tokens": 3}},
            },
        )

    async with _client("cohere:embed-v4.0", handler, params={"output_dimension": 256}) as client:
        [result] = await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert result.dim == 256 and bodies[0]["output_dimension"] == 256

"""Every request body the adapters send, validated against the providers' published specs.

OpenAI and Voyage schemas are vendored in tests/fixtures (MIT). The Cohere and
Anthropic specs are read from the shared specs folder when present (skipped otherwise).
"""

from __future__ import annotations

import base64
from decimal import Decimal

import httpx
import jsonschema
import pytest

from tests.providers.conftest import (
    ANTHROPIC_SPEC,
    COHERE_SPEC,
    body_of,
    call_spec,
    image,
    openai_doc,
    shared_spec,
    validator_for,
    voyage_doc,
)
from vlmclient import (
    AnswerRequest,
    Image,
    ImageEmbeddingRequest,
    Price,
    TeacherClient,
    TextEmbeddingRequest,
)
from vlmclient.providers import anthropic, cohere, openai, voyage

TEXTS = ["a photo of a cat", "ein Foto eines Hundes", "写真", "x" * 300]
SIZES = [(16, 16), (64, 48), (640, 480)]


def openai_validator(name: str) -> jsonschema.Draft202012Validator:
    return validator_for(openai_doc(), f"#/components/schemas/{name}")


# -- OpenAI ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["text-embedding-3-small", "text-embedding-3-large"])
@pytest.mark.parametrize("params", [{}, {"dimensions": 256}, {"user": "run-1"}])
def test_openai_embedding_bodies(model: str, params: dict) -> None:
    items = [TextEmbeddingRequest(text=t) for t in TEXTS]
    request = openai.build_request(call_spec("openai", "text_embedding", model, items, params))
    openai_validator("CreateEmbeddingRequest").validate(body_of(request))
    assert request.url.path == "/v1/embeddings"


def test_openai_embedding_largest_batch() -> None:
    n = openai.OPENAI.limit_for("text-embedding-3-small", "text_embedding")
    items = [TextEmbeddingRequest(text=f"t{i}") for i in range(n)]
    spec = call_spec("openai", "text_embedding", "text-embedding-3-small", items)
    openai_validator("CreateEmbeddingRequest").validate(body_of(openai.build_request(spec)))


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4.1-nano", "gpt-5-mini"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
@pytest.mark.parametrize("params", [{}, {"temperature": 0.0, "seed": 1}])
def test_openai_chat_bodies(model: str, fmt: str, params: dict) -> None:
    item = AnswerRequest(image=image((48, 32), fmt), prompt="Which digit?", max_output_tokens=8)
    request = openai.build_request(call_spec("openai", "answer", model, [item], params))
    body = body_of(request)
    openai_validator("CreateChatCompletionRequest").validate(body)
    assert request.headers["authorization"] == "Bearer secret-key-123"


def test_openai_schema_rejects_a_bad_body() -> None:
    with pytest.raises(jsonschema.ValidationError):
        openai_validator("CreateEmbeddingRequest").validate({"model": "m", "input": [], "x": 1})


async def test_openai_answer_round_trip_sends_a_valid_body_and_charges_the_usage() -> None:
    """Through TeacherClient: the body it sends validates, and the bill is the usage."""

    def handler(request: httpx.Request) -> httpx.Response:
        openai_validator("CreateChatCompletionRequest").validate(body_of(request))
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "seven"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 2, "total_tokens": 102},
            },
            headers={"x-request-id": "req_abc"},
        )

    price = Price(usd_per_1m_input_tokens=Decimal("0.15"), usd_per_1m_output_tokens=Decimal("0.60"))
    async with TeacherClient(
        "openai:gpt-4o-mini", api_key="sk-x", price=price, transport=httpx.MockTransport(handler)
    ) as c:
        [ans] = await c.answer([AnswerRequest(image=image(seed=2), prompt="digit?")])
    assert ans.text == "seven" and ans.request_id == "req_abc"
    assert ans.cost_usd == Decimal("0.000016200")
    assert c.budget.spent == 100 * Decimal("0.15") / 1_000_000 + 2 * Decimal("0.60") / 1_000_000


# -- Voyage ---------------------------------------------------------------------------


def voyage_validator() -> jsonschema.Draft202012Validator:
    return validator_for(voyage_doc(), "#/request")


def _check_voyage_pieces(body: dict) -> None:
    # The spec leaves pieces loosely typed; its prose says one key per type and no
    # mixing image_url with image_base64 in a request. Check that too.
    kinds = set()
    for inp in body["inputs"]:
        assert set(inp) == {"content"}
        for piece in inp["content"]:
            kinds.add(piece["type"])
            assert set(piece) == {"type", piece["type"]}
            if piece["type"] == "image_base64":
                head, b64 = piece["image_base64"].split(",", 1)
                assert head in {
                    "data:image/png;base64",
                    "data:image/jpeg;base64",
                    "data:image/webp;base64",
                    "data:image/gif;base64",
                }
                base64.b64decode(b64, validate=True)
    assert not {"image_url", "image_base64"} <= kinds


@pytest.mark.parametrize("model", ["voyage-multimodal-3", "voyage-multimodal-3.5"])
@pytest.mark.parametrize("params", [{}, {"input_type": "document", "truncation": True}])
def test_voyage_image_bodies(model: str, params: dict) -> None:
    items = [
        ImageEmbeddingRequest(image=image(size, fmt, seed=i))
        for i, (size, fmt) in enumerate(zip(SIZES, ["PNG", "JPEG", "BMP"], strict=True))
    ]
    request = voyage.build_request(call_spec("voyage", "image_embedding", model, items, params))
    body = body_of(request)
    voyage_validator().validate(body)
    _check_voyage_pieces(body)
    assert request.url.path == "/v1/multimodalembeddings"


@pytest.mark.parametrize("params", [{}, {"input_type": "query"}])
def test_voyage_text_bodies(params: dict) -> None:
    items = [TextEmbeddingRequest(text=t) for t in TEXTS]
    spec = call_spec("voyage", "text_embedding", "voyage-multimodal-3", items, params)
    body = body_of(voyage.build_request(spec))
    voyage_validator().validate(body)
    _check_voyage_pieces(body)


def test_voyage_schema_rejects_a_bad_body() -> None:
    with pytest.raises(jsonschema.ValidationError):
        voyage_validator().validate({"model": "voyage-multimodal-3", "input_type": "image"})


# -- Cohere (shared spec) -------------------------------------------------------------

COHERE_EMBED = "#/paths/~1v2~1embed/post/requestBody/content/application~1json/schema"


@pytest.mark.parametrize("model", ["embed-v4.0", "embed-english-v3.0", "embed-multilingual-v3.0"])
def test_cohere_image_bodies(model: str) -> None:
    validator = validator_for(shared_spec(COHERE_SPEC), COHERE_EMBED)
    n = cohere.COHERE.limit_for(model, "image_embedding")
    items = [ImageEmbeddingRequest(image=image((32, 32), seed=i)) for i in range(min(n, 3))]
    body = body_of(cohere.build_request(call_spec("cohere", "image_embedding", model, items)))
    validator.validate(body)
    if "v3" in model:
        assert len(body["images"]) == 1 and body["input_type"] == "image"


@pytest.mark.parametrize("model", ["embed-v4.0", "embed-english-v3.0"])
@pytest.mark.parametrize("params", [{}, {"truncate": "END"}])
def test_cohere_text_bodies(model: str, params: dict) -> None:
    validator = validator_for(shared_spec(COHERE_SPEC), COHERE_EMBED)
    items = [TextEmbeddingRequest(text=t) for t in TEXTS]
    spec = call_spec("cohere", "text_embedding", model, items, params)
    body = body_of(cohere.build_request(spec))
    validator.validate(body)


def test_cohere_spec_rejects_a_bad_body() -> None:
    validator = validator_for(shared_spec(COHERE_SPEC), COHERE_EMBED)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"model": "embed-v4.0", "input_type": "photo", "texts": ["x"]})


# -- Anthropic (shared spec) ----------------------------------------------------------

ANTHROPIC_BODY = "#/components/schemas/CreateMessageParams"


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-sonnet-4-6"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
@pytest.mark.parametrize("params", [{}, {"temperature": 0.0, "system": "Answer with one word."}])
def test_anthropic_bodies(model: str, fmt: str, params: dict) -> None:
    validator = validator_for(shared_spec(ANTHROPIC_SPEC), ANTHROPIC_BODY)
    item = AnswerRequest(image=image((40, 30), fmt), prompt="What is this?", max_output_tokens=16)
    request = anthropic.build_request(call_spec("anthropic", "answer", model, [item], params))
    body = body_of(request)
    # The pinned mirror (2024-11) predates extended thinking; the field's shape is
    # anthropic-sdk-python's ThinkingConfigDisabledParam ({"type": "disabled"}).
    assert body.pop("thinking") == {"type": "disabled"}
    validator.validate(body)
    source = body["messages"][0]["content"][0]["source"]
    assert not source["data"].startswith("data:")  # bare base64, no data-URI prefix
    assert Image.from_bytes(base64.b64decode(source["data"])).media_type == source["media_type"]
    assert body["max_tokens"] == 16
    assert request.headers["x-api-key"] == "secret-key-123"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers


def test_anthropic_params_cannot_override_max_tokens() -> None:
    item = AnswerRequest(image=image(), prompt="?", max_output_tokens=7)
    spec = call_spec("anthropic", "answer", "claude-haiku-4-5", [item], {"max_tokens": 4096})
    assert body_of(anthropic.build_request(spec))["max_tokens"] == 7


def test_anthropic_spec_rejects_a_bad_body() -> None:
    validator = validator_for(shared_spec(ANTHROPIC_SPEC), ANTHROPIC_BODY)
    item = AnswerRequest(image=image(), prompt="?", max_output_tokens=7)
    body = body_of(anthropic.build_request(call_spec("anthropic", "answer", "m", [item])))
    body["messages"][0]["content"][0]["source"]["media_type"] = "image/bmp"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(body)

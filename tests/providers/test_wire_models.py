"""Providers without a machine-readable spec: strict pydantic models of the documented
request shapes (extra fields forbidden), and documented responses parsed.

Shapes from the providers' API reference pages (Vertex multimodal embeddings, Gemini
generateContent, Jina embeddings, Nomic image/text endpoints, Bedrock Titan).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tests.providers.conftest import body_of, call_spec, image, vector
from vlmclient import (
    AnswerRequest,
    Image,
    ImageEmbeddingRequest,
    ResponseValidationError,
    TextEmbeddingRequest,
    Usage,
)
from vlmclient.providers import gemini, jina, nomic, vertex

Strict = ConfigDict(extra="forbid")


def _b64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from exc
    if value.startswith("data:"):
        raise ValueError("raw base64 expected, got a data URI")
    return value


# -- Vertex multimodalembedding@001 -----------------------------------------------------


class VertexImage(BaseModel):
    model_config = Strict
    bytesBase64Encoded: str | None = None
    gcsUri: str | None = None
    mimeType: Literal["image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp"] | None

    _b = field_validator("bytesBase64Encoded")(lambda cls, v: v if v is None else _b64(v))


class VertexInstance(BaseModel):
    model_config = Strict
    text: str | None = None
    image: VertexImage | None = None
    video: dict[str, Any] | None = None


class VertexParameters(BaseModel):
    model_config = Strict
    dimension: Literal[128, 256, 512, 1408] | None = None


class VertexPredictRequest(BaseModel):
    model_config = Strict
    instances: list[VertexInstance] = Field(min_length=1, max_length=1)
    parameters: VertexParameters | None = None


VERTEX_PARAMS = {"project": "my-proj", "location": "europe-west4"}


@pytest.mark.parametrize("params", [{}, {"dimension": 512}])
def test_vertex_image_and_text_requests(params: dict) -> None:
    for kind, item in [
        ("image_embedding", ImageEmbeddingRequest(image=image((64, 64), "JPEG"))),
        ("text_embedding", TextEmbeddingRequest(text="a photo of a cat")),
    ]:
        spec = call_spec(
            "vertex", kind, "multimodalembedding@001", [item], {**VERTEX_PARAMS, **params}
        )
        request = vertex.build_request(spec)
        body = VertexPredictRequest.model_validate(body_of(request))
        assert (body.parameters.dimension if body.parameters else None) == params.get("dimension")
        assert str(request.url) == (
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/"
            "europe-west4/publishers/google/models/multimodalembedding@001:predict"
        )
        assert request.headers["authorization"] == "Bearer secret-key-123"


def test_vertex_global_location_has_no_host_prefix() -> None:
    """GOOGLE_CLOUD_LOCATION=global (common for Gemini) named the host
    global-aiplatform.googleapis.com, which does not resolve."""
    spec = call_spec(
        "vertex", "text_embedding", "multimodalembedding@001",
        [TextEmbeddingRequest(text="a cat")], {"project": "my-proj", "location": "global"},
    )  # fmt: skip
    assert str(vertex.build_request(spec).url) == (
        "https://aiplatform.googleapis.com/v1/projects/my-proj/locations/global/publishers/"
        "google/models/multimodalembedding@001:predict"
    )


def test_vertex_model_rejects_extra_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        VertexPredictRequest.model_validate({"instances": [{"text": "x", "bogus": 1}]})


VERTEX_RESPONSE = {
    "predictions": [{"imageEmbedding": vector(1, 16), "textEmbedding": vector(2, 16)}],
    "deployedModelId": "123",
}


def test_vertex_response_parsed_for_each_kind() -> None:
    spec = call_spec(
        "vertex", "image_embedding", "multimodalembedding@001",
        [ImageEmbeddingRequest(image=image())], VERTEX_PARAMS,
    )
    parsed = vertex.parse_response(spec, httpx.Response(200, json=VERTEX_RESPONSE))
    assert parsed.vectors is not None and parsed.vectors[0].tolist() == pytest.approx(vector(1, 16))
    assert parsed.usage == Usage(images=1)
    spec = call_spec(
        "vertex", "text_embedding", "multimodalembedding@001",
        [TextEmbeddingRequest(text="héllo")], VERTEX_PARAMS,
    )
    parsed = vertex.parse_response(spec, httpx.Response(200, json=VERTEX_RESPONSE))
    assert parsed.vectors is not None and parsed.vectors[0].tolist() == pytest.approx(vector(2, 16))
    assert parsed.usage == Usage(characters=5)


def test_vertex_missing_embedding_is_a_billed_validation_error() -> None:
    spec = call_spec(
        "vertex", "text_embedding", "multimodalembedding@001",
        [TextEmbeddingRequest(text="abc")], VERTEX_PARAMS,
    )
    response = httpx.Response(200, json={"predictions": [{"imageEmbedding": [1.0]}]})
    with pytest.raises(ResponseValidationError, match="textEmbedding") as info:
        vertex.parse_response(spec, response)
    assert info.value.usage == Usage(characters=3)


# -- Gemini generateContent -------------------------------------------------------------


class InlineData(BaseModel):
    model_config = Strict
    mime_type: Literal["image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"]
    data: str

    _b = field_validator("data")(lambda cls, v: _b64(v))


class GeminiPart(BaseModel):
    model_config = Strict
    text: str | None = None
    inline_data: InlineData | None = None

    @model_validator(mode="after")
    def _one(self) -> GeminiPart:
        if (self.text is None) == (self.inline_data is None):
            raise ValueError("a part holds exactly one of text, inline_data")
        return self


class GeminiContent(BaseModel):
    model_config = Strict
    role: Literal["user", "model"]
    parts: list[GeminiPart] = Field(min_length=1)


class ThinkingConfig(BaseModel):
    model_config = Strict
    thinkingBudget: int | None = None
    includeThoughts: bool | None = None


class GenerationConfig(BaseModel):
    model_config = Strict
    maxOutputTokens: int = Field(ge=1)
    temperature: float | None = None
    topP: float | None = None
    topK: int | None = None
    candidateCount: int | None = None
    stopSequences: list[str] | None = None
    thinkingConfig: ThinkingConfig | None = None
    responseMimeType: str | None = None


class GenerateContentRequest(BaseModel):
    model_config = Strict
    contents: list[GeminiContent] = Field(min_length=1)
    generationConfig: GenerationConfig
    systemInstruction: GeminiContent | dict[str, Any] | None = None
    safetySettings: list[dict[str, Any]] | None = None


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"temperature": 0.0, "thinkingConfig": {"thinkingBudget": 0}},
        {"systemInstruction": {"parts": [{"text": "Answer in one word."}]}},
    ],
)
def test_gemini_requests(fmt: str, params: dict) -> None:
    item = AnswerRequest(image=image((50, 40), fmt), prompt="Which digit?", max_output_tokens=9)
    spec = call_spec("gemini", "answer", "gemini-2.5-flash", [item], params)
    request = gemini.build_request(spec)
    body = GenerateContentRequest.model_validate(body_of(request))
    assert body.generationConfig.maxOutputTokens == 9
    assert request.url.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "secret-key-123"
    assert "key=" not in str(request.url)  # the key never goes into the URL (logs)


GEMINI_RESPONSE = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [{"text": "thinking...", "thought": True}, {"text": "seven"}],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 271,
        "candidatesTokenCount": 2,
        "thoughtsTokenCount": 40,
        "totalTokenCount": 313,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 13},
            {"modality": "IMAGE", "tokenCount": 258},
        ],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "resp-abc",
}


def test_gemini_response_parsed_thoughts_billed_as_output() -> None:
    item = AnswerRequest(image=image(), prompt="Which digit?", max_output_tokens=64)
    spec = call_spec("gemini", "answer", "gemini-2.5-flash", [item])
    parsed = gemini.parse_response(spec, httpx.Response(200, json=GEMINI_RESPONSE))
    assert parsed.texts == ["seven"]  # thought parts are not the answer
    assert parsed.usage == Usage(input_tokens=271, output_tokens=42)
    assert parsed.request_id == "resp-abc"


def test_gemini_blocked_prompt_is_a_billed_validation_error() -> None:
    item = AnswerRequest(image=image(), prompt="?", max_output_tokens=8)
    spec = call_spec("gemini", "answer", "gemini-2.5-flash", [item])
    body = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 270, "totalTokenCount": 270},
    }
    with pytest.raises(ResponseValidationError, match="SAFETY") as info:
        gemini.parse_response(spec, httpx.Response(200, json=body))
    assert info.value.usage == Usage(input_tokens=270)


# -- Jina embeddings --------------------------------------------------------------------


class JinaInput(BaseModel):
    model_config = Strict
    text: str | None = None
    image: str | None = None

    @model_validator(mode="after")
    def _one(self) -> JinaInput:
        if (self.text is None) == (self.image is None):
            raise ValueError("an input holds exactly one of text, image")
        if self.image is not None:
            _b64(self.image)
        return self


class JinaRequest(BaseModel):
    model_config = Strict
    model: str
    input: list[JinaInput] = Field(min_length=1)
    embedding_type: Literal["float", "base64", "binary", "ubinary"] | None = None
    dimensions: int | None = Field(default=None, ge=64, le=1024)
    normalized: bool | None = None
    task: str | None = None


@pytest.mark.parametrize("params", [{}, {"dimensions": 512, "normalized": True}])
def test_jina_requests(params: dict) -> None:
    images = [ImageEmbeddingRequest(image=image((700, 300), "BMP", seed=i)) for i in range(3)]
    for kind, items in [
        ("image_embedding", images),
        ("text_embedding", [TextEmbeddingRequest(text=t) for t in ["a cat", "un chien"]]),
    ]:
        request = jina.build_request(call_spec("jina", kind, "jina-clip-v2", items, params))
        body = JinaRequest.model_validate(body_of(request))
        assert len(body.input) == len(items)
        assert request.url.path == "/v1/embeddings"
    # images were prepared: at most 512 px on the long edge
    sent = body_of(jina.build_request(call_spec("jina", "image_embedding", "jina-clip-v2", images)))
    decoded = Image.from_bytes(base64.b64decode(sent["input"][0]["image"]))
    from vlmclient.providers.images import image_size

    assert max(image_size(decoded)) == 512


JINA_RESPONSE = {
    "model": "jina-clip-v2",
    "object": "list",
    "usage": {"total_tokens": 4010, "prompt_tokens": 4010},
    "data": [
        {"object": "embedding", "index": 1, "embedding": vector(11)},
        {"object": "embedding", "index": 0, "embedding": vector(10)},
    ],
}


def test_jina_response_parsed_in_index_order() -> None:
    items = [ImageEmbeddingRequest(image=image(seed=0)), ImageEmbeddingRequest(image=image(seed=1))]
    spec = call_spec("jina", "image_embedding", "jina-clip-v2", items)
    parsed = jina.parse_response(spec, httpx.Response(200, json=JINA_RESPONSE))
    assert parsed.vectors is not None
    assert parsed.vectors[0].tolist() == pytest.approx(vector(10))
    assert parsed.usage == Usage(input_tokens=4010)


# -- Nomic ------------------------------------------------------------------------------


class NomicTextRequest(BaseModel):
    model_config = Strict
    texts: list[str] = Field(min_length=1)
    model: Literal["nomic-embed-text-v1.5", "nomic-embed-text-v1"]
    task_type: Literal["search_document", "search_query", "clustering", "classification"]
    dimensionality: int | None = None
    long_text_mode: Literal["truncate", "mean"] | None = None


class NomicImagePart(BaseModel):
    model_config = Strict
    filename: str
    content_type: Literal["image/png", "image/jpeg", "image/webp"]
    data: bytes


class NomicImageForm(BaseModel):
    model_config = Strict
    model: Literal["nomic-embed-vision-v1.5", "nomic-embed-vision-v1"]
    images: list[NomicImagePart] = Field(min_length=1)


def parse_multipart(request: httpx.Request) -> NomicImageForm:
    """Decode a multipart/form-data body with the standard library's MIME parser."""
    raw = (
        f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode() + request.read()
    )
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert msg.is_multipart()
    fields: dict[str, Any] = {"images": []}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename():
            fields.setdefault(name, []).append(
                {
                    "filename": part.get_filename(),
                    "content_type": part.get_content_type(),
                    "data": part.get_payload(decode=True),
                }
            )
        else:
            assert name not in fields, f"form field {name} repeated"
            fields[name] = part.get_payload(decode=True).decode()
    return NomicImageForm.model_validate(fields)


def test_nomic_image_request_is_multipart_with_model_and_files() -> None:
    items = [
        ImageEmbeddingRequest(image=image((900, 600), fmt, seed=i))
        for i, fmt in enumerate(["PNG", "JPEG", "GIF"])
    ]
    spec = call_spec("nomic", "image_embedding", "nomic-embed-vision-v1.5", items)
    request = nomic.build_request(spec)
    assert request.url.path == "/v1/embedding/image"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    form = parse_multipart(request)
    assert form.model == "nomic-embed-vision-v1.5"
    assert len(form.images) == 3
    for part, item in zip(form.images, spec.items, strict=True):
        assert part.data == item.image.data  # type: ignore[union-attr]
    assert form.images[2].content_type in {"image/png", "image/jpeg"}  # GIF re-encoded


@pytest.mark.parametrize("params", [{}, {"task_type": "search_document", "dimensionality": 768}])
def test_nomic_text_request_goes_to_the_text_model(params: dict) -> None:
    items = [TextEmbeddingRequest(text=t) for t in ["a cat", "a dog"]]
    spec = call_spec("nomic", "text_embedding", "nomic-embed-vision-v1.5", items, params)
    request = nomic.build_request(spec)
    assert request.url.path == "/v1/embedding/text"
    body = NomicTextRequest.model_validate(body_of(request))
    assert body.model == "nomic-embed-text-v1.5"
    assert body.task_type == params.get("task_type", "search_query")


def test_nomic_text_model_param_is_not_sent() -> None:
    items = [TextEmbeddingRequest(text="a cat")]
    spec = call_spec(
        "nomic", "text_embedding", "nomic-embed-vision-v1.5", items,
        {"text_model": "nomic-embed-text-v1"},
    )
    body = NomicTextRequest.model_validate(body_of(nomic.build_request(spec)))
    assert body.model == "nomic-embed-text-v1"


def test_nomic_responses_parsed() -> None:
    items = [ImageEmbeddingRequest(image=image(seed=i)) for i in range(2)]
    spec = call_spec("nomic", "image_embedding", "nomic-embed-vision-v1.5", items)
    body = {
        "embeddings": [vector(1, 768), vector(2, 768)],
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
        "model": "nomic-embed-vision-v1.5",
    }
    parsed = nomic.parse_response(spec, httpx.Response(200, json=body))
    assert parsed.vectors is not None and len(parsed.vectors) == 2
    assert parsed.vectors[0].shape == (768,)
    assert parsed.usage == Usage(images=2)
    spec = call_spec(
        "nomic", "text_embedding", "nomic-embed-vision-v1.5", [TextEmbeddingRequest(text="x")]
    )
    body = {
        "embeddings": [vector(3, 768)],
        "usage": {"prompt_tokens": 6, "total_tokens": 6},
        "model": "nomic-embed-text-v1.5",
    }
    assert nomic.parse_response(spec, httpx.Response(200, json=body)).usage == Usage(
        input_tokens=6
    )

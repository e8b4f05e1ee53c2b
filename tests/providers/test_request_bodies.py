"""Request bodies written with pre-encoded parts (a text escaped once for key and body,
data-URI arrays without json's escaping scan) are byte for byte what ``json.dumps`` of
the adapter's body gives, whatever parameters replace or add."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from tests.conftest import png_bytes
from vlmclient import Image, ImageEmbeddingRequest, TextEmbeddingRequest
from vlmclient.providers import get_provider
from vlmclient.providers.base import CallSpec, Item
from vlmclient.providers.cohere import embed_body
from vlmclient.providers.openai import embedding_body

TEXTS = [
    TextEmbeddingRequest(text=t)
    for t in ("a cat", 'quotes " and \\', "ünïcödé \u2028 ✓", "control\x01\x1f", "x" * 3000)
]
IMAGES = [
    ImageEmbeddingRequest(image=Image(data=png_bytes(i), media_type="image/png"))
    for i in range(3)
]
# a media type no real image has, that JSON must escape: written the plain way (built
# unvalidated: an Image refuses a type its bytes contradict)
ODD = [
    ImageEmbeddingRequest.model_construct(
        image=Image.model_construct(data=png_bytes(9), media_type='image/"png"')
    )
]
PARAMS: list[dict[str, Any]] = [
    {},
    {"dimensions": 8},
    {"input": ["replaced"]},
    {"images": ["replaced"], "texts": ["replaced"]},
    {"encoding_format": "float"},
]


def _spec(kind: str, items: list[Item], params: dict[str, Any]) -> CallSpec:
    return CallSpec(kind, "embed-v4.0", items, "http://127.0.0.1:1/v1", SecretStr("k"), params)  # type: ignore[arg-type]


@pytest.mark.parametrize("params", PARAMS)
def test_openai_embedding_body_is_what_json_dumps_writes(params: dict[str, Any]) -> None:
    spec = _spec("text_embedding", list(TEXTS), params)
    sent = get_provider("openai").build_request(spec).content
    assert sent == json.dumps(embedding_body(spec), separators=(",", ":")).encode()


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize(
    ("provider", "vector_type"), [("cohere", "float"), ("local", "base64")]
)
@pytest.mark.parametrize(
    ("kind", "items"),
    [("image_embedding", IMAGES), ("image_embedding", ODD), ("text_embedding", TEXTS)],
)
def test_cohere_format_body_is_what_json_dumps_writes(
    provider: str, vector_type: str, kind: str, items: list[Item], params: dict[str, Any]
) -> None:
    params = {k: v for k, v in params.items() if k != "encoding_format"}
    spec = _spec(kind, list(items), params)
    sent = get_provider(provider).build_request(spec).content
    want = json.dumps(embed_body(spec, vector_type), separators=(",", ":")).encode()
    assert sent == want

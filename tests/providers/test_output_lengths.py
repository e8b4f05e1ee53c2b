"""The vector length params Titan and Vertex take, each a fixed set (reference notes:
Titan ``embeddingConfig.outputEmbeddingLength`` 256|384|1024; Vertex
``multimodalembedding@001`` ``parameters.dimension`` 128|256|512|1408).

Until 2026-12-07 any value was sent (Titan's ``dimension`` alias 1408, a Vertex
``dimension`` of 1000): the provider refuses it (a 400, not billed), so every image of a
harvest went out alone and came back refused, and Titan's ``"abc"`` was a bare
``ValueError``. Now such a value is a ConfigurationError when the client is made:
nothing is reserved or sent. A documented value is sent as a number.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.providers.conftest import image
from tests.providers.loopback import loopback
from vlmclient import ConfigurationError, ImageEmbeddingRequest, TeacherClient

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "AWS_REGION": "eu-central-1",
}
TITAN = ("titan:amazon.titan-embed-image-v1", "", {})
VERTEX = ("vertex:multimodalembedding@001", "/v1", {"project": "p-1", "location": "us-central1"})


def answer(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Titan's or Vertex's answer at the length asked for; a 400 for any other length."""
    if path.endswith(":predict"):
        dim = body.get("parameters", {}).get("dimension", 1408)
        if dim not in (128, 256, 512, 1408):
            return 400, {"error": {"code": 400, "message": "bad dimension",
                                   "status": "INVALID_ARGUMENT"}}
        return 200, {"predictions": [{"imageEmbedding": [0.5] * dim}]}
    dim = body.get("embeddingConfig", {}).get("outputEmbeddingLength", 1024)
    if dim not in (256, 384, 1024):
        return 400, {"message": "Malformed input request: bad outputEmbeddingLength"}
    return 200, {"embedding": [0.5] * dim, "inputTextTokenCount": 0}


@pytest.mark.parametrize(
    ("teacher", "params"),
    [
        (TITAN, {"dimension": 1408}),
        (TITAN, {"outputEmbeddingLength": 512}),
        (TITAN, {"outputEmbeddingLength": "abc"}),
        (TITAN, {"outputEmbeddingLength": True}),
        (VERTEX, {"dimension": 1000}),
        (VERTEX, {"dimension": "wide"}),
    ],
)
async def test_a_length_outside_the_set_sends_nothing(
    teacher: tuple[str, str, dict[str, Any]],
    params: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    name, suffix, setup = teacher
    with loopback(answer) as server, pytest.raises(ConfigurationError, match="one of"):
        async with TeacherClient(
            name, api_key="k", base_url=server.url + suffix, params={**setup, **params}
        ) as client:
            await client.embed_images([ImageEmbeddingRequest(image=image())])
    assert server.requests == []


@pytest.mark.parametrize(
    ("teacher", "params", "dim"),
    [
        (TITAN, {"dimension": 384}, 384),
        (TITAN, {"outputEmbeddingLength": "256"}, 256),
        (VERTEX, {"dimension": 128}, 128),
        (VERTEX, {"dimension": "512"}, 512),
    ],
)
async def test_a_documented_length_is_sent_as_a_number(
    teacher: tuple[str, str, dict[str, Any]],
    params: dict[str, Any],
    dim: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    name, suffix, setup = teacher
    with loopback(answer) as server:
        async with TeacherClient(
            name, api_key="k", base_url=server.url + suffix, params={**setup, **params}
        ) as client:
            [got] = await client.embed_images([ImageEmbeddingRequest(image=image())])
    assert got.dim == dim and len(server.requests) == 1

"""Cohere Embed v3 takes images only with ``input_type: "image"`` (the v2 embed spec's
image example; any other input type is a 400). A library caller who set
``params={"input_type": "search_document"}`` for its texts had it applied to images too,
so every v3 image request failed. The adapter now keeps ``image`` for v3 images and the
caller's input type everywhere else. A loopback server answers like Cohere."""

from __future__ import annotations

from typing import Any

import pytest

from tests.providers.conftest import image, nosleep
from tests.providers.loopback import loopback
from vlmclient import Budget, ImageEmbeddingRequest, TeacherClient, TextEmbeddingRequest
from vlmclient.prices import load_prices
from vlmclient.retry import RetryPolicy


def like_cohere(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    images = body.get("images") or []
    if images and body["model"].endswith("v3.0") and body.get("input_type") != "image":
        return 400, {"message": "invalid request: input_type must be image for images"}
    n = len(images or body.get("texts") or [])
    units = {"images": n} if images else {"input_tokens": 3 * n}
    return 200, {
        "id": "emb-1",
        # embed-v4.0's default length, which the client expects of it
        "embeddings": {"float": [[0.1 * (i + 1), 0.2, 0.3] * 512 for i in range(n)]},
        "meta": {"billed_units": units},
    }


@pytest.mark.parametrize("callers", ["search_document", "search_query"])
@pytest.mark.parametrize(
    ("model", "image_type"),
    [("embed-english-v3.0", "image"), ("embed-v4.0", "search_document")],
)
async def test_a_callers_input_type_does_not_break_v3_images(
    model: str, image_type: str, callers: str
) -> None:
    """v4 images too keep ``search_document``: a caller's ``search_query`` (meant for the
    class texts) bought every v4 image vector as a query until 2026-12-06: billed,
    cached and wrong for what harvest and training do with image vectors."""
    with loopback(like_cohere) as server:
        client = TeacherClient(
            f"cohere:{model}",
            api_key="co-test-input-type",
            base_url=server.url,
            prices=load_prices(),
            params={"input_type": callers},
            budget=Budget("1.00"),
            retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        )
        async with client:
            vectors = await client.embed_images([ImageEmbeddingRequest(image=image((96, 96)))])
            texts = await client.embed_texts([TextEmbeddingRequest(text="a photo of a seven")])
    assert len(vectors) == 1 and len(texts) == 1
    image_body, text_body = server.bodies
    assert image_body["input_type"] == image_type
    assert text_body["input_type"] == callers  # the caller's, for texts

"""Wire formats of the teacher server (hash backend, real HTTP on 127.0.0.1)."""

from __future__ import annotations

import base64
from decimal import Decimal

import httpx
import numpy as np
import pytest

from distill.server import HashBackend, Pricing
from tests.server.helpers import auth, data_uri, png

COHERE_KEYS = {"id", "embeddings", "meta", "response_type"}


def test_cohere_images_shape_and_billed_units(serve, client: httpx.Client) -> None:
    url = serve(pricing=Pricing(usd_per_image=Decimal("0.001")))
    r = client.post(
        url + "/v2/embed",
        json={
            "model": "embed-v4.0",
            "input_type": "image",
            "embedding_types": ["float"],
            "images": [data_uri(png(1)), data_uri(png(2), "image/png")],
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= COHERE_KEYS
    assert body["response_type"] == "embeddings_by_type"
    assert r.headers["x-request-id"] == body["id"]
    vecs = np.asarray(body["embeddings"]["float"])
    assert vecs.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert body["meta"]["api_version"] == {"version": "2"}
    assert body["meta"]["billed_units"] == {"images": 2, "input_tokens": 0}
    assert body["images"][0] == {"width": 16, "height": 20, "format": "png", "bit_depth": 8}
    # the same bytes give the same vector; different bytes a different one
    again = client.post(
        url + "/v2/embed",
        json={"model": "m", "input_type": "image", "images": [data_uri(png(1))]},
    ).json()
    np.testing.assert_allclose(again["embeddings"]["float"][0], vecs[0], rtol=1e-6)
    assert not np.allclose(vecs[0], vecs[1])
    bill = client.get(url + "/admin/billing").json()
    assert bill["requests"] == 2 and bill["images"] == 3
    assert Decimal(bill["usd"]) == Decimal("0.003")
    assert bill["billed_request_ids"] == [body["id"], again["id"]]


def test_cohere_texts_and_inputs(serve, client: httpx.Client) -> None:
    url = serve(pricing=Pricing(usd_per_1m_input_tokens=Decimal("1"), usd_per_image=Decimal(0)))
    r = client.post(
        url + "/v2/embed",
        json={"model": "m", "input_type": "search_query", "texts": ["a photo of a cat", "dog"]},
    )
    body = r.json()
    assert r.status_code == 200 and set(body) >= COHERE_KEYS
    assert body["texts"] == ["a photo of a cat", "dog"]
    assert body["meta"]["billed_units"] == {"images": 0, "input_tokens": 6}
    assert len(body["embeddings"]["float"]) == 2

    mixed = {
        "content": [
            {"type": "text", "text": "a red square"},
            {"type": "image_url", "image_url": {"url": data_uri(png(3))}},
        ]
    }
    only_text = {"content": [{"type": "text", "text": "a red square"}]}
    r = client.post(
        url + "/v2/embed",
        json={"model": "m", "input_type": "search_document", "inputs": [mixed, only_text]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"]["billed_units"] == {"images": 1, "input_tokens": 6}
    fused, text = np.asarray(body["embeddings"]["float"])
    assert abs(np.linalg.norm(fused) - 1) < 1e-5
    assert 0.3 < float(fused @ text) < 0.99  # the fused vector is part text, part image
    assert Decimal(client.get(url + "/admin/billing").json()["usd"]) == Decimal("0.000012")


def test_cohere_validation_errors_use_cohere_envelope(serve, client: httpx.Client) -> None:
    url = serve()
    cases = [
        {"model": "m", "texts": ["x"]},  # input_type missing
        {"model": "m", "input_type": "nope", "texts": ["x"]},
        {"model": "m", "input_type": "image"},  # nothing to embed
        {"model": "m", "input_type": "image", "texts": ["x"], "images": [data_uri(png(1))]},
        {"model": "m", "input_type": "search_query", "texts": ["x"] * 97},
        {"model": "m", "input_type": "image", "images": ["https://example.com/cat.png"]},
        {"model": "m", "input_type": "image", "images": ["data:image/png;base64,bm90IGFuIGltYWdl"]},
        {"model": "m", "input_type": "search_query", "texts": ["x"], "embedding_types": ["int8"]},
        {"input_type": "search_query", "texts": ["x"]},
    ]
    for body in cases:
        r = client.post(url + "/v2/embed", json=body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()
        assert set(err) == {"id", "message"} and err["message"]
        assert r.headers["x-request-id"] == err["id"]
    r = client.post(url + "/v2/embed", content=b"{not json")
    assert r.status_code == 400
    assert client.get(url + "/admin/billing").json()["requests"] == 0


def test_output_dimension_shortens_and_renormalises(serve, client: httpx.Client) -> None:
    url = serve()
    body = {"model": "m", "input_type": "search_query", "texts": ["x"], "output_dimension": 128}
    vec = np.asarray(client.post(url + "/v2/embed", json=body).json()["embeddings"]["float"][0])
    assert vec.shape == (128,) and abs(np.linalg.norm(vec) - 1) < 1e-5
    body["output_dimension"] = 4096
    assert client.post(url + "/v2/embed", json=body).status_code == 400


def test_openai_embeddings_float_and_base64(serve, client: httpx.Client) -> None:
    url = serve(backend=HashBackend(dim=64))
    r = client.post(url + "/v1/embeddings", json={"model": "te", "input": ["hello world", "cat"]})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["model"] == "te"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 64 for d in body["data"])
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert r.headers["x-request-id"].startswith("req_")

    r = client.post(
        url + "/v1/embeddings",
        json={"model": "te", "input": "hello world", "encoding_format": "base64"},
    )
    b64 = r.json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(b64), dtype="<f4")
    np.testing.assert_allclose(decoded, body["data"][0]["embedding"], rtol=1e-6)

    # infinity-style image extension: images billed as prompt tokens
    r = client.post(
        url + "/v1/embeddings",
        json={"model": "te", "input": [data_uri(png(5))], "modality": "image"},
    )
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 85

    r = client.post(url + "/v1/embeddings", json={"model": "te", "input": [1, 2, 3]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]


def test_openai_sdk_parses_embeddings(serve) -> None:
    """The official client (default base64 encoding) reads our responses."""
    openai = pytest.importorskip("openai")

    url = serve(backend=HashBackend(dim=32))
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="test-token-0123456789", max_retries=0)
    try:
        out = sdk.embeddings.create(model="te", input=["a", "b c"])
    finally:
        sdk.close()
    assert len(out.data) == 2 and len(out.data[0].embedding) == 32
    assert out.usage.prompt_tokens == 3


def _chat(prompt: str, *images: bytes, **extra) -> dict:
    content: list[dict] = [{"type": "text", "text": prompt}]
    content += [{"type": "image_url", "image_url": {"url": data_uri(i)}} for i in images]
    return {"model": "vlm", "messages": [{"role": "user", "content": content}], **extra}


def test_chat_completion_shape_usage_and_options(serve, client: httpx.Client) -> None:
    prices = Pricing(usd_per_1m_input_tokens=Decimal("2"), usd_per_1m_output_tokens=Decimal("8"))
    url = serve(pricing=prices)
    r = client.post(
        url + "/v1/chat/completions",
        json=_chat("What is shown? Options: cat, dog, car", png(1), max_completion_tokens=16),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "vlm" and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] in {"cat", "dog", "car"}
    # words and punctuation: "What is shown ? Options : cat , dog , car" = 11, + 85 per image
    usage = body["usage"]
    assert usage["prompt_tokens"] == 11 + 85
    assert usage["completion_tokens"] == 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # deterministic: the same question gets the same answer
    again = client.post(
        url + "/v1/chat/completions", json=_chat("What is shown? Options: cat, dog, car", png(1))
    ).json()
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"]
    bill = client.get(url + "/admin/billing").json()
    assert bill["input_tokens"] == 192 and bill["output_tokens"] == 2
    assert Decimal(bill["usd"]) == (192 * Decimal(2) + 2 * Decimal(8)) / 1_000_000


_remote_image_chat = {
    "model": "vlm",
    "messages": [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}],
        }
    ],
}


def test_chat_truncates_to_max_tokens_and_validates(serve, client: httpx.Client) -> None:
    url = serve()
    r = client.post(url + "/v1/chat/completions", json=_chat("hi there", max_tokens=2))
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "No image"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2
    bad = [
        {"model": "vlm", "messages": []},
        {"model": "vlm", "messages": [{"role": "assistant", "content": "x"}]},
        _chat("x", stream=True),
        _remote_image_chat,
    ]
    for b in bad:
        r = client.post(url + "/v1/chat/completions", json=b)
        assert r.status_code == 400 and "error" in r.json(), b


def test_model_name_enforced_when_configured(serve, client: httpx.Client) -> None:
    url = serve(model_name="pseudo-clip")
    ok = client.post(url + "/v1/embeddings", json={"model": "pseudo-clip", "input": "x"})
    assert ok.status_code == 200
    r = client.post(url + "/v1/embeddings", json={"model": "gpt-4o", "input": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_healthz_and_info(serve) -> None:
    url = serve()
    assert httpx.get(url + "/healthz").json()["status"] == "ok"  # no token needed
    info = httpx.get(url + "/admin/info", headers=auth()).json()
    assert info["backend"] == "hash" and info["dim"] == 384
    assert info["pricing"]["usd_per_image"] == "0.0001"

"""Cache keys, through the builder the client really uses (``item_cache_key`` and
``TeacherClient.cache_key``): every input that changes the answer changes the key, the
endpoint included; the default endpoint keeps the keys caches were written with; no
secret ever reaches a key; file names do not matter.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from cache.keys import KeyTemplate, ascii_json_string, canonical_json, make_key
from tests.conftest import make_image_requests
from vlmclient import (
    AnswerRequest,
    Image,
    ImageEmbeddingRequest,
    TeacherClient,
    TextEmbeddingRequest,
)
from vlmclient.keys import content_cache_key, endpoint_id, item_cache_key, key_base
from vlmclient.providers import get_provider

COHERE = get_provider("cohere")
OPENAI = get_provider("openai")
IMAGE = make_image_requests(2)[0].image
OTHER_IMAGE = make_image_requests(2)[1].image

# The keys of the built-in default endpoints as they were before the endpoint was keyed:
# caches written then must still be found (and not paid for again).
PINNED = {
    ("cohere", "embed-v4.0"): (
        "7fe4a5b06a68109da6c416c931e2f49990bc585226dfa918ede286a95fd421c4",
        "52ec8c3b888acb75844af51ab2eaa458cdf7aee97f1dbc26ffce581a2917f05d",
    ),
    ("openai", "text-embedding-3-small"): (
        "27927aa0ea7a9b9e834206d610ab09454489688dbf2e110bbff71d5e20d4e639",
        "ee7ee1aa1aa05046a411b4f5764322513e5e764861df5ed66a337aef2a94391c",
    ),
    ("local", "hash"): (
        "b570b8c619183e1c1426ddfa476c89895a970ce47e9181a75a77f3ea35867442",
        "f18af8fe715237f9d917e7e4f1e92fc92632ef2776c5ac044a38e31635d6a599",
    ),
}
CAT = TextEmbeddingRequest(text="a photo of a cat")


@pytest.mark.parametrize(("provider", "model"), sorted(PINNED))
@pytest.mark.parametrize("base_url", [None, "default-url", "default-url/", "namespace"])
def test_the_default_endpoint_keeps_the_keys_existing_caches_were_written_with(
    provider: str, model: str, base_url: str | None
) -> None:
    p = get_provider(provider)
    namespace = "default" if base_url == "namespace" else None
    url = p.default_base_url + ("/" if base_url == "default-url/" else "")
    endpoint = endpoint_id(
        p, url if base_url in ("default-url", "default-url/") else None, namespace
    )
    key, fingerprint = PINNED[(provider, model)]
    assert item_cache_key(p, model, {}, "text_embedding", CAT, endpoint) == key
    assert make_key(key_base(p, model, {}, "fingerprint", endpoint)) == fingerprint


def _answer(**change: Any) -> dict[str, Any]:
    """The inputs of one answer key, with ``change`` applied."""
    inputs: dict[str, Any] = {
        "provider": OPENAI,
        "model": "gpt-4o-mini",
        "params": {"temperature": 0},
        "kind": "answer",
        "item": AnswerRequest(image=IMAGE, prompt="what digit is this?", max_output_tokens=16),
        "base_url": None,
        "namespace": None,
    }
    inputs.update(change)
    return inputs


def _key(inputs: dict[str, Any]) -> str:
    endpoint = endpoint_id(inputs["provider"], inputs["base_url"], inputs["namespace"])
    return item_cache_key(
        inputs["provider"],
        inputs["model"],
        inputs["params"],
        inputs["kind"],
        inputs["item"],
        endpoint,
    )


BASE_ITEM = _answer()["item"]
CHANGES: dict[str, dict[str, Any]] = {
    "provider": {"provider": get_provider("local")},
    "model": {"model": "gpt-4o"},
    "param value": {"params": {"temperature": 1}},
    "param type": {"params": {"temperature": "0"}},
    "extra param": {"params": {"temperature": 0, "seed": 7}},
    "kind": {"kind": "image_embedding"},
    "image bytes": {"item": BASE_ITEM.model_copy(update={"image": OTHER_IMAGE})},
    # built unvalidated: an Image refuses a type its bytes contradict, but bytes of no
    # known signature keep the type given, so the type is part of the key
    "media type": {
        "item": BASE_ITEM.model_copy(
            update={"image": Image.model_construct(data=IMAGE.data, media_type="image/jpeg")}
        )
    },
    "prompt": {"item": BASE_ITEM.model_copy(update={"prompt": "what class is this?"})},
    "max output tokens": {"item": BASE_ITEM.model_copy(update={"max_output_tokens": 17})},
    "base url": {"base_url": "http://127.0.0.1:8000/v1"},
    "base url port": {"base_url": "http://127.0.0.1:8001/v1"},
    "base url path": {"base_url": "https://gateway.example.com/openai/v1"},
    "namespace": {"namespace": "team-gpu-box"},
}


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_each_input_changes_the_key(what: str) -> None:
    assert _key(_answer(**CHANGES[what])) != _key(_answer())


def test_all_changed_keys_differ_from_each_other() -> None:
    keys = {_key(_answer(**change)) for change in CHANGES.values()}
    assert len(keys) == len(CHANGES)


def test_text_and_image_items_key_their_content() -> None:
    def key(item: TextEmbeddingRequest | ImageEmbeddingRequest, kind: str) -> str:
        return item_cache_key(COHERE, "embed-v4.0", {}, kind, item)

    assert key(CAT, "text_embedding") != key(
        TextEmbeddingRequest(text="a photo of a dog"), "text_embedding"
    )
    assert key(ImageEmbeddingRequest(image=IMAGE), "image_embedding") != key(
        ImageEmbeddingRequest(image=OTHER_IMAGE), "image_embedding"
    )


@pytest.mark.parametrize(
    "same",
    [
        "http://127.0.0.1:8000/v1/",
        "HTTP://127.0.0.1:8000/v1",
        "http://user:sk-in-url-secret@127.0.0.1:8000/v1",
        "http://127.0.0.1:8000/v1?api_key=sk-in-url-secret",
        "http://127.0.0.1:8000/v1#frag",
    ],
)
def test_one_server_written_differently_is_one_endpoint_and_holds_no_secret(same: str) -> None:
    assert _key(_answer(base_url=same)) == _key(_answer(base_url="http://127.0.0.1:8000/v1"))
    endpoint = endpoint_id(OPENAI, same)
    assert endpoint == "http://127.0.0.1:8000/v1"
    parts = key_base(OPENAI, "gpt-4o-mini", {}, "answer", endpoint)
    assert "sk-in-url-secret" not in canonical_json(parts)


def test_default_ports_are_dropped() -> None:
    assert endpoint_id(OPENAI, "https://API.openai.com:443/v1") is None
    assert endpoint_id(OPENAI, "https://api.openai.com:8443/v1") == "https://api.openai.com:8443/v1"


async def test_the_clients_key_and_fingerprint_ignore_the_api_key() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError("computing a key sends nothing")

    async def key_of(api_key: str, **kw: Any) -> tuple[str, str]:
        async with TeacherClient(
            "openai:text-embedding-3-small",
            api_key=api_key,
            transport=httpx.MockTransport(refuse),
            **kw,
        ) as client:
            return client.cache_key("text_embedding", CAT), client.fingerprint

    first = await key_of("sk-first-secret")
    assert first == await key_of("sk-second-secret")
    assert first == await key_of("sk-x", base_url="https://api.openai.com/v1/")
    assert first == await key_of("sk-x", base_url="http://proxy:3128/v1", cache_namespace="default")
    assert first[0] == PINNED[("openai", "text-embedding-3-small")][0]
    gateway = await key_of("sk-x", base_url="http://gpu-box:8000/v1")
    assert gateway[0] != first[0] and gateway[1] != first[1]
    named = await key_of("sk-x", base_url="http://gpu-box:9000/v1", cache_namespace="gpu-box")
    assert named == await key_of(
        "sk-x", base_url="http://gpu-box:8000/v1", cache_namespace="gpu-box"
    )
    assert named[0] not in (first[0], gateway[0])


def test_same_bytes_under_another_file_name_give_the_same_key(tmp_path: Path) -> None:
    data = IMAGE.data
    first = tmp_path / "cats" / "IMG_0001.png"
    second = tmp_path / "copies" / "renamed-photo.png"
    for path in (first, second):
        path.parent.mkdir(parents=True)
        path.write_bytes(data)

    def key_for(path: Path) -> str:
        item = ImageEmbeddingRequest(image=Image.from_path(path))
        return item_cache_key(COHERE, "embed-v4.0", {}, "image_embedding", item)

    assert key_for(first) == key_for(second)
    assert key_for(first) == item_cache_key(
        COHERE, "embed-v4.0", {}, "image_embedding", ImageEmbeddingRequest(image=IMAGE)
    )
    assert hashlib.sha256(data).hexdigest() == IMAGE.digest


def test_a_content_id_replaces_the_bytes_in_the_key_and_nothing_else() -> None:
    def key(image: Image, provider: Any = COHERE, kind: str = "image_embedding") -> str:
        return item_cache_key(provider, "embed-v4.0", {}, kind, ImageEmbeddingRequest(image=image))

    named = IMAGE.model_copy(update={"content_id": "view1:abc"})
    other_bytes = OTHER_IMAGE.model_copy(update={"content_id": "view1:abc"})
    assert key(named) == key(other_bytes)  # the name, not the bytes
    assert key(named) != key(IMAGE)  # unnamed images keep their byte keys
    assert key(named) != key(IMAGE.model_copy(update={"content_id": "view1:abd"}))
    assert key(named) != key(named, OPENAI)  # the teacher is still in the key
    assert key(named) != key(named, kind="answer")
    assert key(named) == content_cache_key(COHERE, "embed-v4.0", {}, "view1:abc")
    answer = AnswerRequest(image=named, prompt="what is it?")
    assert item_cache_key(COHERE, "embed-v4.0", {}, "answer", answer) != item_cache_key(
        COHERE, "embed-v4.0", {}, "answer", answer.model_copy(update={"prompt": "colour?"})
    )


def test_re_encoding_an_oversized_image_keeps_its_content_id() -> None:
    import io

    import numpy as np
    from PIL import Image as PILImage

    from vlmclient.providers.images import fit_image

    arr = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    out = io.BytesIO()
    PILImage.fromarray(arr).save(out, "PNG")
    big = Image(data=out.getvalue(), media_type="image/png", content_id="view1:x")
    small = fit_image(big, max_side=100, max_bytes=1 << 20, media_types={"image/jpeg"})
    assert small.media_type == "image/jpeg" and small.content_id == "view1:x"


@pytest.mark.parametrize(
    "text", ["a cat", 'quotes " and \\ backslash', "ünïcödé ✓ \u2028", "tab\tnul\x00", "x" * 5000]
)
def test_a_text_escaped_once_gives_the_key_it_always_had(text: str) -> None:
    item = TextEmbeddingRequest(text=text)
    parts = key_base(OPENAI, "text-embedding-3-small", {"dimensions": 8}, "text_embedding")
    parts["text"] = text
    assert item_cache_key(
        OPENAI, "text-embedding-3-small", {"dimensions": 8}, "text_embedding", item
    ) == hashlib.sha256(canonical_json(parts).encode()).hexdigest()


def test_a_value_that_looks_like_the_splice_marker_cannot_change_a_key() -> None:
    from cache.keys import _MARK

    # a parameter holding the marker itself: the splice is ambiguous, so the plain
    # encoding is used and the key is still the plain one
    parts = {"params": {"p": _MARK + "text"}, "text": "a cat"}
    assert make_key(parts, {"text": '"a cat"'}) == make_key(parts)
    assert canonical_json(parts, {"text": '"a cat"'}) == canonical_json(parts)


def test_ascii_json_string_is_json_dumps_for_every_character() -> None:
    chars = [chr(c) for c in range(0x3000)] + ["\U0001d538", "\U0010ffff", "\ud800"]
    for c in chars:
        for text in (c, f"ab{c}", f"{c}yz", c * 3):
            assert ascii_json_string(text) == json.dumps(text)


def test_key_template_gives_make_key() -> None:
    parts = {
        "v": 1,
        "provider": "openai",
        "model": "m",
        "params": {"dimensions": 64, "user": "é", "z": [1, 2]},
        "endpoint": "http://gpu-box:8000/v1",
    }
    template = KeyTemplate.make(parts, "text")
    assert template is not None
    for text in ["a cat", 'say "hi"', "line\nbreak", "café ☕", "x" * 5000]:
        expected = make_key({**parts, "text": text})
        assert template.key(ascii_json_string(text)) == expected


@pytest.mark.parametrize("special", ['"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", ""])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
@pytest.mark.parametrize("size", [10, 5000])  # under and over the long-text path's 4 KB
def test_json_strings_are_json_dumps_for_short_and_long_texts(
    special: str, where: str, size: int
) -> None:
    from cache.keys import ascii_json_inner

    body = "lorem ipsum " * (size // 12 + 1)
    text = {"start": special + body, "middle": body[: size // 2] + special + body[size // 2 :],
            "end": body + special}[where]
    assert ascii_json_string(text) == json.dumps(text)
    assert b'"' + ascii_json_inner(text) + b'"' == json.dumps(text).encode()

"""Helpers for provider adapter tests: call specs, images, spec validators, fake clients."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
from PIL import Image as PILImage
from pydantic import SecretStr
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.providers.loopback import Loopback, Respond, loopback
from vlmclient import (
    AnswerRequest,
    Budget,
    ConfigurationError,
    Image,
    Price,
    RetryPolicy,
    TeacherClient,
)
from vlmclient.client import prepare_item
from vlmclient.providers import get_provider
from vlmclient.providers.base import CallSpec, Item

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHARED_SPECS = Path(__file__).resolve().parents[2].parent / "shared" / "specs"
COHERE_SPEC = SHARED_SPECS / "cohere-openapi-e814c8a1822f.yaml"
ANTHROPIC_SPEC = SHARED_SPECS / "anthropic-openapi-40cee51a705d.yaml"


def image_bytes(
    size: tuple[int, int] = (64, 48), fmt: str = "PNG", seed: int = 0, mode: str = "RGB"
) -> bytes:
    """A real encoded image of random pixels (random, so JPEG cannot shrink it much)."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    out = io.BytesIO()
    PILImage.fromarray(arr, mode).save(out, fmt)
    return out.getvalue()


def image(size: tuple[int, int] = (64, 48), fmt: str = "PNG", seed: int = 0) -> Image:
    return Image.from_bytes(image_bytes(size, fmt, seed))


def call_spec(
    provider: str,
    kind: str,
    model: str,
    items: Sequence[Item],
    params: dict[str, Any] | None = None,
    base_url: str | None = None,
) -> CallSpec:
    """A CallSpec as the client builds it (images already prepared by the provider)."""
    p = get_provider(provider)
    prepared = [prepare_item(p, item) for item in items]
    return CallSpec(
        kind,  # type: ignore[arg-type]
        model,
        prepared,
        base_url or p.default_base_url,
        SecretStr("secret-key-123"),
        {**p.default_params.get(kind, {}), **(params or {})},
    )


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


def validator_for(doc: Any, pointer: str) -> jsonschema.Draft202012Validator:
    """A Draft 2020-12 validator for the schema at ``pointer`` inside ``doc``, with
    ``$ref``s resolved against the whole document."""
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:spec", resource)
    return jsonschema.Draft202012Validator({"$ref": f"urn:spec{pointer}"}, registry=registry)


@lru_cache(maxsize=4)
def load_yaml(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is 10x faster
    return yaml.load(path.read_text(), Loader=loader)


def _drop_null_types(node: Any) -> Any:
    """Remove ``type: null`` keywords (YAML null, not the string "null").

    The pinned Anthropic spec has one (``components/schemas/Model``): a generator
    artefact meaning "no type constraint", which jsonschema cannot evaluate.
    """
    if isinstance(node, dict):
        return {k: _drop_null_types(v) for k, v in node.items() if not (k == "type" and v is None)}
    if isinstance(node, list):
        return [_drop_null_types(v) for v in node]
    return node


@lru_cache(maxsize=4)
def _shared(path: Path) -> Any:
    return _drop_null_types(load_yaml(path))


def shared_spec(path: Path) -> Any:
    if not path.exists():
        pytest.skip(
            f"{path.name} is not in {path.parent} (the shared specs folder is not "
            "redistributed with the project); conformance against it skipped"
        )
    return _shared(path)


@lru_cache(maxsize=2)
def openai_doc() -> Any:
    return json.loads((FIXTURES / "openai_schemas.json").read_text())


@lru_cache(maxsize=2)
def voyage_doc() -> Any:
    return json.loads((FIXTURES / "voyage_multimodal_request_schema.json").read_text())


async def nosleep(_: float) -> None:
    await asyncio.sleep(0)


Handler = Callable[[httpx.Request], httpx.Response]


def client_for(
    teacher: str, handler: Handler, *, price: Price | None = None, **kw: Any
) -> TeacherClient:
    kw.setdefault("retry", RetryPolicy(sleep=nosleep))
    return TeacherClient(
        teacher,
        api_key="secret-key-123",
        transport=httpx.MockTransport(handler),
        price=price,
        **kw,
    )


def vector(seed: int, dim: int = 8) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(dim)
    return [float(x) for x in v / np.linalg.norm(v)]


def loopback_client(teacher: str, server: Loopback, api_key: str, **kw: Any) -> TeacherClient:
    """The real client sending to a loopback ``server``: a $1 budget and one attempt,
    unless ``kw`` says otherwise."""
    kw.setdefault("base_url", server.url)
    kw.setdefault("budget", Budget("1.00"))
    kw.setdefault("retry", RetryPolicy(max_attempts=1, sleep=nosleep))
    return TeacherClient(teacher, api_key=api_key, **kw)


def ask(
    prompt: str = "Which digit?", size: tuple[int, int] = (64, 48), max_output_tokens: int = 16
) -> AnswerRequest:
    return AnswerRequest(image=image(size), prompt=prompt, max_output_tokens=max_output_tokens)


def anthropic_message(usage: dict[str, Any], id: str = "msg_1") -> dict[str, Any]:
    """What Anthropic's Messages API answers: the text "7", billed as ``usage`` says."""
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "7"}],
        "stop_reason": "end_turn",
        "usage": usage,
    }


ClientWith = Callable[[Loopback, dict[str, Any]], TeacherClient]


async def refused_before_sending(
    respond: Respond, client_with: ClientWith, params: dict[str, Any], named: str
) -> None:
    """``ask()`` with ``params`` is refused (a ConfigurationError naming ``named``):
    nothing sent, nothing spent."""
    with loopback(respond) as server:
        async with client_with(server, params) as client:
            with pytest.raises(ConfigurationError, match=named):
                await client.answer([ask()])
    assert server.requests == []
    assert client.budget.spent == 0 and client.overrun is None


async def tools_sent(respond: Respond, client_with: ClientWith, tools: list[Any]) -> None:
    """``ask()`` with ``tools`` is answered, the tools sent as they are, no overrun."""
    with loopback(respond) as server:
        async with client_with(server, {"tools": tools}) as client:
            [answer] = await client.answer([ask()])
    assert answer.text == "7"
    assert server.bodies[0]["tools"] == tools
    assert client.overrun is None

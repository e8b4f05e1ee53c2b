"""Issue 16 item 7: a server that echoes the key (request ids, error bodies, encodings).

The project's own teacher server runs on 127.0.0.1 behind an ASGI wrapper that plays a
careless gateway: it copies the credential it was sent into ``x-request-id`` and
``request-id`` of every answer, and (in "401" mode) answers with an error body holding
the key raw, upper-cased, reversed, hex and base64-encoded. Nothing of it may reach the
ledger, the cache files, an error message or a log line.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from cache import ResponseCache, SpendLedger
from distill.server import HashBackend, ServerConfig, ServerThread, create_app
from tests.server.helpers import png
from vlmclient import (
    AnswerRequest,
    APIStatusError,
    Budget,
    Image,
    RetryPolicy,
    TeacherClient,
    TextEmbeddingRequest,
)

KEY = "sk-ECHO-4c2b9e7f1a0d3e5b"


def forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [
        raw,
        raw.upper(),
        raw.lower(),
        raw[::-1],
        raw.hex().encode(),
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
        base64.b64encode(b"user:" + raw),  # Basic auth: the key at an offset
    ]


def leaked(blob: bytes) -> list[bytes]:
    return [f for f in forms(KEY) if f in blob]


class EchoGateway:
    """Copies the caller's credential into the request-id headers of every answer."""

    def __init__(self, app: Any, status: int | None = None) -> None:
        self.app = app
        self.status = status

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        cred = b" ".join(
            headers.get(h, b"") for h in (b"authorization", b"x-api-key", b"x-goog-api-key")
        ).strip()
        echo = [(b"x-request-id", b"req-" + cred), (b"request-id", b"req-" + cred)]
        if self.status is not None:
            key = cred.split(b" ")[-1]
            echoed = " | ".join(f.decode() for f in forms(key.decode()))
            message = echoed + " " + "x" * 5000
            body = json.dumps({"error": {"message": message, "type": "auth"}}).encode()
            await send({"type": "http.response.start", "status": self.status,
                        "headers": [(b"content-type", b"application/json"), *echo]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return

        async def echoing_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message["headers"] if k.lower() != b"x-request-id"]
                message = {**message, "headers": kept + echo}
            await send(message)

        await self.app(scope, receive, echoing_send)


@pytest.fixture
def server_app() -> Any:
    # embed-v4.0's default length, which the client expects of it
    return create_app(ServerConfig(token=SecretStr(KEY)), HashBackend(dim=1536))


@pytest.fixture
def echo_url(server_app: Any) -> Iterator[str]:
    with ServerThread(EchoGateway(server_app)) as server:
        yield server.base_url


def _files(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("teacher", "path"),
    [("openai:text-embedding-3-small", "/v1"), ("cohere:embed-v4.0", "")],
)
async def test_echoed_key_in_request_id_is_redacted_everywhere(
    echo_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, teacher: str, path: str
) -> None:
    caplog.set_level(logging.DEBUG)
    cache_dir = tmp_path / "cache"
    ledger = SpendLedger(cache_dir / "ledger.jsonl")
    rcache = ResponseCache(cache_dir / "responses")
    client = TeacherClient(teacher, api_key=KEY, base_url=echo_url + path, budget=Budget("1"),
                           cache=rcache, ledger=ledger, retry=RetryPolicy(max_attempts=1),
                           env={})  # fmt: skip
    async with client:
        results = await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    rcache.close()
    ledger.close()
    assert results[0].request_id is not None and results[0].request_id.startswith("req-")
    assert leaked(results[0].request_id.encode()) == []
    records = SpendLedger.read(cache_dir / "ledger.jsonl")
    assert [r.outcome for r in records] == ["ok"] and records[0].request_id
    assert "***" in records[0].request_id  # the echo was there, and was masked
    assert leaked(_files(cache_dir)) == []
    assert leaked(caplog.text.encode()) == []


@pytest.mark.parametrize(
    "teacher",
    [
        "openai:text-embedding-3-small",
        "cohere:embed-v4.0",
        "voyage:voyage-multimodal-3",
        "anthropic:claude-haiku-4-5",
        "gemini:gemini-2.5-flash-lite",
    ],
)
async def test_echoed_key_in_error_body_in_any_encoding_is_redacted(
    server_app: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, teacher: str
) -> None:
    caplog.set_level(logging.DEBUG)
    ledger = SpendLedger(tmp_path / "ledger.jsonl")
    with ServerThread(EchoGateway(server_app, status=401)) as server:
        client = TeacherClient(teacher, api_key=KEY, base_url=server.base_url,
                               budget=Budget("1"), ledger=ledger,
                               retry=RetryPolicy(max_attempts=1), env={})  # fmt: skip
        async with client:
            with pytest.raises(APIStatusError) as info:
                if teacher.startswith(("anthropic", "gemini")):
                    image = Image(data=png(1), media_type="image/png")
                    await client.answer([AnswerRequest(image=image, prompt="hi")])
                else:
                    await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    ledger.close()
    err = info.value
    shown = (str(err) + repr(err) + str(err.args) + str(err.request_id)).encode()
    assert leaked(shown) == [], leaked(shown)
    assert "***" in str(err)
    assert len(str(err)) < 1000  # a 5 kB body is not echoed whole
    assert err.request_id is not None and len(err.request_id) <= 128
    assert leaked((tmp_path / "ledger.jsonl").read_bytes()) == []
    assert leaked(caplog.text.encode()) == []


def test_a_key_echoed_percent_encoded_json_escaped_or_cut_short_is_redacted() -> None:
    """Before: these echoes of a key holding '/' and '+' (as AWS secrets do) reached the
    ledger and cache.db untouched (an audit's echoing gateway)."""
    from urllib.parse import quote

    from vlmclient.redact import Redactor

    key = "sk-ECHO/key+with=chars_9f8e7d"
    echoes = [quote(key, safe=""), json.dumps(key)[1:-1].replace("/", "\\/"), key[:-3],
              key[5:], key[:16]]
    redact = Redactor([key])
    for echo in echoes:
        shown = redact(f"invalid api key {echo} (id r-1)")
        assert shown == "invalid api key *** (id r-1)", (echo, shown)
    # nothing of 16 or more characters of the key survives any of them
    runs = {key[i:i + 16] for i in range(len(key) - 15)}
    assert not any(r in redact(" ".join(echoes)) for r in runs)
    assert redact("a token of 12 chars ok") == "a token of 12 chars ok"


def test_a_key_echoed_percent_encoded_with_its_slashes_kept_is_redacted() -> None:
    """Before: only the form with every reserved character encoded (``quote(key,
    safe="")``) was known; a key echoed in a URL path as ``urllib.parse.quote`` (or
    JavaScript's ``encodeURI``) writes it, ``/`` kept and ``+``/``=`` encoded, passed
    whole: "sk-ECHO/key%2Bwith%3Dchars_9f8e7d"."""
    from urllib.parse import quote

    from vlmclient.redact import Redactor

    key = "sk-ECHO/key+with=chars_9f8e7d"
    redact = Redactor([key])
    for echo in (quote(key), quote(key).lower()):
        shown = redact(f"GET /v1/keys/{echo}/usage: forbidden")
        assert shown == "GET /v1/keys/***/usage: forbidden", shown


def _echoing_answer(server: Any, shape: str) -> Any:
    """A chat server whose answer text quotes the credential it was sent (a debugging
    gateway, a model asked to repeat its request): billed like the provider."""

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {k.lower(): v for k, v in server.requests[-1][2].items()}
        cred = headers.get("authorization") or headers.get("x-api-key", "")
        text = f"B) dog. (debug: {cred}; reversed {cred[::-1]})"
        if shape == "anthropic":
            return 200, {"id": "msg_1", "type": "message", "role": "assistant",
                         "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                         "usage": {"input_tokens": 40, "output_tokens": 12}}  # fmt: skip
        return 200, {"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": 40, "completion_tokens": 12,
                               "total_tokens": 52}}  # fmt: skip

    return respond


@pytest.mark.parametrize(
    ("teacher", "path"), [("openai:gpt-5.6-luna", "/v1"), ("anthropic:claude-haiku-4-5", "")]
)
async def test_a_key_echoed_in_an_answers_text_is_masked_before_it_is_cached(
    tmp_path: Path, teacher: str, path: str
) -> None:
    """The answer text went into cache.db (and back to the caller) as it came: a key in it
    reached the cache files. It is masked like every other echo; the answer is kept."""
    from tests.providers.loopback import loopback

    cache_dir = tmp_path / "cache"
    ledger = SpendLedger(cache_dir / "ledger.jsonl")
    rcache = ResponseCache(cache_dir / "responses")
    respond: Any = None
    with loopback(lambda p, b: respond(p, b)) as server:
        respond = _echoing_answer(server, teacher.split(":")[0])
        client = TeacherClient(teacher, api_key=KEY, base_url=server.url + path,
                               budget=Budget("1"), cache=rcache, ledger=ledger,
                               retry=RetryPolicy(max_attempts=1), env={})  # fmt: skip
        async with client:
            [answer] = await client.answer(
                [AnswerRequest(image=Image.from_bytes(png(1)), prompt="Which?")]
            )
    rcache.close()
    ledger.close()
    assert answer.text.startswith("B) dog. (debug: ") and "***" in answer.text
    assert leaked(answer.text.encode()) == []
    assert leaked(_files(cache_dir)) == []
    assert [r.outcome for r in SpendLedger.read(cache_dir / "ledger.jsonl")] == ["ok"]

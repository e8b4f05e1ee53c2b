"""A key the server echoes is never kept in part where a message was cut before redaction.

The redactor masks a key, and any 16 or more of its first characters; text cut short
before it runs (a refusal quote, an error body, a malformed header line, a usage field
name) could end in fewer of them, which stayed in the error, the log or the ledger. Each
test here has a loopback server echo a long key so that a cut falls inside it (and one
a short key, whole, in a transport error a traceback printed unscrubbed as the cause).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.providers.conftest import image, loopback_client
from tests.providers.loopback import loopback
from vlmclient import (
    AnswerRequest,
    Budget,
    Price,
    RetryPolicy,
    TeacherClient,
    TextEmbeddingRequest,
    VLMError,
)
from vlmclient.providers.openai import REFUSAL_QUOTE_CHARS

KEY = "sk-proj-Zq8vW3mT9xK2pL7nR4cY6bH1jF5dG0sA-echo-Xu2Ve7Wy4Tz9Qa3Rb8Mc1Nd6Pf5Lg0Kh"
PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))
ASK = [AnswerRequest(image=image((64, 48)), prompt="Who is this?", max_output_tokens=16)]


def pieces(text: str) -> list[str]:
    """Any 8 characters of the key in a row that ``text`` holds."""
    return [KEY[i : i + 8] for i in range(len(KEY) - 7) if KEY[i : i + 8] in text]


async def test_a_refusal_quote_never_ends_in_part_of_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, the refusal was cut to 117 characters and then scrubbed: a key starting at
    character 106 left its first 11 characters ("sk-proj-Zq8") in the error and the log."""
    head = "Sorry, " + "no " * ((REFUSAL_QUOTE_CHARS - 20) // 3)
    assert len(head) < REFUSAL_QUOTE_CHARS - 3 - 8 < len(head) + len(KEY)

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        message = {"role": "assistant", "content": None, "refusal": f"{head}{KEY} sent."}
        return 200, {
            "id": "chatcmpl-refused",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 90, "completion_tokens": 5},
        }

    with loopback(respond) as server:
        client = loopback_client("openai:gpt-4o-mini", server, KEY,
                                 base_url=server.url + "/v1", price=PRICE)  # fmt: skip
        async with client:
            with pytest.raises(VLMError, match="refused") as caught:
                await client.answer(ASK)
    assert pieces(str(caught.value)) == [] and pieces(caplog.text) == []


def openai_401(message: str) -> tuple[int, dict[str, Any]]:
    return 401, {"error": {"message": message, "type": "invalid_request_error"}}


def gemini_400(message: str) -> tuple[int, dict[str, Any]]:
    return 400, {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}


@pytest.mark.parametrize(("teacher", "answer"), [
    ("openai:gpt-4o-mini", openai_401),
    ("gemini:gemini-3.5-flash-lite", gemini_400),
])  # fmt: skip
async def test_an_error_body_cut_at_300_never_ends_in_part_of_the_key(
    teacher: str, answer: Any
) -> None:
    """Before, the body's message was cut to 300 characters and then scrubbed: with the key
    echoed twice, the first masked (the message shrinks) and the second across the cut,
    its first 10 characters stayed in the error."""
    sent = (
        f"Incorrect API key provided: {KEY}. You can find your API key at "
        "https://platform.openai.com/account/api-keys. Sent:"
    ).ljust(290)
    message = f"{sent}{KEY} (from the Authorization header)"

    with loopback(lambda path, body: answer(message)) as server:
        async with loopback_client(teacher, server, KEY, price=PRICE) as client:
            with pytest.raises(VLMError) as caught:
                await client.answer(ASK)
    assert "Incorrect API key provided: ***" in str(caught.value)
    assert pieces(str(caught.value)) == [] and pieces(repr(caught.value)) == []


@asynccontextmanager
async def raw_server(answers: list[bytes]) -> AsyncIterator[str]:
    """A raw HTTP/1.1 server on 127.0.0.1 writing ``answers[n]`` for the n-th request (then
    closing the connection); yields its URL."""
    sent = iter(answers)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = [ln for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:")]
        await reader.readexactly(int(length[0].split(b":")[1]) if length else 0)
        writer.write(next(sent))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_a_bad_header_line_never_ends_in_part_of_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, a header line the transport refused was quoted cut to 60 characters, then
    scrubbed: a key starting at character 49 left its first 11 in the error."""
    caplog.set_level(logging.DEBUG)
    line = b"X-Upstream-Echo-Of-Authorization-Header : Bearer " + KEY.encode()
    answer = b"HTTP/1.1 401 Unauthorized\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n"
    async with raw_server([answer]) as url, TeacherClient(
        "openai:text-embedding-3-small", api_key=KEY, base_url=url, budget=Budget("1"),
        retry=RetryPolicy(max_attempts=1),
    ) as client:  # fmt: skip
        with pytest.raises(VLMError, match="bad header line") as caught:
            await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert pieces(str(caught.value)) == [] and pieces(caplog.text) == []


async def test_a_transport_error_s_cause_never_shows_the_key() -> None:
    """Before, the connection error (its message scrubbed) was raised ``from`` the
    transport's exception: a traceback (an uncaught error, ``log.exception``) printed that
    unscrubbed cause, here a header line the transport refused holding a whole 39-character
    key (a Gemini key's length), which fits in the 60 characters it quotes."""
    key = "AIzaSyQ4vT8kW2mX9nB3cD7fG1hJ5kL0pR6sU4w"
    line = b"X-Goog-Api-Key : " + key.encode()
    answer = b"HTTP/1.1 400 Bad Request\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n"
    async with raw_server([answer]) as url, TeacherClient(
        "gemini:gemini-3.5-flash-lite", api_key=key, base_url=url, price=PRICE,
        budget=Budget("1"), retry=RetryPolicy(max_attempts=1),
    ) as client:  # fmt: skip
        with pytest.raises(VLMError, match="bad header line") as caught:
            await client.answer(ASK)
    shown = "".join(traceback.format_exception(caught.value))
    assert "X-Goog-Api-Key : ***" in shown and key[:12] not in shown


async def test_a_long_usage_field_name_never_takes_part_of_the_key_to_the_ledger(
    tmp_path: Path,
) -> None:
    """Before, a usage field name over 64 characters was cut to 64 and then scrubbed of the
    key: a name ending in the key kept its first 10 characters, written to ledger.jsonl."""
    name = "x-" + "n" * 52 + KEY
    written = await ledger_of_one_image({"images": 1, "echo": {name: 1}}, tmp_path)
    assert '"images":1' in written and pieces(written) == []


async def ledger_of_one_image(usage: dict[str, Any], tmp_path: Path, **client: Any) -> str:
    """The ledger.jsonl of one image bought from a loopback server that reports ``usage``
    as Cohere's billed_units (``local:hash``, the client made with ``client`` too)."""
    import base64

    from cache import SpendLedger
    from vlmclient import Image, ImageEmbeddingRequest

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"id": "echo", "embeddings": {"float": [[0.5] * 8]},
                     "meta": {"billed_units": usage}}  # fmt: skip

    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
    )
    ledger_path = tmp_path / "ledger.jsonl"
    with loopback(respond) as server, SpendLedger(ledger_path) as ledger:
        async with loopback_client("local:hash", server, KEY, ledger=ledger, **client) as c:
            await c.embed_images(
                [ImageEmbeddingRequest(image=Image(data=png, media_type="image/png"))]
            )
    return ledger_path.read_text()


AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY-pasted"


@pytest.mark.parametrize("pasted", [KEY, AWS_SECRET], ids=["client key", "aws secret in env"])
async def test_a_key_pasted_into_a_long_vertex_text_is_not_logged(
    pasted: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, Vertex's warning that a text may be cut at 32 tokens quoted its first 60
    characters unredacted: a key pasted at its start went to the log (WARNING). Now the
    client's redactor (the key, and the secrets of its environment) masks it first."""
    caplog.set_level(logging.DEBUG)
    text = f"{pasted} is the key; " + "a photo of a dog " * 12

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"predictions": [{"textEmbedding": [0.5] * 1408}]}

    with loopback(respond) as server:
        client = loopback_client(
            "vertex:multimodalembedding@001", server, KEY,
            params={"project": "p-1", "location": "us-central1"},
            env={"AWS_SECRET_ACCESS_KEY": AWS_SECRET},
        )  # fmt: skip
        async with client:
            await client.embed_texts([TextEmbeddingRequest(text=text)])
    assert server.bodies[0]["instances"] == [{"text": text}]  # sent as given
    assert "may be longer than the 32 tokens" in caplog.text
    assert "'*** is the key; a photo" in caplog.text
    assert pasted[:8] not in caplog.text and pasted[-8:] not in caplog.text


async def test_a_usage_block_echoing_an_aws_secret_of_the_environment_stays_out_of_the_ledger(
    tmp_path: Path,
) -> None:
    """The usage block a provider reports is kept in the ledger (provider_usage) without
    any field holding a secret; before, only the API key was looked for, so a gateway
    echoing AWS_SECRET_ACCESS_KEY (which the client's redactor knows: it masks it in
    errors and logs) wrote it to ledger.jsonl."""
    usage = {"images": 1, "signed_with": AWS_SECRET, "echo": {AWS_SECRET[::-1]: 1}}
    env = {"AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    written = await ledger_of_one_image(usage, tmp_path, env=env)
    assert '"images":1' in written and '"echo":{}' in written, written
    assert AWS_SECRET[:12] not in written and AWS_SECRET[::-1][:12] not in written, written

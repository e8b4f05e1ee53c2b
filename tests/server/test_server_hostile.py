"""Issue 16 items 1-3: hostile callers against a real server on 127.0.0.1.

Raw sockets, so the test controls exactly what is sent and when: bodies the server must
refuse before reading them, chunked bodies it must stop reading at the limit, senders too
slow to be waited for, and decompression-bomb images refused from their header.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import select
import socket
import struct
import time
import zlib
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from distill.server import HashBackend, ServerConfig, ServerThread, create_app
from tests.server.conftest import Serve
from tests.server.helpers import TOKEN, auth, data_uri, png

LIMIT = 64 * 1024


@pytest.fixture
def server() -> Iterator[ServerThread]:
    cfg = ServerConfig(token=SecretStr(TOKEN), max_body_bytes=LIMIT, body_timeout_s=1.0,
                       max_image_pixels=20_000, max_request_pixels=50_000)  # fmt: skip
    with ServerThread(create_app(cfg, HashBackend(dim=8)), header_timeout_s=1.0) as s:
        yield s


def _connect(server: ServerThread) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response (status, headers, body) until the server closes or 10 s pass."""
    raw = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        if _ and b"content-length" in head.lower():
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(body) >= length:
                break
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head, "no response"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(h.lower().split(": ", 1) for h in header_lines)
    return int(status_line.split()[1]), headers, body


def _bill(server: ServerThread) -> dict:  # type: ignore[type-arg]
    return httpx.get(server.base_url + "/admin/billing", headers=auth()).json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), (auth(), 413)],
    ids=["no-token", "declared-too-large"],
)
def test_refused_before_a_byte_of_the_body_is_read(
    server: ServerThread, headers: dict[str, str], status: int
) -> None:
    """Headers only, announcing 30 MB: the answer must come without the body being sent."""
    with _connect(server) as sock:
        sock.sendall(_head("/v1/embeddings", {**headers, "Content-Length": str(30_000_000),
                                              "Content-Type": "application/json"}))  # fmt: skip
        code, h, body = _response(sock)
    assert code == status
    assert h["connection"] == "close"
    assert "error" in json.loads(body)
    assert _bill(server)["requests"] == 0


@pytest.mark.parametrize("headers", [{}, auth()], ids=["no-token", "with-token"])
def test_chunked_body_is_not_read_past_the_limit(
    server: ServerThread, headers: dict[str, str]
) -> None:
    """A chunked body that never ends: the server answers and closes near the limit."""
    chunk = b"x" * 16384
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    got = b""
    cap = 64 * 1024 * 1024  # the old server read all of this (and more) before its 413
    with _connect(server) as sock:
        sock.sendall(_head("/v2/embed", {**headers, "Transfer-Encoding": "chunked"}))
        sock.setblocking(False)
        deadline = time.monotonic() + 10
        while sent < cap and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                with contextlib.suppress(ConnectionResetError):
                    got = sock.recv(65536)
                break
            if writable:
                try:
                    sent += sock.send(frame)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    sock.setblocking(True)
                    with contextlib.suppress(ConnectionResetError):
                        got = sock.recv(65536)  # the answer may still be queued
                    break
    assert got.startswith(b"HTTP/1.1 "), (sent, got[:100])
    assert int(got.split()[1]) == (401 if not headers else 413)
    # what the kernel buffers on loopback comes on top of the limit, but not 64 MB
    assert sent < 16 * 1024 * 1024, sent


def test_slow_headers_get_408_and_a_closed_connection(server: ServerThread) -> None:
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthor")  # and stop
        start = time.monotonic()
        code, h, body = _response(sock)
        assert sock.recv(1) == b""  # closed
    assert code == 408 and h["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert time.monotonic() - start < 9  # 1 s deadline; slack for a loaded machine


def test_idle_connection_without_a_request_is_closed(server: ServerThread) -> None:
    with _connect(server) as sock:
        code, _, _ = _response(sock)
    assert code == 408


def test_slow_body_gets_408_in_the_provider_envelope(server: ServerThread) -> None:
    with _connect(server) as sock:
        sock.sendall(_head("/v1/embeddings", {**auth(), "Content-Length": "100"}) + b'{"mo')
        start = time.monotonic()
        code, h, body = _response(sock)
    assert code == 408 and h["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert "x-request-id" in h
    assert time.monotonic() - start < 9  # 1 s deadline; slack for a loaded machine
    assert _bill(server)["requests"] == 0


def test_slow_body_on_a_route_that_never_reads_it_is_closed(server: ServerThread) -> None:
    """/healthz answers without reading: the rest of a trickling body is not waited for."""
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        code, _, _ = _response(sock)
        assert code == 200
        sock.settimeout(10)
        start = time.monotonic()
        try:
            while sock.recv(1024):  # nothing more should come; the server closes
                pass
        except ConnectionResetError:
            pass
    assert time.monotonic() - start < 9  # 1 s deadline; slack for a loaded machine


def test_many_slow_connections_are_all_closed(server: ServerThread) -> None:
    socks = [_connect(server) for _ in range(50)]
    try:
        for s in socks:
            s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        for s in socks:
            s.settimeout(10)
            assert s.recv(65536).startswith(b"HTTP/1.1 408")
    finally:
        for s in socks:
            s.close()
    assert time.monotonic() - start < 12
    assert httpx.get(server.base_url + "/healthz").status_code == 200


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int) -> bytes:
    """A valid 1-bit PNG of side x side pixels that compresses to almost nothing."""
    row = b"\x00" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    stream = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream)
        + _chunk(b"IEND", b"")
    )  # fmt: skip


def _bodies(uri: str, n: int = 1) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    return [
        ("/v2/embed", {"model": "m", "input_type": "image", "images": [uri] * n}),
        ("/v1/embeddings", {"model": "m", "modality": "image", "input": [uri] * n}),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is it?"},
            *[{"type": "image_url", "image_url": {"url": uri}}] * n]}]}),
    ]  # fmt: skip


def test_decompression_bomb_is_a_400_from_the_header(caplog: pytest.LogCaptureFixture) -> None:
    """13,000 x 13,000 (169 MP, under PIL's own error limit) and 20,000 x 20,000 (over it),
    with the server's default limits: 400 in the provider's envelope, nothing billed."""
    caplog.set_level(logging.WARNING)
    cfg = ServerConfig(token=SecretStr(TOKEN))
    with ServerThread(create_app(cfg, HashBackend(dim=8))) as s, httpx.Client(
        headers=auth(), timeout=30
    ) as c:
        for side in (13_000, 20_000):
            uri = "data:image/png;base64," + base64.b64encode(bomb_png(side)).decode()
            for path, body in _bodies(uri):
                r = c.post(s.base_url + path, json=body)
                assert r.status_code == 400, (side, path, r.text[:300])
                message = r.json()["message"] if path == "/v2/embed" else (
                    r.json()["error"]["message"])  # fmt: skip
                assert "too large" in message or "pixels" in message, message
        assert c.get(s.base_url + "/admin/billing").json()["requests"] == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_pixels_per_request_are_bounded(server: ServerThread) -> None:
    """Each 100x104 image is within the 20,000 per-image limit; five are over 50,000."""
    uri = data_uri(png(3, size=100))
    with httpx.Client(headers=auth(), timeout=10) as c:
        for path, body in _bodies(uri, n=1):
            assert c.post(server.base_url + path, json=body).status_code == 200, path
        for path, body in _bodies(uri, n=5):
            r = c.post(server.base_url + path, json=body)
            assert r.status_code == 400 and "per request" in r.text, (path, r.text[:300])
        big = data_uri(png(4, size=200))  # 40,800 pixels: over the per-image limit
        for path, body in _bodies(big):
            r = c.post(server.base_url + path, json=body)
            assert r.status_code == 400 and "per image" in r.text, (path, r.text[:300])
    assert _bill(server)["requests"] == 3


def test_oversized_headers_get_431_and_a_closed_connection(server: ServerThread) -> None:
    """httptools buffers headers without limit; one endless header must not grow memory."""
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # up to 4 MB of one header value, never finished
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        code, h, body = _response(sock)
    assert code == 431 and h["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "request_header_fields_too_large"


def test_error_messages_do_not_echo_long_input(serve) -> None:  # type: ignore[no-untyped-def]
    """A 100 kB model name (or media type) is quoted in the error, but only its start."""
    url = serve(model_name="hash")
    long = "m" * 100_000
    with httpx.Client(headers=auth(), timeout=10) as c:
        r = c.post(url + "/v1/embeddings", json={"model": long, "input": "x"})
        assert r.status_code == 404 and len(r.content) < 1000, len(r.content)
        uri = "data:image/" + "x" * 100_000 + ";base64,AAAA"
        r = c.post(url + "/v2/embed", json={"model": "hash", "input_type": "image",
                                            "images": [uri]})  # fmt: skip
        assert r.status_code == 400 and len(r.content) < 1000, len(r.content)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", b'{"model": "m\\ud800", "input": "x"}'),  # echoed in the 200
        ("/v1/embeddings", b'{"model": "m", "input": "x\\udfff"}'),
        ("/v2/embed", b'{"model": "m", "input_type": "search_query", "texts": ["a\\ud800"]}'),
        (
            "/v1/chat/completions",
            b'{"model": "m", "messages": [{"role": "user", "content": "Options: c\\ud800t, dog"}]}',
        ),
        (
            "/v1/chat/completions",
            b'{"model": "m", "messages": [{"role": "user", "content": "hi"}],'
            b' "max_tokens": 1' + b"0" * 5000 + b"}",
        ),
    ],
    ids=["surrogate-model", "surrogate-input", "surrogate-cohere", "surrogate-chat", "huge-int"],
)
def test_unencodable_json_is_a_400_and_not_billed(serve, path: str, body: bytes, caplog) -> None:  # type: ignore[no-untyped-def]
    """JSON that parses but holds a lone surrogate (no UTF-8 form) or a 5000-digit number
    was a 500 (clients retry those), and a model name with a surrogate was billed before
    its 200 failed to render."""
    caplog.set_level(logging.ERROR)
    url = serve()
    r = httpx.post(url + path, headers={**auth(), "content-type": "application/json"},
                   content=body, timeout=10)  # fmt: skip
    assert r.status_code == 400, (r.status_code, r.text[:200])
    assert "x-request-id" in r.headers and r.json()
    bill = httpx.get(url + "/admin/billing", headers=auth()).json()
    assert bill["requests"] == 0
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    # a proper pair (an emoji written as two escapes) is fine
    ok = httpx.post(url + "/v1/embeddings", headers=auth(), timeout=10,
                    content=b'{"model": "m", "input": "\\ud83d\\ude00"}')  # fmt: skip
    assert ok.status_code == 200


def test_a_prompt_listing_too_many_options_is_a_400_and_not_billed(serve) -> None:  # type: ignore[no-untyped-def]
    """Each listed option is embedded: 200,000 options (a 1.7 MB body) took the server to
    1.1 GB and 12 s, and a body at the 32 MB limit to some 20 GB (the OOM killer)."""
    from distill.server.answers import MAX_OPTIONS

    url = serve()

    def ask(n: int) -> httpx.Response:
        options = ", ".join(f"thing{i}" for i in range(n))
        body = {"model": "m", "messages": [{"role": "user", "content": f"Options: {options}"}]}
        return httpx.post(url + "/v1/chat/completions", headers=auth(), json=body, timeout=30)

    r = ask(MAX_OPTIONS + 1)
    assert r.status_code == 400, (r.status_code, r.text[:200])
    assert f"at most {MAX_OPTIONS:,} options" in r.json()["error"]["message"]
    assert httpx.get(url + "/admin/billing", headers=auth()).json()["requests"] == 0
    assert ask(MAX_OPTIONS).status_code == 200  # ImageNet's 1000 classes still fit


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "TGA", "PPM", "SGI", "DDS"])
def test_an_image_in_a_format_no_provider_takes_is_a_400_whatever_its_label(
    serve: Serve, fmt: str
) -> None:
    """A TIFF (or ICO, TGA, ...; EPS runs Ghostscript where it is installed) labelled
    data:image/png was decoded by whatever PIL plugin matched and billed: the stand-in took
    what the providers it stands in for refuse, and gave every PIL decoder to any caller."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, fmt)
    url = serve()
    with httpx.Client(headers=auth(), timeout=10) as c:
        for media_type in ("image/png", "image/jpeg"):
            uri = data_uri(buf.getvalue(), media_type)
            r = c.post(url + "/v2/embed",
                       json={"model": "m", "input_type": "image", "images": [uri]})  # fmt: skip
            assert r.status_code == 400, (r.status_code, r.text[:200])
            assert "could not be decoded" in r.json()["message"]
            chat = {"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": uri}}]}]}  # fmt: skip
            assert c.post(url + "/v1/chat/completions", json=chat).status_code == 400
        assert c.get(url + "/admin/billing").json()["requests"] == 0
        # the five it takes still decode, a JPEG labelled PNG too (as providers sniff)
        for ok in ("PNG", "JPEG", "WEBP", "GIF", "BMP"):
            buf = io.BytesIO()
            Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, ok)
            r = c.post(url + "/v2/embed", json={"model": "m", "input_type": "image",
                                                "images": [data_uri(buf.getvalue())]})  # fmt: skip
            assert r.status_code == 200, (ok, r.text[:200])


# A PNG whose header reads but whose chunks are broken: PIL's load() raises SyntaxError.
_BROKEN_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAABgAAAAYCAIAAABvFaqvAAAABElEQVR4nGNkZGJmoAZgooopowaNGjRq0KhBowaNGkQR"
    "AADUGgA2zmw6+AAAAABJRU5ErkJggg=="
)


def test_an_image_that_breaks_while_decoding_is_a_400_and_fails_no_one_else(serve) -> None:  # type: ignore[no-untyped-def]
    """A PNG whose header parses but whose data raises SyntaxError in PIL (not OSError):
    it escaped the per-image error, failed the whole micro-batch, and so answered 500 to it
    (which clients retry) and to every other caller's request batched with it."""
    import asyncio

    broken = base64.b64decode(_BROKEN_PNG)
    url = serve(backend=HashBackend(dim=8, decode=True))
    bad = {"model": "m", "input_type": "image", "images": [data_uri(broken)]}
    good = {"model": "m", "input_type": "image", "images": [data_uri(png(1))]}
    r = httpx.post(url + "/v2/embed", headers=auth(), json=bad, timeout=10)
    assert r.status_code == 400, (r.status_code, r.text[:200])
    assert "could not be decoded" in r.json()["message"]

    async def together() -> list[int]:
        async with httpx.AsyncClient(headers=auth(), timeout=30) as c:
            rs = await asyncio.gather(*[
                c.post(url + "/v2/embed", json=bad if i == 0 else good) for i in range(12)
            ])  # fmt: skip
        return [r.status_code for r in rs]

    assert asyncio.run(together()) == [400] + [200] * 11


def test_an_answer_json_cannot_carry_is_a_500_and_not_billed(serve, caplog) -> None:  # type: ignore[no-untyped-def]
    """A backend whose vectors hold NaN (damaged weights, a divergent fit, a custom
    backend): the request was billed, then its 200 failed to render (NaN is not JSON) and
    the caller got a bare 500, which clients retry: billed again for nothing each time."""
    import numpy as np

    from distill.server.backend_base import ImageOut

    class NaNBackend(HashBackend):
        def embed_images(self, tasks):  # type: ignore[no-untyped-def]
            return [ImageOut(np.full(self.dim, np.nan, dtype=np.float32), "nan") for _ in tasks]

    caplog.set_level(logging.ERROR)
    url = serve(backend=NaNBackend(dim=8))
    body = {"model": "m", "input_type": "image", "images": [data_uri(png(1))]}
    r = httpx.post(url + "/v2/embed", headers=auth(), json=body, timeout=10)
    assert r.status_code == 500 and "x-request-id" in r.headers
    assert "could not be encoded" in r.json()["message"]
    assert httpx.get(url + "/admin/billing", headers=auth()).json()["requests"] == 0
    assert any("not JSON" in rec.getMessage() for rec in caplog.records)


def test_the_text_of_one_chat_call_is_capped(serve) -> None:  # type: ignore[no-untyped-def]
    """A chat call's texts had no cap but the 32 MB body: every one is counted as tokens
    and the prompt searched for options, on the event loop (30 MB of text: 19-29 s with
    the hash backend, every other request waiting). Now more than MAX_CHAT_TEXT_CHARS
    characters in all its messages is a 400 in OpenAI's envelope, not billed, said before
    any image is decoded (the last body's "-" is not one)."""
    from distill.server.config import MAX_CHAT_TEXT_CHARS as most

    def chat(*messages: dict) -> dict:  # type: ignore[type-arg]
        return {"model": "m", "messages": list(messages)}

    def parts(*texts: str) -> list[dict]:  # type: ignore[type-arg]
        return [{"type": "text", "text": t} for t in texts]

    half = "word " * (most // 10)  # most / 2 characters
    url = serve()
    with httpx.Client(headers=auth(), timeout=30) as c:
        for body in (
            chat({"role": "user", "content": "x" * (most + 1)}),
            chat({"role": "user", "content": parts(half, half, "x")}),
            chat({"role": "system", "content": half + "x"}, {"role": "user", "content": half}),
            chat({"role": "user", "content": parts(half)}, {"role": "assistant", "content": half},
                 {"role": "user", "content": [{"type": "text", "text": "x"},
                                              {"type": "image_url", "image_url": {"url": "-"}}]}),
        ):  # fmt: skip
            r = c.post(url + "/v1/chat/completions", json=body)
            assert r.status_code == 400, (r.status_code, r.text[:200])
            error = r.json()["error"]
            assert error["code"] == "context_length_exceeded", error
            assert f"{most + 1:,} characters" in error["message"], error
            assert f"at most {most:,} characters per call" in error["message"], error
        assert c.get(url + "/admin/billing").json()["requests"] == 0
        both = chat({"role": "system", "content": half}, {"role": "user", "content": parts(half)})
        r = c.post(url + "/v1/chat/completions", json=both)
        assert r.status_code == 200, r.text[:200]  # exactly the cap is served


def test_the_text_of_one_embedding_call_is_capped(serve) -> None:  # type: ignore[no-untyped-def]
    """The texts of an embedding call had no cap but the 32 MB body: each counted as
    tokens and embedded (Cohere's answer echoes them too), on the event loop. Now more
    than MAX_EMBED_TEXT_CHARS characters in all its inputs is a 400 in the route's own
    envelope, not billed, said before any image is decoded (the "-" is not one)."""
    from distill.server.config import MAX_EMBED_TEXT_CHARS as most

    def text(t: str) -> dict:  # type: ignore[type-arg]
        return {"type": "text", "text": t}

    half = "word " * (most // 10)  # most / 2 characters
    cohere = {"model": "m", "input_type": "classification"}
    url = serve()
    with httpx.Client(headers=auth(), timeout=30) as c:
        for path, body in (
            ("/v2/embed", {**cohere, "texts": ["x" * (most + 1)]}),
            ("/v2/embed", {**cohere, "texts": [half, half, "x"]}),
            ("/v2/embed", {**cohere, "inputs": [
                {"content": [text(half)]},
                {"content": [text(half), text("x"),
                             {"type": "image_url", "image_url": {"url": "-"}}]}]}),
            ("/v1/embeddings", {"model": "m", "input": "x" * (most + 1)}),
            ("/v1/embeddings", {"model": "m", "input": [half, half, "x"]}),
        ):  # fmt: skip
            r = c.post(url + path, json=body)
            assert r.status_code == 400, (path, r.status_code, r.text[:200])
            if path == "/v2/embed":
                message = r.json()["message"]
            else:
                error = r.json()["error"]
                assert error["code"] == "max_tokens_per_request", error
                message = error["message"]
            assert f"{most + 1:,} characters" in message, message
            assert f"at most {most:,} characters per call" in message, message
        assert c.get(url + "/admin/billing").json()["requests"] == 0
        for path, body in (  # exactly the cap is served
            ("/v2/embed", {**cohere, "texts": [half, half]}),
            ("/v2/embed", {**cohere, "inputs": [{"content": [text(half), text(half)]}]}),
            ("/v1/embeddings", {"model": "m", "input": [half, half]}),
        ):
            r = c.post(url + path, json=body)
            assert r.status_code == 200, (path, r.text[:200])


def _image_bodies(uri: str, n: int) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    """Every way to put ``n`` images in one call, on the three routes."""
    part = {"type": "image_url", "image_url": {"url": uri}}
    return [
        ("/v2/embed", {"model": "m", "input_type": "image", "inputs": [{"content": [part] * n}]}),
        ("/v2/embed", {"model": "m", "input_type": "image", "inputs": [
            {"content": [part] * (n - n // 2)}, {"content": [part] * (n // 2)}]}),
        ("/v1/embeddings", {"model": "m", "modality": "image", "input": [uri] * n}),
        ("/v1/chat/completions", {"model": "m", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "what is it?"}, *[part] * n]}]}),
        ("/v1/chat/completions", {"model": "m", "messages": [
            {"role": "user", "content": [part]}] * n}),
    ]  # fmt: skip


def test_the_images_of_one_call_are_capped_before_any_is_read(serve) -> None:  # type: ignore[no-untyped-def]
    """One Cohere input (or one chat message, or a conversation) held any number of images:
    100,000 1x1 PNGs (16 MB, under the body limit) took the hash backend 12-21 s and
    600 MB, the event loop blocked throughout; a model backend embeds each one. Now more
    images than ``max_images`` in one call is a 400 in the provider's envelope, before any
    image is decoded, and is not billed."""
    uri = data_uri(png(1))
    url = serve()  # the default cap
    with httpx.Client(headers=auth(), timeout=30) as c:
        for path, body in _image_bodies(uri, 3001):
            r = c.post(url + path, json=body)
            assert r.status_code == 400, (path, r.status_code, r.text[:200])
            message = r.json()["message"] if path == "/v2/embed" else (
                r.json()["error"]["message"])  # fmt: skip
            assert "3,001 images" in message and "per call" in message, message
        assert httpx.get(url + "/admin/billing", headers=auth()).json()["requests"] == 0
        url = serve(max_images=4)  # the flag --max-images
        for path, body in _image_bodies(uri, 4):
            assert c.post(url + path, json=body).status_code == 200, path
        for path, body in _image_bodies(uri, 5):
            r = c.post(url + path, json=body)
            assert r.status_code == 400 and "at most 4 images" in r.text, (path, r.text[:200])
        assert httpx.get(url + "/admin/billing", headers=auth()).json()["requests"] == 5

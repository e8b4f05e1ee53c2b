"""The default transport (vlmclient.http11) against scripted servers on 127.0.0.1: every
way an HTTP/1.1 answer can be framed, keep-alive reuse, TLS, and each failure as the
httpx exception that tells the client whether the request may have been billed."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from vlmclient import Budget, Price, TeacherClient, TextEmbeddingRequest
from vlmclient.errors import APIConnectionError, APITimeoutError, ResponseValidationError
from vlmclient.http11 import CUT, MAX_ANSWER, Http11Transport
from vlmclient.retry import RetryPolicy
from vlmclient.transport import ReadingAiohttpTransport

TLS = Path(__file__).parent / "tls"
# (request, n) -> what to write; in a list, a float is a pause of that many seconds
Reply = Callable[[bytes, int], bytes | list[bytes | float] | None]
# Both transports must read an answer by the same rules (the size cap, what a cut 2xx is):
# the tests of those rules run on each.
Make = Callable[..., httpx.AsyncBaseTransport]
BOTH = pytest.mark.parametrize("make", [Http11Transport, ReadingAiohttpTransport],
                               ids=["http11", "aiohttp"])


class Script:
    """A raw HTTP/1.1 server: reads each request (head + Content-Length body), writes what
    ``reply`` returns (a list: piece by piece, a drain between pieces, pausing at a float;
    None: nothing), and counts connections and requests."""

    def __init__(self, reply: Reply, close_after: bool = False) -> None:
        self.reply = reply
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                out = self.reply(request, len(self.requests))
                if out is None:
                    await asyncio.sleep(3600)  # silence
                for piece in out if isinstance(out, list) else [out]:
                    if isinstance(piece, float):
                        await asyncio.sleep(piece)
                        continue
                    writer.write(piece)
                    await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went, or the test ended
        finally:
            writer.close()


@asynccontextmanager
async def serve(script: Script, tls: bool = False) -> AsyncIterator[str]:
    context = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(TLS / "loopback-cert.pem", TLS / "loopback-key.pem")
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        for w in script.writers:
            w.close()
        server.close()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"".join(
        e + b"\r\n" for e in extra)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def post(transport: httpx.AsyncBaseTransport, url: str, body: bytes = b'{"a":1}',
               timeout: httpx.Timeout | None = None) -> httpx.Response:
    request = httpx.Request("POST", url + "/v1/x?q=1", content=body,
                            headers={"Content-Type": "application/json"})
    request.extensions["timeout"] = (timeout or httpx.Timeout(5.0)).as_dict()
    return await transport.handle_async_request(request)


CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4;ext=1\r\nabcd\r\n0a\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")


@pytest.mark.parametrize(("answer", "body"), [
    (ok(b"hello"), b"hello"),
    (list(CHUNKED[i:i + 1] for i in range(len(CHUNKED))), b"abcd0123456789"),  # byte by byte
    (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after"), b"after"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    (b"HTTP/1.0 200 OK\r\n\r\nto the end", b"to the end"),  # framed by the close
], ids=["content-length", "chunked-bytewise", "100-continue", "204", "until-close"])
async def test_every_framing_of_an_answer_is_read_whole(answer: bytes | list[bytes],
                                                        body: bytes) -> None:
    until_close = isinstance(answer, bytes) and answer.startswith(b"HTTP/1.0")
    script = Script(lambda req, n: answer, close_after=until_close)
    transport = Http11Transport()
    async with serve(script) as url:
        response = await post(transport, url)
        assert response.content == body
        assert response.status_code in (200, 204)
        # the request went out as httpx holds it: request line, headers, body
        assert script.requests[0].startswith(b"POST /v1/x?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        assert script.requests[0].endswith(b'\r\n\r\n{"a":1}')
        # and the next request works too (on a kept connection, or a new one after a close)
        assert (await post(transport, url)).content == body
    await transport.aclose()


async def test_keep_alive_reuses_one_connection_and_survives_a_server_close() -> None:
    script = Script(lambda req, n: ok(b"%d" % n))
    transport = Http11Transport()
    async with serve(script) as url:
        assert [(await post(transport, url)).text for _ in range(3)] == ["1", "2", "3"]
        assert script.connections == 1
        script.writers[0].close()  # the server drops the idle connection
        await asyncio.sleep(0.05)
        assert (await post(transport, url)).text == "4"
        assert script.connections == 2
        # "Connection: close" answers are never reused
        script.reply = lambda req, n: ok(b"c", b"Connection: close")
        await post(transport, url)  # on the kept connection, which then closes
        assert script.connections == 2
        await post(transport, url)
        await post(transport, url)
        assert script.connections == 4
    await transport.aclose()


async def test_gzip_answer_is_decoded_and_headers_kept() -> None:
    data = gzip.compress(b'{"ok": true}')
    script = Script(lambda req, n: ok(data, b"Content-Encoding: gzip", b"X-Request-Id: r1"))
    transport = Http11Transport()
    async with serve(script) as url:
        response = await post(transport, url)
    assert response.json() == {"ok": True}
    assert response.headers["x-request-id"] == "r1"
    assert response.extensions["reason_phrase"] == b"OK"
    await transport.aclose()


@pytest.mark.parametrize(("encoding", "packed"), [
    (b"gzip", gzip.compress(b'{"ok": true}')),
    (b"deflate", zlib.compress(b'{"ok": true}')),
    (b"deflate", zlib.compress(b'{"ok": true}')[2:-4]),  # raw deflate, as some servers send
    (b"gzip, gzip", gzip.compress(gzip.compress(b'{"ok": true}'))),
], ids=["gzip", "zlib-deflate", "raw-deflate", "gzip-twice"])  # gzip's mtime: stable ids
async def test_gzip_and_deflate_answers_are_decoded(encoding: bytes, packed: bytes) -> None:
    script = Script(lambda req, n: ok(packed, b"Content-Encoding: " + encoding))
    transport = Http11Transport(max_answer=1000)
    async with serve(script) as url:
        assert (await post(transport, url)).json() == {"ok": True}
    await transport.aclose()


@BOTH
async def test_a_compressed_answer_is_never_decoded_past_the_size_cap(make: Make) -> None:
    """Before: the 256 MB cap counted wire bytes and httpx decoded the whole body: a 598 KB
    gzip answer took 600 MB (1.28 GB at the peak), 3 MB of gzip a MemoryError traceback."""
    bomb = gzip.compress(b"0" * 50_000_000)  # about 50 KB on the wire
    assert len(bomb) < 100_000
    script = Script(lambda req, n: ok(bomb, b"Content-Encoding: gzip"))
    transport = make(max_answer=1_000_000)
    async with serve(script) as url:
        got = await post(transport, url)
    assert got.status_code == 200 and got.content == bomb  # raw: never decoded
    assert "decodes to more than 1000000 bytes" in got.extensions[CUT]
    await transport.aclose()


async def test_https_to_a_trusted_certificate_and_refused_to_an_untrusted_one() -> None:
    script = Script(lambda req, n: ok(b"secure"))
    async with serve(script, tls=True) as url:
        trusting = Http11Transport(verify=ssl.create_default_context(
            cafile=str(TLS / "loopback-cert.pem")))
        assert (await post(trusting, url)).content == b"secure"
        await trusting.aclose()
        default = Http11Transport()  # certifi's roots: our self-signed certificate fails
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await post(default, url)
        await default.aclose()


async def test_failures_are_the_httpx_errors_that_say_whether_it_left() -> None:
    transport = Http11Transport()
    # nothing listens: never left
    with socket_closed_port() as port, pytest.raises(httpx.ConnectError):
        await post(transport, f"http://127.0.0.1:{port}")
    # silence: timed out reading, the request was sent
    async with serve(Script(lambda req, n: None)) as url:
        with pytest.raises(httpx.ReadTimeout):
            await post(transport, url, timeout=httpx.Timeout(5.0, read=0.2))
    # the server hangs up halfway through an error answer
    async with serve(Script(lambda req, n: b"HTTP/1.1 500 Oops\r\nContent-Length: 9\r\n\r\nabc",
                            close_after=True)) as url:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a complete"):
            await post(transport, url)
    # a server that never reads: the upload stalls (a body larger than the socket
    # buffers), which is a write timeout, not a read one
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            writer.close()

    server = await asyncio.start_server(deaf, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(httpx.WriteTimeout):
        await post(transport, f"http://127.0.0.1:{port}", body=b"x" * (64 << 20),
                   timeout=httpx.Timeout(5.0, write=0.3))
    server.close()
    async with serve(Script(lambda req, n: b"SPDY/9 200 OK\r\n\r\n")) as url:
        with pytest.raises(httpx.RemoteProtocolError, match="bad status line"):
            await post(transport, url)
    for size in (b"-1", b"0x4", b"1_0", b"zz"):
        bad = b"HTTP/1.1 502 Bad\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabcd\r\n"
        async with serve(Script(lambda req, n, bad=bad: bad)) as url:
            with pytest.raises(httpx.RemoteProtocolError, match="bad chunk size"):
                await post(transport, url)
    await transport.aclose()


@BOTH
@pytest.mark.parametrize(("answer", "close", "why"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Request-Id: r-9\r\n\r\nabc", True,
     {"http11": "without sending a complete", "aiohttp": "not completed"}),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n", True,
     {"http11": "bad chunk size", "aiohttp": "chunk size"}),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n", True, "over 1000: refused"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", False,  # then silence
     {"http11": "timed out", "aiohttp": "timeout"}),
], ids=["hung-up", "bad-chunk", "over-cap", "silent"])
async def test_a_2xx_that_does_not_come_whole_is_its_head_marked_cut(
    make: Make, answer: bytes, close: bool, why: str | dict[str, str]
) -> None:
    """The provider billed a 2xx the moment it answered: a body cut short (or refused)
    comes back as the 2xx's head with ``CUT`` saying why, which the client charges as a
    billed answer it cannot use and never retries. As a RemoteProtocolError it was charged
    and retried, and billed once per attempt (the audit's 'cut200': each batch 4 times)."""
    if make is ReadingAiohttpTransport and b"zz" in answer:
        pytest.skip("aiohttp's parser drops a head whose body breaks in the same read "
                    "(docs/reliability.md, Known gaps)")
    transport = make(max_answer=1000)
    async with serve(Script(lambda req, n: answer, close_after=close)) as url:
        got = await post(transport, url, timeout=httpx.Timeout(5.0, read=0.3))
    assert got.status_code == 200 and got.content == b""
    if isinstance(why, dict):
        why = why["aiohttp" if make is ReadingAiohttpTransport else "http11"]
    assert why in got.extensions[CUT].lower()
    await transport.aclose()


async def test_a_full_pool_waits_then_times_out_and_a_cancel_frees_its_slot() -> None:
    def reply(req: bytes, n: int) -> bytes | None:
        return None if n == 1 else ok(b"%d" % n)

    script = Script(reply)
    transport = Http11Transport(limits=httpx.Limits(max_connections=1))
    async with serve(script) as url:
        hung = asyncio.create_task(post(transport, url))
        await asyncio.sleep(0.05)  # it holds the only connection
        with pytest.raises(httpx.PoolTimeout):
            await post(transport, url, timeout=httpx.Timeout(5.0, pool=0.1))
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung
        # the pool-timed-out request never reached the server; the cancelled request's
        # connection is closed (its answer may still come) and its slot is free: the
        # next request gets a new connection
        assert (await post(transport, url)).text == "2"
        assert script.connections == 2
    await transport.aclose()


async def test_teacher_client_charges_by_what_the_failure_says() -> None:
    """Through TeacherClient and its default transport: refused costs nothing, a read
    timeout costs the reservation (the provider may have billed it)."""
    def client(url: str) -> TeacherClient:
        return TeacherClient("openai:m", api_key="k", base_url=url + "/v1",
                             price=Price(usd_per_1m_input_tokens=Decimal("1")),
                             budget=Budget("1"), retry=RetryPolicy(max_attempts=1),
                             timeout=0.3)

    with socket_closed_port() as port:
        async with client(f"http://127.0.0.1:{port}") as c:
            with pytest.raises(APIConnectionError, match="nothing was sent or billed"):
                await c.embed_texts([TextEmbeddingRequest(text="a cat")])
        assert c.budget.spent == 0
    async with serve(Script(lambda req, n: None)) as url, client(url) as c:
        with pytest.raises(APITimeoutError):
            await c.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert c.budget.spent > 0 and c.budget.reserved == 0


@BOTH
@pytest.mark.parametrize("how", ["cut", "over-cap", "dripping"])
async def test_teacher_client_charges_a_cut_200_once_and_never_retries_it(
    make: Make, how: str,
) -> None:
    """Before: a 200 whose body stopped halfway was a dropped connection to the client:
    charged, retried, and billed again on every attempt (4 bills for one batch). A 200
    over the size cap is billed too: charged once the same way (the aiohttp transport
    read it whole, however large), and so is one still incomplete at the answer deadline
    (the aiohttp transport read a dripping answer to its end)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Request-Id: r-cut\r\n\r\n"
    cut: list[bytes | float] = {
        "cut": [head % 500 + b"{\"data\": ["],
        "over-cap": [head % 500 + b" " * 500],
        "dripping": [head % 40, *[p for _ in range(40) for p in (b" ", 0.05)]],
    }[how]
    script = Script(lambda req, n: cut, close_after=True)
    async with serve(script) as url, TeacherClient(
        "openai:m", api_key="k", base_url=url + "/v1",
        price=Price(usd_per_1m_input_tokens=Decimal("1")), budget=Budget("1"),
        retry=RetryPolicy(max_attempts=4, sleep=_no_sleep),
        transport=make(max_answer=400), timeout=0.3,
    ) as c:
        with pytest.raises(ResponseValidationError, match=r"cut off.*r-cut"):
            await c.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert len(script.requests) == 1  # not retried
    assert c.billed_malformed == 1
    assert c.budget.spent > 0 and c.budget.reserved == 0  # charged at its reservation


async def _no_sleep(_: float) -> None:
    return None


class socket_closed_port:
    """A loopback port nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


async def test_a_pool_timeout_is_a_request_that_never_left_and_costs_nothing() -> None:
    class FullPool(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.PoolTimeout("no connection free in time")

    async with TeacherClient("openai:m", api_key="k", base_url="http://127.0.0.1:9/v1",
                             price=Price(usd_per_1m_input_tokens=Decimal("1")),
                             budget=Budget("1"), retry=RetryPolicy(max_attempts=1),
                             transport=FullPool()) as c:
        with pytest.raises(APIConnectionError, match="nothing was sent or billed"):
            await c.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert c.budget.spent == 0 and c.budget.reserved == 0


async def test_a_header_holding_a_line_break_is_refused_before_anything_is_sent() -> None:
    script = Script(lambda req, n: ok(b"x"))
    transport = Http11Transport()
    async with serve(script) as url:
        for bad in ("v\r\nX-Injected: 1", "v\nX-Injected: 1", "v\rX"):
            # httpx keeps such a value as given
            request = httpx.Request("POST", url + "/v1/x", content=b"{}",
                                    headers={"X-Note": bad})
            with pytest.raises(httpx.LocalProtocolError, match="CR or LF"):
                await transport.handle_async_request(request)
    assert script.connections == 0 and script.requests == []
    await transport.aclose()


async def test_an_idle_connection_past_its_expiry_is_not_reused() -> None:
    script = Script(lambda req, n: ok(b"%d" % n))
    transport = Http11Transport(limits=httpx.Limits(keepalive_expiry=0.05))
    async with serve(script) as url:
        await post(transport, url)
        await post(transport, url)
        assert script.connections == 1  # within the expiry: kept
        await asyncio.sleep(0.1)
        assert (await post(transport, url)).text == "3"
        assert script.connections == 2
    await transport.aclose()


@BOTH
async def test_an_answer_over_the_size_cap_is_refused_without_reading_it_all(
    make: Make,
) -> None:
    """Before, on the aiohttp transport: no cap at all, a 2xx of 300 MiB was held whole
    (684 MiB peak RSS; the default transport refused it at 256 MiB)."""
    transport = make(max_answer=1000)
    # announced too large: refused on its headers
    huge = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n"
    async with serve(Script(lambda req, n: huge)) as url:
        assert "over 1000" in (await post(transport, url)).extensions[CUT]  # a 2xx: billed
    huge = huge.replace(b"200 OK", b"500 Oops")
    async with serve(Script(lambda req, n: huge)) as url:
        with pytest.raises(httpx.RemoteProtocolError, match="over 1000"):
            await post(transport, url)
    # chunked, growing past the cap (64 KB chunks, never finished)
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    endless = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 8
    async with serve(Script(lambda req, n: endless)) as url:
        assert "larger than 1000" in (await post(transport, url)).extensions[CUT]
    endless = endless.replace(b"200 OK", b"503 Busy")
    async with serve(Script(lambda req, n: endless)) as url:
        with pytest.raises(httpx.RemoteProtocolError, match="larger than 1000"):
            await post(transport, url)
    # under the cap: read as usual, announced or not
    async with serve(Script(lambda req, n: ok(b"y" * 1000))) as url:
        assert len((await post(transport, url)).content) == 1000
    exact = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"z" * 1000
    async with serve(Script(lambda req, n: exact + b"\r\n0\r\n\r\n")) as url:
        assert (await post(transport, url)).content == b"z" * 1000
    await transport.aclose()


async def test_the_aiohttp_transport_has_the_default_size_cap() -> None:
    http11, aiohttp = Http11Transport(), ReadingAiohttpTransport()
    assert http11.max_answer == aiohttp.max_answer == MAX_ANSWER == 256 * 2**20
    await http11.aclose()
    await aiohttp.aclose()


async def test_an_idle_connection_whose_socket_is_closing_is_not_reused() -> None:
    """A kept connection closed locally but not yet told (connection_lost comes on a later
    loop turn) would swallow what is written to it: the pool must open a new one."""
    script = Script(lambda req, n: ok(b"%d" % n))
    transport = Http11Transport()
    async with serve(script) as url:
        await post(transport, url)
        kept = [conn for idle in transport._idle.values() for conn in idle]
        assert len(kept) == 1 and kept[0].transport is not None
        kept[0].transport.close()  # closing now; the protocol hears of it only later
        assert (await post(transport, url)).text == "2"
        assert script.connections == 2
    await transport.aclose()


@BOTH
@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n",
                                  b"HTTP/1.1 500 Oops\r\nContent-Length: 400\r\n\r\n", b""],
                         ids=["200", "500", "no-head"])
async def test_an_answer_dripping_a_byte_at_a_time_ends_at_twice_the_timeout(
    make: Make, head: bytes,
) -> None:
    """Before: the read timeout measured silence between bytes, so a server sending a
    byte every 50 ms kept a request with a 0.3 s timeout open until it was done (an
    audit's harvest with --timeout 2 took 48 s; the aiohttp transport read a 200 of 40
    dripping bytes to its end, 2.0 s)."""
    stop, ended = asyncio.Event(), asyncio.Event()

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await dripping(reader, writer)
        except ConnectionError:
            pass  # the client gave up and closed: what the test wants
        finally:
            writer.close()
            ended.set()

    async def dripping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(7)  # the body of post()
        writer.write(head)  # at once; then the rest (or, without a head, the head) drips
        for byte in (b"x" * 400 if head else b"HTTP/1.1 200 OK\r\n" * 40):
            if stop.is_set():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    transport = make()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        if head.startswith(b"HTTP/1.1 200"):  # a 2xx head came: billed, marked cut
            got = await post(transport, url, timeout=httpx.Timeout(5.0, read=0.3))
            assert "still incomplete" in got.extensions[CUT]
        else:
            with pytest.raises(httpx.ReadTimeout, match="still incomplete"):
                await post(transport, url, timeout=httpx.Timeout(5.0, read=0.3))
        assert loop.time() - started < 2.0  # 0.6 s and a sweep, not the whole drip
    finally:
        stop.set()
        await asyncio.wait_for(ended.wait(), 5)
        server.close()
        await server.wait_closed()
        await transport.aclose()


class ThreadServer:
    """One answer per connection from a server thread of its own, which goes on while the
    test's event loop is stopped: ``ok(body)`` written ``after`` seconds after the
    request was read, then the connection closed (``closed`` released), ``connections``
    times."""

    def __init__(self, body: bytes, after: float, connections: int = 1) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.body, self.after, self.connections = body, after, connections
        self.closed = threading.Semaphore(0)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            for _ in range(self.connections):
                conn, _ = self.listener.accept()
                with conn:
                    got = b""
                    while not got.endswith(b'{"a":1}'):  # the head and body of post()
                        got += conn.recv(65536)
                    time.sleep(self.after)
                    conn.sendall(ok(self.body))
                self.closed.release()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@BOTH
@pytest.mark.parametrize("answer_after", [0.1, 1.7], ids=["waiting", "after-resume"])
async def test_time_the_loop_did_not_run_counts_toward_no_timeout(
    make: Make, answer_after: float,
) -> None:
    """The event loop stops for 1.5 s (Ctrl-Z, a paused VM, a blocking call), five read
    timeouts: an answer that arrived meanwhile ("waiting") is read, and so is one that
    comes 0.15 s after the loop runs again ("after-resume"). Failing them billed the
    answer and bought it again on retry."""
    async def stop_the_loop() -> None:
        await asyncio.sleep(0.05)  # the request is out
        time.sleep(1.5)  # (blocks the loop, as a stopped process does)

    server = ThreadServer(b"paid", answer_after)
    transport = make()
    try:
        stop = asyncio.create_task(stop_the_loop())
        got = await post(transport, server.url, timeout=httpx.Timeout(5.0, read=0.3))
        await stop
        assert got.status_code == 200 and got.content == b"paid"
        assert CUT not in got.extensions
    finally:
        await transport.aclose()
        server.close()


class full_backlog:
    """A loopback port that listens but never accepts, its queue already full: a
    connection to it is never made (the kernel drops the SYN), so connecting times out."""

    def __enter__(self) -> int:
        import socket

        self.socks = [socket.socket()]
        self.socks[0].bind(("127.0.0.1", 0))
        self.socks[0].listen(0)
        port = int(self.socks[0].getsockname()[1])
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            self.socks.append(s)
        return port

    def __exit__(self, *exc: object) -> None:
        for s in self.socks:
            s.close()


@BOTH
async def test_a_connect_timeout_is_a_request_that_never_left_and_costs_nothing(
    make: Make,
) -> None:
    """Before, on the aiohttp transport: its ConnectionTimeoutError is a ServerTimeoutError
    too, so connecting too slowly (a host down, a full accept queue) was taken for a read
    timeout after sending: "charged at the worst-case estimate since the provider may
    have billed it", once per attempt, while no byte of the request had left."""
    with full_backlog() as port:
        async with TeacherClient(
            "openai:m", api_key="k", base_url=f"http://127.0.0.1:{port}/v1",
            price=Price(usd_per_1m_input_tokens=Decimal("1")), budget=Budget("1"),
            retry=RetryPolicy(max_attempts=2, sleep=_no_sleep), transport=make(),
            timeout=0.2,
        ) as c:  # fmt: skip
            with pytest.raises(APIConnectionError, match="nothing was sent or billed"):
                await c.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert c.stats.requests_sent == 2 and c.stats.charged_no_answer == 0
    assert c.budget.spent == 0 and c.budget.reserved == 0


async def test_a_kept_connection_the_server_closed_right_after_its_answer_is_not_reused(
) -> None:
    """A server closing each connection right after its answer without saying so (no
    "Connection: close"): its end waited unread in the socket when the next request
    was sent on the kept connection, which then failed as "server disconnected": one
    request in two charged at its worst case and sent again, though no server saw it.
    A kept connection with something unread waiting is not reused."""
    script = Script(lambda req, n: ok(b"%d" % n), close_after=True)
    transport = Http11Transport()
    async with serve(script) as url:
        for n in range(1, 21):
            assert (await post(transport, url)).text == str(n)
    assert script.connections == 20
    await transport.aclose()


@BOTH
async def test_a_kept_connection_closed_while_the_loop_was_busy_is_not_reused(
    make: Make,
) -> None:
    """A server that closes a kept connection (right after its answer, or idle past its
    keep-alive) while the client's event loop is busy (a blocking call, images being
    prepared, a stopped process): the close waits unread in the socket. Before, on the
    aiohttp transport, the next request was written to that connection and failed as
    "server disconnected" / "Can not write request body": charged at its worst case as
    "failed after sending" and sent again, though no server saw it (one request in two
    with a 0.2 s server keep-alive and requests 0.5 s apart). It is not reused now."""
    server = ThreadServer(b"paid", 0.0, connections=5)
    transport = make()
    try:
        for _ in range(5):
            got = await post(transport, server.url)
            assert got.status_code == 200 and got.content == b"paid"
            assert server.closed.acquire(timeout=5)  # (blocks the loop: the close is not read)
    finally:
        await transport.aclose()
        server.close()


async def test_aiohttp_a_kept_connection_closed_after_its_check_costs_nothing() -> None:
    """aiohttp writes a request (head and body together) after the callbacks already due
    in that turn of the event loop, not right after its pool found the kept connection
    fit: a server closing it in between failed the request as "Server disconnected",
    charged at its worst case and sent again, though not a byte of it had left. It is
    checked again before the first byte: released, sent again on a new connection."""
    import json

    import aiohttp

    answer = json.dumps({"data": [{"index": 0, "embedding": [0.5, 0.5]}],
                         "usage": {"prompt_tokens": 3, "total_tokens": 3}}).encode()
    script = Script(lambda req, n: ok(answer))
    shut: list[int] = []

    async def close_it_now(*_: object) -> None:  # the pool has just found it fit
        if not shut:
            for w in script.writers:
                w.get_extra_info("socket").shutdown(socket.SHUT_RDWR)  # its FIN, at once
            shut.append(1)

    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(close_it_now)
    transport = ReadingAiohttpTransport(
        client=lambda: aiohttp.ClientSession(trace_configs=[trace]))
    async with serve(script) as url, TeacherClient(
        "openai:m", api_key="k", base_url=url + "/v1",
        price=Price(usd_per_1m_input_tokens=Decimal("1")), budget=Budget("1"),
        retry=RetryPolicy(max_attempts=3, sleep=_no_sleep), transport=transport, timeout=5,
    ) as c:
        for text in ("a cat", "a dog"):
            [got] = await c.embed_texts([TextEmbeddingRequest(text=text)])
            assert got.vector.shape == (2,)
    assert shut and len(script.requests) == 2 and script.connections == 2
    assert c.stats.charged_no_answer == 0 and c.stats.retries == 1
    assert c.budget.spent == Decimal("0.000006") and c.budget.reserved == 0


@pytest.mark.parametrize("make", [Http11Transport, ReadingAiohttpTransport,
                                  httpx.AsyncHTTPTransport], ids=["http11", "aiohttp", "h11"])
async def test_a_request_header_no_stack_can_write_is_released_and_not_retried(
    make: Make, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a header holding a CR/LF (here from an adapter; a key that slipped past the
    checks did the same) was refused by the transport before anything left, yet the
    client took it for a connection dropped after sending: charged at the worst case,
    retried, charged again. Now it is a configuration error: released at $0, not retried."""
    from dataclasses import replace

    from vlmclient.errors import ConfigurationError
    from vlmclient.providers import PROVIDERS

    openai = PROVIDERS["openai"]

    def build(spec: object) -> httpx.Request:
        request = openai.build_request(spec)  # type: ignore[arg-type]
        request.headers["X-Note"] = "v\r\nX-Injected: 1"  # httpx keeps it as given
        return request

    monkeypatch.setitem(PROVIDERS, "openai", replace(openai, build_request=build))
    script = Script(lambda req, n: ok(b"x"))
    async with serve(script) as url, TeacherClient(
        "openai:m", api_key="k", base_url=url + "/v1",
        price=Price(usd_per_1m_input_tokens=Decimal("1")), budget=Budget("1"),
        retry=RetryPolicy(max_attempts=4, sleep=_no_sleep), transport=make(), timeout=2,
    ) as c:
        with pytest.raises(ConfigurationError, match="nothing was sent"):
            await c.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert script.requests == []
    assert c.budget.spent == 0 and c.budget.reserved == 0
    assert c.stats.retries == 0


@BOTH
async def test_an_error_status_with_broken_framing_is_a_scrubbed_transport_error(
    make: Make, caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: a 502 whose chunk-size line was not a number (here: the key, echoed) made
    aiohttp raise its own ClientResponseError, which escaped the client untranslated,
    the server's line and the request's Authorization header in it, and the request was
    charged as "cancelled". The default transport's error for it: a failure after sending,
    charged at its reservation and retried, the message scrubbed (on both transports the
    httpx error chained to it, which a traceback prints, held the line unscrubbed)."""
    import logging

    from tests.conftest import ListLedger

    key = "sk-live-SECRETKEY0123456789abcdef"
    bad = b"HTTP/1.1 502 Bad\r\nTransfer-Encoding: chunked\r\n\r\n" + key.encode() + b"\r\nab\r\n"
    script = Script(lambda req, n: bad, close_after=True)
    ledger = ListLedger()
    caplog.set_level(logging.DEBUG)
    async with serve(script) as url, TeacherClient(
        "openai:m", api_key=key, base_url=url + "/v1",
        price=Price(usd_per_1m_input_tokens=Decimal("1")), budget=Budget("1"), ledger=ledger,
        retry=RetryPolicy(max_attempts=2, sleep=_no_sleep),
        transport=make(), timeout=2,
    ) as c:
        with pytest.raises(APIConnectionError, match=r"failed after sending.*chunk") as got:
            await c.embed_texts([TextEmbeddingRequest(text="a cat")])
    import traceback

    from vlmclient.redact import Redactor

    shown = "".join(traceback.format_exception(got.value))  # the chain a traceback prints
    holds = Redactor([key]).holds  # the key, or 16 or more of its first characters...
    assert not holds(shown) and not holds(caplog.text) and not holds(repr(ledger.records))
    assert [r.outcome for r in ledger.records] == ["connection", "connection"]
    assert len(script.requests) == 2 and c.budget.spent > 0 and c.budget.reserved == 0

"""The default transport: HTTP/1.1 keep-alive connections on asyncio protocols.

Why not aiohttp's ``ClientSession`` (the previous default): its request path (cookies,
tracing, redirects, proxies, URL and header handling, a response object and stream per
answer) is generic work a teacher client never needs, and it cost more CPU per request
than everything the client itself does (docs/benchmarks.md, client throughput). This
transport sends what ``httpx.Request`` holds, byte for byte, and reads each answer whole
in the connection's protocol: one wake-up of the waiting request per answer.

What it does: HTTP/1.1 over TCP or TLS (httpx's SSL context: certifi, ``SSL_CERT_FILE``),
a keep-alive pool per origin (at most ``max_connections`` open, idle ones dropped after
``keepalive_expiry``), answers framed by Content-Length, chunked or the connection's end,
informational (1xx) answers skipped, httpx's connect / read / write / pool timeouts and
exceptions, so the client tells a request that never left (``ConnectError``,
``ConnectTimeout``, ``PoolTimeout``) from one that may have been billed. What it does
not: proxies (neither did the aiohttp default: it ignored the environment's), HTTP/2,
redirects (the client follows none), request bodies it cannot read whole first.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import ssl
import zlib
from collections import deque
from typing import Any, Protocol

import httpx

from .providers.wire import headers_of
from .redact import clip
from .watchdog import Watchdog, late_answer, tick_of

__all__ = [
    "CUT",
    "MAX_ANSWER",
    "Http11Transport",
    "cut_response",
    "decode_body",
    "response_of",
    "too_large",
    "undecoded",
    "unread",
]

MAX_HEAD = 64 * 1024  # bytes of status line and headers accepted
# Bytes of one answer's body accepted (a teacher's largest: a few MB of embeddings); a
# server sending more is refused before it fills the client's memory. (The aiohttp
# transport, vlmclient.transport, has the same cap.)
MAX_ANSWER = 256 * 2**20
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_BODY = frozenset({204, 304})
_HEX = b"0123456789abcdefABCDEF"
Origin = tuple[str, str, int]
# Response extension: set on a 2xx whose body did not come whole (the connection ended,
# the read timed out, the body broke the framing or the size cap), to why. The provider
# billed it; the client charges it as an answer it cannot use and never retries it.
CUT = "vlmclient.cut"


def response_of(request: httpx.Request, status: int, reason: bytes, headers: httpx.Headers,
                body: bytes, encoded: bool, limit: int = MAX_ANSWER) -> httpx.Response:
    """The ``httpx.Response`` of an answer read whole: ``body`` decoded when the answer has
    a Content-Encoding (``encoded``; gzip and deflate, to at most ``limit`` bytes), else
    set as its content (what ``read()`` would set, without driving httpx's chunk
    iterators: about 6 us of CPU per answer)."""
    extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
    if reason:
        extensions["reason_phrase"] = reason
    answer = httpx.Response(
        status_code=status,
        headers=headers,
        stream=httpx.ByteStream(body),
        request=request,
        extensions=extensions,
    )
    if encoded:
        decoded, why = decode_body(body, headers.get("content-encoding", ""), limit)
        if decoded is None:
            raw = undecoded(answer, body if len(body) <= limit else b"")
            if why:
                raw.extensions = {**raw.extensions, CUT: why}
            return raw
        answer = httpx.Response(status_code=status, headers=headers, request=request,
                                extensions=extensions)
        answer._content = decoded
    else:
        answer._content = body
    return answer


def cut_response(request: httpx.Request, status: int, reason: bytes, headers: httpx.Headers,
                 why: str) -> httpx.Response:
    """The head of a 2xx whose body did not come whole, with an empty body and ``CUT``
    saying ``why``: billed, so charged once as an answer the client cannot use and never
    retried (see CUT)."""
    response = response_of(request, status, reason, headers, b"", False)
    response.extensions = {**response.extensions, CUT: why}
    return response


def too_large(limit: int, length: int | None = None) -> httpx.RemoteProtocolError:
    """The error of an answer refused for its size: over ``limit`` bytes as it grows, or
    announced as ``length`` bytes (a 2xx refused is cut: see CUT)."""
    if length is None:
        return httpx.RemoteProtocolError(f"answer larger than {limit} bytes: refused")
    return httpx.RemoteProtocolError(f"answer of {length} bytes, over {limit}: refused")


def decode_body(body: bytes, encoding: str, limit: int) -> tuple[bytes | None, str]:
    """``body`` decoded from its Content-Encoding (gzip or deflate, in the order applied)
    without ever holding more than ``limit`` decoded bytes: (None, why) when it would be
    larger (a 600 KB gzip answer can decode to 600 MB, which httpx decoded whole); (None,
    "") when it cannot be decoded.

    >>> import gzip
    >>> decode_body(gzip.compress(b"abc"), "gzip", 10)
    (b'abc', '')
    >>> decode_body(gzip.compress(b"a" * 100), "gzip", 10)
    (None, 'its gzip body decodes to more than 10 bytes: refused')
    """
    for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
        if coding == "identity":
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            return None, ""
        bits = (16 + zlib.MAX_WBITS,) if coding != "deflate" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
        for wbits in bits:  # deflate: zlib-wrapped, or raw as some servers send it
            try:
                d = zlib.decompressobj(wbits)
                out = d.decompress(body, limit + 1)
                if len(out) > limit or d.unconsumed_tail:
                    return None, f"its {coding} body decodes to more than {limit} bytes: refused"
                out += d.flush()
                if len(out) > limit:
                    return None, f"its {coding} body decodes to more than {limit} bytes: refused"
                break
            except zlib.error:
                continue
        else:
            return None, ""
        body = out
    return body, ""


def undecoded(answer: httpx.Response, body: bytes) -> httpx.Response:
    """``answer`` with its raw ``body`` and no Content-Encoding, for a body that cannot be
    decoded: the answer did come, so its status decides what it cost (a 200 was billed,
    then fails parsing as a billed answer we cannot use, never retried) rather than a
    decoding error passing for a dropped connection (charged and retried: billed again)."""
    headers = httpx.Headers(answer.headers)
    del headers["Content-Encoding"]
    raw = httpx.Response(
        status_code=answer.status_code,
        headers=headers,
        request=answer.request,
        extensions=answer.extensions,
    )
    raw._content = body
    return raw


class _Head:
    """An answer's status line and headers, and how its body is framed."""

    __slots__ = ("encoded", "entries", "keep_alive", "length", "reason", "status")

    def __init__(self, status: int, reason: bytes, entries: list[tuple[bytes, bytes, bytes]],
                 keep_alive: bool, length: int, encoded: bool) -> None:
        self.status, self.reason, self.entries = status, reason, entries
        self.keep_alive = keep_alive
        self.length = length  # bytes of body; -1: chunked; -2: until the connection ends
        self.encoded = encoded  # a Content-Encoding header is present


class _Answer:
    __slots__ = ("body", "cut", "head")

    def __init__(self, head: _Head, body: bytes, cut: str = "") -> None:
        self.head, self.body = head, body
        self.cut = cut  # why the body is incomplete (see CUT), "" when it came whole


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: sends a request, parses its answer as bytes arrive."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop,
                 max_answer: int = MAX_ANSWER) -> None:
        self.origin = origin
        self.loop = loop
        self.max_answer = max_answer
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[_Answer] | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.last_io = 0.0  # last bytes received, or the send
        self.reading_since: float | None = None  # when the request was all handed over
        self._limits: tuple[float | None, float | None] = (None, None)  # (read, write)
        self._write_left = 0
        self._head: _Head | None = None
        self._parts: list[bytes] = []  # chunks of a chunked body so far
        self._parts_size = 0
        self.poll: Any = None  # a select.poll of the socket, once it was kept (unread)

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.abort()  # bytes nobody asked for: this connection cannot be trusted
            return
        self.last_io = self.loop.time()
        self.buffer += data
        try:
            self._parse()
            if len(self.buffer) + self._parts_size > self.max_answer + MAX_HEAD:
                raise too_large(self.max_answer)
        except httpx.RemoteProtocolError as exc:
            self._lost(exc)
            self.abort()  # what is left of the answer must not be read as the next one

    def eof_received(self) -> bool:
        head = self._head
        if head is not None and head.length == -2:  # framed by the connection's end
            body, self.buffer = bytes(self.buffer), bytearray()
            self._finish(body, keep_alive=False)
        self._lost(httpx.RemoteProtocolError(
            "server disconnected without sending a complete response"))
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if exc is None:
            self._lost(httpx.RemoteProtocolError(
                "server disconnected without sending a complete response"))
        else:
            self._lost(httpx.ReadError(f"{type(exc).__name__}: {exc}"))

    # -- one exchange -----------------------------------------------------------------

    def send(self, data: bytes, read: float | None, write: float | None
             ) -> asyncio.Future[_Answer]:
        """Send ``data`` (a whole request); the future of its whole answer. The
        transport's watchdog enforces the timeouts (:meth:`check_timeout`); a caller that
        stops waiting (cancelled) must :meth:`abort` the connection."""
        assert self.transport is not None
        waiter = self.waiter = self.loop.create_future()
        self.reusable = False
        self.last_io = self.loop.time()
        self.transport.write(data)
        self._write_left = self.transport.get_write_buffer_size()
        self.reading_since = None if self._write_left else self.last_io
        self._limits = (read, write)
        return waiter

    def check_timeout(self, now: float) -> None:
        """Fail the exchange when nothing moved for the timeout of its phase: writing
        while the request is not all handed to the kernel, reading after; or when the
        answer is still incomplete ANSWER_DEADLINE read timeouts after the request was
        handed over (a server dripping a byte at a time never falls silent: see
        watchdog.late_answer)."""
        if self.waiter is None or self.waiter.done() or self.transport is None:
            return
        left = self.transport.get_write_buffer_size()
        if left and left != self._write_left:  # the upload moves
            self._write_left, self.last_io = left, now
        if not left and self.reading_since is None:
            self.reading_since = now
        limit = self._limits[1] if left else self._limits[0]
        if limit is None:
            return
        exc: httpx.TimeoutException | None
        if now - self.last_io >= limit:
            exc = (httpx.WriteTimeout("timed out sending the request") if left
                   else httpx.ReadTimeout("timed out waiting for the response"))
        else:
            exc = None if left else late_answer(self.reading_since, now, limit)
            if exc is None:
                return
        self._lost(exc)
        self.abort()

    def resumed(self, late: float) -> None:
        """The loop did not run for ``late`` seconds: none of them counts (Watchdog)."""
        self.last_io += late
        if self.reading_since is not None:
            self.reading_since += late

    # -- parsing ----------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self.buffer
        while True:
            if self._head is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise httpx.RemoteProtocolError("response headers too large")
                    return
                head = _parse_head(bytes(buf[:end]))
                del buf[:end + 4]
                if 100 <= head.status < 200:
                    continue  # informational: the answer follows
                self._head = head  # (before refusing its size: a 2xx refused is still billed)
                if head.length > self.max_answer:
                    raise too_large(self.max_answer, head.length)
            keep_alive, length = self._head.keep_alive, self._head.length
            if length >= 0:
                if len(buf) < length:
                    return
                body = bytes(buf[:length])
                del buf[:length]
                self._finish(body, keep_alive)
                return
            if length == -2:
                return  # read until the connection ends (eof_received)
            if not self._parse_chunks():
                return
            body = b"".join(self._parts)
            self._parts, self._parts_size = [], 0
            self._finish(body, keep_alive)
            return

    def _parse_chunks(self) -> bool:
        """Moves the complete chunks of the buffer to ``_parts``; True at the last one
        (its trailers read)."""
        buf = self.buffer
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                return False
            size_text = bytes(buf[:eol]).split(b";", 1)[0].strip(b" \t")
            if not size_text or size_text.strip(_HEX) or len(size_text) > 16:
                raise httpx.RemoteProtocolError(f"bad chunk size {_shown(size_text, 20)}")
            size = int(size_text, 16)
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol) if buf[eol + 2:eol + 4] != b"\r\n" else eol
                if end < 0:
                    return False  # trailers still coming
                del buf[:end + 4]
                return True
            if len(buf) < eol + 2 + size + 2:
                return False
            start = eol + 2
            if buf[start + size:start + size + 2] != b"\r\n":
                raise httpx.RemoteProtocolError("chunk not followed by CRLF")
            self._parts.append(bytes(buf[start:start + size]))
            self._parts_size += size
            del buf[:start + size + 2]

    def _finish(self, body: bytes, keep_alive: bool, cut: str = "") -> None:
        assert self._head is not None and self.waiter is not None
        head, self._head = self._head, None
        # reusable only when nothing else arrived behind the answer
        self.reusable = keep_alive and not self.buffer and not self.closed and not cut
        if not self.waiter.done():
            self.waiter.set_result(_Answer(head, body, cut))

    def _lost(self, exc: Exception) -> None:
        """The exchange ends without its whole answer. After a 2xx head the provider has
        billed it: it ends as that answer with an empty body, which the client charges as
        a billed answer it cannot use, never retried ('malformed'); as a transport error
        it was charged *and* retried, billed once per attempt. Before a 2xx head: ``exc``."""
        head = self._head
        if head is not None and 200 <= head.status < 300 and self.waiter is not None \
                and not self.waiter.done():
            self.buffer.clear()
            self._parts, self._parts_size = [], 0
            self._finish(b"", keep_alive=False, cut=str(exc) or type(exc).__name__)
        else:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def abort(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection",
                      b"content-encoding"})


def _shown(raw: bytes, limit: int) -> str:
    """What a server sent, quoted in an error: at most ``limit`` characters, never part
    of a run the cut splits (a key cut short there would stay unmasked: see clip)."""
    return repr(clip(raw.decode("latin-1"), limit).encode("latin-1"))


def _parse_head(head: bytes) -> _Head:
    """The status line and headers of an answer (``head``: up to the blank line).

    Headers are kept as httpx keeps them, (name, lower-case name, value), so the
    response's ``httpx.Headers`` is made without a second pass."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"bad status line {_shown(lines[0], 60)}")
    status = int(parts[1])
    entries: list[tuple[bytes, bytes, bytes]] = []
    length: int | None = None
    chunked = encoded = False
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1] in b" \t" or name[0] in b" \t":
            raise httpx.RemoteProtocolError(f"bad header line {_shown(line, 60)}")
        value = value.strip(b" \t")
        lower = name.lower()
        entries.append((name, lower, value))
        if lower not in _FRAMING:
            continue
        if lower == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise httpx.RemoteProtocolError(f"bad Content-Length {_shown(value, 20)}")
            length = int(value)
        elif lower == b"transfer-encoding":
            chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
        elif lower == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            close = b"close" in tokens or (close and b"keep-alive" not in tokens)
        else:
            encoded = True
    if status in _NO_BODY:
        framed = 0
    elif chunked:
        framed = -1
    elif length is not None:
        framed = length
    else:
        framed, close = -2, True
    reason = parts[2] if len(parts) == 3 else b""
    return _Head(status, reason, entries, not close, framed, encoded)


class _Kept(Protocol):
    """An idle connection's protocol: its transport, and a place for the poll of its
    socket (None until first polled)."""

    transport: asyncio.Transport | None
    poll: Any


def unread(conn: _Kept) -> bool:
    """Something waits unread on an idle connection: the server's end of it (closed right
    after its answer, or while idle) that the loop has not read yet, or bytes nobody asked
    for. A request written to it would fail as "server disconnected" and be charged as
    possibly billed, though no server saw it (what httpcore checks too). About 1 us.
    (The aiohttp transport's connections are checked by it too: vlmclient.transport.)"""
    poll = conn.poll
    if poll is None:
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            return sock is not None  # (a socket already closed)
        if not hasattr(select, "poll"):  # Windows
            return bool(select.select([fd], [], [], 0)[0])
        poll = conn.poll = select.poll()
        poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))  # (POLLNVAL, a closed descriptor, is unusable too)


class Http11Transport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport sending HTTP/1.1 over a keep-alive pool (see the module)."""

    # The client's sender awaits this transport's coroutine itself: every response comes
    # with its request set and its body read.
    answers_read = True

    def __init__(self, *, limits: httpx.Limits | None = None,
                 verify: ssl.SSLContext | str | bool = True, trust_env: bool = True,
                 max_answer: int = MAX_ANSWER) -> None:
        limits = limits or httpx.Limits(max_connections=100)
        self.max_answer = max_answer
        self.max_connections = limits.max_connections or 2**31
        self.max_idle = limits.max_keepalive_connections
        self.keepalive_expiry = limits.keepalive_expiry
        self._verify, self._trust_env = verify, trust_env
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._heads: dict[tuple[str, int], tuple[httpx.URL, bytes]] = {}
        # Timeouts: one watchdog looks at the connections in use (vlmclient.watchdog),
        # rather than a timer per request (a heap entry made and cancelled per request).
        self._watchdog = Watchdog()
        self._last_timeouts: tuple[object, tuple[float | None, float | None, float | None,
                                                 float | None, float | None]] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("Cannot send a request, as the transport has been closed.")
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        pool, connect, read, write, tick = self._timeouts(request.extensions.get("timeout"))
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
            request.headers.pop("transfer-encoding", None)
            request.headers["Content-Length"] = str(len(body))
        raw = request.headers.raw
        head = b"".join((self._request_line(request), *[
            b"%s: %s\r\n" % (name, value) for name, value in raw
        ], b"\r\n"))
        # A CR or LF inside a header would start a header (or a request) of its own:
        # refused before anything is sent. (Two scans of the head, not one per header.)
        if head.count(b"\n") != len(raw) + 2 or head.count(b"\r") != len(raw) + 2:
            raise httpx.LocalProtocolError("a header name or value holds a CR or LF")
        data = head + body
        conn = self._idle_connection(origin) or await self._acquire(
            origin, pool, connect, request.extensions.get("sni_hostname"))
        if tick is not None:
            self._watchdog.watch(conn, tick, conn.loop)
        try:
            # the answer's future is awaited here (no coroutine around it: one frame less)
            answer = await conn.send(data, read, write)
        except asyncio.CancelledError:
            conn.abort()  # the answer may still come: the connection is unusable
            raise
        finally:
            self._watchdog.discard(conn)
            self._release(conn)
        got = answer.head
        if answer.cut:  # the head of a billed answer, without its body
            return cut_response(request, got.status, got.reason, headers_of(got.entries),
                                answer.cut)
        return response_of(request, got.status, got.reason, headers_of(got.entries),
                           answer.body, got.encoded, conn.max_answer)

    def _request_line(self, request: httpx.Request) -> bytes:
        """``POST /path HTTP/1.1\r\n``, made once per (method, URL object): a client
        sends to a handful of endpoints, each one URL object (providers.wire.json_post)."""
        url = request.url
        key = (request.method, id(url))
        found = self._heads.get(key)
        if found is not None and found[0] is url:
            return found[1]
        line = b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path)
        if len(self._heads) >= 256:
            self._heads.clear()
        self._heads[key] = (url, line)  # holds url: its id is not reused while here
        return line

    def _timeouts(self, timeout: dict[str, float | None] | None
                  ) -> tuple[float | None, float | None, float | None, float | None,
                             float | None]:
        """(pool, connect, read, write, watchdog tick) of a request's timeout dict, worked
        out once per dict (a client sends every request with the same one)."""
        last = self._last_timeouts
        if last is not None and last[0] is timeout:
            return last[1]
        t = timeout or {}
        read, write = t.get("read"), t.get("write")
        found = (t.get("pool"), t.get("connect"), read, write, tick_of(read, write))
        self._last_timeouts = (timeout, found)  # holds the dict: its id is not reused
        return found

    # -- the pool ---------------------------------------------------------------------

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        """A kept connection to ``origin`` still fit for a request, or None."""
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = idle[-1].loop.time()
        expiry = self.keepalive_expiry
        while idle:
            conn = idle.pop()  # the most recent: the likeliest to be alive
            # (a transport already closing would drop what is written to it, silently)
            if conn.closed or conn.transport is None or conn.transport.is_closing() or (
                expiry is not None and now - conn.idle_since > expiry
            ) or unread(conn):
                self._drop(conn)
                continue
            return conn
        return None

    async def _acquire(self, origin: Origin, pool: float | None, connect: float | None,
                       sni: str | None) -> _Connection:
        """A kept connection, or a new one when the pool has room (waiting up to ``pool``
        seconds for room)."""
        loop = asyncio.get_running_loop()
        while True:
            conn = self._idle_connection(origin)
            if conn is not None:
                return conn
            if self._open < self.max_connections or self._drop_other_idle():
                break
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiting.append(waiter)
            try:
                await asyncio.wait_for(waiter, pool)
            except TimeoutError:
                raise httpx.PoolTimeout("no connection free in time") from None
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
        self._open += 1
        try:
            return await self._connect(origin, connect, sni)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _connect(self, origin: Origin, timeout: float | None,
                       sni: str | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = self._ssl_context() if scheme == "https" else None
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(origin, loop, self.max_answer), host, port, ssl=context,
                server_hostname=(sni or host) if context is not None else None,
            ), timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(verify=self._verify, trust_env=self._trust_env)
        return self._ssl

    def _release(self, conn: _Connection) -> None:
        if conn.reusable and not conn.closed and not self._closed:
            idle = self._idle.setdefault(conn.origin, [])
            if self.max_idle is None or sum(map(len, self._idle.values())) < self.max_idle:
                conn.idle_since = conn.loop.time()
                conn.waiter = None
                idle.append(conn)
                self._wake()
                return
        self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.closed = True
        if conn.transport is not None:
            conn.transport.close()
        self._open -= 1
        self._wake()

    def _drop_other_idle(self) -> bool:
        """Close one idle connection (of any origin) to make room; False if none."""
        for idle in self._idle.values():
            if idle:
                conn = idle.pop(0)
                self._drop(conn)
                return True
        return False

    def _wake(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        self._watchdog.close()
        for idle in self._idle.values():
            for conn in idle:
                conn.closed = True
                if conn.transport is not None:
                    with contextlib.suppress(RuntimeError):
                        # "Event loop is closed": closed from a later asyncio.run than the
                        # one that opened it; the socket closes when the transport is freed
                        conn.transport.close()
                self._open -= 1
        self._idle.clear()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<Http11Transport open={self._open} max={self.max_connections}>"

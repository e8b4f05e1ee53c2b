"""The optional aiohttp transport (``transport=``; the default is :mod:`vlmclient.http11`):
httpx-aiohttp's, reading each answer whole in one call.

httpx's own connection pool degrades above ~8 concurrent connections
(encode/httpcore#1035); aiohttp's does not, and ``httpx_aiohttp.AiohttpTransport`` keeps
the httpx API and its transport seam. Its responses stream the body in 16 KB chunks
through two layers of async generators; every answer of a teacher is read whole anyway,
so this transport reads it in one loop over what has arrived and hands httpx the bytes
already read. About 30 us of CPU less per request on loopback (docs/benchmarks.md,
client throughput).

An answer is read by the default transport's rules (vlmclient.http11): refused past
``max_answer`` bytes (``MAX_ANSWER``, 256 MiB: announced, or as it comes; aiohttp's own
``read()`` holds any size), gzip and deflate decoded here, never past ``max_answer``
bytes, and a 2xx whose body does not come whole (cut, timed out, over the cap) returned
as its head marked ``CUT``. Its timing is the default transport's too (one
``watchdog.Watchdog``): an answer still incomplete ANSWER_DEADLINE read timeouts after
the request body was handed over ends as a ``ReadTimeout`` (a 2xx: cut), and time the
event loop did not run counts toward neither that deadline nor aiohttp's own read
timeout. A kept connection is not reused with something unread waiting in its socket
(its server's close that the loop has not read yet): the default transport's check
(``http11.unread``), made where aiohttp's pool asks whether a connection is alive, and
again right before the request's first byte (a request whose kept connection closed in
between is an ``httpx.ConnectError``: it surely never left).
"""

from __future__ import annotations

import asyncio
import functools
import sys
from typing import Any

import httpx
from aiohttp import (
    BaseConnector,
    BasicAuth,
    ClientResponse,
    ClientResponseError,
    ClientSession,
    ClientTimeout,
)
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_writer import StreamWriter
from aiohttp.payload import BytesPayload
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions
from yarl import URL

from .http11 import MAX_ANSWER, cut_response, response_of, too_large, unread
from .providers.wire import header_pairs, raw_headers
from .watchdog import Watchdog, late_answer, tick_of

__all__ = ["ReadingAiohttpTransport"]

_Timing = tuple[ClientTimeout, "float | None", "float | None"]  # (aiohttp's, read, tick)


class _Exchange:
    """One request in flight, as the transport's watchdog sees it: cancelled (its task)
    once its answer is late (see watchdog.late_answer)."""

    __slots__ = ("cancelling", "expired", "handled", "loop", "protocol", "read",
                 "reading_since", "task", "transport", "unsent")

    def __init__(self, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop,
                 read: float) -> None:
        self.task, self.loop, self.read = task, loop, read
        self.cancelling = 0  # the task's cancellations pending before (Python >= 3.11)
        if sys.version_info >= (3, 11):
            self.cancelling = task.cancelling()
        self.reading_since: float | None = None  # when the request was all handed over
        self.transport: asyncio.BaseTransport | None = None  # its connection's, once sent
        self.protocol: ResponseHandler | None = None
        self.expired: httpx.ReadTimeout | None = None  # why the watchdog cancelled it
        self.handled = False  # that cancellation was caught and turned into ``expired``
        self.unsent = False  # its connection was closed before any byte of it was written

    def sent(self, writer: AbstractStreamWriter) -> None:
        """The request body went to the connection of ``writer``."""
        transport = self.transport = writer.transport
        protocol = writer.protocol if isinstance(writer, StreamWriter) else None
        self.protocol = protocol if isinstance(protocol, ResponseHandler) else None
        if isinstance(transport, asyncio.WriteTransport) \
                and not transport.get_write_buffer_size():
            self.reading_since = self.loop.time()

    def check_timeout(self, now: float) -> None:
        if self.expired is not None:
            return
        if self.reading_since is None:
            transport = self.transport
            if not isinstance(transport, asyncio.WriteTransport) \
                    or transport.get_write_buffer_size():
                return  # still being handed over (aiohttp has no write timeout)
            self.reading_since = now
        self.expired = late_answer(self.reading_since, now, self.read)
        if self.expired is not None:
            self.task.cancel()

    def resumed(self, late: float) -> None:
        if self.reading_since is not None:
            self.reading_since += late
        if self.protocol is not None:
            # aiohttp's silence timer (sock_read), due on resume with nothing read yet:
            # started again from now (this runs before it: it was due later)
            self.protocol.start_timeout()

    def caught(self) -> httpx.ReadTimeout | None:
        """On a CancelledError: the deadline's error when the cancellation was the
        watchdog's alone (then taken back), else None (raise it on)."""
        if self.expired is None or self.handled:
            return None
        self.handled = True
        if sys.version_info >= (3, 11) and self.task.uncancel() > self.cancelling:
            return None  # cancelled by someone else too
        return self.expired

    def done(self) -> None:
        """The request ended; a cancellation of the watchdog's that never reached it (the
        answer came meanwhile) is taken back."""
        if self.expired is not None and not self.handled and sys.version_info >= (3, 11):
            self.task.uncancel()


class _Body(BytesPayload):
    """A request body that tells its exchange when it was written (aiohttp starts its read
    timeout there; so does the answer deadline)."""

    def __init__(self, value: bytes, exchange: _Exchange) -> None:
        super().__init__(value)
        self.exchange = exchange

    async def write(self, writer: AbstractStreamWriter) -> None:  # (aiohttp < 3.12)
        await super().write(writer)
        self.exchange.sent(writer)

    async def write_with_length(self, writer: AbstractStreamWriter,
                                content_length: int | None) -> None:
        # aiohttp (>= 3.12) holds the request's head back to send it with the body, and
        # writes that after the callbacks already due (Python < 3.12): a kept connection
        # checked fit by the pool can be closed by its server meanwhile. Checked again
        # here, before any byte of the request is written: such a request surely never
        # left (see ReadingAiohttpTransport.handle_async_request).
        protocol = writer.protocol if isinstance(writer, StreamWriter) else None
        if isinstance(protocol, _KeptHandler) and protocol.kept and not writer.output_size \
                and not protocol.is_connected():
            self.exchange.unsent = True
            raise ConnectionResetError("the connection was closed before the request was written")
        await super().write_with_length(writer, content_length)
        self.exchange.sent(writer)


class _KeptHandler(ResponseHandler):
    """aiohttp's connection protocol, not taken for alive by its pool with something
    unread waiting in its socket: a server's close the loop has not read yet (it was
    busy: a blocking call, a stopped process). aiohttp reused such a connection, and the
    request written to it failed as "server disconnected" or "Can not write request
    body": charged as possibly billed and sent again, though no server saw it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.poll: Any = None  # (see http11.unread)
        # it waited in the pool: anything unread now is no answer to come (a new TLS
        # connection may still have its session tickets to read)
        self.kept = False

    def is_connected(self) -> bool:
        # (asked by aiohttp's pool of its idle connections only: before reusing one, and
        # when it sweeps them)
        self.kept = True
        return super().is_connected() and not unread(self)


def _check_kept(connector: BaseConnector | None) -> None:
    """The connections ``connector`` opens from now on are checked before reuse (see
    _KeptHandler); left as they are if aiohttp makes its protocols otherwise."""
    factory = getattr(connector, "_factory", None)
    if isinstance(factory, functools.partial) and factory.func is ResponseHandler:
        connector._factory = functools.partial(  # type: ignore[union-attr]
            _KeptHandler, *factory.args, **factory.keywords)


class ReadingAiohttpTransport(AiohttpTransport):
    """``AiohttpTransport`` whose responses arrive with their body read."""

    # What the client's sender relies on to await this transport's coroutine itself:
    # every response comes with its request set and its body read (a subclass that
    # changes handle_async_request keeps that, or sets this False).
    answers_read = True

    def __init__(self, *args: Any, max_answer: int = MAX_ANSWER, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_answer = max_answer  # bytes of one answer's body accepted (see http11)
        # one ClientTimeout (with the read timeout and the watchdog's tick) per distinct
        # httpx timeout (a client sends with one)
        self._timeouts: dict[tuple[float | None, float | None, float | None], _Timing] = {}
        self._last_timeout: tuple[object, _Timing] | None = None
        self._watchdog = Watchdog()  # the answer deadline (see vlmclient.watchdog)
        # the aiohttp URL of each endpoint URL object seen (a client sends to a handful,
        # each one object: see providers.wire.endpoint_url and json_post)
        self._urls: dict[int, tuple[httpx.URL, URL]] = {}

    def get_client(self) -> ClientSession:
        session = super().get_client()
        _check_kept(session.connector)
        return session

    def _timeout(self, request: httpx.Request) -> _Timing:
        timeout = request.extensions.get("timeout", {})
        last = self._last_timeout
        if last is not None and last[0] == timeout:  # a client sends with one timeout
            return last[1]
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        found = self._timeouts.get(key)
        if found is None:
            found = self._timeouts[key] = (
                ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2]),
                key[1], tick_of(key[1]),
            )
        self._last_timeout = (dict(timeout), found)
        return found

    def _url(self, url: httpx.URL) -> URL:
        """``URL(str(url))``, what aiohttp makes of the URL string, once per URL object
        (``str(url)`` costs about 2 us each time)."""
        found = self._urls.get(id(url))
        if found is not None and found[0] is url:
            return found[1]
        parsed = URL(str(url))
        if len(self._urls) >= 256:
            self._urls.clear()
        self._urls[id(url)] = (url, parsed)  # holds url: its id is not reused while here
        return parsed

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.client, ClientSession):
            self.client = self.get_client()
        session = self.client
        proxy = self.proxy
        # A CR, LF or NUL in a header: aiohttp refuses it with a ValueError (after taking
        # a connection, before writing); the same httpx error as the default transport's.
        raw = b"".join(name + value for name, value in request.headers.raw)
        if b"\r" in raw or b"\n" in raw or b"\0" in raw:
            raise httpx.LocalProtocolError("a header name or value holds a CR, LF or NUL")
        timeout, read, tick = self._timeout(request)
        exchange = None
        if read is not None and tick is not None:
            loop = asyncio.get_running_loop()
            task = asyncio.current_task(loop)
            if task is not None:
                exchange = _Exchange(task, loop, read)
                self._watchdog.watch(exchange, tick, loop)
        try:
            try:
                data: bytes | BytesPayload | httpx.AsyncByteStream | None = \
                    request.content or None
                if exchange is not None:
                    if data is None:  # nothing to hand over: the deadline runs from now
                        exchange.reading_since = exchange.loop.time()
                    else:
                        data = _Body(data, exchange)  # type: ignore[arg-type]
            except httpx.RequestNotRead:
                data = request.stream  # type: ignore[assignment]
                request.headers.pop("transfer-encoding", None)  # aiohttp frames it
            proxy_args: dict[str, Any] = {}
            if proxy is not None:
                proxy_args = {
                    "proxy": str(proxy.url),
                    "proxy_auth": BasicAuth(proxy.auth[0], proxy.auth[1]) if proxy.auth else None,
                    "proxy_headers": proxy.headers,
                }
            async with session.request(
                method=request.method,
                url=self._url(request.url),
                # (name, value) pairs: aiohttp reads an httpx.Headers as a Mapping, one
                # scan of the header list per name
                headers=header_pairs(request.headers),
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=timeout,
                server_hostname=request.extensions.get("sni_hostname"),
                **proxy_args,
            ) as response:
                if exchange is not None and exchange.reading_since is None:
                    exchange.reading_since = exchange.loop.time()  # (a streamed body)
                try:
                    body = await self._read(response)
                except asyncio.CancelledError:
                    late = exchange.caught() if exchange is not None else None
                    if late is None:
                        raise
                    if not 200 <= response.status < 300:
                        raise late from None
                    return cut_response(  # billed: see http11.CUT
                        request, response.status,
                        response.reason.encode() if response.reason else b"",
                        raw_headers(response.raw_headers), str(late))
                except Exception as exc:
                    if not 200 <= response.status < 300:
                        raise
                    # a billed 2xx whose body did not come whole: charged once, not
                    # retried (see http11.CUT)
                    return cut_response(
                        request, response.status,
                        response.reason.encode() if response.reason else b"",
                        raw_headers(response.raw_headers),
                        f"{type(exc).__name__}: {exc}"[:200])
        except asyncio.CancelledError:
            late = exchange.caught() if exchange is not None else None
            if late is None:
                raise
            raise late from None  # no head yet: the request may have been billed
        except Exception as exc:
            if exchange is not None and exchange.unsent:
                # not a byte of it was written (see _Body): the sender releases it and
                # sends it again, on a new connection
                raise httpx.ConnectError(
                    "the server closed the connection before the request was written"
                ) from None
            if isinstance(exc, ClientResponseError):
                # aiohttp's parser refused the answer (a broken chunk-size line...): the
                # default transport's error for it, on one line, without aiohttp's (its repr
                # holds the request's headers, key and all; the sender scrubs this message)
                raise httpx.RemoteProtocolError(" ".join(str(exc.message).split())) from None
            # aiohttp's errors as httpx's (the sender tells what may have been billed by
            # them); mapped here rather than by a context manager around every request
            with map_aiohttp_exceptions():
                raise exc
            raise  # not reached: the mapper raises
        finally:
            if exchange is not None:
                self._watchdog.discard(exchange)
                exchange.done()
        return response_of(
            request, response.status, response.reason.encode() if response.reason else b"",
            raw_headers(response.raw_headers),  # bytes already: not re-checked
            body, "Content-Encoding" in response.headers,  # (aiohttp's: case-blind, fast)
            self.max_answer,
        )

    async def aclose(self) -> None:
        self._watchdog.close()
        await super().aclose()

    async def _read(self, response: ClientResponse) -> bytes:
        """The body of ``response`` whole, refused (``too_large``) as soon as it is known
        to be over ``max_answer`` bytes: by its Content-Length, or as it arrives."""
        limit = self.max_answer
        try:
            length = response.content_length
            if length is not None and length > limit:
                raise too_large(limit, length)
            content = response.content
            parts: list[bytes] = []
            size = 0
            while chunk := await content.readany():  # (what StreamReader.read() loops on)
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                parts.append(chunk)
        except BaseException:
            response.close()  # the rest of the answer is never read: the connection goes
            raise
        return parts[0] if len(parts) == 1 else b"".join(parts)

"""The default transport: httpx-aiohttp's, reading each answer whole in one call.

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
as its head marked ``CUT``.
"""

from __future__ import annotations

from typing import Any

import httpx
from aiohttp import BasicAuth, ClientResponse, ClientSession, ClientTimeout
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions
from yarl import URL

from .http11 import MAX_ANSWER, cut_response, response_of, too_large
from .providers.wire import header_pairs, raw_headers

__all__ = ["ReadingAiohttpTransport"]


class ReadingAiohttpTransport(AiohttpTransport):
    """``AiohttpTransport`` whose responses arrive with their body read."""

    # What the client's sender relies on to await this transport's coroutine itself:
    # every response comes with its request set and its body read (a subclass that
    # changes handle_async_request keeps that, or sets this False).
    answers_read = True

    def __init__(self, *args: Any, max_answer: int = MAX_ANSWER, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_answer = max_answer  # bytes of one answer's body accepted (see http11)
        # one ClientTimeout per distinct httpx timeout (a client sends with one)
        self._timeouts: dict[tuple[float | None, float | None, float | None], ClientTimeout] = {}
        self._last_timeout: tuple[object, ClientTimeout] | None = None
        # the aiohttp URL of each endpoint URL object seen (a client sends to a handful,
        # each one object: see providers.wire.endpoint_url and json_post)
        self._urls: dict[int, tuple[httpx.URL, URL]] = {}

    def _timeout(self, request: httpx.Request) -> ClientTimeout:
        timeout = request.extensions.get("timeout", {})
        last = self._last_timeout
        if last is not None and last[0] == timeout:  # a client sends with one timeout
            return last[1]
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        found = self._timeouts.get(key)
        if found is None:
            found = self._timeouts[key] = ClientTimeout(
                sock_connect=key[0], sock_read=key[1], connect=key[2]
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
        try:
            try:
                data: bytes | httpx.AsyncByteStream | None = request.content or None
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
                timeout=self._timeout(request),
                server_hostname=request.extensions.get("sni_hostname"),
                **proxy_args,
            ) as response:
                try:
                    body = await self._read(response)
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
        except Exception as exc:
            # aiohttp's errors as httpx's (the sender tells what may have been billed by
            # them); mapped here rather than by a context manager around every request
            with map_aiohttp_exceptions():
                raise exc
            raise  # not reached: the mapper raises
        return response_of(
            request, response.status, response.reason.encode() if response.reason else b"",
            raw_headers(response.raw_headers),  # bytes already: not re-checked
            body, "Content-Encoding" in response.headers,  # (aiohttp's: case-blind, fast)
            self.max_answer,
        )

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

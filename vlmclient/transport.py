"""The default transport: httpx-aiohttp's, reading each answer whole in one call.

httpx's own connection pool degrades above ~8 concurrent connections
(encode/httpcore#1035); aiohttp's does not, and ``httpx_aiohttp.AiohttpTransport`` keeps
the httpx API and its transport seam. Its responses stream the body in 16 KB chunks
through two layers of async generators; every answer of a teacher is read whole anyway,
so this transport reads it with one ``ClientResponse.read()`` and hands httpx the bytes
(content decoding, e.g. gzip, still happens in httpx as before). About 30 us of CPU less
per request on loopback (docs/benchmarks.md, client throughput).
"""

from __future__ import annotations

import httpx
from aiohttp import BasicAuth, ClientSession, ClientTimeout
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

__all__ = ["ReadingAiohttpTransport"]


class ReadingAiohttpTransport(AiohttpTransport):
    """``AiohttpTransport`` whose responses arrive with their body read."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.client, ClientSession):
            self.client = self.get_client()
        session = self.client
        timeout = request.extensions.get("timeout", {})
        proxy = self.proxy
        with map_aiohttp_exceptions():
            try:
                data: bytes | httpx.AsyncByteStream | None = request.content or None
            except httpx.RequestNotRead:
                data = request.stream  # type: ignore[assignment]
                request.headers.pop("transfer-encoding", None)  # aiohttp frames it
            async with session.request(
                method=request.method,
                url=str(request.url),
                # (name, value) pairs: aiohttp reads an httpx.Headers as a Mapping, one
                # scan of the header list per name
                headers=request.headers.multi_items(),
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=ClientTimeout(
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                    connect=timeout.get("pool"),
                ),
                server_hostname=request.extensions.get("sni_hostname"),
                proxy=str(proxy.url) if proxy else None,
                proxy_auth=BasicAuth(proxy.auth[0], proxy.auth[1])
                if proxy and proxy.auth
                else None,
                proxy_headers=proxy.headers if proxy else None,
            ) as response:
                body = await response.read()
        extensions: dict[str, bytes] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions=extensions,
        )


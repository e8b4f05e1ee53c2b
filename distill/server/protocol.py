"""uvicorn's HTTP protocol with deadlines on reading a request (slow-sender defence).

uvicorn bounds the idle time between requests (keep-alive) but not the time a client may
take to send its headers or its body: one byte a second holds a connection for ever, and a
few hundred such connections hold the server. Here the headers must arrive within
``header_timeout_s`` of the request's first byte (or of the connection's opening), and the
whole request within ``body_timeout_s`` after its headers; otherwise the connection is
closed (with a 408 when no response has started). A request line plus headers over
``MAX_HEADER_BYTES`` gets 431 and a closed connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["DEFAULT_HEADER_TIMEOUT_S", "timed_protocol"]

DEFAULT_HEADER_TIMEOUT_S = 10.0
# httptools buffers a request line and headers without limit; real servers stop at 8-64 kB.
MAX_HEADER_BYTES = 64 * 1024
# The app answers a slow body itself (408 in the provider's envelope); the protocol's own
# deadline comes a little later and only catches routes that never read their body.
_APP_FIRST_S = 1.0



def _refusal(status: bytes, message: str, code: str) -> bytes:
    """A complete closing HTTP response with an OpenAI-style error body."""
    body = json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None,
                   "code": code}}
    ).encode()  # fmt: skip
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


_408 = _refusal(b"408 Request Timeout", "request headers not received in time", "request_timeout")
_431 = _refusal(
    b"431 Request Header Fields Too Large",
    f"request line and headers exceed {MAX_HEADER_BYTES} bytes",
    "request_header_fields_too_large",
)


def timed_protocol(header_timeout_s: float, body_timeout_s: float) -> type[asyncio.Protocol]:
    """An ``HttpToolsProtocol`` subclass (pass it as ``uvicorn.Config(http=...)``)."""

    class TimedHttpProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _in_head = True  # between a request's first byte and the end of its headers
        _head_bytes = 0

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > MAX_HEADER_BYTES:
                self._disarm()
                if not self.transport.is_closing():
                    self.transport.write(_431)
                    self.transport.close()

        def _arm(self, seconds: float, headers_done: bool) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._too_slow, headers_done)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _too_slow(self, headers_done: bool) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if not headers_done:
                self.transport.write(_408)  # no response can have started yet
            self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm(header_timeout_s, headers_done=False)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes = True, 0
            self._arm(header_timeout_s, headers_done=False)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._arm(body_timeout_s + _APP_FIRST_S, headers_done=True)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return TimedHttpProtocol

"""uvicorn's HTTP protocol with deadlines on reading a request (slow-sender defence).

uvicorn bounds the idle time between requests (keep-alive) but not the time a client may
take to send its headers or its body: one byte a second holds a connection for ever, and a
few hundred such connections hold the server. Here the headers must arrive within
``header_timeout_s`` of the request's first byte (or of the connection's opening), and the
whole request within ``body_timeout_s`` after its headers; otherwise the connection is
closed (with a 408 when no response has started).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["DEFAULT_HEADER_TIMEOUT_S", "timed_protocol"]

DEFAULT_HEADER_TIMEOUT_S = 10.0
# The app answers a slow body itself (408 in the provider's envelope); the protocol's own
# deadline comes a little later and only catches routes that never read their body.
_APP_FIRST_S = 1.0

_BODY = json.dumps(
    {
        "error": {
            "message": "request headers not received in time",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_timeout",
        }
    }
).encode()
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


def timed_protocol(header_timeout_s: float, body_timeout_s: float) -> type[asyncio.Protocol]:
    """An ``HttpToolsProtocol`` subclass (pass it as ``uvicorn.Config(http=...)``)."""

    class TimedHttpProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None

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
            self._arm(header_timeout_s, headers_done=False)

        def on_headers_complete(self) -> None:
            self._arm(body_timeout_s + _APP_FIRST_S, headers_done=True)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return TimedHttpProtocol

"""A tiny real HTTP server on 127.0.0.1 that answers like a provider and keeps a bill.

Each test gives it a ``respond(path, body) -> (status, json_body)`` function (or
``(status, json_body, headers)`` for a provider that names its error in a header); the server
records every request body it received, so a test can assert what was sent and how
often, and the provider-side bill (``billed``) is what ``respond`` says it charged.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], dict[str, str]]
Respond = Callable[[str, dict[str, Any]], Answer]


@dataclass
class Loopback:
    url: str
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body, _ in self.requests]


@contextmanager
def loopback(respond: Respond) -> Iterator[Loopback]:
    """Serve ``respond`` on 127.0.0.1 (a free port) for the duration of the block."""
    state: Loopback

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {"_raw": raw.decode("latin-1")}
            state.requests.append((self.path, body, dict(self.headers)))
            status, out, *extra = respond(self.path, body)
            data = json.dumps(out).encode()
            self.send_response(status)
            for name, value in (extra[0] if extra else {}).items():
                self.send_header(name, value)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Loopback(url=f"http://127.0.0.1:{server.server_address[1]}")
    # poll_interval: shutdown() waits for the serving loop's next poll (0.5 s by default,
    # half a second of every test that serves)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""Run the teacher app on uvicorn in a background thread (tests, demo, benchmarks)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import uvicorn

from .app import create_app
from .backend_base import Backend
from .config import DEFAULT_BODY_TIMEOUT_S, ServerConfig
from .protocol import DEFAULT_HEADER_TIMEOUT_S, timed_protocol

__all__ = ["ServerThread", "bind_socket", "serve_in_background"]

STARTUP_TIMEOUT_S = 30.0
# A sleeping "timeout" fault must not hold shutdown for its whole sleep.
GRACEFUL_SHUTDOWN_S = 2  # whole seconds: uvicorn declares this setting an int


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``port=0``: any free one), not yet listening.

    Raises ``OSError`` (``socket.gaierror`` for a host name that does not resolve) and
    ``OverflowError`` for a port outside 0-65535; closes the socket on failure.

    >>> sock = bind_socket("127.0.0.1", 0)  # doctest: +SKIP
    >>> ServerThread(app, sock=sock).port == sock.getsockname()[1]  # doctest: +SKIP
    True
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError):
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ServerThread:
    """uvicorn serving one ASGI app from a daemon thread; ``port=0`` picks a free port.

    The socket is bound in ``__init__`` (or given, bound by :func:`bind_socket`: the CLI
    binds before it loads a slow backend), so :attr:`port` and :attr:`base_url` are known
    before the server starts.

    >>> with ServerThread(create_app(config, backend)) as server:  # doctest: +SKIP
    ...     httpx.get(server.base_url + "/healthz")
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        access_log: bool = False,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        body_timeout_s: float | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        if body_timeout_s is None:
            # The app's own setting, when it is the teacher app (else the default).
            teacher = getattr(getattr(app, "state", None), "teacher", None)
            body_timeout_s = (
                teacher.config.body_timeout_s if teacher is not None else DEFAULT_BODY_TIMEOUT_S
            )
        self._sock = bind_socket(host, port) if sock is None else sock
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level=log_level,
            access_log=access_log,
            log_config=None,  # leave the host process's logging setup alone
            lifespan="on",
            http=timed_protocol(header_timeout_s, body_timeout_s),
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, name=f"teacher-server-{self.port}", daemon=True
        )
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._sock])
        except BaseException as exc:  # surfaced by start()
            self._error = exc

    def serve_forever(self) -> None:
        """Serve in the calling thread until Ctrl-C or SIGTERM (the CLI's way)."""
        try:
            self.server.run(sockets=[self._sock])
        finally:
            self._sock.close()

    def start(self) -> str:
        """Start serving; returns the base URL once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"teacher server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("teacher server did not start in time")
            time.sleep(0.01)
        return self.base_url

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=GRACEFUL_SHUTDOWN_S + 5)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@asynccontextmanager
async def serve_in_background(
    config: ServerConfig, backend: Backend, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``create_app(config, backend)`` for the duration of an ``async with``.

    Yields the base URL (``http://127.0.0.1:<port>``). The server runs on its own thread
    and event loop, so the caller's loop is free to act as the client.

    >>> async with serve_in_background(config, HashBackend()) as url:  # doctest: +SKIP
    ...     ...
    """
    server = ServerThread(create_app(config, backend), host, port)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, server.start)
    try:
        yield server.base_url
    finally:
        await loop.run_in_executor(None, server.stop)

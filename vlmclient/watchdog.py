"""The timeouts of the requests in flight, one timer per transport: the answer deadline,
and time the event loop did not run (Ctrl-Z, a paused VM) counted toward no timeout.

Both transports (vlmclient.http11 and vlmclient.transport) keep their exchanges in a
:class:`Watchdog`, which looks at them every quarter of the smallest timeout in use (at
most 1 s) rather than arming a timer per request: a timeout fires up to a quarter of
itself late, never early.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httpx

__all__ = ["ANSWER_DEADLINE", "Watchdog", "Watched", "late_answer", "tick_of"]

# An answer must be complete within this many read timeouts of the request being handed
# over, however steadily its bytes trickle in (the read timeout alone is silence between
# bytes, which a server sending a byte a second never reaches).
ANSWER_DEADLINE = 2


def late_answer(since: float | None, now: float, read: float) -> httpx.ReadTimeout | None:
    """The error of an answer still incomplete at ``now``, ANSWER_DEADLINE read timeouts
    (``read`` seconds each) or more after its request was handed over at ``since``; None
    while it has time left (or the request is still being handed over: ``since`` None).

    >>> late_answer(0.0, 0.5, 0.3) is None
    True
    >>> str(late_answer(0.0, 0.6, 0.3))
    'the answer was still incomplete 0.6 s after the request (2x the timeout): it came too slowly'
    """
    if since is None or now - since < ANSWER_DEADLINE * read:
        return None
    return httpx.ReadTimeout(
        f"the answer was still incomplete {ANSWER_DEADLINE * read:g} s after the request "
        f"({ANSWER_DEADLINE}x the timeout): it came too slowly")


def tick_of(*timeouts: float | None) -> float | None:
    """How often to look at requests with these timeouts (a quarter of the smallest, at
    most 1 s); None when none is set."""
    limits = [t for t in timeouts if t is not None]
    return min(1.0, max(0.005, min(limits) / 4)) if limits else None


class Watched(Protocol):
    """One request in flight, as a watchdog sees it."""

    def check_timeout(self, now: float) -> None:
        """Fail the request if one of its timeouts has passed at loop time ``now``."""

    def resumed(self, late: float) -> None:
        """The loop did not run for ``late`` seconds: push the request's clocks back."""


class Watchdog:
    """The requests in flight of one transport, looked at every ``tick`` seconds."""

    def __init__(self) -> None:
        self.active: set[Watched] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._tick = 1.0
        self._swept_at = 0.0  # loop time of the last look (or of the start)

    def watch(self, item: Watched, tick: float, loop: asyncio.AbstractEventLoop) -> None:
        """Look at ``item`` every ``tick`` seconds or more often until :meth:`discard`."""
        self.active.add(item)
        if self._handle is None or tick < self._tick:
            if self._handle is not None:
                self._handle.cancel()
            self._tick = tick
            self._swept_at = loop.time()
            self._handle = loop.call_later(tick, self._sweep, loop)

    def discard(self, item: Watched) -> None:
        self.active.discard(item)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        late = now - self._swept_at - self._tick
        self._swept_at = now
        if late > max(1.0, self._tick):
            # The loop did not run for that long: the process was stopped (Ctrl-Z, a
            # paused VM) or blocked. That time is no server's silence: the answers that
            # came in meanwhile wait unread in the socket, and failing them here threw
            # billed answers away and bought them again. Give the loop a turn to read.
            for item in self.active:
                item.resumed(late)
        for item in list(self.active):
            item.check_timeout(now)
        if self.active:
            self._handle = loop.call_later(self._tick, self._sweep, loop)
        else:
            self._handle, self._tick = None, 1.0

"""Sending one request: reserve its worst case, take a slot and the rate limiter, send,
and retry by status (bounded); what the provider answered is settled by
:class:`~vlmclient.settle.Settler`.

A request that surely never left (connection refused) is released; one that may have
reached the provider (a timeout after sending, a dropped connection, a cancel while on
the wire) is charged at its reservation, since the provider may have billed it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

import httpx

from .budget import Budget, Reservation
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    BudgetOverrunError,
    ConfigurationError,
)
from .http11 import undecoded
from .models import Usage
from .providers import CallSpec, Parsed, Provider
from .providers.base import SIGNED_WITH
from .ratelimit import RateLimiter
from .redact import MAX_MESSAGE_CHARS, Redactor
from .retry import RetryPolicy, is_retryable
from .settle import Settler, charge_in_full
from .stats import ClientStats, EventHook, emit
from .storage import Storage
from .timing import Timings

__all__ = ["Sender", "default_transport"]


def default_transport(concurrency: int) -> httpx.AsyncBaseTransport:
    """The transport a client sends with unless given one: HTTP/1.1 keep-alive
    connections, at most ``concurrency`` open (:mod:`vlmclient.http11`).

    httpx's own pool degrades above ~8 connections (encode/httpcore#1035) and aiohttp's
    ``ClientSession`` costs more CPU per request than the whole client around it;
    :class:`~vlmclient.transport.ReadingAiohttpTransport` stays available as
    ``transport=`` (for a proxy, for instance)."""
    from .http11 import Http11Transport

    # Idle connections are dropped after 4 s: under the 5 s after which uvicorn (and
    # httpx's and aiohttp's own defaults) give up on them, so a request is not sent on a
    # connection its server is closing at that very moment (a request that would then be
    # charged as possibly billed).
    return Http11Transport(
        limits=httpx.Limits(max_connections=concurrency, keepalive_expiry=4.0)
    )


class Sender:
    """Sends one teacher's requests, at most ``concurrency`` at a time, with retries."""

    def __init__(
        self,
        provider: Provider,
        *,
        base_url: str,
        http: httpx.AsyncClient,
        transport: httpx.AsyncBaseTransport,
        timeout: httpx.Timeout,
        concurrency: int,
        limiter: RateLimiter,
        retry: RetryPolicy,
        budget: Budget,
        settler: Settler,
        storage: Storage,
        redact: Redactor,
        stats: ClientStats,
        timings: Timings,
        on_event: EventHook | None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url
        self.budget = budget
        self.stats = stats
        self.timings = timings
        self._http = http
        self._transport = transport
        # the default transport's answers come with their request set and body read
        self._answers_read = getattr(transport, "answers_read", False) is True
        self._timeout = timeout.as_dict()
        self._sem = asyncio.Semaphore(concurrency)
        self._limiter = limiter
        self._retry = retry
        self._settler = settler
        self._storage = storage
        self._redact = redact
        self._on_event = on_event

    def send_with_retries(
        self, spec: CallSpec, estimate: Decimal, tokens: int,
        guard: Callable[[], None] | None = None, output_tokens: int = 0,
    ) -> Awaitable[tuple[Parsed, Decimal]]:
        """Send ``spec`` (estimated at ``estimate`` dollars and ``tokens`` tokens,
        ``output_tokens`` of them output), retrying as the retry policy says; the parsed
        answer and what it cost (await it)."""
        # The first attempt runs outside tenacity: nearly every request succeeds at once,
        # and building and driving a retry loop cost about 30 us of CPU per request. A
        # failure the policy retries hands the remaining attempts to its tenacity loop,
        # after the same wait the loop would have made. The first attempt's coroutine is
        # the one awaited (no coroutine around it: one frame less per suspension).
        # ``guard`` runs right before each attempt is sent (after the waits for a slot and
        # the rate limit) and may raise to stop it: the reservation is released.
        return self._attempt(spec, estimate, tokens, first=True, guard=guard,
                             output_tokens=output_tokens)

    async def _retries(
        self, spec: CallSpec, estimate: Decimal, tokens: int,
        guard: Callable[[], None] | None = None, output_tokens: int = 0,
    ) -> tuple[Parsed, Decimal]:
        """The attempts after a first one that failed and is retried."""
        outcome: tuple[Parsed, Decimal] | None = None
        async for attempt in self._retry.retrying(attempts_made=1):
            with attempt:
                self.stats.retries += 1
                emit(self._on_event, "retry")
                try:
                    outcome = await self._attempt(spec, estimate, tokens, guard=guard,
                                                  output_tokens=output_tokens)
                except APIError:
                    self.stats.failures += 1
                    emit(self._on_event, "failure")
                    raise
        assert outcome is not None
        return outcome

    async def _attempt(
        self, spec: CallSpec, estimate: Decimal, tokens: int, first: bool = False,
        guard: Callable[[], None] | None = None, output_tokens: int = 0,
    ) -> tuple[Parsed, Decimal]:
        """One attempt; the ``first`` one hands a failure the policy retries to
        :meth:`_retries`."""
        try:
            self._check_open()  # before reserving: nothing can be sent, nor billed
            self._storage.check()
            self._settler.raise_if_stopped()
            # A request slot first, then the reservation: money is held only by requests
            # about to be sent (at most ``concurrency``), not by every request queued for
            # a slot, which a kill -9 would leave as orphaned reservations to be charged.
            await self._sem.acquire()
            try:
                started = time.perf_counter()
                try:
                    reservation = self.budget.reserve(
                        estimate, items=len(spec.items), kind=spec.kind,
                        endpoint=self._storage.endpoint,
                    )  # fmt: skip
                except BudgetOverrunError as exc:  # another run of the shared budget overran
                    self._settler.stopped_elsewhere(exc)
                    raise
                self.timings.add("ledger", started)
                try:
                    # (acquire, without a coroutine for a request that need not wait)
                    waiting = self._limiter.admit(tokens, output_tokens)
                    if waiting is not None:
                        await self._limiter.wait(waiting, tokens, output_tokens)
                    self._storage.check()  # again: the ledger or cache may have failed meanwhile
                    self._settler.raise_if_stopped()
                    if guard is not None:
                        guard()
                    # again: closed while this request waited for a slot or the rate
                    # limit (it was charged as if it had been on the wire)
                    self._check_open()
                    started = time.perf_counter()
                    try:
                        request = self.provider.build_request(spec)
                    except ConfigurationError as exc:  # it may quote a secret setting
                        exc.args = (self._redact.text(str(exc), MAX_MESSAGE_CHARS),)
                        raise
                    signed_with = request.extensions.pop(SIGNED_WITH, None)
                    if signed_with:
                        self._redact.add(signed_with)
                    self.timings.add("prepare", started)
                except BaseException:
                    self.budget.release(reservation)
                    raise
                # Sent here rather than in a coroutine of its own: one frame less for every
                # suspension of every request.
                self.stats.requests_sent += 1
                self.timings.sent()
                try:
                    try:
                        response = await self._roundtrip(request)
                    finally:
                        self.timings.answered()
                except httpx.HTTPError as exc:
                    # not chained: the transport's exception (and aiohttp's under it) holds
                    # what the server sent unscrubbed, which a traceback would print; our
                    # error says it, scrubbed
                    raise self._failed(spec, exc, reservation) from None
                except BaseException:  # cancelled (Ctrl-C) while it may be on the wire
                    self._charge_unknown(spec, reservation, "cancelled")
                    raise
            finally:
                self._sem.release()
            try:
                return self._settler.handle(spec, response, reservation)
            except BaseException:
                if reservation.open:  # an error of ours before the answer was settled
                    self._charge_unknown(spec, reservation, "unsettled")
                raise
        except APIError as exc:
            if not first:
                raise
            self.stats.failures += 1
            emit(self._on_event, "failure")
            if self._retry.max_attempts <= 1 or not is_retryable(exc):
                raise
            await self._retry.sleep(self._retry.wait_seconds(1, exc))
        return await self._retries(spec, estimate, tokens, guard, output_tokens)

    def _check_open(self) -> None:
        if self._http.is_closed:
            raise RuntimeError(
                "Cannot send a request, as the client has been closed (aclose(), or the "
                "end of its async with); nothing was sent or billed: use a new TeacherClient"
            )

    def _roundtrip(self, request: httpx.Request) -> Awaitable[httpx.Response]:
        """``request`` through the client's transport, the body read: what
        ``httpx.AsyncClient.send`` does for our requests, without the machinery they
        never use (auth, redirects: not followed, cookies, event hooks), with the
        client's timeout as ``send`` sets it. About 90 us of CPU less per request
        (docs/benchmarks.md, client throughput). The default transport's answers come
        read: its coroutine is the one awaited (no coroutine around it)."""
        if "timeout" not in request.extensions:
            request.extensions = {**request.extensions, "timeout": self._timeout}
        if self._answers_read:
            return self._transport.handle_async_request(request)
        return self._read(request)

    async def _read(self, request: httpx.Request) -> httpx.Response:
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        except httpx.DecodingError:  # it came: its status decides (see http11.undecoded)
            await response.aclose()
            return undecoded(response, b"")
        except BaseException:
            await response.aclose()
            raise
        return response

    def _failed(
        self, spec: CallSpec, exc: httpx.HTTPError, reservation: Reservation
    ) -> APIConnectionError | ConfigurationError:
        """The error for a transport failure, with the reservation charged (the request
        may have reached the provider) or released (it surely did not), and recorded."""
        # it is chained to the error raised (a traceback prints it): scrubbed too, as a
        # server's line quoted in it may hold the key
        exc.args = (self._redact(str(exc)),)
        if isinstance(exc, httpx.LocalProtocolError):
            # A request no HTTP stack will write (a CR or LF in a header): refused before
            # its head was written (our bodies are bytes of the length they declare, so
            # nothing else makes one), and the same request would be refused again.
            self.budget.release(reservation)
            return ConfigurationError(
                f"{self.provider.name}: the request cannot be written "
                f"({self._redact(str(exc))}); a header holds a line break or another "
                "character HTTP cannot carry (nothing was sent or billed)"
            )
        err = self._transport_error(exc)
        if err.sent:
            self.stats.charged_no_answer += 1
            outcome = "timeout" if isinstance(err, APITimeoutError) else "connection"
            charge_in_full(self._storage, self.budget, spec, reservation, outcome)
        else:
            self.budget.release(reservation)
            self._storage.record(
                spec.kind, len(spec.items), Decimal(0), Usage(), outcome="refused"
            )
        return err

    def _charge_unknown(self, spec: CallSpec, reservation: Reservation, outcome: str) -> None:
        """What the provider billed is not known: cancelled (Ctrl-C) while the request may
        be on the wire ("cancelled"), or an error of ours after its answer came and before
        it was settled ("unsettled"). Assume it was billed: charge the reservation."""
        self.stats.charged_no_answer += 1
        charge_in_full(self._storage, self.budget, spec, reservation, outcome)

    def _transport_error(self, exc: httpx.HTTPError) -> APIConnectionError:
        name = self.provider.name
        cause = exc.__cause__
        if cause is not None and type(cause).__module__.startswith("aiohttp"):
            import aiohttp

            # connecting too slowly (aiohttp >= 3.10: ConnectionTimeoutError) is a
            # ServerTimeoutError too, but nothing was sent
            slow_connect = getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ClientConnectorError)
            never_left = isinstance(cause, (aiohttp.ClientConnectorError, slow_connect))
            timed_out = isinstance(cause, (aiohttp.ServerTimeoutError, asyncio.TimeoutError))
        else:
            # waiting for a free connection (PoolTimeout) is before anything is sent, and
            # so is a URL the transport cannot open (UnsupportedProtocol)
            never_left = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout,
                                          httpx.PoolTimeout, httpx.UnsupportedProtocol))
            timed_out = isinstance(exc, httpx.TimeoutException) and not never_left
        if never_left:
            return APIConnectionError(
                f"could not connect to {self.base_url} ({self._redact(str(exc))}); "
                "nothing was sent or billed",
                provider=name,
                sent=False,
            )
        if timed_out:
            return APITimeoutError(
                f"no answer from {self.base_url} in time ({type(exc).__name__}); "
                "charged at the worst-case estimate since the provider may have billed it",
                provider=name,
            )
        return APIConnectionError(
            f"connection to {self.base_url} failed after sending "
            f"({type(exc).__name__}: {self._redact(str(exc))}); "
            "charged at the worst-case estimate",
            provider=name,
            sent=True,
        )

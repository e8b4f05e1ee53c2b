"""Run a paid command's event loop so that SIGINT, SIGTERM, SIGHUP and SIGQUIT all stop
it the same careful way.

Python's default for SIGTERM/SIGHUP/SIGQUIT ends the process on the spot, so requests
in flight (which the provider bills) never reach the spend ledger, as with kill -9. And
``asyncio.run`` raises KeyboardInterrupt from inside the loop on a second Ctrl-C, which
abandons the cleanup and prints "Future exception was never retrieved" tracebacks.

Here every one of these signals cancels the command's task once: the client then records
each request in flight at its reservation (it may have been billed, its answer is lost),
and the command exits with 128 + the signal's number. Further signals only print that
the stop is under way; ``kill -9`` is the way to abandon the cleanup. Python's own
handler also tells the cache's waits for a lock held by a process stopped with Ctrl-Z
(:func:`cache.stop_waiting`) to give up: the event loop may be the one waiting, and
would act on the signal only once that process ran on or ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, Final, TypeVar

from cache import given_up_on, stop_waiting

__all__ = [
    "STOP_SIGNALS",
    "Interrupted",
    "Stopped",
    "raise_on_stop_signals",
    "run_paid",
    "say",
    "stop_signals",
]

T = TypeVar("T")

STOP_SIGNALS: Final = tuple(
    s
    for s in (
        signal.SIGINT,
        signal.SIGTERM,
        getattr(signal, "SIGHUP", None),
        getattr(signal, "SIGQUIT", None),
    )
    if s is not None
)


def stop_signals() -> tuple[int, ...]:
    """The stop signals to handle now: :data:`STOP_SIGNALS` less those this process was
    started ignoring (``nohup`` ignores SIGHUP so that a command outlives its terminal;
    handling it anyway would stop the run when the SSH session ends)."""
    return tuple(s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN)


class Interrupted(Exception):
    """The run was stopped by ``signum``; in-flight requests are in the ledger.
    ``during`` (when set) says what the stop lost instead: it came during a step with no
    request in flight (the harvest's store being written)."""

    def __init__(self, signum: int, during: str = "") -> None:
        self.signum = signum
        self.during = during
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal."""
        return 128 + self.signum


class Stopped(KeyboardInterrupt):
    """A stop signal other than SIGINT, raised as Ctrl-C is (outside the event loop)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def raise_on_stop_signals() -> Iterator[None]:
    """Outside :func:`run_paid`'s event loop (before it, and after it while the summary
    and the run's note are written), SIGTERM, SIGHUP and SIGQUIT raise :class:`Stopped` (a
    KeyboardInterrupt, so no ``except Exception`` on the way can swallow it) as Ctrl-C
    raises KeyboardInterrupt: the command says it was stopped (exit 128 + N) instead of
    ending on the spot with no word (exit -15). A signal the process was started ignoring
    (SIGHUP under ``nohup``) stays ignored."""

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {}
    for signum in stop_signals():
        if signum == signal.SIGINT:
            continue
        try:
            previous[signum] = signal.signal(signum, stop)
        except ValueError:  # not the main thread: Python's defaults apply
            break
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def say(text: str) -> None:
    """Print to stderr; a terminal gone with SIGHUP is not an error worth a traceback."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


def run_paid(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, stopping cleanly on a stop signal (raises :class:`Interrupted`)."""
    loop = asyncio.new_event_loop()
    received: list[int] = []
    installed: list[int] = []
    previous: dict[int, Any] = {}
    try:
        task = loop.create_task(coro)

        def on_signal(signum: int) -> None:
            received.append(signum)
            if len(received) == 1:
                task.cancel()
            else:
                say(
                    f"{signal.Signals(signum).name}: already stopping (any requests in "
                    "flight are being recorded in the spend ledger); kill -9 would leave "
                    "them unrecorded"
                )

        arrived: list[int] = []

        def on_arrival(signum: int, frame: object) -> None:
            # Python's handler, run at once in this thread even while the loop waits (for
            # the cache's coordination.db, locked by a process stopped with Ctrl-Z): such
            # a wait gives up, and the loop then acts on the signal (asyncio's own handler
            # only wakes the loop, through the fd the C handler writes, kept by this one)
            arrived.append(signum)
            stop_waiting()

        stop_waiting(False)  # a new run: nothing stopped it yet
        for signum in stop_signals():
            before = signal.getsignal(signum)
            try:
                loop.add_signal_handler(signum, on_signal, signum)
            except (ValueError, RuntimeError, NotImplementedError):
                continue  # not the main thread, or no signals here: Python's defaults apply
            installed.append(signum)
            previous[signum] = before
            signal.signal(signum, on_arrival)
            signal.siginterrupt(signum, False)  # as add_signal_handler left it
        try:
            # a signal after the task's last await changes nothing: its work is complete
            return loop.run_until_complete(task)
        except asyncio.CancelledError as exc:
            if received:  # the task's own message, when it says what the stop lost
                raise Interrupted(received[0], _lost(str(exc))) from None
            raise
        except Exception as exc:
            if arrived and given_up_on() is not None:  # the error of a write given up on
                raise Interrupted(arrived[0], _lost("")) from exc
            raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)  # sets Python's default, so:
            if previous.get(signum) is not None:
                signal.signal(signum, previous[signum])  # the handler from before the loop
        _finish(loop)


def _lost(during: str) -> str:
    """What a stop lost: ``during`` (the task's own word), or, when it gave up on the
    cache's coordination database, locked by a stopped process, what that leaves."""
    pid = given_up_on()
    if pid is None:
        return during
    return (
        f"while process {pid} on this host, stopped (Ctrl-Z or SIGSTOP), held the cache's "
        "coordination.db locked: answers received before it are cached; the requests that "
        "were in flight are left open in coordination.db at their worst-case cost, which "
        f"the next run of the cache charges to the spend ledger (as orphaned) once process "
        f"{pid} runs on or ends; run again to resume"
    )


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.run`` does on the way out: cancel leftovers, retrieve their errors."""
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()

"""An executor that runs every call in a thread of its own, one call at a time.

The torch backends used to keep one inference thread for their lifetime. Idle, that thread
keeps its OpenMP team, and with more OpenMP threads than cores libgomp puts every team's
threads to sleep between parallel regions: torch work on two or more threads elsewhere in
the same process (a notebook training students next to ``serve_in_background``, the demo)
ran about 2x slower on a 2-core machine while the server lived. A thread that
exits frees its team, so here every call gets a new thread that exits when the call
returns; a lock keeps calls one at a time, as the single-thread pool did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["CallThreadExecutor"]

T = TypeVar("T")


class CallThreadExecutor(Executor):
    """``submit`` starts a thread named ``<prefix>-call`` that runs the call and exits.

    >>> ex = CallThreadExecutor("demo")
    >>> ex.submit(sum, [1, 2, 3]).result()
    6
    >>> ex.shutdown()
    >>> ex.submit(sum, [1])
    Traceback (most recent call last):
    ...
    RuntimeError: cannot schedule new calls after shutdown
    """

    def __init__(self, prefix: str) -> None:
        self._name = f"{prefix}-call"
        self._one_at_a_time = threading.Lock()
        self._state = threading.Lock()
        self._live: set[threading.Thread] = set()
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            try:
                with self._one_at_a_time:
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(fn(*args, **kwargs))
                        except BaseException as exc:  # the caller gets it from the future
                            future.set_exception(exc)
            finally:
                with self._state:
                    self._live.discard(threading.current_thread())

        with self._state:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            thread = threading.Thread(target=run, name=self._name, daemon=True)
            self._live.add(thread)
            thread.start()  # under the lock: shutdown never joins a thread not yet started
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; with ``wait``, return once every running call's thread has exited.
        (``cancel_futures`` is accepted for the Executor interface: a call that has not
        started yet is cancelled only when its caller cancels its future.)"""
        with self._state:
            self._closed = True
            live = list(self._live)
        if wait:
            for thread in live:
                thread.join()

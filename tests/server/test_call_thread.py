"""CallThreadExecutor: a thread per call, one call at a time, errors to the caller."""

from __future__ import annotations

import threading
import time

import pytest

from distill.server.call_thread import CallThreadExecutor


def test_calls_run_one_at_a_time_each_in_a_thread_that_exits() -> None:
    ex = CallThreadExecutor("t")
    running = 0
    most = 0
    names: list[str] = []
    guard = threading.Lock()

    def call(i: int) -> int:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
            names.append(threading.current_thread().name)
        time.sleep(0.02)
        with guard:
            running -= 1
        return i * i

    futures = [ex.submit(call, i) for i in range(6)]
    assert [f.result(timeout=10) for f in futures] == [i * i for i in range(6)]
    assert most == 1
    assert names == ["t-call"] * 6
    ex.shutdown(wait=True)
    assert not [t for t in threading.enumerate() if t.name == "t-call"]


def test_an_exception_reaches_the_caller_and_the_next_call_still_runs() -> None:
    ex = CallThreadExecutor("t")

    def boom() -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        ex.submit(boom).result(timeout=10)
    assert ex.submit(len, "abc").result(timeout=10) == 3
    ex.shutdown()


def test_shutdown_waits_for_a_running_call_and_refuses_new_ones() -> None:
    ex = CallThreadExecutor("t")
    started = threading.Event()
    done: list[bool] = []

    def slow() -> None:
        started.set()
        time.sleep(0.1)
        done.append(True)

    ex.submit(slow)
    assert started.wait(10)
    ex.shutdown(wait=True)
    assert done == [True]
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(len, "x")

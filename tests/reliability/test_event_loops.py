"""A TeacherClient belongs to the event loop of its first call: a second asyncio.run (the
usual script pattern) or another thread is refused before anything is reserved."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from decimal import Decimal
from pathlib import Path

import pytest

from cache import ResponseCache, SpendLedger
from distill.server import Faults
from tests.conftest import make_image_requests
from tests.reliability.conftest import TOKEN, teacher
from vlmclient import ConfigurationError, TeacherClient
from vlmclient.transport import ReadingAiohttpTransport


def test_a_second_asyncio_run_is_refused_and_nothing_is_paid_twice(tmp_path: Path) -> None:
    """Before: the second asyncio.run wrote its request on the first loop's pooled
    connection, the server billed it, and the client raised 'Event loop is closed' with
    the answer lost (so asking again paid twice)."""
    with teacher() as t, ResponseCache(tmp_path / "r") as cache, \
            SpendLedger(tmp_path / "ledger.jsonl") as ledger:
        client = TeacherClient("local:hash", api_key=TOKEN, base_url=t.url, budget="1",
                               cache=cache, ledger=ledger)
        assert len(asyncio.run(client.embed_images(make_image_requests(3)))) == 3
        with pytest.raises(ConfigurationError, match="another event loop"):
            asyncio.run(client.embed_images(make_image_requests(6)))
        assert t.billing()["requests"] == 1
        with warnings.catch_warnings():
            # the first loop's socket is only freed with its transport (a user's script
            # gets the same ResourceWarning httpx gives for a loop closed under it)
            warnings.simplefilter("ignore", ResourceWarning)
            asyncio.run(client.aclose())  # closing from a later loop does not raise
            del client
            gc.collect()
    paid = [r for r in SpendLedger.read(tmp_path / "ledger.jsonl") if Decimal(r.cost_usd) > 0]
    assert [r.outcome for r in paid] == ["ok"]  # no "cancelled" charge for the refused call


def test_a_client_shared_between_threads_is_refused_in_the_second(tmp_path: Path) -> None:
    """Before: with one client in three threads, one thread hung forever."""
    errors: list[BaseException] = []

    def other(client: TeacherClient) -> None:
        try:
            asyncio.run(client.embed_images(make_image_requests(4)))
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    async def first(url: str) -> None:
        async with TeacherClient("local:hash", api_key=TOKEN, base_url=url,
                                 budget="1") as client:
            await client.embed_images(make_image_requests(2))
            thread = threading.Thread(target=other, args=(client,))
            thread.start()
            await asyncio.to_thread(thread.join, 30)
            assert not thread.is_alive()
            assert len(await client.embed_images(make_image_requests(3))) == 3

    with teacher() as t:
        asyncio.run(first(t.url))
        assert len(errors) == 1 and isinstance(errors[0], ConfigurationError)
        assert t.billing()["requests"] == 2  # the first thread's two calls, nothing else


@pytest.mark.parametrize("aiohttp", [False, True], ids=["default", "aiohttp"])
def test_closing_from_another_loop_while_the_first_runs_is_refused(
    tmp_path: Path, aiohttp: bool
) -> None:
    """``asyncio.run(client.aclose())`` while the loop the client was used in still runs
    (in another thread, a request on the wire). Before: with the aiohttp transport a
    bare "got Future ... attached to a different loop", the session left half closed and
    the request on the wire cut and charged as possibly billed; with the default one the
    first loop's sockets were closed from the wrong thread. Now a ConfigurationError,
    nothing closed: the request is answered and the client closes in its own loop."""
    with teacher(Faults(latency_ms=300)) as t, SpendLedger(tmp_path / "ledger.jsonl") as ledger:
        client = TeacherClient(
            "local:hash", api_key=TOKEN, base_url=t.url, budget="1", ledger=ledger,
            transport=ReadingAiohttpTransport() if aiohttp else None,
        )  # fmt: skip
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever)
        thread.start()
        try:
            call = asyncio.run_coroutine_threadsafe(
                client.embed_images(make_image_requests(2)), loop
            )
            while client.stats.requests_sent == 0:
                time.sleep(0.01)
            with pytest.raises(ConfigurationError, match="close it in that loop"):
                asyncio.run(client.aclose())
            assert len(call.result(10)) == 2
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
        assert t.billing()["requests"] == 1
    assert [r.outcome for r in SpendLedger.read(tmp_path / "ledger.jsonl")] == ["ok"]

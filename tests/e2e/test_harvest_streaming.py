"""Harvest with memory bounded by concurrency, not by N (issue 17, item 1), through the real
CLI (or ``harvest()`` with a real TeacherClient) against the real local teacher on loopback.

The store is written as vectors arrive, dry runs and the budget-stop pricing read the
views one by one: these tests pin that the results are what they were (the store holds the
cached vectors, normalised, as float16; the same counts and prices are printed) and that
the number of image views read but not answered never exceeds the harvest's window.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cache import ResponseCache, SpendLedger
from distill.cli import main
from distill.data import class_prompts, scan
from distill.harvest import HarvestResult, harvest, image_items, view_request
from distill.view_requests import cached_view_vector
from tests.e2e.conftest import LocalTeacher, ledger_spent, local_teacher
from tests.e2e.conftest import harvest as run_cli
from vlmclient import (
    Budget,
    TeacherClient,
    TextEmbeddingRequest,
    endpoint_id,
    item_cache_key,
    prepare_item,
)
from vlmclient.providers import parse_teacher


def one_line(out: str) -> str:
    return " ".join(out.split())  # the console wraps long lines


def raising_run(
    error: type[Exception],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    work: Callable[[TeacherClient], Awaitable[object]],
) -> dict[str, Any]:
    """``work`` given a client of a slow local teacher (100 ms a request, 8 in flight, 2
    items each) with a response cache and a ledger in ``tmp_path``; it must raise
    ``error``. The teacher's bill, once the client and the ledger are closed."""
    with local_teacher(monkeypatch, latency_ms=100) as teacher:

        async def go() -> None:
            with (
                ResponseCache(tmp_path / "responses") as rc,
                SpendLedger(tmp_path / "ledger.jsonl") as ledger,
            ):
                async with TeacherClient(
                    "local:hash", base_url=teacher.url, cache=rc, ledger=ledger,
                    budget=Budget("1"), concurrency=8, batch_size=2,
                ) as client:  # fmt: skip
                    await work(client)

        with pytest.raises(error):
            asyncio.run(go())
        return teacher.billing()


def cached_vectors(
    teacher: LocalTeacher, data: Path, cache: Path, views: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, D) image and (C, D) text vectors read from the response cache by key."""
    ds = scan(data)
    provider, model = parse_teacher("local:hash")
    endpoint = endpoint_id(provider, teacher.url, None)

    def get(rc: ResponseCache, kind: str, item: Any) -> np.ndarray:
        key = item_cache_key(provider, model, {}, kind, prepare_item(provider, item), endpoint)
        entry = rc.get(key)
        assert entry is not None and entry.vector is not None
        return entry.vector

    with ResponseCache(cache / "responses") as rc:
        images = np.zeros((len(ds.samples), views, 64), np.float32)
        for item in image_items(ds, views):
            if item.view == 0:
                vector = get(rc, "image_embedding", view_request(item, ds.hflip))
            else:  # an augmented view is keyed by its content id
                found = cached_view_vector(
                    rc, item, hflip=ds.hflip, teacher="local:hash", params={}, endpoint=endpoint
                )
                assert found is not None
                vector = found
            images[item.row, item.view] = vector
        texts = np.stack(
            [
                get(rc, "text_embedding", TextEmbeddingRequest(text=p))
                for p in class_prompts(ds.class_names, "a photo of a {}")
            ]
        )
    return images, texts


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("views", [1, 3])
def test_the_store_holds_every_cached_vector_and_the_spend_is_the_bill(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path, views: int
) -> None:
    cache = tmp_path / "cache"
    n = len(scan(digits_data).samples)
    # concurrency 2, 8 per request: many requests, answered in any order
    args = ("--budget", "1", "--views", str(views), "--concurrency", "2", "--batch-size", "8")
    assert run_cli(hash_teacher, digits_data, cache, *args) == 0
    bill = hash_teacher.billing()
    assert bill["images"] == n * views  # each view bought once
    assert Decimal(bill["usd"]) == ledger_spent(cache)

    [store] = (cache / "stores").iterdir()
    images, texts = cached_vectors(hash_teacher, digits_data, cache, views)
    # the first run stores the vectors as answered; the cache keeps them as float16
    first = np.load(store / "images.npy")
    assert first.dtype == np.float16 and first.shape == images.shape
    assert np.allclose(first, unit(images), atol=2e-3)
    assert np.allclose(np.load(store / "texts.npy"), unit(texts), atol=2e-3)

    # a cached rerun stores what the store held before streaming: every cached vector
    # normalised, then float16; `cache export` writes the same bytes; nothing is bought
    assert run_cli(hash_teacher, digits_data, cache, *args) == 0
    assert np.array_equal(np.load(store / "images.npy"), unit(images).astype(np.float16))
    assert np.array_equal(np.load(store / "texts.npy"), unit(texts))
    written = (store / "images.npy").read_bytes()
    export = ["cache", "export", str(digits_data), "--teacher", "local:hash", "--base-url",
              hash_teacher.url, "--cache", str(cache), "--views", str(views)]  # fmt: skip
    assert main(export) == 0
    assert (store / "images.npy").read_bytes() == written
    assert hash_teacher.billing()["requests"] == bill["requests"]
    assert sorted(p.name for p in (cache / "stores").iterdir()) == [store.name]  # no leftovers


def partly_cached(teacher: LocalTeacher, digits: Path, tmp_path: Path) -> tuple[Path, Path, int]:
    """A copy of digits harvested without 7 of its images, which are then put back along
    with a byte-identical copy of one of them: 7 distinct uncached views of 121."""
    data = tmp_path / "data"
    shutil.copytree(digits, data)
    files = sorted(p for p in data.rglob("*.png"))
    aside = tmp_path / "aside"
    aside.mkdir()
    held = files[::17][:7]
    for i, f in enumerate(held):
        shutil.move(f, aside / f"{i}-{f.name}")
    cache = tmp_path / "cache"
    assert run_cli(teacher, data, cache, "--budget", "1") == 0
    for i, f in enumerate(held):
        shutil.move(aside / f"{i}-{f.name}", f)
    shutil.copy(held[0], held[0].with_name("copy-" + held[0].name))
    return data, cache, len(files) + 1


def test_dry_run_prints_the_same_counts_and_prices(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    n = len(scan(digits_data).samples)
    assert run_cli(hash_teacher, digits_data, tmp_path / "fresh", "--dry-run", "--views", "3") == 0
    # the line the dry run printed before it streamed ($0.0001 per image, prompts by tokens)
    assert (
        f"dry run: {3 * n} of {3 * n} image views and 10 of 10 prompts are not cached; buying "
        "them would cost at most $0.036024 (budget $1.00, of which $1.00 is left). Nothing was "
        "sent." in one_line(capsys.readouterr().out)
    )

    data, cache, total = partly_cached(hash_teacher, digits_data, tmp_path)
    capsys.readouterr()
    requests = hash_teacher.billing()["requests"]
    assert run_cli(hash_teacher, data, cache, "--dry-run", "--budget", "1") == 0
    # the duplicate is counted once: it would be bought once
    assert (
        f"dry run: 7 of {total} image views and 0 of 10 prompts are not cached; buying them "
        "would cost at most $0.000700" in one_line(capsys.readouterr().out)
    )
    assert hash_teacher.billing()["requests"] == requests


def test_budget_stop_prices_what_remains(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, cache, _ = partly_cached(hash_teacher, digits_data, tmp_path)
    spent = ledger_spent(cache)
    requests = hash_teacher.billing()["requests"]
    capsys.readouterr()
    # a budget with nothing left: the first request is refused, the rest is priced
    assert run_cli(hash_teacher, data, cache, "--budget", str(spent)) == 3
    out = one_line(capsys.readouterr().out)
    assert "stopped by the budget" in out
    assert "7 items remain; finishing would cost at most $0.000700." in out
    assert hash_teacher.billing()["requests"] == requests
    assert [p for p in (cache / "stores").iterdir() if ".tmp-" in p.name] == []


def test_views_read_but_not_answered_never_exceed_the_window(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    ds = scan(digits_data)
    views = 2
    seen: list[tuple[int, int]] = []

    def progress(r: HarvestResult) -> None:
        seen.append((r.in_flight, r.window))

    async def go() -> HarvestResult:
        with ResponseCache(tmp_path / "responses") as rc:
            async with TeacherClient(
                "local:hash", base_url=hash_teacher.url, cache=rc, concurrency=1, batch_size=4
            ) as client:
                return await harvest(
                    ds, client, cache_dir=tmp_path, views=views, on_progress=progress
                )

    result = asyncio.run(go())
    assert result.complete and result.bought == len(ds.samples) * views + len(ds.class_names)
    # one request in flight and one prepared ahead, 4 views each: 8 of 240 at most
    assert result.window == 8 < len(ds.samples) * views
    assert 0 < result.in_flight_peak <= result.window
    assert len(seen) > len(ds.samples) * views // 4  # a report per request
    assert all(in_flight <= window for in_flight, window in seen)
    assert result.in_flight == 0


def test_a_failing_progress_callback_leaves_no_request_running_unrecorded(
    monkeypatch: pytest.MonkeyPatch, digits_data: Path, tmp_path: Path
) -> None:
    """``on_progress`` raising (the CLI's progress line on a closed pipe, a caller's bug)
    failed one worker; harvest() returned the error while the others kept sending, and
    the caller then closed its ledger under them: "SPEND NOT RECORDED", the ledger $0.0010
    for a $0.0026 bill. Now the other workers are stopped before harvest() returns: each
    request in flight is recorded at its reservation."""

    class Broken(Exception):
        pass

    def progress(r: HarvestResult) -> None:
        if r.bought >= 20:
            raise Broken("stdout is gone")

    ds = scan(digits_data)

    async def work(client: TeacherClient) -> None:
        await harvest(ds, client, cache_dir=tmp_path, on_progress=progress)

    billed = Decimal(raising_run(Broken, monkeypatch, tmp_path, work)["usd"])
    assert billed > 0
    assert ledger_spent(tmp_path) >= billed  # every billed request is in the ledger

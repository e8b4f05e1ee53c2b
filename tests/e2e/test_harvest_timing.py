"""`vlm-distill harvest -v` ends with where the time went (issue 17, item 5), through the
real CLI against the real local teacher on loopback. No timing thresholds: the parts are
checked for being there, non-negative and adding up to no more than the wall time."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from distill.cli import main
from tests.e2e import conftest as e2e
from tests.e2e.conftest import LocalTeacher

PARTS = ("prepare", "wait on the provider", "parse", "cache", "ledger", "store", "other")
LINE = re.compile(r"^time: (?P<parts>.*) \(wall (?P<wall>\d+\.\d{3}) s\)$")
ROUNDING = 0.0005  # each figure is printed to the millisecond


def harvest(teacher: LocalTeacher, data: Path, cache: Path, *extra: str) -> int:
    return e2e.harvest(teacher, data, cache, "--budget", "1", *extra)


def breakdown(out: str) -> tuple[dict[str, float], float]:
    last = out.rstrip("\n").splitlines()[-1]
    m = LINE.match(last)
    assert m, f"the output does not end with the time line: {last!r}"
    parts = {}
    for piece in m["parts"].split(" · "):
        name, value, unit = piece.rsplit(" ", 2)
        assert unit == "s"
        parts[name] = float(value)
    return parts, float(m["wall"])


def test_harvest_v_ends_with_a_time_breakdown(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "cache"
    assert harvest(hash_teacher, digits_data, cache, "-v") == 0
    parts, wall = breakdown(capsys.readouterr().out)
    assert tuple(parts) == PARTS
    assert all(v >= 0 for v in parts.values())
    assert sum(parts.values()) <= wall + ROUNDING * (len(parts) + 1)

    # a fully cached rerun sends nothing, so it never waits on the provider
    assert harvest(hash_teacher, digits_data, cache, "-v") == 0
    parts, wall = breakdown(capsys.readouterr().out)
    assert parts["wait on the provider"] == 0
    assert all(v >= 0 for v in parts.values())
    assert sum(parts.values()) <= wall + ROUNDING * (len(parts) + 1)

    # without -v there is no such line; -v before the command works as well
    assert harvest(hash_teacher, digits_data, cache) == 0
    assert "time: " not in capsys.readouterr().out
    assert main(
        ["-v", "harvest", str(digits_data), "--teacher", "local:hash", "--base-url",
         hash_teacher.url, "--cache", str(cache)]
    ) == 0
    breakdown(capsys.readouterr().out)


async def test_concurrent_requests_wait_is_counted_once(hash_teacher: LocalTeacher) -> None:
    """Requests in flight together are one wait, not one each: the parts of a run with
    several concurrent requests still add up to no more than its wall time."""
    import asyncio
    import time

    from tests.conftest import make_image_requests
    from vlmclient import TeacherClient

    images = make_image_requests(12)
    async with TeacherClient(
        "local:hash", base_url=hash_teacher.url, batch_size=1, concurrency=6
    ) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client.embed_images([i]) for i in images))
        wall = time.perf_counter() - started
    assert client.stats.requests_sent == 12
    parts = client.timings.parts(wall)
    assert all(v >= 0 for v in parts.values())
    assert sum(parts.values()) == pytest.approx(wall)  # "other" is the rest, never negative
    assert parts["wait"] + parts["prepare"] + parts["parse"] <= wall


def test_cache_look_ups_inside_preparing_are_not_counted_twice(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The harvest times preparing a chunk around the client's content-id look-ups,
    which the client times as `cache` too: each slow look-up was counted in both, and
    the parts added up to more than the wall time (seen on a loaded CI machine). A
    look-up made slow on purpose shows it on any machine."""
    from cache import ResponseCache

    slow = 0.05
    real = ResponseCache.get_many

    def get_many(self: ResponseCache, keys):  # type: ignore[no-untyped-def]
        time.sleep(slow)
        return real(self, keys)

    monkeypatch.setattr(ResponseCache, "get_many", get_many)
    cache = tmp_path / "cache"
    assert harvest(hash_teacher, digits_data, cache, "-v", "--views", "2") == 0
    parts, wall = breakdown(capsys.readouterr().out)
    assert parts["cache"] >= slow
    assert sum(parts.values()) <= wall + ROUNDING * (len(parts) + 1)


def test_a_phase_timed_around_another_is_not_counted_twice() -> None:
    """A stretch timed as one phase that held another phase (a cache look-up inside a
    step timed as preparing, or another task's phases during an await inside it) counted
    those seconds twice: the parts added up to more than the wall time."""
    from time import perf_counter, sleep

    from vlmclient.timing import Timings

    t = Timings()
    begun = perf_counter()
    outer = perf_counter()
    sleep(0.02)
    inner = perf_counter()
    sleep(0.02)
    t.add("cache", inner)
    sleep(0.02)
    t.add("prepare", outer)
    wall = perf_counter() - begun
    assert t.cache >= 0.02
    assert t.prepare + t.cache <= wall

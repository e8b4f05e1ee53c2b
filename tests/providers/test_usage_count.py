"""The one reader of providers' usage figures (issue 14 item 10: eight copies merged)."""

from __future__ import annotations

import math

import httpx
import pytest

from vlmclient.providers.base import header_int, usage_count


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"n": 12}, 12),
        ({"n": 0}, 0),
        ({"n": -3}, None),  # a negative count is no count
        ({"n": 2.0}, None),  # a float is not a token count (except where fractional)
        ({"n": "12"}, None),
        ({"n": None}, None),
        ({}, None),
        (None, None),  # no usage block at all
        ([12], None),
        ({"n": 10**400}, 10**400),  # a huge int is kept (it can only over-charge)
    ],
)
def test_usage_count_takes_non_negative_ints_only(obj: object, expected: int | None) -> None:
    assert usage_count(obj, "n", None) == expected
    assert usage_count(obj, "n") == (0 if expected is None else expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2.0, 2), (2.9, 2), (-1.0, 0), (math.inf, 0), (math.nan, 0), (7, 7), (10**400, 10**400)],
)
def test_fractional_counts_take_finite_floats(value: float, expected: int) -> None:
    assert usage_count({"n": value}, "n", fractional=True) == expected


def test_header_int() -> None:
    headers = httpx.Headers({"a": "10", "b": "ten", "c": "-1"})
    assert header_int(headers, "a") == 10
    assert header_int(headers, "b") is None
    assert header_int(headers, "c") == -1  # rate-limit figures are passed on as sent
    assert header_int(headers, "missing") is None

"""The one reader of providers' usage figures (issue 14 item 10: eight copies merged)."""

from __future__ import annotations

import math

import httpx
import pytest

from vlmclient.providers.wire import header_int, usage_count


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"n": 12}, 12),
        ({"n": 0}, 0),
        ({"n": -3}, None),  # a negative count is no count
        # a JSON number is a count: a gateway's 50000.0 was read as "not reported", and
        # charged the reservation even when it said more (no overrun)
        ({"n": 2.0}, 2),
        ({"n": 2.5}, 3),  # rounded up: never below the bill
        ({"n": -2.0}, None),
        ({"n": math.inf}, None),
        ({"n": math.nan}, None),
        ({"n": 1e308}, math.ceil(1e308)),  # the largest float is a (huge) count
        # a string of digits is that count; any other string is none
        ({"n": "12"}, 12),
        ({"n": " 12\n"}, 12),
        ({"n": "9" * 4300}, int("9" * 4300)),
        ({"n": "9" * 4301}, None),  # beyond int()'s (and json.loads') reach
        ({"n": "-3"}, None),
        ({"n": "12.0"}, None),
        ({"n": "1e3"}, None),
        ({"n": "0x10"}, None),
        ({"n": "١٢"}, None),  # Arabic-Indic digits: int() reads them, a bill does not
        ({"n": ""}, None),
        # JSON true/false are Python ints: not the counts 1 and 0
        ({"n": True}, None),
        ({"n": False}, None),
        ({"n": None}, None),
        ({}, None),
        (None, None),  # no usage block at all
        ([12], None),
        ({"n": 10**400}, 10**400),  # a huge int is kept (it can only over-charge)
    ],
)
def test_usage_count_takes_non_negative_numbers_and_digit_strings(
    obj: object, expected: int | None
) -> None:
    assert usage_count(obj, "n", None) == expected
    assert usage_count(obj, "n") == (0 if expected is None else expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2.0, 2),
        (2.9, 3),  # rounded up: never below the bill
        (2.1, 3),
        (-1.0, 0),
        (math.inf, 0),
        (math.nan, 0),
        (7, 7),
        (10**400, 10**400),
        ("7", 7),
        (True, 0),
    ],
)
def test_fractional_is_kept_and_reads_the_same(value: object, expected: int) -> None:
    # every count takes floats now: fractional=True (Cohere's callers) changes nothing
    assert usage_count({"n": value}, "n", fractional=True) == expected
    assert usage_count({"n": value}, "n") == expected


def test_header_int() -> None:
    headers = httpx.Headers({"a": "10", "b": "ten", "c": "-1"})
    assert header_int(headers, "a") == 10
    assert header_int(headers, "b") is None
    assert header_int(headers, "c") == -1  # rate-limit figures are passed on as sent
    assert header_int(headers, "missing") is None


async def test_a_fractional_cohere_bill_is_charged_whole_units_up() -> None:
    """Cohere's ``billed_units`` are numbers (spec ``ApiMetaBilledUnits``: ``type:
    number``). A bill of 57.5 image tokens was recorded as 57: the ledger below what
    Cohere billed. Counts are now rounded up. A loopback server bills like Cohere."""
    from decimal import Decimal
    from typing import Any

    from tests.providers.conftest import image, nosleep
    from tests.providers.loopback import loopback
    from vlmclient import Budget, ImageEmbeddingRequest, Price, TeacherClient
    from vlmclient.retry import RetryPolicy

    def like_cohere(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {
            "id": "emb-frac",
            "embeddings": {"float": [[0.1, 0.2, 0.3] * 512]},  # embed-v4.0's 1536
            "meta": {"billed_units": {"images": 1, "image_tokens": 57.5}},
        }

    price = Price(usd_per_1m_image_tokens=Decimal("0.47"))
    with loopback(like_cohere) as server:
        client = TeacherClient(
            "cohere:embed-v4.0",
            api_key="co-test-fractional",
            base_url=server.url,
            price=price,
            budget=Budget("1.00"),
            retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        )
        async with client:
            await client.embed_images([ImageEmbeddingRequest(image=image((96, 96)))])
    billed = Decimal("57.5") * price.usd_per_1m_image_tokens / 1_000_000
    assert client.budget.spent >= billed

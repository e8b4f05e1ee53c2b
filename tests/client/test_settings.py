"""Settings and inputs the library refuses in one named line, before anything is built or
sent (an audit found raw TypeError/ValueError/OverflowError, and a timeout of 0 reported
as "could not connect")."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from vlmclient import (
    MIN_RATE,
    AnswerRequest,
    Budget,
    ConfigurationError,
    Image,
    ImageEmbeddingRequest,
    InputError,
    RateLimiter,
    TeacherClient,
)


@pytest.mark.parametrize(("setting", "value"), [
    ("concurrency", 0), ("concurrency", "4"), ("concurrency", 1.5), ("concurrency", True),
    ("batch_size", 0), ("batch_size", "8"),
    ("timeout", 0), ("timeout", -1), ("timeout", float("nan")), ("timeout", float("inf")),
    ("timeout", "60"),
    ("rpm", float("nan")), ("rpm", float("inf")), ("rpm", -5), ("rpm", 0), ("tpm", "1000"),
])
def test_a_setting_the_client_cannot_use_is_refused_by_name(setting: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"^{setting} must be"):
        TeacherClient("local:hash", api_key="k", base_url="http://127.0.0.1:9",
                      budget="1", **{setting: value})


@pytest.mark.parametrize(("setting", "value"), [
    ("rpm", 1e-320), ("rpm", 1e-300), ("rpm", 0.0166), ("tpm", 1e-320), ("tpm", -1e-9),
    ("tpm", float("nan")), ("rpm", Decimal("0.01")),
])
def test_a_rate_slower_than_one_an_hour_is_refused_before_anything_is_reserved(
    setting: str, value: Any
) -> None:
    """``rpm=1e-320`` made the interval infinite (``1e-300``: years): one request was
    sent, then the client waited for ever without a word. The bound is the CLI's."""
    budget = Budget("1")
    with pytest.raises(ConfigurationError, match=f"^{setting} must be .*>= 0.0167"):
        TeacherClient("local:hash", api_key="k", base_url="http://127.0.0.1:9",
                      budget=budget, **{setting: value})
    assert budget.reserved == 0 and budget.spent == 0
    assert MIN_RATE == 1 / 60
    with pytest.raises(ValueError, match=f"{setting}"):
        RateLimiter(**{setting: value})
    for ok in (MIN_RATE, 1 / 60, 0.02):
        TeacherClient("local:hash", api_key="k", base_url="http://127.0.0.1:9",
                      budget="1", **{setting: ok})
        RateLimiter(**{setting: ok})


@pytest.mark.parametrize("setting", [{"rpm": 600.0, "tpm": None}, {"timeout": 2}, {}])
def test_good_settings_are_taken(setting: dict[str, Any]) -> None:
    TeacherClient("local:hash", api_key="k", base_url="http://127.0.0.1:9", budget="1",
                  **setting)


def _png() -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (4, 4)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("given", "hint"), [
    ("cat.png", 'Image.from_path("cat.png")'),
    (Path("cat.png"), 'Image.from_path("cat.png")'),
    (PILImage.new("RGB", (4, 4)), "encode it first"),
    (np.zeros((4, 4, 3), dtype=np.uint8), "encode it first"),
    (b"", "empty"),
])
def test_image_from_bytes_says_what_it_takes(given: Any, hint: str) -> None:
    with pytest.raises(InputError, match=r"from_bytes takes|empty") as err:
        Image.from_bytes(given)
    assert hint in str(err.value)


def test_image_from_bytes_takes_bytes_bytearray_and_memoryview() -> None:
    data = _png()
    for given in (data, bytearray(data), memoryview(data)):
        image = Image.from_bytes(given)
        assert image.data == data and image.media_type == "image/png"


@pytest.mark.parametrize(("given", "hint"), [
    (b"\x89PNG\r\n\x1a\n", "Image.from_bytes(data)"),
    (PILImage.new("RGB", (4, 4)), "encode it first"),
    (np.zeros((4, 4, 3), dtype=np.uint8), "encode it first"),
])
def test_image_from_path_says_what_it_takes(given: Any, hint: str) -> None:
    # was pathlib's TypeError: "expected str, bytes or os.PathLike object, not ndarray"
    with pytest.raises(InputError, match="from_path takes a file path") as err:
        Image.from_path(given)
    assert hint in str(err.value)


@pytest.mark.parametrize("request_type", [ImageEmbeddingRequest, AnswerRequest])
@pytest.mark.parametrize(("given", "hint"), [
    (b"\x89PNG\r\n\x1a\n", "Image.from_bytes(data)"),
    ("cat.png", 'Image.from_path("cat.png")'),
    (Path("cat.png"), 'Image.from_path("cat.png")'),
    (PILImage.new("RGB", (4, 4)), "encode it first"),
    (np.zeros((4, 4, 3), dtype=np.uint8), "encode it first"),
])
def test_a_request_given_something_else_than_an_image_says_what_to_pass(
    request_type: Any, given: Any, hint: str
) -> None:
    # was pydantic's "Input should be a valid dictionary or instance of Image"
    with pytest.raises(ValueError, match=r"image must be a vlmclient\.Image") as err:
        request_type(image=given, prompt="which?")
    assert hint in str(err.value)

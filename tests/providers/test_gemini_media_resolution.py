"""Gemini 3 ``mediaResolution`` bounds the image-token reservation (issue 15).

A loopback server bills each image the way Gemini 3 does for the resolution the request
asks for (280 / 560 / 1,120 / 2,240 prompt tokens, 1,120 when none is asked); the real
TeacherClient must reserve at least that before sending, and no more image tokens than
the requested resolution allows.
"""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import pytest
from PIL import Image as PILImage

from tests.providers.conftest import call_spec
from tests.providers.loopback import Loopback, loopback
from vlmclient import AnswerRequest, ConfigurationError, Image, Price, TeacherClient, Usage
from vlmclient.providers import gemini
from vlmclient.providers.wire import params_tokens_upper_bound

MODEL = "gemini-3-pro-preview"
PRICE = Price(
    usd_per_1m_input_tokens=Decimal("2.00"),
    usd_per_1m_output_tokens=Decimal("12.00"),
    verified_on="2026-11-30",
)
BILLED_PER_IMAGE = {
    "MEDIA_RESOLUTION_LOW": 280,
    "MEDIA_RESOLUTION_MEDIUM": 560,
    "MEDIA_RESOLUTION_HIGH": 1120,
    "MEDIA_RESOLUTION_ULTRA_HIGH": 2240,
}
PROMPT = "Which digit is this?"


def bill_like_gemini3(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """generateContent as Gemini 3 bills it: the requested resolution's tokens per image
    plus the prompt's words, one output token."""
    config = body["generationConfig"]
    resolution = config.get("mediaResolution") or config.get("media_resolution")
    if resolution in (None, "MEDIA_RESOLUTION_UNSPECIFIED"):
        resolution = "MEDIA_RESOLUTION_HIGH"  # Gemini 3's default for images
    per_image = BILLED_PER_IMAGE[resolution]
    parts = body["contents"][0]["parts"]
    images = sum(1 for p in parts if "inline_data" in p)
    words = sum(len(p["text"].split()) for p in parts if "text" in p)
    prompt = images * per_image + words
    return 200, {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "7"}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": {
            "promptTokenCount": prompt,
            "candidatesTokenCount": 1,
            "totalTokenCount": prompt + 1,
        },
        "responseId": f"r-{resolution}",
    }


def flat_image(size: tuple[int, int]) -> Image:
    """A one-colour PNG: wide in pixels, a few kB on the wire."""
    out = io.BytesIO()
    PILImage.new("RGB", size, (30, 90, 150)).save(out, "PNG")
    return Image.from_bytes(out.getvalue())


def gemini3(server: Loopback, params: dict[str, Any]) -> TeacherClient:
    return TeacherClient(
        f"gemini:{MODEL}", api_key="secret-key-123", base_url=server.url, price=PRICE, params=params
    )


def ask(size: tuple[int, int]) -> AnswerRequest:
    return AnswerRequest(image=flat_image(size), prompt=PROMPT, max_output_tokens=4)


def reserved_image_tokens(resolution_tokens: int, params: dict[str, str]) -> Usage:
    # the caller's params are counted as input text too (a bound: these are settings)
    return Usage(
        input_tokens=gemini.FRAMING_TOKENS + len(PROMPT.encode()) + 1 + resolution_tokens
        + params_tokens_upper_bound(params),
        output_tokens=4,
    )


@pytest.mark.parametrize(
    ("params", "size", "image_tokens"),
    [
        # a 1,600 x 800 photo: the tile rule would reserve 3 x 2 x 258 = 1,548 tokens
        ({"mediaResolution": "MEDIA_RESOLUTION_LOW"}, (1600, 800), 280),
        ({"mediaResolution": "MEDIA_RESOLUTION_MEDIUM"}, (1600, 800), 560),
        ({"media_resolution": "high"}, (1600, 800), 1120),
        # nothing asked: the model's default, bounded as before (max of 1,120 and tiles)
        ({}, (64, 48), 1120),
        ({"mediaResolution": "MEDIA_RESOLUTION_UNSPECIFIED"}, (1600, 800), 6 * 258),
    ],
)
async def test_reservation_follows_the_requested_resolution_and_covers_the_bill(
    params: dict[str, str], size: tuple[int, int], image_tokens: int
) -> None:
    request = ask(size)
    with loopback(bill_like_gemini3) as server:
        async with gemini3(server, params) as client:
            n, planned = client.plan("answer", [request])
            [answer] = await client.answer([request])
    assert (n, planned) == (1, PRICE.cost(reserved_image_tokens(image_tokens, params)))
    assert answer.text == "7"
    [(_, body, _)] = server.requests
    billed_prompt = bill_like_gemini3("", body)[1]["usageMetadata"]["promptTokenCount"]
    billed = PRICE.cost(Usage(input_tokens=billed_prompt, output_tokens=1))
    assert client.budget.spent == billed <= planned
    assert client.budget.overruns == 0 and client.overrun is None


async def test_the_canonical_resolution_name_is_what_is_sent() -> None:
    with loopback(bill_like_gemini3) as server:
        async with gemini3(server, {"media_resolution": "low"}) as client:
            await client.answer([ask((64, 48))])
    [(_, body, _)] = server.requests
    assert body["generationConfig"]["media_resolution"] == "MEDIA_RESOLUTION_LOW"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("MEDIA_RESOLUTION_EXTREME", "mediaResolution 'MEDIA_RESOLUTION_EX"),
        # ULTRA_HIGH is a per-part level (PartMediaResolutionLevel), not one of
        # generationConfig's: until 2026-12-06 it was sent in generationConfig
        ("ULTRA_HIGH", "per-image-part level"),
        ("media_resolution_ultra_high", "per-image-part level"),
    ],
)
async def test_a_resolution_generation_config_does_not_take_is_refused_before_sending(
    value: str, message: str
) -> None:
    with loopback(bill_like_gemini3) as server:
        async with gemini3(server, {"mediaResolution": value}) as client:
            with pytest.raises(ConfigurationError, match=message):
                await client.answer([ask((64, 48))])
    assert server.requests == []
    assert client.budget.spent == 0


def test_gemini_2_keeps_the_tile_rule_whatever_the_resolution() -> None:
    # 2.x resolutions (64 / 256 tokens per the python-genai enum docs) stay under it
    for res in ("MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_HIGH"):
        assert gemini.image_tokens(1600, 800, "gemini-2.5-flash", res) == 6 * 258
        spec = call_spec(
            "gemini", "answer", "gemini-2.5-flash", [ask((1600, 800))], {"mediaResolution": res}
        )
        tokens = gemini.estimate_usage(spec).input_tokens
        params = params_tokens_upper_bound({"mediaResolution": res})
        assert tokens == gemini.FRAMING_TOKENS + len(PROMPT.encode()) + 1 + params + 6 * 258


def test_both_spellings_at_once_reserve_the_costlier() -> None:
    params = {"mediaResolution": "LOW", "media_resolution": "MEDIUM"}
    assert gemini.media_resolution(params) == "MEDIA_RESOLUTION_MEDIUM"

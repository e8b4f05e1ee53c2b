"""OpenAI takes "non-animated GIF" only: an animated GIF is sent as its first frame.

A loopback server answers like OpenAI's chat completions and refuses (400) an image whose
data URI holds an animated GIF; the real TeacherClient must send such an image re-encoded
and a still GIF as it is.
"""

from __future__ import annotations

import base64
import io
from decimal import Decimal
from typing import Any

from PIL import Image as PILImage

from tests.providers.loopback import loopback
from vlmclient import AnswerRequest, Budget, Image, Price, TeacherClient

PRICE = Price(usd_per_1m_input_tokens=Decimal("0.15"), usd_per_1m_output_tokens=Decimal("0.60"))


def gif(frames: int) -> Image:
    pictures = [PILImage.new("RGB", (48, 48), (40 * i, 90, 200 - 40 * i)) for i in range(frames)]
    out = io.BytesIO()
    pictures[0].save(out, "GIF", save_all=frames > 1, append_images=pictures[1:], duration=100)
    return Image.from_bytes(out.getvalue())


def like_openai(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    url = body["messages"][0]["content"][1]["image_url"]["url"]
    _, data = url.split(",", 1)
    with PILImage.open(io.BytesIO(base64.b64decode(data))) as im:
        if getattr(im, "is_animated", False):
            return 400, {
                "error": {
                    "message": "You uploaded an unsupported image. Please make sure your image "
                    "has of one the following formats: ['png', 'jpeg', 'gif', 'webp'].",
                    "type": "invalid_request_error",
                    "code": "invalid_image_format",
                }
            }
    return 200, {
        "id": "chatcmpl-gif",
        "choices": [{"index": 0, "message": {"content": "7"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 1},
    }


async def test_an_animated_gif_is_sent_as_a_still_image_and_a_still_gif_as_it_is() -> None:
    animated, still = gif(3), gif(1)
    with loopback(like_openai) as server:
        async with TeacherClient(
            "openai:gpt-4o-mini",
            api_key="sk-test-gif",
            base_url=server.url + "/v1",
            price=PRICE,
            budget=Budget("1.00"),
        ) as client:
            answers = await client.answer(
                [
                    AnswerRequest(image=animated, prompt="Which digit?", max_output_tokens=4),
                    AnswerRequest(image=still, prompt="Which digit?", max_output_tokens=4),
                ]
            )
    assert [a.text for a in answers] == ["7", "7"]
    urls = {b["messages"][0]["content"][1]["image_url"]["url"] for b in server.bodies}
    as_is = "data:image/gif;base64," + base64.b64encode(still.data).decode()
    assert as_is in urls  # the still GIF, its own bytes
    (sent,) = urls - {as_is}
    assert not sent.startswith("data:image/gif")  # the animated one, re-encoded

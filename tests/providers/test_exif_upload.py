"""A phone photo stored sideways with an EXIF Orientation tag, too large for the provider:
the client re-encodes it, and the re-encoding must be upright. It carries no EXIF, so its
pixels used to reach the provider sideways (the original, sent as is when within limits,
is shown upright by the provider's own EXIF handling)."""

from __future__ import annotations

import base64
import io
from decimal import Decimal
from typing import Any

import numpy as np
from PIL import Image as PILImage

from tests.providers.loopback import loopback
from vlmclient import Image, ImageEmbeddingRequest, TeacherClient
from vlmclient.prices import PriceTable
from vlmclient.providers import cohere

PRICE = PriceTable.default().lookup("cohere", "embed-v4.0")


def sideways_photo(width: int, height: int) -> bytes:
    """A JPEG whose upright view is ``width`` x ``height`` with a red top-left quarter,
    stored rotated 90 degrees with EXIF Orientation 6 (as phones write portraits)."""
    upright = np.full((height, width, 3), 40, np.uint8)
    upright[: height // 2, : width // 2] = (230, 20, 20)
    stored = PILImage.fromarray(upright).transpose(PILImage.Transpose.ROTATE_90)
    exif = PILImage.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


class CohereStandIn:
    """``POST /v2/embed``: decodes every image it is sent and bills one image each."""

    def __init__(self) -> None:
        self.received: list[PILImage.Image] = []

    def __call__(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert path == "/v2/embed"
        for uri in body["images"]:
            data = base64.b64decode(uri.partition(",")[2])
            with PILImage.open(io.BytesIO(data)) as im:
                self.received.append(im.convert("RGB"))
        n = len(body["images"])
        return 200, {
            "id": "r1",
            # embed-v4.0's default length, which the client expects of it
            "embeddings": {"float": [[0.1 * (i + 1)] * 1536 for i in range(n)]},
            "meta": {"billed_units": {"images": n}},
        }


async def test_a_sideways_photo_too_large_to_send_is_uploaded_upright() -> None:
    # Upright 1200 x 2400 (portrait), stored as 2400 x 1200: over Cohere's 2048-px side.
    photo = Image(data=sideways_photo(1200, 2400), media_type="image/jpeg")
    stand_in = CohereStandIn()
    with loopback(stand_in) as server:
        async with TeacherClient(
            "cohere:embed-v4.0", api_key="co-secret-key-123", base_url=server.url, price=PRICE
        ) as client:
            [out] = await client.embed_images([ImageEmbeddingRequest(image=photo)])
    assert out.vector.shape == (1536,) and client.budget.spent > Decimal(0)
    [sent] = stand_in.received
    assert sent.size == (1024, 2048)  # portrait, as the photo is seen, within 2048 px
    arr = np.asarray(sent)
    assert arr[256, 256, 0] > 150 and arr[256, 256, 1] < 100  # the red quarter, top left
    assert arr[1536, 768, 0] < 100


def test_a_photo_within_limits_keeps_its_bytes_and_tag() -> None:
    # Nothing to re-encode: the same bytes (same cache key) with their EXIF tag.
    photo = Image(data=sideways_photo(300, 600), media_type="image/jpeg")
    assert cohere.prepare_image(photo).data == photo.data

"""Each image's header is parsed once per item (issue 17, item 3): preparing it (as the
harvest does), preparing it again in the client, keying and pricing it all share one
header read, kept on the Image: one PIL read for a JPEG, none for a plain PNG (its IHDR
is read directly, see vlmclient.models.png_header_size)."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from PIL import Image as PILImage

from tests.conftest import make_image_requests
from vlmclient import Image, ImageEmbeddingRequest, Price, TeacherClient
from vlmclient.client import prepare_item


def jpeg_requests(n: int) -> list[ImageEmbeddingRequest]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        PILImage.new("RGB", (16 + i, 16), (i, 2 * i, 3 * i)).save(buf, "JPEG")
        out.append(ImageEmbeddingRequest(image=Image(data=buf.getvalue(), media_type="image/jpeg")))
    return out


@pytest.mark.parametrize(("kind", "pil_reads"), [("png", 0), ("jpeg", 5)])
@pytest.mark.parametrize(
    "teacher", ["local:hash", "cohere:embed-v4.0", "voyage:voyage-multimodal-3"]
)
async def test_one_header_parse_per_image(
    teacher: str, kind: str, pil_reads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []
    real_open = PILImage.open

    def counting_open(*args: object, **kwargs: object) -> PILImage.Image:
        opened.append(args[0])
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    price = Price(usd_per_image=Decimal("0.001"), usd_per_1b_pixels=Decimal("1"))
    async with TeacherClient(teacher, api_key="k", price=price) as client:
        requests = make_image_requests(5) if kind == "png" else jpeg_requests(5)
        monkeypatch.setattr(PILImage, "open", counting_open)
        prepared = [prepare_item(client.provider, r) for r in requests]  # the harvest's step
        n, cost = client.plan("image_embedding", prepared)  # prepare again, key, estimate
    assert n == 5 and cost > 0
    assert len(opened) == pil_reads

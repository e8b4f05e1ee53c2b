"""Image preparation per provider (issue 15 items 6 and 8, and size limits measured the
way each provider measures them): one table of accepted formats; anything else is
re-encoded; a photo with transparency that is too large is flattened and re-encoded to
fit instead of refused; Anthropic's 5 MB applies to the base64 payload."""

from __future__ import annotations

import base64
import io

import jsonschema
import numpy as np
import pytest
from PIL import Image as PILImage

from cache import MemoryCache
from tests.providers.conftest import (
    COHERE_SPEC,
    anthropic_message,
    body_of,
    call_spec,
    image,
    image_bytes,
    loopback_client,
    shared_spec,
    validator_for,
)
from tests.providers.loopback import loopback
from vlmclient import AnswerRequest, Image, ImageEmbeddingRequest, InputError
from vlmclient.keys import item_cache_key
from vlmclient.providers import PROVIDERS, anthropic, cohere, vertex
from vlmclient.providers.images import ACCEPTED_MEDIA_TYPES, base64_size, fit_image


def test_every_provider_reads_its_formats_from_the_one_table() -> None:
    assert set(ACCEPTED_MEDIA_TYPES) == set(PROVIDERS)
    for name in ("openai", "anthropic", "gemini", "vertex", "cohere", "voyage", "nomic", "titan"):
        module = __import__(f"vlmclient.providers.{name}", fromlist=["MEDIA_TYPES"])
        assert ACCEPTED_MEDIA_TYPES[name] == module.MEDIA_TYPES, name


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_cohere_reencodes_formats_outside_its_four(fmt: str) -> None:
    src = Image(data=image_bytes((40, 30), fmt), media_type=f"image/{fmt.lower()}")
    prepared = cohere.prepare_image(src)
    assert prepared.media_type in {"image/jpeg", "image/png", "image/webp", "image/gif"}
    items = [ImageEmbeddingRequest(image=src)]
    body = body_of(
        cohere.build_request(call_spec("cohere", "image_embedding", "embed-v4.0", items))
    )
    uri = body["images"][0]
    assert uri.startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))


def test_cohere_bmp_body_validates_against_the_pinned_spec() -> None:
    doc = shared_spec(COHERE_SPEC)
    validator = validator_for(
        doc, "#/paths/~1v2~1embed/post/requestBody/content/application~1json/schema"
    )
    items = [ImageEmbeddingRequest(image=image((40, 30), "BMP"))]
    body = body_of(
        cohere.build_request(call_spec("cohere", "image_embedding", "embed-v4.0", items))
    )
    validator.validate(body)
    assert not body["images"][0].startswith("data:image/bmp")


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "BMP"])
def test_vertex_declares_only_jpeg_or_png(fmt: str) -> None:
    items = [ImageEmbeddingRequest(image=image((40, 30), fmt))]
    params = {"project": "p", "location": "us-central1"}
    spec = call_spec("vertex", "image_embedding", "multimodalembedding@001", items, params)
    instance = body_of(vertex.build_request(spec))["instances"][0]["image"]
    assert instance["mimeType"] in {"image/jpeg", "image/png"}
    decoded = Image.from_bytes(base64.b64decode(instance["bytesBase64Encoded"]))
    assert decoded.media_type == instance["mimeType"]


def test_vertex_sends_at_most_512_px() -> None:
    prepared = vertex.prepare_image(image((2048, 1024), "PNG"))
    with PILImage.open(io.BytesIO(prepared.data)) as im:
        assert max(im.size) == 512


def _noisy_rgba_png(side: int) -> Image:
    """A photo-like RGBA PNG that compresses badly (random pixels, soft alpha)."""
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (side, side, 4), dtype=np.uint8)
    arr[..., 3] = np.clip(arr[..., 3], 128, 255)
    out = io.BytesIO()
    PILImage.fromarray(arr, "RGBA").save(out, "PNG")
    return Image.from_bytes(out.getvalue())


def test_a_large_noisy_rgba_photo_is_flattened_to_fit_instead_of_refused() -> None:
    src = _noisy_rgba_png(1200)  # ~5.5 MB of PNG, over Anthropic's 5 MB
    assert len(src.data) > anthropic.MAX_IMAGE_BYTES
    out = anthropic.prepare_image(src)
    assert out.media_type == "image/jpeg"
    assert base64_size(out.data) <= anthropic.MAX_IMAGE_BYTES
    with PILImage.open(io.BytesIO(out.data)) as im:
        assert im.size == (1200, 1200)  # re-encoded, not shrunk: JPEG fits at full size


def test_small_rgba_stays_png_with_its_transparency() -> None:
    src = _noisy_rgba_png(64)
    out = fit_image(src, max_side=32, max_bytes=1 << 20, media_types={"image/png", "image/jpeg"})
    assert out.media_type == "image/png"
    with PILImage.open(io.BytesIO(out.data)) as im:
        assert im.mode == "RGBA" and im.size == (32, 32)


def test_anthropic_limit_is_measured_on_the_base64_payload() -> None:
    rgb_png = Image.from_bytes(image_bytes((1200, 1200), "PNG"))  # ~4.3 MB raw, ~5.8 MB b64
    assert len(rgb_png.data) < anthropic.MAX_IMAGE_BYTES < base64_size(rgb_png.data)
    out = anthropic.prepare_image(rgb_png)
    assert out is not rgb_png
    assert base64_size(out.data) <= anthropic.MAX_IMAGE_BYTES


def test_when_nothing_fits_the_error_says_so() -> None:
    with pytest.raises(InputError, match="does not fit"):
        fit_image(image((200, 200)), max_side=200, max_bytes=50, media_types={"image/png"})


def test_cohere_request_cap_leaves_room_for_base64() -> None:
    # "20MB" read as decimal MB of base64 (before 2026-12-06: MiB, 20.9 M characters)
    assert cohere.MAX_REQUEST_IMAGE_BYTES * 4 / 3 < 20_000_000


def test_cohere_image_limit_is_measured_on_the_base64_payload() -> None:
    """A 4.3 MB PNG passed the raw-bytes check and went out as a 5.8 MB data URI, over
    the spec's "maximum size of 5MB" per image (until 2026-12-06)."""
    rgb_png = Image.from_bytes(image_bytes((1200, 1200), "PNG"))  # ~4.3 MB raw, ~5.8 MB b64
    assert len(rgb_png.data) < cohere.MAX_IMAGE_BYTES < base64_size(rgb_png.data)
    out = cohere.prepare_image(rgb_png)
    assert base64_size(out.data) + len("data:image/jpeg;base64,") <= 5_000_000


def test_spec_validator_is_live() -> None:
    doc = shared_spec(COHERE_SPEC)
    validator = validator_for(
        doc, "#/paths/~1v2~1embed/post/requestBody/content/application~1json/schema"
    )
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"model": "embed-v4.0", "input_type": "photo"})


@pytest.mark.parametrize(
    ("fmt", "claimed"),
    [("PNG", "image/gif"), ("JPEG", "image/png"), ("GIF", "image/jpeg"), ("WEBP", "image/png"),
     ("BMP", "image/webp")],
)  # fmt: skip
def test_a_media_type_the_bytes_contradict_is_refused_when_the_image_is_made(
    fmt: str, claimed: str
) -> None:
    """``Image(data=png_bytes, media_type="image/gif")`` was accepted and sent under the
    wrong type (a provider 400s it or mis-decodes it, after the budget was reserved). Now
    a ValueError naming the type the bytes have; a type that agrees, or bytes of no known
    signature, are kept as given."""
    data = image_bytes((8, 6), fmt)
    have = f"image/{fmt.lower()}"
    with pytest.raises(ValueError, match=f"the bytes are {have}"):
        Image(data=data, media_type=claimed)
    with pytest.raises(ValueError, match=f"the bytes are {have}"):
        Image.from_bytes(data, media_type=claimed)
    assert Image(data=data, media_type=have).media_type == have
    assert Image(data=b"\x00\x01 raw", media_type=claimed).media_type == claimed


@pytest.mark.parametrize(
    ("fmt", "given", "canonical"),
    [("JPEG", "image/JPEG", "image/jpeg"), ("JPEG", "image/jpg", "image/jpeg"),
     ("JPEG", " image/jpeg", "image/jpeg"), ("JPEG", "image/jpeg; charset=binary", "image/jpeg"),
     ("JPEG", "Image/JPG ", "image/jpeg"), ("PNG", "IMAGE/PNG", "image/png"),
     ("WEBP", "image/WebP", "image/webp")],
)  # fmt: skip
def test_a_media_type_in_another_spelling_is_kept_under_its_registered_name(
    fmt: str, given: str, canonical: str
) -> None:
    """Media types are case-insensitive (RFC 2045, 6838), may carry parameters, and
    ``image/jpg`` is a common name for JPEG. ``Image(jpeg, media_type="image/JPEG")`` was
    refused as "does not match the image: the bytes are image/jpeg"; on bytes of no known
    signature "IMAGE/PNG" was kept as written and keyed apart from "image/png". Now each
    is its registered lower-case name, in the Image, what is sent and the cache key."""
    data = image_bytes((8, 6), fmt)
    assert Image(data=data, media_type=given).media_type == canonical
    assert Image.from_bytes(data, media_type=given).media_type == canonical
    assert Image(data=b"\x00\x01 raw", media_type=given).media_type == canonical

    def key(media_type: str) -> str:
        item = ImageEmbeddingRequest(image=Image(data=data, media_type=media_type))
        return item_cache_key(PROVIDERS["cohere"], "embed-v4.0", {}, "image_embedding", item)

    assert key(given) == key(canonical)


@pytest.mark.parametrize(
    "given", ["text/plain", "application/octet-stream", "", "  ", "image/", "jpeg",
              "image/png/x", "image/ png"],
)  # fmt: skip
def test_a_media_type_that_is_no_image_type_is_refused_naming_the_ones_sent(given: str) -> None:
    """Bytes of no known signature kept any type given ("text/plain", ""), which failed
    only later, in the image preparation ("cannot read image header"). Now a ValueError
    when the Image is made, naming the types that are sent; another image type is kept
    under its lower-case name (a TIFF is re-encoded before it is sent)."""
    sent = "image/png, image/jpeg, image/gif, image/bmp, image/webp"
    with pytest.raises(ValueError, match=f"is no image type: give one of {sent} "):
        Image(data=b"\x00\x01 raw", media_type=given)
    with pytest.raises(ValueError, match="is no image type"):
        Image(data=image_bytes((8, 6), "PNG"), media_type=given)
    tiff = Image(data=image_bytes((8, 6), "TIFF"), media_type=" IMAGE/TIFF")
    assert tiff.media_type == "image/tiff"
    assert cohere.prepare_image(tiff).media_type in {"image/jpeg", "image/png"}


async def test_a_jpeg_named_three_ways_is_sent_as_image_jpeg_and_bought_once() -> None:
    """Through the real client to a loopback server that bills like Anthropic (whose
    ``media_type`` takes only the registered names): "image/JPEG", "image/jpg" and
    "image/jpeg" are one image, sent once as "image/jpeg" and served from the cache after."""
    data = image_bytes((64, 48), "JPEG")

    def respond(path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
        return 200, anthropic_message({"input_tokens": 30, "output_tokens": 2})

    with loopback(respond) as server:
        client = loopback_client(
            "anthropic:claude-haiku-4-5", server, "sk-ant-test", cache=MemoryCache()
        )
        async with client:
            for media_type in ("image/JPEG", "image/jpg", "image/jpeg"):
                [answer] = await client.answer(
                    [
                        AnswerRequest(
                            image=Image(data=data, media_type=media_type),
                            prompt="Which digit?",
                            max_output_tokens=16,
                        )
                    ]
                )
                assert answer.text == "7"
    assert len(server.bodies) == 1
    [block] = [b for b in server.bodies[0]["messages"][0]["content"] if b["type"] == "image"]
    assert block["source"]["media_type"] == "image/jpeg"

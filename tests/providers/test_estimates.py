"""Worst-case estimates (image token and pixel formulas) and image preparation per provider."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from tests.providers.conftest import call_spec, image, image_bytes
from vlmclient import (
    AnswerRequest,
    Image,
    ImageEmbeddingRequest,
    MixedEmbeddingRequest,
    TextEmbeddingRequest,
    Usage,
)
from vlmclient.errors import ConfigurationError
from vlmclient.prices import PriceTable
from vlmclient.providers import PROVIDERS, anthropic, gemini, jina, openai, voyage
from vlmclient.providers.images import image_size

# -- OpenAI ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size", "tokens"),
    [
        ("gpt-4o-mini", (64, 64), 2833),  # low detail, billed as 33x gpt-4o's 85
        ("gpt-4o-mini-2024-07-18", (2000, 1000), 2833),
        ("gpt-4o", (2000, 1000), 85),
        ("gpt-4.1", (64, 64), 85),
        ("gpt-5", (64, 64), 70),
        ("gpt-4.1-mini", (64, 64), math.ceil(4 * 1.62)),  # 2x2 patches
        ("gpt-4.1-nano", (100, 40), math.ceil(4 * 2 * 2.46)),  # 4x2 patches
        ("gpt-4.1-nano", (2048, 2048), math.ceil(1536 * 2.46)),  # capped at 1,536 patches
        ("o4-mini", (1024, 1024), math.ceil(1024 * 1.72)),
        ("gpt-5-mini-2025-08-07", (64, 64), math.ceil(4 * 1.62)),
        # gpt-5.x / gpt-6: the family's largest known figure, never the gpt-5 row's 70
        ("gpt-5.2", (64, 64), 1844),
        ("gpt-5.4-mini", (2048, 2048), math.ceil(1536 * 2.46)),
        ("gpt-6-luna", (28, 28), 1844),
    ],
)
def test_openai_image_tokens_by_model(model: str, size: tuple[int, int], tokens: int) -> None:
    assert openai.image_tokens(*size, model) == tokens


def test_openai_unknown_model_is_refused_unless_the_price_file_bounds_it() -> None:
    with pytest.raises(ConfigurationError, match="max_image_tokens"):
        openai.image_tokens(64, 64, "some-local-model")
    assert openai.image_tokens(64, 64, "some-local-model", declared=300) == 300


def test_openai_estimate_uses_the_model() -> None:
    item = AnswerRequest(image=image((64, 64)), prompt="digit?", max_output_tokens=5)
    mini = openai.estimate_usage(call_spec("openai", "answer", "gpt-4o-mini", [item]))
    big = openai.estimate_usage(call_spec("openai", "answer", "gpt-4o", [item]))
    assert mini.input_tokens - big.input_tokens == 2833 - 85
    assert mini.output_tokens == 5


# -- Anthropic ------------------------------------------------------------------------


def test_anthropic_image_tokens_formula() -> None:
    assert anthropic.image_tokens(1000, 1000) == 1334  # the older docs' example (w*h/750)
    # the current docs' 28-px patches: ceil(200/28)^2 = 64 > 200*200/750 = 54
    assert anthropic.image_tokens(200, 200) == 64
    assert anthropic.image_tokens(1568, 29) == 56 * 2


def test_anthropic_estimate_is_on_the_downscaled_image() -> None:
    item = AnswerRequest(image=image((3000, 1500), "JPEG"), prompt="What?", max_output_tokens=20)
    spec = call_spec("anthropic", "answer", "claude-haiku-4-5", [item])
    w, h = image_size(spec.items[0].image)  # type: ignore[union-attr]
    assert (w, h) == (1568, 784)
    usage = anthropic.estimate_usage(spec)
    assert usage.input_tokens == 16 + 6 + math.ceil(1568 * 784 / 750)
    assert usage.output_tokens == 20


# -- Gemini ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "model", "tokens"),
    [
        ((384, 384), "gemini-2.5-flash", 258),
        ((64, 48), "gemini-2.5-flash", 258),
        ((385, 100), "gemini-2.5-flash", 258),
        ((1000, 1000), "gemini-2.5-flash", 4 * 258),
        ((1600, 700), "gemini-2.5-flash-lite", 3 * 1 * 258),
        ((64, 48), "gemini-3-pro-preview", 1120),
    ],
)
def test_gemini_image_tokens(size: tuple[int, int], model: str, tokens: int) -> None:
    assert gemini.image_tokens(*size, model) == tokens


# -- Voyage ---------------------------------------------------------------------------


def test_voyage_billed_pixels_clamped_per_image() -> None:
    assert voyage.billed_pixels(10, 10) == 50_000
    assert voyage.billed_pixels(500, 400) == 200_000
    assert voyage.billed_pixels(3000, 3000) == 2_000_000


def test_voyage_prepared_images_stay_under_the_billing_cap() -> None:
    item = ImageEmbeddingRequest(image=image((3000, 2000), "JPEG"))
    spec = call_spec("voyage", "image_embedding", "voyage-multimodal-3", [item])
    w, h = image_size(spec.items[0].image)  # type: ignore[union-attr]
    assert max(w, h) == 1414 and w * h <= 2_000_000
    assert voyage.estimate_usage(spec) == Usage(image_pixels=w * h)


def test_voyage_batch_limit_keeps_worst_case_tokens_under_the_request_cap() -> None:
    n = voyage.VOYAGE.limit_for("voyage-multimodal-3", "image_embedding")
    assert n * math.ceil(2_000_000 / 560) <= 320_000 < (n + 1) * math.ceil(2_000_000 / 560)
    assert voyage.VOYAGE.limit_for("voyage-multimodal-3", "text_embedding") == 1000


def test_voyage_estimate_prices_exactly() -> None:
    items = [ImageEmbeddingRequest(image=image((100, 100), seed=i)) for i in range(3)]
    spec = call_spec("voyage", "image_embedding", "voyage-multimodal-3", items)
    price = PriceTable.default().lookup("voyage", "voyage-multimodal-3")
    # 3 tiny images, each billed as 50k px at $0.60 per billion pixels
    assert price.cost(voyage.estimate_usage(spec)) == Decimal("0.00009")


# -- Jina -----------------------------------------------------------------------------


def test_jina_estimate_one_tile_per_prepared_image() -> None:
    items = [ImageEmbeddingRequest(image=image((1200, 900), "JPEG"))]
    spec = call_spec("jina", "image_embedding", "jina-clip-v2", items)
    assert jina.estimate_usage(spec) == Usage(input_tokens=jina.IMAGE_TOKENS_PER_TILE)
    spec = call_spec("jina", "text_embedding", "jina-clip-v2", [TextEmbeddingRequest(text="ab")])
    assert jina.estimate_usage(spec) == Usage(input_tokens=4)


# -- image preparation ----------------------------------------------------------------

ACCEPTED = {
    "openai": {"image/png", "image/jpeg", "image/webp", "image/gif"},
    "voyage": {"image/png", "image/jpeg", "image/webp", "image/gif"},
    "jina": {"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"},
    "vertex": {"image/png", "image/jpeg"},  # the REST reference: JPEG and PNG only
    "cohere": {"image/jpeg", "image/png", "image/webp", "image/gif"},  # pinned spec
    "nomic": {"image/png", "image/jpeg", "image/webp"},
    "titan": {"image/png", "image/jpeg"},
    "anthropic": {"image/jpeg", "image/png", "image/gif", "image/webp"},
    "gemini": {"image/png", "image/jpeg", "image/webp"},
}


@pytest.mark.parametrize("provider", sorted(p for p, a in ACCEPTED.items() if a))
@pytest.mark.parametrize("fmt", ["BMP", "GIF", "WEBP", "PNG", "JPEG"])
def test_prepared_images_are_in_an_accepted_format(provider: str, fmt: str) -> None:
    prepared = PROVIDERS[provider].prepare_image(image((40, 30), fmt))
    accepted = ACCEPTED[provider]
    assert accepted is not None and prepared.media_type in accepted
    assert Image.from_bytes(prepared.data).media_type == prepared.media_type  # bytes agree


def test_transparent_images_become_png() -> None:
    src = Image.from_bytes(image_bytes((20, 20), "PNG", mode="RGBA"))
    assert anthropic.fit_image(
        src, max_side=100, max_bytes=1 << 20, media_types={"image/jpeg", "image/png"}
    ).media_type == "image/png"
    rgba_webp = Image.from_bytes(image_bytes((20, 20), "WEBP", mode="RGBA"))
    out = PROVIDERS["titan"].prepare_image(rgba_webp)  # Titan: png/jpeg only
    assert out.media_type == "image/png"


def test_images_within_limits_are_sent_byte_for_byte() -> None:
    src = image((64, 48), "PNG")
    for name in ("openai", "voyage", "anthropic", "gemini", "vertex", "nomic", "jina", "titan"):
        assert PROVIDERS[name].prepare_image(src) is src  # nothing re-encoded, same cache key


def test_oversized_bytes_are_reencoded_within_the_cap() -> None:
    big = image((600, 600), "PNG")  # random pixels: ~1 MB of PNG
    out = anthropic.fit_image(
        big, max_side=600, max_bytes=500_000, media_types={"image/png", "image/jpeg"}
    )
    assert len(out.data) <= 500_000 and out.media_type == "image/jpeg"


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_estimate_covers_its_kinds(name: str) -> None:
    """Each kind a provider offers has a positive worst case (nothing is free by accident)."""
    provider = PROVIDERS[name]
    if name == "titan":
        pytest.importorskip("botocore")
    items = {
        "image_embedding": [ImageEmbeddingRequest(image=image())],
        "text_embedding": [TextEmbeddingRequest(text="a cat")],
        "mixed_embedding": [MixedEmbeddingRequest(parts=("a cat", image()))],
        "answer": [AnswerRequest(image=image(), prompt="what?", max_output_tokens=3)],
    }
    model = {
        "nomic": "nomic-embed-vision-v1.5",
        "vertex": "multimodalembedding@001",
        "openai": "gpt-4o-mini",  # an unknown name cannot be bounded (refused)
    }.get(name, "m")
    for kind in provider.kinds:
        usage = provider.estimate_usage(call_spec(name, kind, model, items[kind]))
        assert any(v > 0 for v in usage.model_dump().values()), (name, kind)

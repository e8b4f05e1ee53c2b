"""Is any billed unit of a teacher free under a price? Then the budget cannot stop its spend.

A price of zero (or ``-0``, or an absurdly small ``1e-30``) for something the provider
bills turns the hard cap off without a word: every reservation is $0, so a run buys
everything whatever ``--budget`` says. :func:`free_units` names every such unit;
:func:`refuse_free` turns them into the error that :class:`~vlmclient.TeacherClient` raises
before a kind's first request (unless ``allow_free=True``) and the CLI exits 2 with
(unless ``--allow-free``).

>>> from decimal import Decimal
>>> free_units("cohere:embed-v4.0", Price(usd_per_1m_input_tokens=Decimal("0.12")),
...            ["image_embedding"])
['image embeddings: usd_per_1m_image_tokens is 0']
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from decimal import Decimal

from pydantic import SecretStr

from .errors import ConfigurationError
from .models import (
    UNIT_PRICE_FIELDS,
    AnswerRequest,
    Image,
    ImageEmbeddingRequest,
    Kind,
    MixedEmbeddingRequest,
    Price,
    TextEmbeddingRequest,
    Usage,
)
from .prices import PriceTable, has_prices
from .providers import CallSpec, parse_teacher
from .providers.base import Item

__all__ = ["ANSWER_UNITS", "MIN_PRICE_USD", "UNIT_PRICE_FIELDS", "free_units", "refuse_free"]

# What every answer (chat) API bills, whoever serves it: a price that leaves either out
# lets a run buy answers the budget cannot see.
ANSWER_UNITS = ("input_tokens", "output_tokens")

# A price field below this (in its own unit: per image, per 1M tokens, per 1B pixels, per
# 1k characters) counts as free: 10,000 times below the cheapest real price we know of.
MIN_PRICE_USD = Decimal("0.000001")



def _sample_image() -> Image:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.new("RGB", (64, 64), (120, 60, 30)).save(buf, "PNG")
    return Image(data=buf.getvalue(), media_type="image/png")


def _sample(kind: Kind) -> Item:
    if kind == "image_embedding":
        return ImageEmbeddingRequest(image=_sample_image())
    if kind == "text_embedding":
        return TextEmbeddingRequest(text="a photo of a cat")
    if kind == "mixed_embedding":
        return MixedEmbeddingRequest(parts=("a photo of a cat", _sample_image()))
    return AnswerRequest(image=_sample_image(), prompt="Which is it? A) cat B) dog")


def _priced(value: Decimal) -> bool:
    return value >= MIN_PRICE_USD


def free_units(
    teacher: str, price: Price, kinds: Iterable[Kind], *, reference: Price | None = None
) -> list[str]:
    """Every billed unit of ``teacher`` that ``price`` makes free, per kind (empty: none).

    A unit is billed when the provider's estimate of a small sample request counts it and
    the ``reference`` price (default: the built-in entry, when there is one) charges for
    it, or, with no reference, when it is an answer's input or output tokens
    (:data:`ANSWER_UNITS`); a kind is also free when its whole sample request costs
    nothing. Fields below :data:`MIN_PRICE_USD` count as zero.
    """
    provider, model = parse_teacher(teacher)
    if reference is None:
        try:
            # only to compare with: the teacher's own entry was checked (and warned about)
            reference = PriceTable.default().lookup(provider.name, model, status=False)
        except Exception:  # no built-in entry: only the whole-request rule applies
            reference = None
        if reference is not None and not has_prices(reference):
            reference = None  # a retired-model record (it was refused) prices nothing
    problems: list[str] = []
    for kind in kinds:
        item = _sample(kind)
        if isinstance(item, (ImageEmbeddingRequest, AnswerRequest)):
            item = item.model_copy(update={"image": provider.prepare_image(item.image)})
        elif isinstance(item, MixedEmbeddingRequest):
            parts = [p if isinstance(p, str) else provider.prepare_image(p) for p in item.parts]
            item = item.model_copy(update={"parts": tuple(parts)})
        spec = CallSpec(
            kind,
            model,
            [item],
            base_url="",
            api_key=SecretStr("unused"),
            max_image_tokens=price.max_image_tokens,
        )
        usage: Usage = provider.estimate_usage(spec)
        label = kind.replace("_", " ") + "s"
        effective = Price.model_validate(
            {
                f: (getattr(price, f) if _priced(getattr(price, f)) else Decimal(0))
                for f in UNIT_PRICE_FIELDS.values()
            }
        )
        found = False
        for unit, field in UNIT_PRICE_FIELDS.items():
            if getattr(usage, unit) <= 0:
                continue
            billed = (
                _priced(getattr(reference, field))
                if reference is not None
                # no built-in entry to compare with: every answer API bills its prompt
                # and its output tokens
                else kind == "answer" and unit in ANSWER_UNITS
            )
            if billed and not _priced(getattr(price, field)):
                problems.append(f"{label}: {field} is {getattr(price, field)}")
                found = True
        if not found and effective.cost(usage) <= 0:
            units = ", ".join(
                UNIT_PRICE_FIELDS[u] for u in UNIT_PRICE_FIELDS if getattr(usage, u) > 0
            )
            problems.append(f"{label}: every billed unit ({units}) is free")
    return problems


def refuse_free(teacher: str, price: Price, kinds: Iterable[Kind], *, fix: str) -> None:
    """Raise :class:`ConfigurationError` when ``price`` makes a billed unit of ``kinds``
    free (:func:`free_units`): the budget could not stop that spend. ``fix`` ends the
    message: how to price the teacher, or say it really is free."""
    free = free_units(teacher, price, kinds)
    if free:
        raise ConfigurationError(
            f"the price of {teacher} makes billed units free, so the budget cannot stop the "
            f"spend ({'; '.join(free)}; anything below ${MIN_PRICE_USD} counts as free): {fix}"
        )

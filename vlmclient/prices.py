"""The price table: package data, overridable by a user's price file."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import ConfigurationError
from .models import MAX_USD_PER_UNIT, Price

__all__ = [
    "MAX_USD_PER_UNIT",
    "STALE_PRICE_DAYS",
    "PriceTable",
    "check_status",
    "has_prices",
    "load_prices",
    "price_age_days",
    "resolve_price",
]

log = logging.getLogger("vlmclient")
STALE_PRICE_DAYS = 90  # a price read longer ago than this is warned about: prices drift


def _fields(entries: Mapping[str, Any], origin: str) -> dict[str, dict[str, Any]]:
    """Each entry's given fields, checked: prices finite and >= 0 (``-0`` is zero)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in entries.items():
        if key.startswith("_"):
            continue
        if ":" not in key or not isinstance(value, dict):
            raise ConfigurationError(
                f"{origin}: entry {key!r} must be 'provider:model' -> an object of prices"
            )
        from .providers import PROVIDERS  # here: the table must not import every adapter

        provider = key.partition(":")[0]
        if provider not in PROVIDERS:
            # a typo here left the entry unused: a run charged the built-in price instead
            raise ConfigurationError(
                f"{origin}: entry {key!r} names no provider we know ({provider!r}; "
                f"known: {', '.join(sorted(PROVIDERS))})"
            )
        fields: dict[str, Any] = {}
        for field, v in value.items():
            if not field.startswith("usd_"):
                if field in _COUNT_FIELDS and isinstance(v, bool):
                    # pydantic reads true as 1: one token per image, every image under-reserved
                    raise ConfigurationError(
                        f"{origin}: {key}.{field} must be a whole number, not {v!r}"
                    )
                if field == "max_image_tokens" and _below_one(v):
                    # 0 reserved every image at no tokens: the first answer overran the
                    # budget and stopped the run, after it was billed
                    raise ConfigurationError(
                        f"{origin}: {key}.max_image_tokens must be a whole number >= 1 (the "
                        f"most prompt tokens one image may bill), not {v!r}: below 1 the "
                        "budget would count every image as free"
                    )
                fields[field] = v
                continue
            try:
                amount = Decimal(str(v).strip())
            except InvalidOperation:
                raise ConfigurationError(
                    f"{origin}: {key}.{field} is not an amount of dollars: {v!r}"
                ) from None
            # is_finite first: comparing a NaN Decimal raises
            if not amount.is_finite() or amount < 0 or isinstance(v, bool):
                raise ConfigurationError(
                    f"{origin}: {key}.{field} must be a finite amount >= 0, not {v!r}"
                )
            if amount > MAX_USD_PER_UNIT:
                raise ConfigurationError(
                    f"{origin}: {key}.{field} must be at most {MAX_USD_PER_UNIT} dollars, not {v!r}"
                )
            # -0 is 0; copy_abs is exact (abs() rounds to the context's 28 digits)
            fields[field] = str(amount.copy_abs())
        try:
            Price.model_validate(fields)
            for field in ("deprecated_on", "shutdown_on"):
                when = value.get(field)
                if when is not None:
                    date.fromisoformat(str(when))
        except ValidationError as exc:
            raise ConfigurationError(f"{origin}: bad prices for {key!r}: {_one_line(exc)}") from exc
        except ValueError as exc:
            raise ConfigurationError(f"{origin}: bad prices for {key!r}: {exc}") from exc
        out[key] = fields
    return out


_COUNT_FIELDS = ("max_image_tokens", "long_prompt_above_tokens")
_LONG_RATES = ("usd_per_1m_input_tokens_long_prompt", "usd_per_1m_output_tokens_long_prompt")


def _below_one(value: Any) -> bool:
    """True for a number below 1 (``0``, ``"0"``, ``0.5``, ``-1``, ``"-Infinity"``); not a
    number at all (``null``, ``"NaN"``, ``"2k"``) is False: pydantic refuses or unsets it."""
    try:
        return Decimal(str(value).strip()) < 1
    except (InvalidOperation, ValueError):  # not a number, or NaN (comparing one raises)
        return False


def _one_line(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``field: message; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors()
    )


def _checked(key: str, price: Price, origin: str) -> Price:
    """``price``, refused when its long-prompt rates have no threshold: they never apply,
    and a long prompt would be reserved at the base rate."""
    if price.long_prompt_above_tokens is None and any(getattr(price, f) for f in _LONG_RATES):
        raise ConfigurationError(
            f"{origin}: {key} gives long-prompt rates without long_prompt_above_tokens "
            "(the prompt length above which they apply), so they would never be charged"
        )
    return price


def _parse(entries: Mapping[str, Any], origin: str) -> dict[str, Price]:
    return {
        k: _checked(k, Price.model_validate(v), origin) for k, v in _fields(entries, origin).items()
    }


class PriceTable:
    """Prices by ``provider:model``, with ``provider:*`` as a fallback.

    >>> PriceTable.default().lookup("cohere", "embed-v4.0").usd_per_1m_image_tokens
    Decimal('0.47')
    """

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self.prices = dict(prices)

    @classmethod
    def default(cls) -> PriceTable:
        text = resources.files("vlmclient").joinpath("prices.json").read_text()
        return cls(_parse(json.loads(text), "built-in prices.json"))

    def with_file(self, path: str | Path) -> PriceTable:
        """A copy with the entries of a JSON price file on top."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigurationError(f"cannot read price file {path}: {exc}") from exc
        except ValueError as exc:
            raise ConfigurationError(f"price file {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigurationError(f"price file {path} must hold a JSON object")
        merged = dict(self.prices)
        for key, given in _fields(data, str(path)).items():
            # Field by field over the entry a lookup would have found: a file that only
            # gives the text price must not make images free.
            provider, _, model = key.partition(":")
            base = self._find(provider, model)
            fields = {} if base is None else base.model_dump(exclude_unset=False)
            if any(f.startswith("usd_") for f in given) and "source" not in given:
                # the prices are the file's now: the built-in source and date no longer
                # describe them (a partial override was still shown as the built-in's)
                over = ", over the built-in entry" if base is not None else ""
                fields.update(source=f"price file {path}{over}", verified_on=None)
            merged[key] = _checked(key, Price.model_validate({**fields, **given}), str(path))
        return PriceTable(merged)

    def _find(self, provider: str, model: str) -> Price | None:
        for key in (f"{provider}:{model}", f"{provider}:*"):
            if key in self.prices:
                return self.prices[key]
        return None

    def entry_for(self, provider: str, model: str) -> str:
        """The name of the entry that prices ``provider:model`` (``provider:*`` as fallback)."""
        for key in (f"{provider}:{model}", f"{provider}:*"):
            if key in self.prices:
                return key
        self.lookup(provider, model)  # raises the error that says what to do
        raise AssertionError("unreachable")

    def lookup(
        self, provider: str, model: str, *, today: date | None = None, status: bool = True
    ) -> Price:
        """The price of ``provider:model``, after :func:`check_status` (a shut-down model
        is refused, a deprecated one logs a warning); ``status=False`` skips that check,
        for a second look at an entry already checked (the warning is said once)."""
        found = self._find(provider, model)
        if found is not None:
            if status:
                check_status(f"{provider}:{model}", found, today=today)
            return found
        raise ConfigurationError(
            f"no price known for {provider}:{model}, so the budget cannot be enforced; "
            f'give one with --price-file for every unit it bills (e.g. {{"{provider}:{model}": '
            f'{{"usd_per_1m_input_tokens": "0.10", "usd_per_1m_output_tokens": "0.40", '
            f'"max_image_tokens": 1844}}}} for a chat model, max_image_tokens being the most '
            "input tokens one image may bill (needed where the adapter cannot work them out); "
            '{"usd_per_image": "0.00006", "usd_per_1m_input_tokens": '
            '"0.02"} for an embedder that bills images and text tokens)'
        )


def price_age_days(price: Price, today: date | None = None) -> int | None:
    """Days since the price was read (its ``verified_on``), or None if it does not say.

    >>> price_age_days(Price(verified_on="2026-01-01"), date(2026, 4, 1))
    90
    """
    if not price.verified_on:
        return None
    try:
        read = date.fromisoformat(price.verified_on)
    except ValueError:
        return None
    return ((today or date.today()) - read).days


def resolve_price(
    provider: str, model: str, prices: PriceTable | None, price: Price | None
) -> tuple[Price, str]:
    """(the price a client charges ``provider:model`` at, what it is called in messages):
    ``price`` when given, else its entry in ``prices`` (the packaged table by default).

    Logs a warning when the price was read more than ``STALE_PRICE_DAYS`` ago.
    """
    if price is not None:
        entry = "price given to TeacherClient"
    else:
        table = prices or PriceTable.default()
        key = table.entry_for(provider, model)
        price, entry = table.prices[key], f"price entry {key!r}"
    age = price_age_days(price)
    if age is not None and age > STALE_PRICE_DAYS:
        log.warning(
            "the %s was read on %s, %d days ago (prices drift): check the provider's "
            "price page and override it with --price-file if it changed",
            entry,
            price.verified_on,
            age,
        )
    return price, entry


def load_prices(price_file: str | Path | None = None) -> PriceTable:
    table = PriceTable.default()
    return table.with_file(price_file) if price_file else table


def has_prices(price: Price) -> bool:
    """True when any ``usd_*`` field is set (an entry without is a retired-model record)."""
    return any(getattr(price, f) for f in Price.model_fields if f.startswith("usd_"))


def check_status(teacher: str, price: Price, *, today: date | None = None) -> None:
    """Refuse a model past its ``shutdown_on`` date (or a retired-model record); warn
    about a deprecated or legacy one.

    Vendors shut models down on the date they announce; a request after it fails, or is
    routed to another model billed at other rates, so nothing is sent.
    """
    today = today or date.today()
    where = f" (source: {price.status_source})" if price.status_source else ""
    shutdown = date.fromisoformat(price.shutdown_on) if price.shutdown_on else None
    if (shutdown is not None and shutdown <= today) or (
        price.status == "retired" and not has_prices(price)
    ):
        if shutdown is not None and shutdown > today:
            state = f"is retired (it shuts down on {price.shutdown_on})"
        else:
            state = f"was shut down on {price.shutdown_on}" if shutdown else "was shut down"
        raise ConfigurationError(
            f"{teacher} {state}{where}; pick a current model "
            "(`vlm-distill providers` lists them with their status). Nothing was sent."
        )
    if shutdown is not None or price.status in ("deprecated", "legacy"):
        until = f"; it shuts down on {price.shutdown_on}" if shutdown is not None else ""
        log.warning(
            "%s is %s%s: plan a move to a current model (`vlm-distill providers` shows "
            "status and sources)",
            teacher,
            price.status or "deprecated",
            until,
        )

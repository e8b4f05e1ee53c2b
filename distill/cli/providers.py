"""``vlm-distill providers``: providers, models with prices, status and sources, env vars, kinds.

Prices come from the built-in table, overlaid by ``--price-file`` when given, so the
listing shows exactly what a run with the same flags would charge against the budget.
Each model shows its lifecycle status (active, legacy, deprecated with its shutdown
date, shut down) and whether its prices come from the vendor's own page (``verified``)
or only from a secondary source (``unverified``).
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from decimal import Decimal
from typing import Any

from vlmclient.models import Price
from vlmclient.prices import has_prices, load_prices
from vlmclient.providers import PROVIDERS

__all__ = ["add_arguments", "describe", "model_status", "price_fields", "price_summary", "run"]

KIND_LABELS = {
    "image_embedding": "image embeddings",
    "text_embedding": "text embeddings",
    "mixed_embedding": "mixed text+image embeddings",
    "answer": "answers",
}
KIND_ORDER = tuple(KIND_LABELS)

# (Price field, unit label): the order in which a price is spelled out.
PRICE_UNITS: tuple[tuple[str, str], ...] = (
    ("usd_per_image", "/image"),
    ("usd_per_1m_input_tokens", "/M input tok"),
    ("usd_per_1m_output_tokens", "/M output tok"),
    ("usd_per_1m_image_tokens", "/M image tok"),
    ("usd_per_1b_pixels", "/B px"),
    ("usd_per_1k_characters", "/1k chars"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--price-file",
        metavar="FILE",
        help="JSON prices ('provider:model' -> fields) laid over the built-in table",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def price_summary(price: Price) -> str:
    """``$0.12/M input tok + $0.60/B px``; ``free`` when every field is zero."""
    parts = []
    for field, unit in PRICE_UNITS:
        value: Decimal = getattr(price, field)
        if value:
            parts.append(f"${value}{unit}")
    summary = " + ".join(parts) or "free"
    if price.long_prompt_above_tokens is not None:
        rate_in, rate_out = price.token_rates(price.long_prompt_above_tokens + 1)
        summary += (
            f" (prompts over {price.long_prompt_above_tokens:,} tok: "
            f"${rate_in}/M input + ${rate_out}/M output)"
        )
    return summary


def price_fields(price: Price) -> dict[str, str | int]:
    """The set price fields (what ``--json`` prints): the unit prices, the long-prompt tier
    (its threshold and the rates charged above it) and ``max_image_tokens`` when given."""
    out: dict[str, str | int] = {
        f: str(getattr(price, f)) for f, _ in PRICE_UNITS if getattr(price, f)
    }
    if price.long_prompt_above_tokens is not None:
        rate_in, rate_out = price.token_rates(price.long_prompt_above_tokens + 1)
        out["long_prompt_above_tokens"] = price.long_prompt_above_tokens
        out["usd_per_1m_input_tokens_long_prompt"] = str(rate_in)
        out["usd_per_1m_output_tokens_long_prompt"] = str(rate_out)
    if price.max_image_tokens is not None:
        out["max_image_tokens"] = price.max_image_tokens
    return out


def model_status(price: Price, today: date | None = None) -> str:
    """``active``, ``legacy``, ``deprecated, shuts down 2026-12-11``, ``retired, shuts down
    2026-12-11`` (refused here ahead of the date), ``shut down 2026-10-23`` or ``unknown`` (no
    lifecycle recorded)."""
    today = today or date.today()
    if price.shutdown_on and date.fromisoformat(price.shutdown_on) <= today:
        return f"shut down {price.shutdown_on}"
    if price.status == "retired" and not has_prices(price):
        # retired here ahead of the vendor's shutdown, so that no run crosses it
        return f"retired, shuts down {price.shutdown_on}" if price.shutdown_on else "shut down"
    status = price.status or "unknown"
    if price.shutdown_on:
        status = f"{status}, shuts down {price.shutdown_on}"
    return status


def describe(price_file: str | None = None) -> list[dict[str, Any]]:
    """One plain dict per provider (what ``--json`` prints)."""
    table = load_prices(price_file)
    out = []
    for name, provider in PROVIDERS.items():
        models = []
        for key in sorted(table.prices):
            prov, _, model = key.partition(":")
            if prov != name:
                continue
            price = table.prices[key]
            models.append(
                {
                    "model": model,
                    # a retired-model record has no prices: it is refused, not free
                    "price": price_summary(price) if has_prices(price) else "none (retired)",
                    "prices": price_fields(price),
                    "verified_on": price.verified_on,
                    "source": price.source,
                    "verified": price.verified,
                    "status": model_status(price),
                    "deprecated_on": price.deprecated_on,
                    "shutdown_on": price.shutdown_on,
                    "status_source": price.status_source,
                    "status_checked_on": price.status_checked_on,
                    "kinds": [KIND_LABELS[k] for k in KIND_ORDER if k in provider.kinds_for(model)],
                }
            )
        out.append(
            {
                "provider": name,
                "description": provider.description,
                "kinds": [KIND_LABELS[k] for k in KIND_ORDER if k in provider.kinds],
                "env_vars": list(provider.env_vars),
                "base_url": provider.default_base_url,
                "api_version": provider.api_version,
                "models": models,
            }
        )
    return out


def _status_cell(m: dict[str, Any]) -> str:
    status = str(m["status"])
    if str(m["status_source"] or "").startswith("secondary"):
        status += " (unverified)"
    if status.startswith("shut down"):
        return f"[red]{status}[/red]"
    if status.startswith(("deprecated", "legacy")):
        return f"[yellow]{status}[/yellow]"
    return status


def _source_cell(m: dict[str, Any]) -> str:
    if not m["prices"]:
        return "-"
    date_read = m["verified_on"] or "date unknown"
    if m["verified"]:
        return f"verified {date_read} (vendor page)"
    if str(m["source"] or "").startswith("secondary"):
        return f"[yellow]unverified[/yellow] {date_read} (secondary source)"
    return f"{m['source'] or 'source unknown'} ({date_read})"


def _model_cells(m: dict[str, Any] | None) -> tuple[str, str, str, str]:
    if m is None:
        return ("[yellow]no built-in price[/yellow]", "[yellow]pass --price-file[/yellow]", "", "")
    price = m["price"] if m["prices"] else "-"
    return (m["model"], price, _status_cell(m), _source_cell(m))


def run(args: argparse.Namespace) -> int:
    rows = describe(args.price_file)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    table = Table(title="vlm-distill teachers (spell them provider:model)")
    table.add_column("provider", style="cyan", no_wrap=True)
    # names are what a user types: never cut (at 80 columns, piped, the other cells wrap)
    longest = max((len(m["model"]) for row in rows for m in row["models"]), default=5)
    table.add_column("model", style="bold", no_wrap=True, min_width=longest)
    # and no cell is cut with an ellipsis (a price or a date would lose its digits)
    table.add_column("price (USD)", overflow="fold")
    table.add_column("status", overflow="fold")
    table.add_column("price source", overflow="fold")
    table.add_column("API key env var", overflow="fold")
    table.add_column("kinds", overflow="fold")
    table.add_column("base URL (--base-url to override)", overflow="fold")
    for row in rows:
        first = True
        for m in row["models"] or [None]:
            cells = _model_cells(m)
            table.add_row(
                row["provider"] if first else "",
                *cells,
                "\n".join(row["env_vars"]) if first else "",
                # the model's own (Cohere's v3 models take no mixed input)
                "\n".join(row["kinds"] if m is None else m["kinds"]),
                row["base_url"] if first else "",
                end_section=m is None or m is row["models"][-1],
            )
            first = False
    from .progress import console as make_console

    console = make_console()
    console.print(table)
    console.print(
        "Prices drift: check the date, and override any entry with --price-file "
        '(e.g. {"nomic:nomic-embed-vision-v1.5": {"usd_per_image": "0.0001"}}). '
        "Status comes from the vendors' deprecation pages on the date in --json "
        "(status_checked_on); a model past its shutdown date is refused before anything "
        "is sent. --json shows every source."
    )
    return 0

"""``vlm-distill providers``: providers, models with prices and their dates, env vars, kinds.

Prices come from the built-in table, overlaid by ``--price-file`` when given, so the
listing shows exactly what a run with the same flags would charge against the budget.
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from typing import Any

from vlmclient.models import Price
from vlmclient.prices import load_prices
from vlmclient.providers import PROVIDERS

__all__ = ["add_arguments", "describe", "price_summary", "run"]

KIND_LABELS = {
    "image_embedding": "image embeddings",
    "text_embedding": "text embeddings",
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
    return " + ".join(parts) or "free"


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
                    "price": price_summary(price),
                    "prices": {
                        f: str(getattr(price, f)) for f, _ in PRICE_UNITS if getattr(price, f)
                    },
                    "verified_on": price.verified_on,
                    "source": price.source,
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


def _models_cell(models: list[dict[str, Any]]) -> str:
    if not models:
        return "[yellow]no built-in price: pass --price-file[/yellow]"
    lines = []
    for m in models:
        date = m["verified_on"] or "date unknown"
        lines.append(f"[bold]{m['model']}[/bold]  {m['price']}  [dim](verified {date})[/dim]")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rows = describe(args.price_file)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    table = Table(title="vlm-distill teachers (spell them provider:model)", show_lines=True)
    table.add_column("provider", style="cyan", no_wrap=True)
    table.add_column("models, prices (USD) and when they were checked")
    table.add_column("API key env var")
    table.add_column("kinds")
    table.add_column("base URL (--base-url to override)", overflow="fold")
    for row in rows:
        table.add_row(
            row["provider"],
            _models_cell(row["models"]),
            "\n".join(row["env_vars"]),
            "\n".join(row["kinds"]),
            row["base_url"],
        )
    from .progress import console as make_console

    console = make_console()
    console.print(table)
    console.print(
        "Prices drift: check the date, and override any entry with --price-file "
        '(e.g. {"nomic:nomic-embed-vision-v1.5": {"usd_per_image": "0.0001"}}).'
    )
    return 0

"""``vlm-distill providers``: every provider, its env vars, kinds, models, prices and dates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main
from vlmclient.providers import PROVIDERS


def run_json(capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict]:
    assert main(["providers", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_lists_every_provider_with_env_vars_and_kinds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = {r["provider"]: r for r in run_json(capsys)}
    assert set(rows) == set(PROVIDERS)
    assert rows["anthropic"]["env_vars"] == ["ANTHROPIC_API_KEY"]
    assert rows["gemini"]["env_vars"] == ["GEMINI_API_KEY", "GOOGLE_API_KEY"]
    assert rows["vertex"]["kinds"] == ["image embeddings", "text embeddings"]
    assert rows["anthropic"]["kinds"] == ["answers"]
    voyage = {m["model"]: m for m in rows["voyage"]["models"]}
    assert voyage["voyage-multimodal-3"]["prices"] == {
        "usd_per_1m_input_tokens": "0.12",
        "usd_per_1b_pixels": "0.60",
    }
    assert voyage["voyage-multimodal-3"]["verified_on"] == "2026-11-23"
    assert rows["nomic"]["models"] == [] and rows["jina"]["models"] == []


def test_each_model_lists_the_kinds_it_offers(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: the kinds column was the provider's, so every Cohere model read "mixed
    text+image embeddings", which embed_mixed refuses for the v3 models (v4 only)."""
    cohere = {m["model"]: m["kinds"] for m in {r["provider"]: r for r in run_json(capsys)}[
        "cohere"]["models"]}  # fmt: skip
    assert "mixed text+image embeddings" in cohere["embed-v4.0"]
    assert cohere["embed-english-v3.0"] == ["image embeddings", "text embeddings"]
    assert main(["providers"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if "embed-english-v3.0" in line)
    block = table[table.index(row) : table.index("embed-v4.0")]
    assert "mixed" not in block


def test_price_file_entries_show_up(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    prices = tmp_path / "p.json"
    prices.write_text(
        json.dumps(
            {
                "nomic:nomic-embed-vision-v1.5": {
                    "usd_per_image": "0.00002",
                    "verified_on": "2026-11-01",
                    "source": "my invoice",
                },
                "voyage:voyage-multimodal-3": {"usd_per_1b_pixels": "0.50"},
            }
        )
    )
    rows = {r["provider"]: r for r in run_json(capsys, "--price-file", str(prices))}
    (nomic,) = rows["nomic"]["models"]
    assert nomic["price"] == "$0.00002/image" and nomic["verified_on"] == "2026-11-01"
    voyage = {m["model"]: m for m in rows["voyage"]["models"]}
    # merged field by field over the built-in entry: the text price stays (issue 13, item 2)
    assert voyage["voyage-multimodal-3"]["prices"] == {
        "usd_per_1m_input_tokens": "0.12",
        "usd_per_1b_pixels": "0.50",
    }
    # its source is the file now (it was shown as the built-in's secondary source and date)
    assert voyage["voyage-multimodal-3"]["source"] == (
        f"price file {prices}, over the built-in entry"
    )
    assert voyage["voyage-multimodal-3"]["verified_on"] is None
    assert voyage["voyage-multimodal-3"]["verified"] is False


def test_table(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    assert main(["providers"]) == 0
    out = capsys.readouterr().out
    for text in (
        "claude-haiku-4-5",
        "$1.00/M input tok",
        "verified 2026-11-23",
        "VERTEX_ACCESS_TOKEN",
        "no built-in price",
        "pass --price-file",
        "https://api.voyageai.com/v1",
    ):
        assert text in out


def test_bad_price_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["providers", "--price-file", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_the_table_piped_keeps_every_model_name_whole_and_cuts_no_cell(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: ``vlm-distill providers | cat`` (80-110 columns, not a terminal) printed
    names as ``embed-engl…`` under a title saying to spell them provider:model, and prices
    as ``$0.0001…``."""
    monkeypatch.delenv("COLUMNS", raising=False)
    models = [m["model"] for row in run_json(capsys) for m in row["models"]]
    assert main(["providers"]) == 0
    table = capsys.readouterr().out
    assert "…" not in table
    cells = {c.strip() for line in table.splitlines() for c in line.split("│")}
    assert set(models) <= cells


def test_json_prices_carry_the_long_prompt_tier_and_the_image_token_bound(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--json`` gave a long-tier model's base rates only (a script pricing prompts over
    100,000 tokens from it got a fifth of the bill), and no ``max_image_tokens``."""
    prices = tmp_path / "p.json"
    bound = {"usd_per_1m_input_tokens": "1", "usd_per_1m_output_tokens": "2"}
    prices.write_text(json.dumps({"openai:my-vlm": {**bound, "max_image_tokens": 1844}}))
    rows = {r["provider"]: r for r in run_json(capsys, "--price-file", str(prices))}
    haiku = {m["model"]: m for m in rows["anthropic"]["models"]}["claude-haiku-5-5"]
    assert haiku["prices"] == {
        "usd_per_1m_input_tokens": "0.10",
        "usd_per_1m_output_tokens": "0.50",
        "long_prompt_above_tokens": 100000,
        "usd_per_1m_input_tokens_long_prompt": "0.50",
        "usd_per_1m_output_tokens_long_prompt": "2.50",
    }
    mine = {m["model"]: m for m in rows["openai"]["models"]}["my-vlm"]
    assert mine["prices"] == {**bound, "max_image_tokens": 1844}

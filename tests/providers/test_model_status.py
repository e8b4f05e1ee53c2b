"""Model lifecycle: every built-in model carries its status and sources; a model past its
shutdown date is refused before anything is sent; a deprecated one is warned about.

``test_no_builtin_model_is_past_its_shutdown_date`` fails on the day a built-in model's
``shutdown_on`` passes, so a stale table cannot ship silently: move the entry to a
retired record (no prices, ``status: retired``) or refresh it from the vendor's page.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path

import pytest
from PIL import Image as PILImage

from distill.cli import main
from vlmclient import ConfigurationError
from vlmclient.prices import PriceTable, has_prices

TODAY = date.today()


def _builtin() -> PriceTable:
    return PriceTable.default()


def test_no_builtin_model_is_past_its_shutdown_date() -> None:
    stale = [
        f"{key} (shutdown_on {price.shutdown_on})"
        for key, price in _builtin().prices.items()
        if has_prices(price)
        and price.shutdown_on
        and date.fromisoformat(price.shutdown_on) <= TODAY
    ]
    assert not stale, (
        "built-in models past their shutdown date; refresh vlmclient/prices.json from the "
        f"vendors' deprecation pages: {stale}"
    )


@pytest.mark.parametrize("key", sorted(PriceTable.default().prices))
def test_every_builtin_entry_names_its_sources(key: str) -> None:
    price = _builtin().prices[key]
    if has_prices(price):
        assert price.source and price.verified_on, key
        date.fromisoformat(price.verified_on)
        # a vendor page is a URL; anything else must say it is secondary (or simulated)
        assert price.verified or price.source.startswith("secondary") or key == "local:*", key
    else:
        assert price.status == "retired" and price.shutdown_on, key
    if price.status or price.shutdown_on or price.deprecated_on:
        assert price.status_source and price.status_checked_on, key


def test_a_retired_builtin_model_is_refused() -> None:
    with pytest.raises(
        ConfigurationError, match=r"openai:gpt-4\.1-nano was shut down on 2026-10-23"
    ):
        _builtin().lookup("openai", "gpt-4.1-nano")


def test_shutdown_date_is_enforced_from_that_day(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    path = tmp_path / "p.json"
    entry = {
        "usd_per_1m_input_tokens": "0.25",
        "usd_per_1m_output_tokens": "2.00",
        "status": "deprecated",
        "shutdown_on": "2026-12-11",
        "status_source": "https://example.invalid/deprecations",
        "status_checked_on": "2026-11-30",
    }
    path.write_text(json.dumps({"openai:old-model": entry}))
    table = _builtin().with_file(path)
    with caplog.at_level(logging.WARNING, logger="vlmclient"):
        table.lookup("openai", "old-model", today=date(2026, 12, 10))
    assert "old-model is deprecated; it shuts down on 2026-12-11" in caplog.text
    with pytest.raises(ConfigurationError, match="shut down on 2026-12-11"):
        table.lookup("openai", "old-model", today=date(2026, 12, 11))


def test_gpt_5_mini_is_retired_ahead_of_its_shutdown_and_a_price_file_brings_it_back(
    tmp_path: Path,
) -> None:
    """gpt-5-mini shuts down on 2026-12-11; it was retired on 2026-12-06 so that no run
    started with it crosses the shutdown. A price file giving its prices again makes it
    usable until the shutdown day, and no longer."""
    retired = r"openai:gpt-5-mini is retired \(it shuts down on 2026-12-11\)"
    with pytest.raises(ConfigurationError, match=retired):
        _builtin().lookup("openai", "gpt-5-mini", today=date(2026, 12, 6))
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps(
            {
                "openai:gpt-5-mini": {
                    "usd_per_1m_input_tokens": "0.25",
                    "usd_per_1m_output_tokens": "2.00",
                }
            }
        )
    )
    table = _builtin().with_file(path)
    assert table.lookup("openai", "gpt-5-mini", today=date(2026, 12, 10)).shutdown_on == (
        "2026-12-11"
    )
    with pytest.raises(ConfigurationError, match="shut down on 2026-12-11"):
        table.lookup("openai", "gpt-5-mini", today=date(2026, 12, 11))


def test_bad_status_date_in_a_price_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"openai:x": {"usd_per_image": "1", "shutdown_on": "soon"}}))
    with pytest.raises(ConfigurationError, match="bad prices"):
        _builtin().with_file(path)


def _tiny_dataset(root: Path) -> Path:
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        PILImage.new("RGB", (16, 16), (10, 20, 30)).save(root / cls / "a.png")
    return root


def test_harvest_refuses_a_shut_down_model_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CO_API_KEY", "co-test")
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {
                "cohere:embed-old": {
                    "usd_per_1m_image_tokens": "0.5",
                    "usd_per_1m_input_tokens": "0.1",
                    "status": "deprecated",
                    "shutdown_on": "2026-01-01",
                    "status_source": "https://example.invalid/deprecations",
                }
            }
        )
    )
    data = _tiny_dataset(tmp_path / "data")
    code = main(
        [
            "harvest",
            str(data),
            "--teacher",
            "cohere:embed-old",
            "--price-file",
            str(prices),
            "--cache",
            str(tmp_path / "cache"),
            "--base-url",
            "http://127.0.0.1:9",  # nothing listens: a send would be a connection error
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "cohere:embed-old was shut down on 2026-01-01" in err
    assert "vlm-distill providers" in err


def test_a_deprecated_builtin_model_is_warned_about_once_per_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/providers.md: a deprecated model gets "a warning on stderr, then the run goes
    ahead". `pseudolabel --teacher openai:gpt-4o` printed it three times: once for the
    CLI's check, and again each time the free-price check looked up the built-in entry to
    compare with (on the command line, then for every kind the client bought), until
    2026-12-07."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    data = tmp_path / "pool"
    data.mkdir()
    for i in range(2):
        PILImage.new("RGB", (16, 16), (10 * i, 20, 30)).save(data / f"{i}.png")
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    with caplog.at_level(logging.WARNING, logger="vlmclient"):
        main(
            [
                "pseudolabel",
                str(data),
                "--class-file",
                str(classes),
                "--teacher",
                "openai:gpt-4o",
                "--check",
                "none",
                "--cache",
                str(tmp_path / "cache"),
                "--base-url",
                "http://127.0.0.1:9/v1",  # nothing listens: connection refused, not billed
            ]
        )
    warned = [r for r in caplog.records if "openai:gpt-4o is deprecated" in r.getMessage()]
    assert len(warned) == 1, caplog.text


def test_providers_shows_status_and_source(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["providers", "--json"]) == 0
    rows = {r["provider"]: r for r in json.loads(capsys.readouterr().out)}
    openai = {m["model"]: m for m in rows["openai"]["models"]}
    assert openai["gpt-5-mini"]["price"] == "none (retired)"
    # retired ahead of its shutdown: the status says both (only
    # test_no_builtin_model_is_past_its_shutdown_date is meant to follow the calendar)
    expected = (
        "retired, shuts down 2026-12-11"
        if date(2026, 12, 11) > TODAY
        else "shut down 2026-12-11"
    )
    assert openai["gpt-5-mini"]["status"] == expected
    assert openai["gpt-5-mini"]["status_source"].startswith(
        "https://developers.openai.com/api/docs/deprecations"
    )
    assert openai["gpt-4.1-nano"]["status"] == "shut down 2026-10-23"
    assert openai["gpt-4.1-nano"]["price"] == "none (retired)"
    assert openai["gpt-5.6-luna"]["verified"] is True
    assert openai["gpt-4o"]["verified"] is False
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["providers"]) == 0
    out = capsys.readouterr().out
    for text in ("status", "price source", "shut down 2026-10-23", "unverified", "verified"):
        assert text in out


def test_a_model_retired_ahead_of_its_shutdown_is_refused_with_the_date() -> None:
    retired = r"gemini:gemini-2\.5-flash is retired \(it shuts down on 2026-12-01\)"
    with pytest.raises(ConfigurationError, match=retired):
        _builtin().lookup("gemini", "gemini-2.5-flash", today=date(2026, 11, 30))
    with pytest.raises(ConfigurationError, match=r"was shut down on 2026-12-01"):
        _builtin().lookup("gemini", "gemini-2.5-flash", today=date(2026, 12, 2))


def test_entries_read_from_vendor_pages_show_as_verified(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries moved from a third-party price map to the vendor's page (read 2026-11-30)
    show as verified; Cohere's status comes from its deprecations page, so it is not
    marked unverified."""
    assert main(["providers", "--json"]) == 0
    rows = {
        r["provider"]: {m["model"]: m for m in r["models"]}
        for r in json.loads(capsys.readouterr().out)
    }
    for model in ("text-embedding-3-small", "text-embedding-3-large"):
        entry = rows["openai"][model]
        assert entry["verified"] is True, model
        assert entry["source"].startswith("https://developers.openai.com/"), model
        assert entry["verified_on"] == "2026-11-30", model
    cohere = rows["cohere"]["embed-v4.0"]
    assert cohere["verified"] is False  # the price is still from a secondary source
    assert cohere["status"] == "active"
    assert cohere["status_source"].startswith("https://docs.cohere.com/docs/deprecations")
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["providers"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if "text-embedding-3-small" in row)
    assert "verified 2026-11-30 (vendor page)" in line
    assert "unverified" not in line


def test_claude_sonnet_4_5_is_refused_from_its_retirement_day() -> None:
    """Anthropic's Sonnet 4.5 page says it 'retires on November 30, 2026' (read that day):
    the built-in entry is a retired record, refused before anything is sent."""
    table = _builtin()
    price = table.prices["anthropic:claude-sonnet-4-5"]
    assert not has_prices(price) and price.status == "retired"
    assert str(price.status_source).startswith("https://platform.claude.com/")
    with pytest.raises(ConfigurationError, match=r"claude-sonnet-4-5 was shut down on 2026-11-30"):
        table.lookup("anthropic", "claude-sonnet-4-5", today=date(2026, 11, 30))
    haiku = table.prices["anthropic:claude-haiku-4-5"]
    assert haiku.status == "legacy"
    assert str(haiku.status_source).startswith("https://platform.claude.com/")


def test_gemini_2_5_flash_lite_warns_that_new_accounts_cannot_call_it(
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Google's API answers a new account 404 'no longer available to new users' for
    gemini-2.5-flash-lite (quoted in a third-party release note, 2026-08-28): the entry is
    legacy, so picking it warns before a run, and `providers` marks the status unverified."""
    table = _builtin()
    with caplog.at_level(logging.WARNING, logger="vlmclient"):
        table.lookup("gemini", "gemini-2.5-flash-lite", today=date(2026, 12, 1))
    assert "gemini:gemini-2.5-flash-lite is legacy" in caplog.text
    price = table.prices["gemini:gemini-2.5-flash-lite"]
    assert str(price.status_source).startswith("secondary:")
    assert "no longer available to new users" in str(price.status_source)
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["providers"]) == 0
    line = next(r for r in capsys.readouterr().out.splitlines() if "gemini-2.5-flash-lite" in r)
    assert "legacy (unverified)" in line

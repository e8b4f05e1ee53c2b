"""A class name too long for the teacher in the commands other than the plain harvest
(audit of 2026-12-06, follow-up of ``test_input_limits.py -k harvest``).

Each test runs the real CLI against the loopback server of ``test_input_limits``
answering as Jina without ``truncate`` (a text over 8,192 tokens fails its request with
a 400): ``harvest --select``, ``pseudolabel`` and the "N items remain" line of a plain
harvest stopped by the budget after a prompt was refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cache import SpendLedger, totals
from distill.cli import main
from tests.providers.loopback import loopback
from tests.providers.test_input_limits import JINA_PRICE, _billing_jina, _jina_harvest

LONG_AT = 20


def _classes() -> list[str]:
    """43 class names, the one at LONG_AT 50 kB (about 12,500 tokens)."""
    classes = ["cat", "dog", *(f"class{i}" for i in range(41))]
    classes[LONG_AT] = "long0 " + "very " * 10_000 + "long"
    return classes


def _says_shorten_the_long_one(out: str) -> None:
    """What the plain harvest says of one refused prompt (``test_input_limits``)."""
    flat = " ".join(out.split())
    failed = [ln for ln in out.splitlines() if ln.startswith("failed ")]
    assert len(failed) == 1, out
    assert failed[0].startswith("failed class 'long0 very very"), failed[0]
    assert f"input {LONG_AT} of 43" in failed[0]
    assert "1 prompt is too long for the teacher" in flat and "shorten" in flat
    assert "re-running alone will not help" in flat
    assert "The other items are bought and cached" in flat


def _no_image_sent(bodies: list[dict[str, object]]) -> bool:
    return not any("image" in x for b in bodies for x in b["input"])  # type: ignore[attr-defined]


def test_select_harvest_fails_only_the_over_long_prompt_and_counts_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: ``harvest --select`` (a budget below the full cost) ended in the generic
    "error: input 20 of 43: ..." on stderr, exit 1, naming no class, and the run was not
    noted (the 42 prompts it bought and cached counted nowhere). Now it says what the
    plain harvest says, notes the run with the 42 bought, and buys no image (the
    student's targets need every class)."""
    monkeypatch.setenv("JINA_API_KEY", "jina_test_key_1234567890")
    monkeypatch.setenv("COLUMNS", "240")
    argv, cache = _jina_harvest(tmp_path, _classes())
    # the prompts' request ($0.00255 at most) fits, the 6 images more ($0.0012) do not
    argv[argv.index("--budget") + 1] = "0.003"
    respond, bill = _billing_jina()
    with loopback(respond) as srv:
        code = main([*argv, srv.url, "--select", "random", "--round-steps", "1"])
        captured = capsys.readouterr()
        assert code == 1, captured.err
        assert "error:" not in captured.err
        out = " ".join(captured.out.split(" "))
        _says_shorten_the_long_one(out)
        assert _no_image_sent(srv.bodies)
    runs = [json.loads(line) for line in (cache / "runs.jsonl").read_text().splitlines()]
    assert runs[-1]["bought"] == 42 and runs[-1]["exit_code"] == 1
    spent = totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd
    assert spent == sum(bill) * JINA_PRICE > 0


@pytest.mark.parametrize("check", ["none", "views"])
def test_pseudolabel_zeroshot_fails_only_the_over_long_prompt(
    check: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: ``pseudolabel --route zeroshot`` ended in the generic "error: input 20 of
    43: ..." on stderr, exit 1, naming no class. Now it says what the plain harvest says:
    the long prompt is listed by its class, the others are bought and cached, nothing
    else is bought (no image: no label can be made without every class), no manifest is
    written (an earlier one is kept), exit 1."""
    monkeypatch.setenv("JINA_API_KEY", "jina_test_key_1234567890")
    monkeypatch.setenv("COLUMNS", "240")
    argv, cache = _jina_harvest(tmp_path, _classes())
    argv[0] = "pseudolabel"
    labels = tmp_path / "labels.csv"
    flags = ["--route", "zeroshot", "--check", check, "--out", str(labels)]
    respond, bill = _billing_jina()
    with loopback(respond) as srv:
        code = main([*argv, srv.url, *flags])
        captured = capsys.readouterr()
        assert code == 1, captured.err
        assert "error:" not in captured.err
        _says_shorten_the_long_one(" ".join(captured.out.split(" ")))
        assert _no_image_sent(srv.bodies)
        assert not labels.exists()
        spent = totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd
        assert spent == sum(bill) * JINA_PRICE > 0
        sent = len(srv.requests)

        # run again as it is: the 42 are cached, only the long one is asked (refused)
        assert main([*argv, srv.url, *flags]) == 1
        _says_shorten_the_long_one(" ".join(capsys.readouterr().out.split(" ")))
        again = [x for b in srv.bodies[sent:] for x in b["input"]]
        assert again and all(len(x.get("text", "")) > 50_000 for x in again)
        assert totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd == spent


def test_items_remaining_after_a_budget_stop_leave_out_the_over_long_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Known gap until 2026-12-06: after a prompt was refused as too long and the
    budget stopped the harvest, "N items remain; finishing would cost at most $X"
    counted that prompt (and its 50 kB at the worst case) though no rerun buys it until
    it is shortened. Now N and X are the images left alone (what a dry run without the
    long class plans), and the line says the prompt is not counted."""
    monkeypatch.setenv("JINA_API_KEY", "jina_test_key_1234567890")
    monkeypatch.setenv("COLUMNS", "240")
    classes = _classes()
    argv, _ = _jina_harvest(tmp_path, classes)
    respond, _ = _billing_jina()
    with loopback(respond) as srv:
        # the 42 prompts (a refused request is released, not counted), then not every image
        assert main([*argv, srv.url, "--max-items", "44"]) == 3
        out = " ".join(capsys.readouterr().out.split())
        assert "stopped by the budget" in out
        found = re.search(r"(\d+) items remain(.*?); finishing would cost at most \$(\S+)\.", out)
        assert found is not None, out
        remaining, note, cost = int(found.group(1)), found.group(2), found.group(3)
        assert "not counting the 1 prompt too long for the teacher" in note

        # what is left once the long class is shortened away: a dry run plans it
        (tmp_path / "classes.txt").write_text(
            "\n".join(c for i, c in enumerate(classes) if i != LONG_AT) + "\n"
        )
        assert main([*argv, srv.url, "--dry-run"]) == 0
        plan = " ".join(capsys.readouterr().out.split())
        left = re.search(r"dry run: (\d+) of 6 image views and 0 of 42 prompts", plan)
        assert left is not None, plan
        assert 0 < remaining == int(left.group(1))
        assert f"would cost at most ${cost} " in plan

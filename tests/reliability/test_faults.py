"""A 2,000-item harvest through every fault the local teacher can throw, end to end.

10 % 5xx (500/503/529), 5 % 429 with Retry-After, added latency, answers later than the
client's timeout, dropped connections and truncated 200s. Like a user, we re-run the
harvest until it exits 0. Then: every item is cached and exported; every response the
client used is in the ledger at exactly the price the server billed (Decimal); what the
client could not see (timeouts, drops, truncated bodies) is charged at least what the
server billed; nothing unbilled is charged; each run spends at most its budget; and no
item was successfully bought twice.
"""

from __future__ import annotations

import functools
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

import vlmclient.client
from cache import EmbeddingStore, ResponseCache
from distill.cli import main
from distill.data import scan
from distill.server import Faults
from tests.reliability.conftest import harvest_argv, ledger, paid, teacher
from vlmclient.retry import RetryPolicy

PER_CLASS = 25  # 10 classes x 4 domains x 25 = 1,000 images; 2 views = 2,000 items
VIEWS = 2
BUDGET = Decimal("0.60")  # a clean run costs $0.20 (2,000 images at $0.0001) + prompts
FAULTS = Faults(
    fail_500=0.04,
    fail_503=0.03,
    fail_529=0.03,
    drop=0.03,
    timeout=0.03,
    malformed=0.04,
    latency_ms=3,
    timeout_sleep_s=3.0,  # the client gives up after --timeout 0.4
    seed=7,
)
MAX_RUNS = 4


@pytest.fixture(scope="module")
def digits_2k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.data.digits import make_digits

    return make_digits(tmp_path_factory.mktemp("faults") / "digits", size=16, per_class=PER_CLASS)


@pytest.mark.slow
def test_harvest_through_faults_bills_exactly_and_buys_each_item_once(
    digits_2k: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # the CLI's client retries as usual, from 10 ms: the money, not the waits, is checked
    monkeypatch.setattr(
        vlmclient.client, "RetryPolicy", functools.partial(RetryPolicy, initial_delay=0.01)
    )
    ds = scan(digits_2k)
    n_items = len(ds.samples) * VIEWS
    n_prompts = len(ds.class_names)
    assert n_items >= 2000
    cache = tmp_path / "cache"
    extra = ("--views", str(VIEWS), "--concurrency", "8", "--batch-size", "8", "--timeout", "0.4")
    codes: list[int] = []
    per_run_spend: list[Decimal] = []
    with teacher(FAULTS, inject_429=0.05, seed=3) as t:
        for _ in range(MAX_RUNS):
            before = len(ledger(cache))
            codes.append(main(harvest_argv(t.url, digits_2k, cache, *extra, budget=str(BUDGET))))
            per_run_spend.append(paid(ledger(cache)[before:]))
            if codes[-1] == 0:
                break
        out = capsys.readouterr().out
        assert codes[-1] == 0, (codes, out[-3000:])
        assert set(codes[:-1]) <= {1}, codes  # earlier runs: some items failed, run again
        bills = {b.request_id: b for b in t.bills()}
        injected_429 = t.injector.sent if t.injector else 0

        # A further run pays nothing and sends nothing.
        n_bills = len(bills)
        assert main(harvest_argv(t.url, digits_2k, cache, *extra)) == 0
        assert len(t.bills()) == n_bills

    records = ledger(cache)
    outcomes = Counter(r.outcome for r in records)
    # every fault happened, and the client saw it as what it is
    for outcome in ("http_500", "http_503", "http_529", "http_429", "malformed", "timeout",
                    "connection"):  # fmt: skip
        assert outcomes[outcome] > 0, outcomes
    assert outcomes["http_429"] == injected_429

    # 1. used responses: in the ledger at exactly the server's price, each request once
    ok = [r for r in records if r.outcome == "ok"]
    assert len({r.request_id for r in ok}) == len(ok)
    for r in ok:
        assert r.request_id in bills, r
        assert Decimal(r.cost_usd) == bills[r.request_id].usd
    assert paid(ok) == sum((bills[r.request_id].usd for r in ok), Decimal(0))

    # 2. no item successfully paid for twice: each image view and prompt bought once
    ok_images = sum(r.items for r in ok if r.kind == "image_embedding")
    ok_texts = sum(r.items for r in ok if r.kind == "text_embedding")
    assert (ok_images, ok_texts) == (n_items, n_prompts)
    assert sum(bills[r.request_id].images for r in ok) == n_items

    # 3. billed but unusable 200s: named by request id, charged at least the bill
    for r in records:
        if r.outcome == "malformed":
            assert r.request_id in bills
            assert Decimal(r.cost_usd) >= bills[r.request_id].usd > 0

    # 4. refused / failed statuses: never billed by the server, never charged by us
    for r in records:
        if r.outcome.startswith("http_"):
            assert Decimal(r.cost_usd) == 0 and r.request_id not in bills

    # 5. what the client never saw an answer to (timeouts, drops) is charged at least
    #    what the server billed for it
    seen = {r.request_id for r in records}
    unseen = [b for rid, b in bills.items() if rid not in seen]
    blind = [r for r in records if r.outcome in ("timeout", "connection")]
    assert 0 < len(unseen) <= len(blind)
    assert sum((b.usd for b in unseen), Decimal(0)) <= paid(blind)
    assert paid(records) >= sum((b.usd for b in bills.values()), Decimal(0))

    # 6. spend within the budget in every run
    assert all(s <= BUDGET for s in per_run_spend), per_run_spend

    # 7. everything cached and exported
    with ResponseCache(cache / "responses") as rc:
        assert len(rc) == n_items + n_prompts
    [store_path] = (cache / "stores").iterdir()
    assert len(EmbeddingStore.open(store_path)) == len(ds.samples)

    print(
        f"\nfaults: {len(codes)} run(s) {codes}; {len(bills)} billed requests; "
        f"outcomes {dict(sorted(outcomes.items()))}; spend per run {per_run_spend}; "
        f"server billed ${sum((b.usd for b in bills.values()), Decimal(0))}, "
        f"ledger ${paid(records)}"
    )

"""`vlm-distill harvest` end to end against the real local server on loopback."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from cache import EmbeddingStore, SpendLedger, totals
from distill.cli import main
from distill.data import scan
from tests.e2e.conftest import TOKEN, LocalTeacher, harvest, ledger_spent


def flat_folder(digits_data: Path, folder: Path, count: int) -> Path:
    """The first ``count`` digits images in ``folder``, no class folders: 0.png, 1.png..."""
    folder.mkdir()
    for i, s in enumerate(scan(digits_data).samples[:count]):
        shutil.copy(s.path, folder / f"{i}.png")
    return folder


def two_class_names(tmp_path: Path) -> Path:
    names = tmp_path / "classes.txt"
    names.write_text("zero\none\n")
    return names


def first_domain_classes(digits_data: Path) -> list[Path]:
    """The class folders of the digits' first domain, in order."""
    domain = sorted(p for p in digits_data.iterdir() if p.is_dir())[0]
    return sorted(p for p in domain.iterdir() if p.is_dir())


def test_harvest_buys_everything_once_and_exports_a_store(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "cache"
    ds = scan(digits_data)
    assert harvest(hash_teacher, digits_data, cache, "--budget", "1") == 0
    bill = hash_teacher.billing()
    assert bill["images"] == len(ds.samples)
    assert Decimal(bill["usd"]) == ledger_spent(cache)  # our ledger equals the provider's bill
    [store_path] = (cache / "stores").iterdir()
    store = EmbeddingStore.open(store_path)
    assert store.image_ids == [s.id for s in ds.samples]
    assert store.class_names == list(ds.class_names)
    assert store.meta["teacher"] == "local:hash"
    assert np.isfinite(store.gather(np.arange(len(store)))).all()

    # a second identical run sends nothing and says it spent $0
    capsys.readouterr()
    assert harvest(hash_teacher, digits_data, cache, "--budget", "1") == 0
    assert hash_teacher.billing()["requests"] == bill["requests"]
    assert "spent $0" in capsys.readouterr().out


def test_budget_stop_then_resume_pays_each_item_once(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "cache"
    n = len(scan(digits_data).samples)
    # $0.0001 per image: a $0.005 budget buys at most 50 images
    code = harvest(hash_teacher, digits_data, cache, "--budget", "0.005", "--concurrency", "4")
    assert code == 3
    out = capsys.readouterr().out
    assert "stopped by the budget" in out and "items remain" in out
    first = hash_teacher.billing()
    assert Decimal(first["usd"]) <= Decimal("0.005")
    assert Decimal(first["usd"]) == ledger_spent(cache)
    assert harvest(hash_teacher, digits_data, cache, "--budget", "1") == 0
    final = hash_teacher.billing()
    assert final["images"] == n  # nothing bought twice
    assert Decimal(final["usd"]) == ledger_spent(cache)


def test_dry_run_sends_nothing(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert harvest(hash_teacher, digits_data, tmp_path / "c", "--dry-run") == 0
    assert hash_teacher.billing()["requests"] == 0
    assert "not cached" in capsys.readouterr().out
    # ... and leaves nothing behind: the cache folder was created with an empty database,
    # ledger and coordination file, so a mistyped --cache stayed on disk.
    assert not (tmp_path / "c").exists()
    assert not [p for p in Path(tempfile.gettempdir()).glob("vlm-distill-dry-run-*")]


def test_dry_run_on_an_existing_cache_counts_what_it_holds(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "c"
    assert harvest(hash_teacher, digits_data, cache, "--budget", "1", "--max-items", "7") == 3
    sent = hash_teacher.billing()["requests"]
    capsys.readouterr()
    assert harvest(hash_teacher, digits_data, cache, "--dry-run", "--budget", "1") == 0
    n = len(scan(digits_data).samples)
    out = capsys.readouterr().out
    assert hash_teacher.billing()["requests"] == sent
    bought = hash_teacher.billing()["images"]
    assert f"{n - bought} of {n} image views" in out


def test_dry_run_with_select_is_the_plain_dry_run(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--select hands a dry run to the plain harvest's (it estimates every image)."""
    cache = tmp_path / "c"
    assert harvest(hash_teacher, digits_data, cache, "--dry-run", "--select", "random") == 0
    assert hash_teacher.billing()["requests"] == 0
    n = len(scan(digits_data).samples)
    assert f"of {n} image views" in capsys.readouterr().out
    assert not (cache / "select").exists()


def test_missing_token_is_a_usage_error(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("VLM_DISTILL_TEACHER_TOKEN")
    assert harvest(hash_teacher, digits_data, tmp_path / "c") == 2
    assert "VLM_DISTILL_TEACHER_TOKEN" in capsys.readouterr().err


def test_wrong_token_stops_at_once(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", "wrong")
    assert harvest(hash_teacher, digits_data, tmp_path / "c") == 1
    captured = capsys.readouterr()
    assert "401" in captured.out and TOKEN not in captured.out + captured.err


def test_report_json_matches_the_servers_bill(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "cache"
    assert harvest(hash_teacher, digits_data, cache, "--budget", "1") == 0
    assert harvest(hash_teacher, digits_data, cache, "--budget", "1") == 0
    capsys.readouterr()
    assert main(["report", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    bill = hash_teacher.billing()
    assert report["schema"] == "vlm-distill.report/1"
    assert Decimal(report["spent_usd"]) == Decimal(bill["usd"])
    assert report["requests_sent"] == bill["requests"]
    n = len(scan(digits_data).samples) + len(scan(digits_data).class_names)
    assert report["items_bought"] == n and report["items_cached"] == n
    assert report["cache_hits"] == n  # the second run
    assert Decimal(report["saved_usd"]) == Decimal(bill["usd"])
    [m] = report["by_model"]
    assert (m["provider"], m["model"]) == ("local", "hash")
    # --budget caps the ledger's total for the teacher: what the first run spent is gone
    # from it, though the second run spent nothing
    last = report["last_run"]
    assert Decimal(last["spent_usd"]) == 0
    assert Decimal(last["teacher_spent_usd"]) == Decimal(bill["usd"])
    assert Decimal(last["budget_left_usd"]) == 1 - Decimal(bill["usd"])
    assert main(["report", "--cache", str(cache)]) == 0
    assert "spend report" in capsys.readouterr().out


def test_cache_commands(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = tmp_path / "cache"
    export = ["cache", "export", str(digits_data), "--teacher", "local:hash", "--cache", str(cache)]
    assert main(export) == 2
    assert harvest(hash_teacher, digits_data, cache) == 0
    [store] = (cache / "stores").iterdir()
    before = EmbeddingStore.open(store).gather(np.arange(5))
    shutil.rmtree(cache / "stores")
    monkeypatch.delenv("VLM_DISTILL_TEACHER_TOKEN")  # export needs no key and sends nothing
    requests = hash_teacher.billing()["requests"]
    # the endpoint is part of every key: another server's answers are not these
    assert main(export) == 1
    assert main([*export, "--base-url", "http://127.0.0.1:1/"]) == 1
    assert main([*export, "--base-url", hash_teacher.url + "/"]) == 0
    assert hash_teacher.billing()["requests"] == requests
    [store] = (cache / "stores").iterdir()
    np.testing.assert_array_equal(EmbeddingStore.open(store).gather(np.arange(5)), before)
    capsys.readouterr()
    assert main(["cache", "stats", "--cache", str(cache)]) == 0
    assert "image_embedding" in capsys.readouterr().out
    assert main(["cache", "verify", "--cache", str(cache)]) == 0
    assert "every entry reads back" in capsys.readouterr().out
    # recover on a healthy cache changes nothing (it used to rewrite the database and keep
    # the healthy one aside as "responses.damaged-...", a second full copy)
    assert main(["cache", "recover", "--cache", str(cache)]) == 0
    assert "healthy" in capsys.readouterr().out
    assert not list(cache.glob("responses.damaged-*"))
    assert main(["cache", "verify", "--cache", str(cache)]) == 0


def test_unlabelled_data_without_class_names_says_no_store_was_written(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A flat folder of images names no classes: the images are bought and cached, but no
    store is written; that used to pass without a word (exit 0, nothing for `train`). The
    hint then said to buy the prompts with --class-file, giving a store `train` refuses
    ("no labelled images") until 2026-12-06: it points at `pseudolabel`."""
    flat = flat_folder(digits_data, tmp_path / "flat", 6)
    cache = tmp_path / "cache"
    assert harvest(hash_teacher, flat, cache, "--budget", "1") == 0
    out = capsys.readouterr().out
    assert "no embedding store written" in out and "pseudolabel" in out
    assert not (cache / "stores").exists()
    assert hash_teacher.billing()["images"] == 6
    names = two_class_names(tmp_path)
    assert harvest(hash_teacher, flat, cache, "--budget", "1", "--class-file", str(names)) == 0
    out = capsys.readouterr().out
    assert "embedding store:" in out and "no embedding store" not in out
    assert hash_teacher.billing()["images"] == 6  # only the prompts were bought


def test_the_store_path_is_printed_on_one_line_in_a_log(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Output that is not a terminal (a log, CI) is 110 columns wide: a store path longer
    than that was folded inside itself, so the path copied from the log did not exist.
    It is printed whole on its line, as `cache export` prints it and the harvest command it
    asks for when the cache lacks items."""
    cache = tmp_path / ("a-cache-folder-with-a-long-name-" * 4) / "cache"
    assert harvest(hash_teacher, digits_data, cache, "--budget", "1") == 0
    [store] = (cache / "stores").iterdir()
    lines = capsys.readouterr().out.splitlines()
    assert f"embedding store: {store}" in lines
    assert len(f"embedding store: {store}") > 110
    export = ["cache", "export", str(digits_data), "--teacher", "local:hash", "--cache", str(cache)]
    assert main([*export, "--base-url", hash_teacher.url]) == 0
    assert f"embedding store: {store}" in capsys.readouterr().out.splitlines()
    # the command a user copies to buy what is missing is whole on its line too
    assert main(export) == 1
    hint = f"vlm-distill harvest {digits_data} --teacher local:hash --cache {cache}`"
    assert hint in capsys.readouterr().out.splitlines()[0]


def test_a_flat_folder_harvested_with_a_class_file_says_train_needs_labels_first(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A flat folder of images with ``--class-file``: the harvest bought everything and
    said "embedding store: ..." without a word about labels, and `train` then refused it
    ("no labelled images; the trainer needs class labels", exit 1) with no way forward.
    Now the harvest says before buying that the images have no labels, and after which
    commands label, harvest and train them; train refuses (exit 2) saying the same."""
    flat = flat_folder(digits_data, tmp_path / "flat", 6)
    names = two_class_names(tmp_path)
    cache = tmp_path / "cache"
    label = f"vlm-distill pseudolabel {flat} --class-file {names}"
    argv = ("--budget", "1", "--class-file", str(names))
    assert harvest(hash_teacher, flat, cache, *argv, "--dry-run") == 0
    assert label in " ".join(capsys.readouterr().out.split())  # a dry run says it all
    assert harvest(hash_teacher, flat, cache, *argv) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert hash_teacher.billing()["images"] == 6  # bought and cached all the same
    assert "embedding store:" in out
    first = out.index("no image here has a label")
    assert first < out.index("harvest local:hash")  # said before anything was bought
    assert label in out[out.index("embedding store:") :]  # and again after the summary
    assert f"--cache {cache}" in out

    run = tmp_path / "run"
    argv = ["train", str(flat), "--cache", str(cache), "--teacher", "local:hash",
            "--class-file", str(names), "--out", str(run)]  # fmt: skip
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no labels" in err and label in err and "--teacher local:hash" in err
    assert f"vlm-distill train {cache / 'pseudolabels.csv'}" in err
    assert not run.exists()


@pytest.mark.parametrize("dry", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_a_flat_folder_with_a_teacher_that_cannot_embed_images_is_refused_without_the_note(
    dry: list[str], digits_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flat folder harvested with an answer-only teacher: the note "their embeddings are
    bought and cached for `vlm-distill pseudolabel`" (or, in a dry run, the commands that
    label them) was printed just before the refusal "cannot give image embeddings"
    (exit 2): nothing was to be bought. The refusal now comes first, alone."""
    flat = flat_folder(digits_data, tmp_path / "flat", 3)
    argv = ["harvest", str(flat), "--teacher", "anthropic:claude-haiku-4-5",
            "--cache", str(tmp_path / "cache"), "--budget", "1", *dry]  # fmt: skip
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "cannot give image embeddings" in err
    assert "note:" not in out and "pseudolabel" not in out


def test_items_bought_before_a_cap_stopped_their_call_are_counted(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: ``--max-items 5 --batch-size 4`` bought and cached 5 prompts (the cap
    stopped the call at its second batch) and the summary said "bought 0"."""
    cache = tmp_path / "c"
    argv = ("--budget", "1", "--max-items", "5", "--batch-size", "4")
    assert harvest(hash_teacher, digits_data, cache, *argv) == 3
    out = capsys.readouterr().out
    from cache import SpendLedger

    bought = sum(r.items for r in SpendLedger.read(cache / "ledger.jsonl") if r.outcome == "ok")
    assert bought > 0
    assert re.search(rf"│ bought\s+│ {bought}\s", out), out


@pytest.mark.parametrize("lost", ["folder", "empty-database"])
def test_an_empty_cache_whose_ledger_records_purchases_is_not_bought_again(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lost: str,
) -> None:
    """Before: a cache whose database was lost (deleted, truncated to nothing, or left
    moved aside by a crash in `cache recover`) was silently recreated empty and every
    item bought again; `cache verify` called it healthy."""
    cache = tmp_path / "c"
    assert harvest(hash_teacher, digits_data, cache, "--budget", "1") == 0
    bought = hash_teacher.billing()["requests"]
    if lost == "folder":
        shutil.rmtree(cache / "responses")
    else:
        for f in (cache / "responses").glob("cache.db*"):
            f.write_bytes(b"")
    capsys.readouterr()
    assert harvest(hash_teacher, digits_data, cache, "--budget", "1") == 2
    err = capsys.readouterr().err
    assert "the response cache is empty" in err and "--allow-rebuy" in err
    assert hash_teacher.billing()["requests"] == bought  # nothing bought twice
    assert harvest(hash_teacher, digits_data, cache, "--budget", "1", "--allow-rebuy") == 0
    assert hash_teacher.billing()["requests"] > bought  # on purpose, when asked


def test_a_setting_missing_at_the_first_request_is_a_usage_error(
    digits_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Vertex with a token but no project is found when the first request is built (the
    project is part of its URL): nothing is sent, and it exited 1 ("failed, run again")
    where a missing key exits 2."""
    for name in ("GOOGLE_CLOUD_PROJECT", "VERTEX_PROJECT", "GCLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", "not-a-real-token")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")
    cache = tmp_path / "c"
    code = main(["harvest", str(digits_data), "--teacher", "vertex:multimodalembedding@001",
                 "--cache", str(cache), "--budget", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 2, out
    assert "vertex needs a project" in " ".join(out.split())
    assert totals(SpendLedger.read(cache / "ledger.jsonl")).spent_usd == 0


async def test_the_library_harvest_counts_items_bought_before_a_cap_stopped_their_call(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    """The CLI's count was corrected in the CLI alone: a library caller of ``harvest()``
    (examples/harvest_cohere.py) was told "bought 106" for 109 items bought and billed."""
    from cache import ResponseCache
    from distill.harvest import harvest as run_harvest
    from vlmclient import Budget, TeacherClient

    cache = tmp_path / "c"
    with (
        ResponseCache(cache / "responses") as responses,
        SpendLedger(cache / "ledger.jsonl") as ledger,
    ):
        async with TeacherClient(
            "local:hash", base_url=hash_teacher.url, budget=Budget(1, max_items=5),
            cache=responses, ledger=ledger, batch_size=4,
        ) as client:  # fmt: skip
            result = await run_harvest(scan(digits_data), client, cache_dir=cache)
    bought = sum(r.items for r in SpendLedger.read(cache / "ledger.jsonl") if r.outcome == "ok")
    assert bought > 0 and result.stopped_by_budget
    assert result.bought == bought


def test_paths_holding_brackets_are_printed_whole(
    hash_teacher: LocalTeacher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: rich read `[a]` in a folder name as markup and dropped it, so the cache
    `c [a]` was printed as `c ` (the embedding store, the report's title, ...)."""
    from distill.data.digits import make_digits

    monkeypatch.setenv("COLUMNS", "300")  # one path, one line
    data = make_digits(tmp_path / "d [b]", size=16, per_class=1)
    cache = tmp_path / "c [a]"

    def said() -> str:  # a long path may be folded anywhere: compared without spaces
        return "".join(capsys.readouterr().out.split())

    def shown(text: str) -> str:
        return "".join(text.split())

    assert harvest(hash_teacher, data, cache, "--budget", "1") == 0
    out = said()
    [store] = (cache / "stores").iterdir()
    assert shown(f"embedding store: {store}") in out
    assert shown(f"{data}:") in out  # the data folder's summary line
    export = ["cache", "export", str(data), "--teacher", "local:hash", "--base-url",
              hash_teacher.url, "--cache", str(cache)]  # fmt: skip
    assert main(export) == 0
    assert shown(f"embedding store: {store}") in said()
    assert main(["cache", "stats", "--cache", str(cache)]) == 0
    assert shown(f"response cache {cache / 'responses'}") in said()
    assert main(["report", str(cache)]) == 0
    assert shown(f"spend report: {cache}") in said()


def test_saved_by_the_cache_is_shown_to_eight_places(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Requests of 7 prompts of different lengths: each prompt's share of its request's
    cost has no last digit, and a rerun's "saved by the cache" (and `report`'s saved
    column) showed the sum of those shares to 28 digits."""
    cache, data = tmp_path / "cache", tmp_path / "data"
    for i, folder in enumerate(first_domain_classes(digits_data)):
        words = " ".join(["digit"] * (1, 2, 4)[i % 3])  # 15 words in the first request
        shutil.copytree(folder, data / f"{chr(ord('a') + i)} {words} {folder.name}")
    args = ("--budget", "1", "--batch-size", "7")
    assert harvest(hash_teacher, data, cache, *args) == 0
    capsys.readouterr()
    assert harvest(hash_teacher, data, cache, *args) == 0
    out = capsys.readouterr().out
    [saved] = re.findall(r"saved by the cache\s*│?\s*\$([0-9.]+)", out)
    assert Decimal(saved) > 0 and len(saved.split(".")[1]) <= 8, saved
    assert main(["report", str(cache)]) == 0
    report = capsys.readouterr().out
    assert not re.search(r"\d\.\d{9,}", report), report


def test_amounts_below_a_millionth_are_plain_decimals_in_the_summary_and_runs_file(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs that buy only two one-word prompts (a new --prompt). Before: a budget stop said
    "the next request may cost up to $2.4E-7" and "finishing would cost at most
    $0.000000" (rounded to six places), a dry run "at most $0.000000 ... of which $0E-7
    is left", and the run that bought them "spent this run $2.4E-7" (Decimal's scientific
    notation), in the summary and in runs.jsonl."""
    monkeypatch.setenv("COLUMNS", "200")
    cache, data = tmp_path / "cache", tmp_path / "data"
    for name, folder in zip("xy", first_domain_classes(digits_data)[:2], strict=True):
        shutil.copytree(folder, data / name)
    assert harvest(hash_teacher, data, cache, "--budget", "1") == 0
    capsys.readouterr()
    # a budget that stops the new prompts: the refusal and what finishing would cost
    cap = str(ledger_spent(cache))
    assert harvest(hash_teacher, data, cache, "--budget", cap, "--prompt", "{}") == 3
    out = " ".join(capsys.readouterr().out.split())
    [finish] = re.findall(r"finishing would cost at most \$([0-9.]+)\.", out)
    assert Decimal(finish) > 0 and "may cost up to $0.000000" in out and "E-" not in out, out
    assert harvest(hash_teacher, data, cache, "--budget", cap, "--prompt", "{}", "--dry-run") == 0
    out = " ".join(capsys.readouterr().out.split())
    [most] = re.findall(r"would cost at most \$([0-9.]+) ", out)
    assert Decimal(most) == Decimal(finish) and "E-" not in out, out
    # the run that buys them
    assert harvest(hash_teacher, data, cache, "--budget", "1", "--prompt", "{}") == 0
    out = " ".join(capsys.readouterr().out.split())
    runs = [json.loads(line) for line in (cache / "runs.jsonl").read_text().splitlines()]
    spent = Decimal(runs[-1]["spent_usd"])
    assert 0 < spent < Decimal("0.000001"), runs[-1]
    assert runs[-1]["spent_usd"] == format(spent, "f"), runs[-1]
    assert f"${format(spent, 'f')} of no --run-budget" in out, out
    assert "E-" not in out, out


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--rpm", "1e-300"), ("--rpm", "1e-320"), ("--rpm", "0.01"), ("--tpm", "1e-300"),
     ("--tpm", "1e-320")],
)  # fmt: skip
def test_a_rate_pacing_more_than_an_hour_between_requests_is_refused(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
) -> None:
    # --rpm 1e-300 sent one request, then waited for ever without a word (1e-320: an
    # interval of inf seconds)
    cache = tmp_path / "cache"
    with pytest.raises(SystemExit) as exc:
        harvest(hash_teacher, digits_data, cache, "--budget", "1", flag, value)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "an hour" in err
    assert hash_teacher.billing()["requests"] == 0
    assert not cache.exists()  # nothing reserved, nothing created


def test_the_slowest_rate_accepted_is_one_request_an_hour() -> None:
    from distill.cli.validate import positive_rate

    assert positive_rate("0.0167") == pytest.approx(0.0167)
    with pytest.raises(argparse.ArgumentTypeError):
        positive_rate("0.0166")


def test_identical_images_under_two_names_are_bought_once_and_counted_once(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two files with the same bytes are one purchase (they share a cache key); the
    summary and runs.jsonl said "bought" for both: 3 more items than the provider billed."""
    data = tmp_path / "data"
    shutil.copytree(digits_data, data)
    ds = scan(data)
    for s in ds.samples[:3]:  # each a copy of the image before it in its class folder
        shutil.copy(s.path, s.path.with_name("copy-" + s.path.name))
    ds = scan(data)
    cache = tmp_path / "cache"
    assert harvest(hash_teacher, data, cache, "--budget", "1") == 0
    bill = hash_teacher.billing()
    assert bill["images"] == len(ds.samples) - 3
    out = " ".join(capsys.readouterr().out.split())
    bought = bill["images"] + len(ds.class_names)
    assert f"│ bought │ {bought} │" in out
    assert "│ identical to an item bought this run │ 3 │" in out
    [run] = [json.loads(line) for line in (cache / "runs.jsonl").read_text().splitlines()]
    assert run["bought"] == bought


def test_dry_run_with_views_prices_the_rest_when_an_image_does_not_decode(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A PNG whose header and end are whole but whose pixel data is damaged passes the
    scan; the harvest fails its views and buys the rest, but `--dry-run --views
    2` stopped at it: "error: cannot decode image ...", exit 1, no plan."""
    data = tmp_path / "data"
    shutil.copytree(digits_data, data)
    ds = scan(data)
    damaged = bytearray(ds.samples[0].path.read_bytes())
    start = damaged.index(b"IDAT") + 8
    damaged[start : start + 40] = bytes(b ^ 0x5A for b in damaged[start : start + 40])
    ds.samples[0].path.write_bytes(bytes(damaged))
    n = len(scan(data).samples)
    cache = tmp_path / "cache"
    capsys.readouterr()
    assert harvest(hash_teacher, data, cache, "--budget", "1", "--views", "2", "--dry-run") == 0
    out = " ".join(capsys.readouterr().out.split())
    # both its views (view 0 is decoded before it is sent too)
    assert f"dry run: {2 * n - 2} of {2 * n} image views" in out
    assert "2 image views cannot be read or prepared" in out
    assert hash_teacher.billing()["requests"] == 0

    # the store is written without it (since 2026-12-06)
    assert harvest(hash_teacher, data, cache, "--budget", "1", "--views", "2") == 0
    assert hash_teacher.billing()["images"] == 2 * n - 2  # what the dry run said


def test_the_commands_printed_for_a_flat_folder_reach_the_same_teacher_and_cap(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The `pseudolabel` and `harvest` commands printed for a flat folder left out the
    harvest's --base-url, --cache-namespace and --budget: copied as printed, `pseudolabel`
    went to the default 127.0.0.1:8089 ("could not connect", or another teacher there)
    under the default $1.00 cap instead of the one given. They now carry them."""
    flat = flat_folder(digits_data, tmp_path / "flat", 4)
    names = two_class_names(tmp_path)
    cache = tmp_path / "cache"
    argv = ("--budget", "0.5", "--class-file", str(names), "--cache-namespace", "box")
    assert harvest(hash_teacher, flat, cache, *argv) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    after = out[out.index("embedding store:") :]
    printed = re.findall(r"`(vlm-distill (?:pseudolabel|harvest) [^`]*)`", after)
    assert len(printed) == 2
    for command in printed:
        assert f"--base-url {hash_teacher.url}" in command
        assert "--cache-namespace box" in command and "--budget 0.5" in command
    label = shlex.split(printed[0])[1:]
    assert main([*label, "--route", "zeroshot", "--check", "none"]) == 0  # as printed
    assert (cache / "pseudolabels.csv").exists()


def test_a_cache_folder_whose_ledger_jsonl_is_not_a_spend_ledger_is_refused_before_buying(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--cache ~/notes` where the user keeps a `ledger.jsonl` of their own (JSON lines, but
    not ours): the harvest bought everything and appended its records to the user's file,
    exit 0, without a word (the readers skip every line of theirs as damaged)."""
    cache = tmp_path / "notes"
    cache.mkdir()
    theirs = '{"date": "2026-01-03", "item": "coffee", "amount": 3.5}\nrent 900\n'
    (cache / "ledger.jsonl").write_text(theirs)
    assert harvest(hash_teacher, digits_data, cache, "--budget", "1") == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(cache / "ledger.jsonl") in lines[0] and "not a spend ledger" in lines[0]
    assert hash_teacher.billing()["requests"] == 0
    assert (cache / "ledger.jsonl").read_text() == theirs
    assert [p.name for p in cache.iterdir()] == ["ledger.jsonl"]  # no cache made beside it


@pytest.mark.parametrize(
    "command",
    [
        ["harvest", "--budget", "1"],
        ["harvest", "--budget", "0.0005", "--select", "random", "--rounds", "1",
         "--select-student", "mobilenetv3_small_050", "--select-image-size", "16"],
        ["pseudolabel", "--budget", "1", "--route", "zeroshot", "--check", "none"],
        ["cache", "stats"],
        ["cache", "export", "--teacher", "local:hash"],
        ["cache", "recover"],
    ],
    ids=["harvest", "harvest-select", "pseudolabel", "cache-stats", "cache-export",
         "cache-recover"],
)  # fmt: skip
def test_a_cache_folder_whose_ledger_jsonl_is_foreign_is_left_as_it_was(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """A folder holding only a `ledger.jsonl` of the user's own, given as --cache: before
    2026-12-07 `harvest --select` and `pseudolabel` made `responses/` (an empty database and
    spill file) in it before the ledger was refused. Every command refuses it with one line
    (exit 2), buys nothing and leaves the folder as it was."""
    cache = tmp_path / "notes"
    cache.mkdir()
    theirs = '{"date": "2026-01-03", "item": "coffee", "amount": 3.5}\nrent 900\n'
    (cache / "ledger.jsonl").write_text(theirs)
    name, *flags = command
    if name == "cache":  # cache ACTION [DATA] --cache DIR
        argv = [name, flags[0], *([str(digits_data)] if flags[0] == "export" else []),
                *flags[1:], "--cache", str(cache)]  # fmt: skip
    else:
        argv = [name, str(digits_data), "--teacher", "local:hash", "--base-url",
                hash_teacher.url, "--cache", str(cache), *flags]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert hash_teacher.billing()["requests"] == 0
    assert (cache / "ledger.jsonl").read_text() == theirs
    assert sorted(p.name for p in cache.iterdir()) == ["ledger.jsonl"]  # nothing made in it


def test_a_lost_cache_harvested_for_another_teacher_first_is_still_refused(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: the refusal above looked at the whole database: lost, then harvested for
    another teacher first (here the same server under another model name), it held
    entries, and the first teacher's items were all bought again without a word."""
    from distill.cli import main

    def harvest_as(model: str, *extra: str) -> int:
        return main(["harvest", str(digits_data), "--teacher", f"local:{model}",
                     "--base-url", hash_teacher.url, "--cache", str(cache), *extra])  # fmt: skip

    cache = tmp_path / "c"
    assert harvest_as("hash") == 0
    bought = hash_teacher.billing()["requests"]
    shutil.rmtree(cache / "responses")  # lost
    assert harvest_as("other") == 0  # another teacher into the new database: its own items
    other = hash_teacher.billing()["requests"] - bought
    assert other > 0
    capsys.readouterr()
    assert harvest_as("hash") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "the response cache holds no answer of local:hash" in err, err
    assert "--allow-rebuy" in err
    assert hash_teacher.billing()["requests"] == bought + other  # nothing bought twice
    assert harvest_as("other") == 0  # the other teacher's harvest goes on: all cached
    assert hash_teacher.billing()["requests"] == bought + other
    assert harvest_as("hash", "--allow-rebuy") == 0

"""Round-based harvest with --select, and teacher answers, against the real local server."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

from cache import ResponseCache
from distill.cli import main
from distill.data import scan
from distill.labelfree.parity import parity_filter
from distill.labelfree.pseudolabel import answer_labels, embedding_labels, sample_image
from tests.e2e import conftest as e2e
from tests.e2e.conftest import LocalTeacher, ledger_spent
from vlmclient import Budget, ImageEmbeddingRequest, TeacherClient

# $0.0001 per image (the local server's price) + a few text tokens: covers about half of
# the 120 digits images.
HALF = "0.006"


def harvest(teacher: LocalTeacher, data: Path, cache: Path, *extra: str) -> int:
    flags = ("--budget", HALF, "--rounds", "3", "--round-steps", "3")
    return e2e.harvest(teacher, data, cache, *flags, *extra)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["uncertainty", "coreset"])
def test_select_rounds_stay_in_budget_and_resume(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    strategy: str,
) -> None:
    cache = tmp_path / "cache"
    n = len(scan(digits_data).samples)
    # Stopped after two requests (the prompts and round 1): the budget error ends the run.
    code = harvest(hash_teacher, digits_data, cache, "--select", strategy, "--max-requests", "2")
    assert code == 3
    # the state file (NAME.dataset.json beside NAME.csv is the manifest's description)
    [state_file] = [
        p for p in (cache / "select").glob("*.json") if not p.name.endswith(".dataset.json")
    ]
    state = json.loads(state_file.read_text())
    assert state["rounds_done"] == 1 and len(state["picked"]) == 2  # round 2 picked, not bought
    first = hash_teacher.billing()
    assert first["images"] == len(state["picked"][0])

    # Resumed: round 2 buys the images it had picked, round 3 picks the rest.
    capsys.readouterr()
    assert harvest(hash_teacher, digits_data, cache, "--select", strategy) == 0
    assert "3 of 3" in capsys.readouterr().out
    state2 = json.loads(state_file.read_text())
    assert state2["picked"][:2] == state["picked"]
    assert state2["rounds_done"] == 3
    picked = [i for r in state2["picked"] for i in r]
    assert len(picked) == len(set(picked))  # no image picked twice
    bill = hash_teacher.billing()
    assert bill["images"] == len(picked)  # each bought once
    assert n * 0.4 <= len(picked) < n  # about half, never all
    spent = Decimal(bill["usd"])
    assert spent == ledger_spent(cache) <= Decimal(HALF)
    assert Decimal(state2["spent_usd"]) == spent

    # A third run has nothing left to spend and buys nothing.
    assert harvest(hash_teacher, digits_data, cache, "--select", strategy) == 0
    assert hash_teacher.billing()["requests"] == bill["requests"]

    # The bought subset is a manifest with its own store, ready for training.
    [manifest] = (cache / "select").glob("*.csv")
    classes = manifest.with_suffix(".classes.txt")
    subset = scan(manifest, class_file=classes, allow_outside_paths=True)  # absolute paths
    assert len(subset.samples) == len(picked)
    assert subset.hflip is False  # as the digits' dataset.json says (True until 2026-12-06)
    assert any((cache / "stores").iterdir())


def test_the_bought_subset_trains_with_the_class_file_select_wrote(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A budget for fewer images than classes: the manifest lacks some classes, and its
    store (harvested with the full class list) was refused by `train` as "run
    `vlm-distill harvest MANIFEST ...` first" (until 2026-12-06): train could not read the
    ``*.classes.txt`` select wrote."""
    cache = tmp_path / "cache"
    n_classes = len(scan(digits_data).class_names)
    # 10 prompts, then about 6 images at $0.0001 in one random round
    code = harvest(hash_teacher, digits_data, cache, "--select", "random", "--rounds", "1",
                   "--round-steps", "0", "--budget", "0.0007")  # fmt: skip
    assert code == 0
    said = capsys.readouterr().out
    [manifest] = (cache / "select").glob("*.csv")
    classes = manifest.with_suffix(".classes.txt")
    labels = {row.split(",")[1] for row in manifest.read_text().splitlines()[1:]}
    assert 0 < len(labels) < n_classes  # some class has no bought image
    assert "--class-file" in said and classes.name in said  # the train command to run
    train = [
        "train", str(manifest), "--cache", str(cache), "--teacher", "local:hash",
        "--method", "erm", "--steps", "1", "--student", "mobilenetv3_small_050",
        "--no-pretrained", "--image-size", "16", "--batch-per-domain", "2",
        "--holdout-fraction", "0", "--threads", "1", "--json",
    ]  # fmt: skip
    assert main([*train, "--out", str(tmp_path / "r0")]) == 2
    err = capsys.readouterr().err
    assert f"--class-file {classes}" in err and "harvest first" not in err
    assert main([*train, "--out", str(tmp_path / "r1"), "--class-file", str(classes)]) == 0
    info = json.loads((tmp_path / "r1" / "run.json").read_text())
    assert len(info["class_names"]) == n_classes


def test_select_with_a_budget_for_everything_is_the_plain_harvest(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "cache"
    assert harvest(hash_teacher, digits_data, cache, "--select", "random", "--budget", "1") == 0
    assert "plain harvest" in capsys.readouterr().out
    assert hash_teacher.billing()["images"] == len(scan(digits_data).samples)
    assert not (cache / "select").exists()


def test_select_prices_every_image_at_the_views_asked_for(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--select ... --views 4` under a budget for one view of every image but not four:
    "the budget covers every image: plain harvest" (one view an image priced), then the
    plain harvest bought four views in scan order until the budget stopped it, exit 3
    (until 2026-12-08). Priced at four views it is the rounds, which refuse --views
    before anything is sent."""
    cache = tmp_path / "cache"
    n = len(scan(digits_data).samples)  # $0.0001 an image: one view each fits in $0.02
    assert n * Decimal("0.0001") < Decimal("0.02") < 4 * n * Decimal("0.0001")
    code = e2e.harvest(hash_teacher, digits_data, cache, "--select", "random", "--budget",
                       "0.02", "--views", "4")  # fmt: skip
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    assert "plain harvest" not in out.out and "drop --views" in out.err
    assert hash_teacher.billing()["requests"] == 0


def test_select_under_a_run_budget_stops_and_a_rerun_goes_on(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--select ... --budget 0.006 --run-budget 0.002`: the rounds were planned on the
    run cap, so all three fitted into it, the run ended "3 of 3", exit 0, and a rerun
    bought nothing: the rest of --budget could never be used (until 2026-12-08). Planned
    on --budget, the run cap stops a run (exit 3, naming --run-budget) and reruns go on
    until the selection is done, within --budget."""
    cache = tmp_path / "cache"
    codes, bought = [], []
    for _ in range(6):
        codes.append(harvest(hash_teacher, digits_data, cache, "--select", "random",
                             "--run-budget", "0.002"))  # fmt: skip
        bought.append(hash_teacher.billing()["images"])
        if codes[-1] == 0:
            break
    said = " ".join(capsys.readouterr().out.split())
    assert codes[0] == 3 and "--run-budget" in said, said
    assert codes[-1] == 0 and "3 of 3" in said
    assert bought == sorted(bought) and bought[-1] > bought[0]  # each rerun bought more
    assert Decimal(hash_teacher.billing()["usd"]) == ledger_spent(cache) <= Decimal(HALF)
    assert bought[-1] >= 0.4 * len(scan(digits_data).samples)  # about half, as the plain run


def test_select_on_unlabelled_data_says_to_label_it_not_a_train_command(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A selection over a folder with no class folders printed "train on them: vlm-distill
    train MANIFEST ...", which train refuses (the manifest's rows have no labels), exit 0
    (until 2026-12-08). It now says what the plain harvest says: label the data first."""
    from tests.labelfree.conftest import flat_folder

    folder, classes = flat_folder(digits_data, tmp_path, count=20, every=5)
    code = e2e.harvest(hash_teacher, folder, tmp_path / "cache", "--select", "coreset",
                       "--round-steps", "1", "--rounds", "2", "--budget", "0.0015",
                       "--class-file", str(classes))  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())
    assert code in (0, 3), out
    assert "train on them" not in out
    assert "not for train" in out and "pseudolabel" in out, out


async def test_answers_are_parsed_cached_and_filtered(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    ds = scan(digits_data)
    samples = ds.samples[:12]
    with ResponseCache(tmp_path / "responses") as cache:
        client = TeacherClient(
            "local:hash", base_url=hash_teacher.url, cache=cache, budget=Budget("1")
        )
        async with client:
            labels = await answer_labels(ds, client, ds.class_names, samples=samples)
            # the hash teacher always picks a listed option: every answer parses
            assert [lb.image_id for lb in labels] == [s.id for s in samples]
            assert all(lb.label is not None and lb.source == "answer" for lb in labels)
            assert all(lb.answer and not lb.cached for lb in labels)
            paid = hash_teacher.billing()["requests"]
            again = await answer_labels(ds, client, ds.class_names, samples=samples)
            assert all(lb.cached for lb in again) and [lb.label for lb in again] == [
                lb.label for lb in labels
            ]
            assert hash_teacher.billing()["requests"] == paid  # cached: nothing re-bought
            # a second, shuffled question is a new (paid) answer
            second = await answer_labels(
                ds, client, ds.class_names, samples=samples, shuffle_seed=1
            )
            assert hash_teacher.billing()["requests"] == paid + len(samples)
            zs, probs = await embedding_labels(ds, client, ds.class_names, samples=samples)
    assert probs is not None and probs.shape == (len(samples), len(ds.class_names))
    assert all(z.label is not None for z in zs)
    ids = [s.id for s in samples]
    answers = [lb.label for lb in labels]
    for check in ([lb.label for lb in second], [z.label for z in zs]):
        r = parity_filter(ids, answers, check, student=[0] * len(ids))
        assert sum(r.counts.values()) == len(ids)
        assert all(answers[ids.index(i)] == check[ids.index(i)] != 0 for i in r.kept)


async def test_budget_stop_leaves_the_rest_unanswered(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    ds = scan(digits_data)
    client = TeacherClient("local:hash", base_url=hash_teacher.url, budget=Budget(max_requests=3))
    async with client:
        labels = await answer_labels(ds, client, ds.class_names, samples=ds.samples[:10])
    assert sum(lb.answer is not None for lb in labels) == 3
    assert sum(lb.answer is None and lb.label is None for lb in labels) == 7
    assert hash_teacher.billing()["requests"] == 3


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--rounds", "4"), ("--seed", "1"), ("--round-steps", "1"), ("--prompt", "an image of {}")],
)
def test_a_resume_with_other_selection_flags_is_refused(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
) -> None:
    """A run stopped after round 1, resumed with another --rounds, --seed, --round-steps or
    --prompt: the state's first rounds were picked by one experiment and the rest by another,
    in one manifest, without a word (until 2026-12-06). Now refused before anything is
    bought, naming the flag, what the state was made with and how to start afresh."""
    cache = tmp_path / "cache"
    tiny = ["--select", "random", "--round-steps", "0", "--select-student",
            "mobilenetv3_small_050", "--select-image-size", "16"]  # fmt: skip
    assert harvest(hash_teacher, digits_data, cache, *tiny, "--max-requests", "2") == 3
    [state_file] = [
        p for p in (cache / "select").glob("*.json") if not p.name.endswith(".dataset.json")
    ]
    before = state_file.read_text()
    billed = hash_teacher.billing()
    capsys.readouterr()
    assert harvest(hash_teacher, digits_data, cache, *tiny, flag, value) == 2
    err = capsys.readouterr().err
    assert flag in err and str(state_file.name) in err
    assert hash_teacher.billing() == billed  # nothing bought
    assert state_file.read_text() == before  # the stopped run's state is kept as it was
    # the same flags resume it
    assert harvest(hash_teacher, digits_data, cache, *tiny) == 0


def test_a_resume_that_finishes_a_picked_round_records_it_done(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stopped with the last round picked but not bought, then resumed: the resume bought
    that round and said "2 of 2", but the state file kept ``rounds_done: 1`` (until
    2026-12-06): only rounds picked by the resuming run were counted in it."""
    cache = tmp_path / "cache"
    tiny = ["--select", "random", "--rounds", "2", "--round-steps", "0", "--select-student",
            "mobilenetv3_small_050", "--select-image-size", "16"]  # fmt: skip
    assert harvest(hash_teacher, digits_data, cache, *tiny, "--max-requests", "2") == 3
    [state_file] = [
        p for p in (cache / "select").glob("*.json") if not p.name.endswith(".dataset.json")
    ]
    state = json.loads(state_file.read_text())
    assert state["rounds_done"] == 1 and len(state["picked"]) == 2
    capsys.readouterr()
    assert harvest(hash_teacher, digits_data, cache, *tiny) == 0
    assert "2 of 2" in capsys.readouterr().out
    after = json.loads(state_file.read_text())
    assert after["picked"] == state["picked"] and after["rounds_done"] == 2


def test_more_rounds_than_the_budget_buys_images_ends_when_it_is_spent(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`harvest --budget B --select random --rounds 5` with B for 3 images: one image a
    round, the budget spent after round 3, and the run said "stopped by the budget" and
    exited 3 (until 2026-12-07), as if it had stopped short of what was asked, though it
    bought what --budget allows as fewer rounds do (exit 0). Its rerun exited 3 the same."""
    cache = tmp_path / "cache"
    flags = ["--budget", "0.00035", "--select", "random", "--rounds", "5", "--round-steps",
             "0", "--select-student", "mobilenetv3_small_050", "--select-image-size", "16"]
    for run in ("first", "rerun"):
        capsys.readouterr()
        assert e2e.harvest(hash_teacher, digits_data, cache, *flags) == 0, run
        out = " ".join(capsys.readouterr().out.split())
        assert "3 of 120 bought" in out and "rounds │ 3 of 5" in out, out
        assert "the budget is spent after 3 of 5 rounds" in out and "stopped" not in out, out
        assert hash_teacher.billing()["images"] == 3  # the rerun buys nothing


async def test_rounds_are_priced_by_images_not_bought_yet(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The first images of the data already cached (another run bought them): `harvest
    --select` priced the next image from the first 8 images left, all cached: $0 an image,
    so its first round took a third of every image, not of the budget, the budget ran out
    mid-round and the run stopped at "rounds 1 of 3" (until 2026-12-06). Now the price
    comes from images not bought yet, and the rounds share what is left."""
    cache = tmp_path / "cache"
    ds = scan(digits_data)
    with ResponseCache(cache / "responses") as responses:
        client = TeacherClient(
            "local:hash", base_url=hash_teacher.url, cache=responses, budget=Budget("1")
        )
        async with client:
            await client.embed_images(
                [ImageEmbeddingRequest(image=sample_image(s, ds.hflip)) for s in ds.samples[:8]]
            )
    tiny = ["--select", "random", "--round-steps", "0", "--select-student",
            "mobilenetv3_small_050", "--select-image-size", "16"]  # fmt: skip
    assert await asyncio.to_thread(harvest, hash_teacher, digits_data, cache, *tiny) == 0
    assert "3 of 3" in capsys.readouterr().out
    assert ledger_spent(cache) <= Decimal(HALF)
    [state_file] = [
        p for p in (cache / "select").glob("*.json") if not p.name.endswith(".dataset.json")
    ]
    picked = json.loads(state_file.read_text())["picked"]
    # $0.0059 left after the prompts buys 59 images at $0.0001: a third of them is 20 (40,
    # a third of the 120 images, before); the 8 cached ones it picks are free
    cached = {s.id for s in ds.samples[:8]}
    assert len(set(picked[0]) - cached) <= 20


def test_files_the_teacher_cannot_decode_are_left_out_of_the_rounds(
    digits_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: a file whose header opens but whose pixels do not decode ended
    ``harvest --select`` with exit 1 ("cannot decode image") once the in-between student
    loaded every image, or when a round picked it (the teacher's 400, or the client's
    refusal of a file too large to send as it is, failed its whole request), on every
    rerun: the selection could never finish."""
    import shutil

    from pydantic import SecretStr

    from distill.data.views import pixels_decode
    from distill.server import HashBackend, ServerConfig, ServerThread, create_app
    from tests.e2e.conftest import TOKEN
    from tests.labelfree.test_pseudolabel_cli import broken_large_png

    data = tmp_path / "digits"
    shutil.copytree(digits_data, data)
    broken: set[str] = set()
    for path in sorted(data.rglob("*.png"))[::3]:
        damaged = bytearray(path.read_bytes())
        damaged[len(damaged) // 2 : len(damaged) // 2 + 32] = b"\xff" * 32
        if not pixels_decode(bytes(damaged)) and len(broken) < 6:
            path.write_bytes(bytes(damaged))
            broken.add(path.name)
    assert len(broken) == 6
    # and one the client refuses before sending (it must be downscaled: it cannot be)
    (path.parent / "zz-big.png").write_bytes(broken_large_png())
    broken.add("zz-big.png")
    n = len(scan(data).samples)
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    config = ServerConfig(token=SecretStr(TOKEN))
    cache = tmp_path / "cache"
    with ServerThread(create_app(config, HashBackend(dim=64, decode=True))) as server:
        argv = [
            "harvest", str(data), "--teacher", "local:hash", "--base-url", server.base_url,
            "--cache", str(cache), "--budget", str(Decimal("0.0001") * (n - 2)),
            "--rounds", "3", "--round-steps", "0", "--select", "random", "--batch-size", "4",
        ]  # fmt: skip
        assert main(argv) in (0, 3), capsys.readouterr().err
        [manifest] = (cache / "select").glob("*.csv")
        bought = {Path(p).name for p in manifest.read_text().splitlines()[1:]}
        assert bought and not bought & broken
        assert main(argv) in (0, 3)  # a rerun ends the same way


async def test_cached_picks_are_free_and_the_rounds_buy_what_the_budget_allows(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every other image already cached (another run bought them): a round's picks that
    were cache hits cost nothing but counted against its share, so each round bought
    about half its share and the selection ended with a third of the budget unspent
    (until 2026-12-07). Now a cached pick is free: the round picks further images until
    its share buys new ones, and the rounds together buy what the budget allows."""
    cache = tmp_path / "cache"
    ds = scan(digits_data)
    with ResponseCache(cache / "responses") as responses:
        client = TeacherClient(
            "local:hash", base_url=hash_teacher.url, cache=responses, budget=Budget("1")
        )
        async with client:
            await client.embed_images(
                [ImageEmbeddingRequest(image=sample_image(s, ds.hflip)) for s in ds.samples[::2]]
            )
    before = hash_teacher.billing()
    tiny = ["--select", "random", "--round-steps", "0", "--select-student",
            "mobilenetv3_small_050", "--select-image-size", "16"]  # fmt: skip
    assert await asyncio.to_thread(harvest, hash_teacher, digits_data, cache, *tiny) == 0
    assert "3 of 3" in capsys.readouterr().out
    spent = ledger_spent(cache)
    assert spent <= Decimal(HALF)
    bought = hash_teacher.billing()["images"] - before["images"]
    # $0.0059 left after the prompts buys 59 of the 60 images not cached (about 40 before)
    assert bought == 59
    assert Decimal(HALF) - spent < Decimal("0.0001")  # not the money for one more


def test_a_round_that_bought_one_image_trains_the_student_on_it(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A budget for 3 images over 3 rounds: round 1 bought one image, and the student
    trained on it stopped with a traceback (BatchNorm in training mode refuses a batch of
    one image once its maps are 1x1: "Expected more than 1 value per channel"), the image
    paid for, on every rerun too (until 2026-12-07). Now one image is drawn twice."""
    cache = tmp_path / "cache"
    tiny = ["--select", "uncertainty", "--round-steps", "2", "--select-student",
            "mobilenetv3_small_050", "--select-image-size", "16",
            "--budget", "0.00035"]  # fmt: skip
    assert harvest(hash_teacher, digits_data, cache, *tiny) == 0
    assert "3 of 3" in capsys.readouterr().out
    [state_file] = [
        p for p in (cache / "select").glob("*.json") if not p.name.endswith(".dataset.json")
    ]
    assert [len(p) for p in json.loads(state_file.read_text())["picked"]] == [1, 1, 1]


def test_a_picked_copy_of_a_picked_image_is_free(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every image twice (the same bytes under two names, as real collections hold
    copies): a round counted a copy of an image it had picked as one more image bought,
    though one purchase answers both, so the rounds bought 56 of the 59 images the budget
    allows (until 2026-12-07). Now a copy is free, as a cached image is."""
    import shutil

    data = tmp_path / "digits"
    shutil.copytree(digits_data, data)
    for path in sorted(data.rglob("*.png")):
        shutil.copy(path, path.with_name(path.stem + "-copy.png"))
    tiny = ["--select", "random", "--round-steps", "0", "--select-student",
            "mobilenetv3_small_050", "--select-image-size", "16"]  # fmt: skip
    assert harvest(hash_teacher, data, tmp_path / "cache", *tiny) == 0
    assert "3 of 3" in capsys.readouterr().out
    assert hash_teacher.billing()["images"] == 59  # $0.0059 left after the prompts


def test_select_over_a_store_of_more_views_takes_the_advice_it_gives(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 2-view store, then `harvest --select` with a budget that covers everything (the
    plain harvest): it refused to replace the store, "pass --views 2 to keep them", and
    with --views 2 refused "--select buys one view per image; drop --views" (until
    2026-12-07): no way through but replacing the store. --views is refused only when the
    rounds run."""
    cache = tmp_path / "cache"
    # without --select: the selection flags harvest() adds are refused
    assert e2e.harvest(hash_teacher, digits_data, cache, "--budget", "1", "--views", "2") == 0
    billed = hash_teacher.billing()
    capsys.readouterr()
    assert harvest(hash_teacher, digits_data, cache, "--select", "random", "--budget", "1") == 2
    assert "pass --views 2" in capsys.readouterr().err
    code = harvest(hash_teacher, digits_data, cache, "--select", "random", "--budget", "1",
                   "--views", "2")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert hash_teacher.billing()["images"] == billed["images"]  # nothing bought again
    # the rounds buy one view per image: --views 2 with a budget that does not cover all
    capsys.readouterr()
    code = harvest(hash_teacher, digits_data, tmp_path / "other", "--select", "random",
                   "--views", "2")  # fmt: skip
    assert code == 2 and "drop --views" in capsys.readouterr().err
    assert hash_teacher.billing()["requests"] == billed["requests"]

"""An image replaced in place after the harvest: `train` refuses the stale store instead of
training the new image on the teacher's targets of the old one."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from distill.cli import main
from distill.data import scan
from tests.e2e.conftest import LocalTeacher


def _harvest(teacher: LocalTeacher, data: Path, cache: Path) -> int:
    return main(["harvest", str(data), "--teacher", "local:hash", "--base-url", teacher.url,
                 "--cache", str(cache), "--budget", "1"])


def _train(data: Path, cache: Path, out: Path) -> int:
    return main(["train", str(data), "--cache", str(cache), "--teacher", "local:hash",
                 "--student", "mobilenetv3_small_050", "--no-pretrained", "--method", "adip",
                 "--out", str(out), "--test-domains", "rotated", "--steps-align", "1",
                 "--steps-distill", "1", "--image-size", "32", "--batch-per-domain", "2",
                 "--threads", "1"])


@pytest.mark.slow
def test_an_image_replaced_after_the_harvest_is_caught_and_rebought_once(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = tmp_path / "digits"
    shutil.copytree(digits_data, data)
    cache = tmp_path / "cache"
    assert _harvest(hash_teacher, data, cache) == 0
    bought = hash_teacher.billing()["images"]

    # A copy of the data (new modification times, same bytes) trains from the same store.
    # It says that every run now reads every image to check it, and how to stop that.
    copy = tmp_path / "copy"
    shutil.copytree(data, copy, copy_function=shutil.copy)
    with caplog.at_level(logging.WARNING, logger="distill.data.content"):
        assert _train(copy, cache, tmp_path / "run-copy") == 0
    assert "their content was checked" in caplog.text and "new harvest" in caplog.text

    # One photo replaced in place by another (of another class, new to the cache): ids,
    # labels and domains (the dataset fingerprint) are unchanged, the store's targets of
    # that row are not its own.
    samples = list(scan(data).samples)
    victim, other = samples[0], next(s for s in samples if s.label != samples[0].label)
    with Image.open(other.path) as im:
        im.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(victim.path)
    capsys.readouterr()
    assert _train(data, cache, tmp_path / "run-stale") == 2
    err = capsys.readouterr().err
    assert "harvested from other image content" in err and victim.id in err
    assert not (tmp_path / "run-stale" / "metrics.json").exists()
    # eval's teacher zero-shot reads the same store by image id: refused alike.
    [store] = (cache / "stores").iterdir()
    assert main(["eval", str(tmp_path / "run-copy"), str(data), "--store", str(store)]) == 2
    assert "harvested from other image content" in capsys.readouterr().err

    # Harvesting again buys the one new image (its bytes are new to the cache) and mends it.
    assert _harvest(hash_teacher, data, cache) == 0
    assert hash_teacher.billing()["images"] == bought + 1
    assert _train(data, cache, tmp_path / "run-fresh") == 0
    assert main(["eval", str(tmp_path / "run-copy"), str(data), "--store", str(store)]) == 0
    # A manifest of some of its images, in its folder (same ids, same files), trains and is
    # scored with the same store (the digests cover the whole dataset, so they are not
    # compared for a part of it).
    part = data / "part.csv"
    rows = [f"{s.id},{s.id.split('/')[1]},{s.domain}" for s in scan(data).samples
            if s.domain != "inverted"]
    part.write_text("path,label,domain\n" + "\n".join(rows) + "\n")
    assert main(["train", str(part), "--store", str(store), "--teacher", "local:hash",
                 "--student", "mobilenetv3_small_050", "--no-pretrained", "--method", "erm",
                 "--out", str(tmp_path / "run-part"), "--test-domains", "rotated",
                 "--steps", "1", "--image-size", "32", "--batch-per-domain", "2",
                 "--threads", "1"]) == 0
    assert main(["eval", str(tmp_path / "run-part"), str(part), "--store", str(store)]) == 0
    part.unlink()
    # A store of another dataset is refused (its rows would be other images).
    other_data = tmp_path / "other"
    shutil.copytree(data, other_data)
    shutil.rmtree(other_data / "rotated")
    assert main(["eval", str(tmp_path / "run-copy"), str(other_data), "--store", str(store)]) == 2
    assert "harvested from another dataset" in capsys.readouterr().err


@pytest.mark.parametrize("change", ["replaced", "removed"])
def test_an_image_replaced_during_the_harvest_writes_no_stale_store(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path, change: str
) -> None:
    """A file replaced after its request was answered, before the store was written: the
    store recorded the new file's digest beside the old content's vector, so `train`
    accepted it and trained the new picture on the old one's targets. A file removed then
    was "could not write the embedding store: No such file", which the CLI took for a
    full disk ("free disk space")."""
    import asyncio

    import numpy as np

    from cache import ResponseCache
    from distill.harvest import HarvestResult, harvest
    from vlmclient import TeacherClient

    data = tmp_path / "data"
    shutil.copytree(digits_data, data)
    ds = scan(data)
    first = ds.samples[0].path
    replaced = []

    def progress(r: HarvestResult) -> None:
        if r.bought >= len(ds.class_names) + 4 and not replaced:  # row 0 answered
            if change == "removed":
                first.unlink()
            else:
                rng = np.random.default_rng(1)
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(first)
            replaced.append(True)

    async def go() -> HarvestResult:
        with ResponseCache(tmp_path / "cache" / "responses") as rc:
            async with TeacherClient(
                "local:hash", base_url=hash_teacher.url, cache=rc, concurrency=1, batch_size=4
            ) as client:
                return await harvest(ds, client, cache_dir=tmp_path / "cache", on_progress=progress)

    result = asyncio.run(go())
    assert replaced
    assert result.store_path is None and result.store_error is None
    assert result.fatal is not None and f"{change} while" in result.fatal
    assert ds.samples[0].id in result.fatal
    bill = hash_teacher.billing()["images"]

    # run again (the data no longer changing): the new picture alone is bought, and stored
    ds = scan(data)
    result = asyncio.run(go())
    assert result.store_path is not None and result.fatal is None
    assert hash_teacher.billing()["images"] == bill + (change == "replaced")


def test_an_image_replaced_by_a_fifo_after_the_scan_fails_alone(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    """The scan refuses a FIFO named like an image; one put in an image's place after it
    was read as a file: the harvest's event loop blocked in that read until something
    wrote to the FIFO (no Ctrl-C, no other request answered), then bought what came."""
    import asyncio
    import os
    import threading

    from cache import ResponseCache
    from distill.harvest import HarvestResult, harvest
    from vlmclient import TeacherClient

    data = tmp_path / "data"
    shutil.copytree(digits_data, data)
    ds = scan(data)
    first = ds.samples[0].path
    png = first.read_bytes()
    first.unlink()
    os.mkfifo(first)

    stop = threading.Event()

    def writer() -> None:  # serves every reader (the old code hung without one)
        while not stop.is_set():
            try:
                with open(first, "wb") as f:
                    f.write(png)
            except BrokenPipeError:
                pass

    threading.Thread(target=writer, daemon=True).start()

    async def go() -> HarvestResult:
        with ResponseCache(tmp_path / "cache" / "responses") as rc:
            async with TeacherClient("local:hash", base_url=hash_teacher.url, cache=rc) as client:
                return await harvest(ds, client, cache_dir=tmp_path / "cache")

    try:
        result = asyncio.run(go())
    finally:
        stop.set()
        os.close(os.open(first, os.O_RDONLY | os.O_NONBLOCK))  # lets the writer see it
    assert [(item, "not a regular file" in why) for item, why in result.failed] == [
        (ds.samples[0].id, True)
    ]
    assert hash_teacher.billing()["images"] == len(ds.samples) - 1

"""A PNG whose header reads but whose pixel data is damaged: `harvest` (one view, the file
sent as it is) pays nothing for it and writes the store without it, listing it; `train`
and `eval` leave it out."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from cache import EmbeddingStore
from distill.cli import main
from distill.data import Sample, scan
from tests.e2e.conftest import LocalTeacher


def _damage(path: Path) -> None:
    """Flip bytes in the middle of the file: the header and IEND still read."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    path.write_bytes(bytes(data))


@dataclass(frozen=True)
class _Damaged:
    """The bundled digits copied, one of them damaged, and the harvest to run on them."""

    data: Path
    cache: Path
    samples: list[Sample]
    victim: Sample
    good: bytes  # the victim's bytes before the damage
    harvest: list[str]


def _one_damaged(teacher: LocalTeacher, digits: Path, tmp_path: Path) -> _Damaged:
    data = tmp_path / "digits"
    shutil.copytree(digits, data)
    samples = list(scan(data).samples)
    victim = samples[0]
    good = victim.path.read_bytes()
    _damage(victim.path)
    cache = tmp_path / "cache"
    harvest = ["harvest", str(data), "--teacher", "local:hash", "--base-url", teacher.url,
               "--cache", str(cache), "--budget", "1", "--views", "1"]  # fmt: skip
    return _Damaged(data, cache, samples, victim, good, harvest)


def test_a_damaged_png_is_left_out_of_the_store_and_bought_once_replaced(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One damaged file among many: until 2026-12-06 no store was ever written until the
    user found and removed it, so nothing could be trained. Now the harvest writes the store
    without it (never sent, nothing paid), listing it in the summary and the store's meta;
    once it is replaced by a good copy, the next harvest buys it."""
    d = _one_damaged(hash_teacher, digits_data, tmp_path)
    capsys.readouterr()
    assert main(d.harvest) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"left out {d.victim.id}: cannot decode image" in out, out
    assert "1 image cannot be decoded" in out and "written without it" in out, out
    # the others are bought and cached; the damaged file is never sent
    assert hash_teacher.billing()["images"] == len(d.samples) - 1
    [store_path] = (d.cache / "stores").iterdir()
    store = EmbeddingStore.open(store_path)
    assert d.victim.id not in store.image_ids
    assert len(store.image_ids) == len(d.samples) - 1
    assert [e["id"] for e in store.meta["left_out"]] == [d.victim.id]
    # a rerun buys nothing
    before = hash_teacher.billing()["requests"]
    assert main(d.harvest) == 0
    assert hash_teacher.billing()["requests"] == before
    # the store rebuilt from the cache alone leaves it out too (it was "1 items are not
    # in the cache; run harvest first", exit 1)
    written = {p.name: p.read_bytes() for p in store_path.iterdir() if p.name != "meta.json"}
    shutil.rmtree(store_path)
    capsys.readouterr()
    assert main(["cache", "export", str(d.data), "--teacher", "local:hash", "--base-url",
                 hash_teacher.url, "--cache", str(d.cache)]) == 0  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())
    assert f"left out {d.victim.id}: cannot decode image" in out, out
    assert "1 image cannot be decoded" in out and "written without it" in out, out
    assert {p.name: p.read_bytes() for p in store_path.iterdir() if p.name != "meta.json"} == (
        written
    )
    assert [e["id"] for e in EmbeddingStore.open(store_path).meta["left_out"]] == [d.victim.id]
    # replaced by a good copy: the next harvest buys it, and its store holds every image
    d.victim.path.write_bytes(d.good)
    assert main(d.harvest) == 0
    assert hash_teacher.billing()["images"] == len(d.samples)
    store = EmbeddingStore.open(store_path)
    assert d.victim.id in store.image_ids and store.meta["left_out"] == []


def test_data_whose_every_image_is_damaged_writes_no_store_and_says_so(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing to leave the others for: no empty store, and not the disk's fault."""
    d = _one_damaged(hash_teacher, digits_data, tmp_path)
    for s in d.samples[1:]:
        # the pixel data itself (flipped bytes mid-file may miss it in a small PNG)
        data = bytearray(s.path.read_bytes())
        start = data.index(b"IDAT") + 8
        data[start : start + 40] = bytes(b ^ 0x5A for b in data[start : start + 40])
        s.path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(d.harvest) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "no image of the data can be decoded" in out, out
    assert "disk" not in out
    assert not (d.cache / "stores").exists() or not any((d.cache / "stores").iterdir())
    assert hash_teacher.billing()["images"] == 0


@pytest.mark.slow
def test_train_and_eval_leave_out_the_image_the_harvest_left_out(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """harvest -> train -> eval with one damaged file: train leaves it out of every role
    (saying so in one line), eval does not score it (saying so), nothing paid for it."""
    d = _one_damaged(hash_teacher, digits_data, tmp_path)
    assert main(d.harvest) == 0
    run = tmp_path / "run"
    assert main(["train", str(d.data), "--cache", str(d.cache), "--teacher", "local:hash",
                 "--student", "mobilenetv3_small_050", "--no-pretrained", "--method", "adip",
                 "--out", str(run), "--test-domains", "rotated", "--steps-align", "2",
                 "--steps-distill", "2", "--image-size", "32", "--batch-per-domain", "4",
                 "--threads", "1", "--json"]) == 0  # fmt: skip
    said = " ".join(caplog.text.split())  # a WARNING line on stderr (the CLI's logging)
    assert f"left out 1 image whose pixels cannot be decoded ({d.victim.id})" in said, said
    info = json.loads((run / "run.json").read_text())
    assert info["left_out"] == [d.victim.id]
    assert info["n_train"] + info["n_id"] + info["n_ood"] == len(d.samples) - 1
    [store] = (d.cache / "stores").iterdir()
    for extra in ([], ["--store", str(store)]):
        capsys.readouterr()
        assert main(["eval", str(run), str(d.data), "--json", *extra]) == 0
        captured = capsys.readouterr()
        result = json.loads(captured.out)
        assert result["images_left_out"] == [d.victim.id]
        assert "1 image whose pixels cannot be decoded" in captured.err
        assert d.victim.id in captured.err
        parts = ("id", "ood", "excluded")
        assert sum(v["n"] for p in parts for v in result[p].values()) == (
            info["n_id"] + info["n_ood"]
        )
    assert result["teacher_zeroshot"]["images_missing"] == 0
    assert hash_teacher.billing()["images"] == len(d.samples) - 1


def test_a_cached_rerun_decodes_no_view_0(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check above decodes what is bought, not what is cached: on a data set of large
    photos a decode of every file on every rerun would cost minutes for nothing."""
    import distill.view_requests as view_requests

    decoded: list[int] = []
    real = view_requests.pixels_decode

    def counting(data: bytes) -> bool:
        decoded.append(len(data))
        return real(data)

    monkeypatch.setattr(view_requests, "pixels_decode", counting)
    argv = ["harvest", str(digits_data), "--teacher", "local:hash", "--base-url",
            hash_teacher.url, "--cache", str(tmp_path / "cache"), "--budget", "1"]  # fmt: skip
    assert main(argv) == 0
    assert len(decoded) == len(scan(digits_data).samples)
    decoded.clear()
    assert main(argv) == 0
    assert decoded == []


@pytest.mark.slow
def test_train_that_meets_a_damaged_image_names_it_and_says_what_to_do(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A file damaged after the harvest (bit rot keeps its size and modification time, so
    the store is not seen as stale): the student reads pixels lazily, so `train` stops
    at the batch that holds it; it says which file, how to find the others and what to
    run then."""
    data = tmp_path / "digits"
    shutil.copytree(digits_data, data)
    cache = tmp_path / "cache"
    assert main(["harvest", str(data), "--teacher", "local:hash", "--base-url",
                 hash_teacher.url, "--cache", str(cache), "--budget", "1"]) == 0  # fmt: skip
    victim = next(iter(scan(data).samples)).path
    st = victim.stat()
    _damage(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    capsys.readouterr()
    code = main(["train", str(data), "--cache", str(cache), "--teacher", "local:hash",
                 "--student", "mobilenetv3_small_050", "--no-pretrained", "--method", "adip",
                 "--out", str(tmp_path / "run"), "--test-domains", "rotated",
                 "--steps-align", "20", "--steps-distill", "1", "--image-size", "32",
                 "--batch-per-domain", "4", "--threads", "1"])  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1, err
    assert f"cannot decode image {str(victim)!r}" in err
    assert "data scan" in err and "--decode" in err and "harvest" in err


@pytest.mark.parametrize("views", [1, 2])
def test_the_progress_of_a_harvest_that_leaves_an_image_out_ends_at_its_total(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    views: int,
) -> None:
    """The images left out were never counted done: a finished harvest's last progress
    line read "harvest local:hash: 31/32 ..." (its ETA waiting on what never comes)."""
    d = _one_damaged(hash_teacher, digits_data, tmp_path)
    argv = [*d.harvest[:-1], str(views)]
    capsys.readouterr()
    for _ in range(2):  # bought, then a cached rerun
        assert main(argv) == 0
        lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("harvest ")]
        total = len(d.samples) * views + 10  # the image views and the class prompts
        assert lines[-1].startswith(f"harvest local:hash: {total}/{total} "), lines[-1]

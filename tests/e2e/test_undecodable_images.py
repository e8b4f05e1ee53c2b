"""A PNG whose header reads but whose pixel data is damaged: `harvest` (one view, the file
sent as it is) reports it like an undecodable augmented view and writes no store, and pays
nothing for it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from distill.cli import main
from distill.data import scan
from tests.e2e.conftest import LocalTeacher


def _damage(path: Path) -> None:
    """Flip bytes in the middle of the file: the header and IEND still read."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    path.write_bytes(bytes(data))


def test_a_damaged_png_sent_as_view_0_is_reported_and_no_store_is_written(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "digits"
    shutil.copytree(digits_data, data)
    samples = list(scan(data).samples)
    victim = samples[0].path
    _damage(victim)
    cache = tmp_path / "cache"
    capsys.readouterr()
    code = main(["harvest", str(data), "--teacher", "local:hash", "--base-url", hash_teacher.url,
                 "--cache", str(cache), "--budget", "1", "--views", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code != 0, out
    assert "1 image views cannot be read" in " ".join(out.split()), out
    assert victim.name in out
    assert not (cache / "stores").exists() or not any((cache / "stores").iterdir())
    # the others are bought and cached; the damaged file is never sent
    assert hash_teacher.billing()["images"] == len(samples) - 1


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

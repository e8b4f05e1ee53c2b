"""A store whose files changed after the harvest (a flipped bit in the matrix, ids
swapped) is refused by `train` and `eval`; the same harvest rebuilds it for $0.

Before 2026-12-06 only the shapes were checked, so both trained on wrong teacher targets
without a word."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.cli import main
from tests.e2e.conftest import LocalTeacher
from tests.e2e.test_replaced_images import _harvest, _train


@pytest.mark.slow
def test_a_changed_store_is_refused_and_the_harvest_rebuilds_it_for_nothing(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "digits"
    shutil.copytree(digits_data, data)
    cache = tmp_path / "cache"
    assert _harvest(hash_teacher, data, cache) == 0
    billed = hash_teacher.billing()
    [store] = (cache / "stores").iterdir()
    ids_file = store / "image_ids.json"
    ids = json.loads(ids_file.read_text())
    ids[0], ids[1] = ids[1], ids[0]  # same length, same shapes: each row under the other id
    ids_file.write_text(json.dumps(ids))
    capsys.readouterr()
    assert _train(data, cache, tmp_path / "run-bad") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged: image_ids.json no longer match" in err[0]
    assert not (tmp_path / "run-bad" / "metrics.json").exists()

    assert _harvest(hash_teacher, data, cache) == 0
    assert hash_teacher.billing() == billed  # rebuilt from the response cache alone
    assert _train(data, cache, tmp_path / "run") == 0
    matrix = store / "images.npy"
    flipped = bytearray(matrix.read_bytes())
    flipped[-3] ^= 0x04
    matrix.write_bytes(bytes(flipped))
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), str(data), "--store", str(store)]) == 2
    assert "is damaged: images.npy no longer match" in capsys.readouterr().err

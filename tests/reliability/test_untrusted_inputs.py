"""Issue 16 items 8-12 through the CLI: private cache files, untrusted manifests and class
names, and one-line errors (exit 2) where a traceback used to be.
"""

from __future__ import annotations

import io
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.cli import main
from tests.reliability.conftest import Teacher, harvest_argv, ledger, teacher


def png(path: Path, seed: int = 0) -> None:
    arr = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


@pytest.fixture
def hash_teacher() -> Iterator[Teacher]:
    with teacher() as t:
        yield t


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for k, c in enumerate(("cat", "dog")):
        for i in range(2):
            png(root / c / f"{i}.png", seed=10 * k + i)
    return root


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cache_files_are_private_by_default(
    hash_teacher: Teacher, data: Path, tmp_path: Path
) -> None:
    """Item 8: cache.db (and sqlite's -wal/-shm beside it) 0600, like the ledger."""
    cache = tmp_path / "cache"
    assert main(harvest_argv(hash_teacher.url, data, cache)) == 0
    db = cache / "responses" / "cache.db"
    assert db.exists()
    assert _mode(db) == 0o600, oct(_mode(db))
    for side in db.parent.glob("cache.db-*"):
        assert _mode(side) == 0o600, (side, oct(_mode(side)))
    assert _mode(cache / "ledger.jsonl") == 0o600
    assert _mode(cache / "responses") == 0o700
    assert ledger(cache)

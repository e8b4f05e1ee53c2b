"""Issue 16 item 13 (store half): replacing an embedding store has no window, and what a
killed writer leaves is repaired or removed by the next open.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cache import EmbeddingStore, StoreError
from tests.cache.test_embedding_store import _write

ROOT = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    """The pid of a process that has exited (what a kill -9 leaves behind)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_crash_between_the_two_renames_loses_no_store(tmp_path: Path) -> None:
    """The layout a writer killed between "old aside" and "new in place" leaves: no store,
    the previous one at .old-<pid>-*, the new one (complete) at .tmp-<pid>-*. Before the
    fix, open() said "no embedding store" and both folders stayed for ever."""
    target = tmp_path / "store"
    _write(target, seed=1)
    pid = _dead_pid()
    os.rename(target, tmp_path / f"store.old-{pid}-0a1b2c3d")
    _write(tmp_path / "staging", seed=2)
    os.rename(tmp_path / "staging", tmp_path / f"store.tmp-{pid}-4e5f6a7b")
    os.utime(tmp_path / f"store.tmp-{pid}-4e5f6a7b" / "meta.json")  # the newer one

    store = EmbeddingStore.open(target)
    assert store.meta["dataset_fingerprint"] == "data-fp-2"  # the finished new version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_half_written_leftovers_of_a_dead_writer_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "store"
    _write(target, seed=1)
    pid = _dead_pid()
    half = tmp_path / f"store.tmp-{pid}-00ff00ff"
    half.mkdir()
    (half / "images.npy").write_bytes(b"\x93NUMPY partial")  # no meta.json: incomplete
    after_exchange = tmp_path / f"store.tmp-{pid}-11ee11ee"  # killed before removing the old
    shutil.copytree(target, after_exchange)
    unrelated = tmp_path / "store.tmp-notes"  # not a writer's name: never touched
    unrelated.mkdir()

    assert EmbeddingStore.open(target).meta["dataset_fingerprint"] == "data-fp-1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "store.tmp-notes"]


def test_a_live_writers_work_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "store"
    _write(target, seed=1)
    busy = tmp_path / f"store.tmp-{os.getpid()}-22dd22dd"  # this process is alive
    busy.mkdir()
    EmbeddingStore.open(target)
    assert busy.is_dir()


def test_nothing_to_recover_is_still_a_clear_error(tmp_path: Path) -> None:
    half = tmp_path / f"store.tmp-{_dead_pid()}-33cc33cc"
    half.mkdir()  # incomplete: nothing to put back
    with pytest.raises(StoreError, match="no embedding store"):
        EmbeddingStore.open(tmp_path / "store")
    assert not half.exists()


_WRITER = """
import sys
from pathlib import Path
from tests.cache.test_embedding_store import _write
target = Path(sys.argv[1])
i = 0
while True:
    _write(target, seed=i % 3)
    i += 1
    if i == 1:
        print("ready", flush=True)
"""


@pytest.mark.slow  # kills writer processes at random moments, as tests/e2e/test_kill9.py
def test_kill9_of_a_writer_never_leaves_the_store_missing(tmp_path: Path) -> None:
    """A real writer replacing the store in a loop, killed -9 at random moments: each time
    the store opens (old or new version) and the leftovers are gone after the open."""
    target = tmp_path / "store"
    rng = random.Random(0)
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.2))  # a random moment in the write loop, not ordering
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        store = EmbeddingStore.open(target)
        assert json.loads((target / "meta.json").read_text())["n_images"] == len(store)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]

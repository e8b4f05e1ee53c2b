"""`cache recover` puts the recovered database in place in one atomic step. Before
2026-12-06 it did two renames (old aside, recovered in): a crash between them left a cache
folder with no responses/, only responses.damaged-* and responses.recovering, and the next
harvest bought everything again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cache import CacheEntry, ResponseCache
from cache import recover as recover_module
from cache.swap import exchange


def test_a_crash_right_after_recovery_leaves_the_recovered_cache_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    if not exchange(a, b):
        pytest.skip("this file system has no RENAME_EXCHANGE: recover falls back to renames")
    responses = tmp_path / "c" / "responses"
    with ResponseCache(responses) as cache:
        cache.set_many(
            [(f"k{i}", CacheEntry(vector=np.full(4, i, np.float32))) for i in range(20)]
        )
    real = os.replace

    def replace_then_die(src: Any, dst: Any) -> None:
        real(src, dst)  # the rename happens, then the process is killed
        raise KeyboardInterrupt

    monkeypatch.setattr(recover_module.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        recover_module.recover_cache(responses)
    monkeypatch.undo()
    with ResponseCache(responses) as cache:  # the recovered cache is where the cache is
        assert len(cache) == 20

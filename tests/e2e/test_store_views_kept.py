"""A harvest (or `cache export`) not given --views, whose 1-view store would replace one of
more views: refused, nothing bought, the store kept (an explicit --views N replaces it, as
asked). Before, `harvest DATA --views 4` then `harvest DATA`
(--views 1 by default) replaced the 4-view store with a 1-view one, and `train` then trained
ADiP on one view per image without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache import EmbeddingStore
from distill.cli import main
from tests.e2e.conftest import LocalTeacher


def _harvest(teacher: LocalTeacher, data: Path, cache: Path, *extra: str) -> int:
    return main(["harvest", str(data), "--teacher", "local:hash", "--base-url", teacher.url,
                 "--cache", str(cache), "--budget", "1", *extra])  # fmt: skip


def _views(cache: Path) -> int:
    [path] = (cache / "stores").iterdir()
    return EmbeddingStore.open(path).views


@pytest.mark.slow
def test_a_harvest_with_fewer_views_keeps_the_store_and_train_uses_every_view(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "cache"
    assert _harvest(hash_teacher, digits_data, cache, "--views", "4") == 0
    assert _views(cache) == 4
    [store] = (cache / "stores").iterdir()
    requests = hash_teacher.billing()["requests"]
    capsys.readouterr()

    for extra in ((), ("--dry-run",), ("--concurrency", "2")):
        assert _harvest(hash_teacher, digits_data, cache, *extra) == 2, extra
        err = " ".join(capsys.readouterr().err.split())
        assert "holds 4 views" in err and str(store) in err, err
        assert "pass --views 4 to keep them" in err and "or --views 1 to replace it" in err
        assert len(err.splitlines()) == 1
    export = ["cache", "export", str(digits_data), "--teacher", "local:hash", "--base-url",
              hash_teacher.url, "--cache", str(cache)]  # fmt: skip
    assert main(export) == 2
    assert "--views 4" in capsys.readouterr().err
    assert hash_teacher.billing()["requests"] == requests  # nothing bought
    assert _views(cache) == 4

    # the flag the message names: nothing sent, the same store
    assert _harvest(hash_teacher, digits_data, cache, "--views", "4") == 0
    assert "spent $0" in capsys.readouterr().out
    assert main([*export, "--views", "4"]) == 0
    assert hash_teacher.billing()["requests"] == requests
    assert _views(cache) == 4

    run = tmp_path / "run"
    assert main(["train", str(digits_data), "--cache", str(cache), "--teacher", "local:hash",
                 "--student", "mobilenetv3_small_050", "--no-pretrained", "--method", "adip",
                 "--out", str(run), "--test-domains", "rotated", "--steps-align", "1",
                 "--steps-distill", "1", "--image-size", "32", "--batch-per-domain", "2",
                 "--threads", "1"]) == 0  # fmt: skip
    assert json.loads((run / "run.json").read_text("utf-8"))["views"] == 4

    # an explicit --views replaces the store, as asked
    assert _harvest(hash_teacher, digits_data, cache, "--views", "2") == 0
    assert _views(cache) == 2
    assert hash_teacher.billing()["requests"] == requests

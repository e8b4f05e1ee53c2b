"""Answers a server gave at the wrong size, cached before the right size was seen, used to
leave a cache no run could get past (every harvest exited 1, the advice was "free disk
space", the answers stayed). `cache prune --teacher P:M --keep-dim N` removes them and the
next harvest buys only those. Against the real local server, which bills."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import main
from distill.server import Faults
from distill.server.faults import FaultPlan
from tests.reliability.conftest import harvest_argv, teacher


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.data.digits import make_digits

    return make_digits(tmp_path_factory.mktemp("sizes") / "digits", size=16, per_class=1)


def test_wrong_size_answers_are_named_and_pruned_and_bought_again(
    teacher_token: str, digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    with teacher(Faults(wrong_dim=1.0), dim=32) as server:
        # the class prompts' one request comes back at 16 values each, and is cached
        assert main(harvest_argv(server.url, digits, cache, "--max-requests", "1")) == 3
        server.app.state.teacher.plan = FaultPlan(Faults())  # the server is mended
        capsys.readouterr()
        assert main(harvest_argv(server.url, digits, cache)) == 1
        out = " ".join(capsys.readouterr().out.split())
        assert "disagree in size" in out and "--keep-dim N" in out
        assert "free disk space" not in out
        before = server.billing()

        prune = ["cache", "prune", "--cache", str(cache), "--teacher", "local:hash"]
        assert main([*prune, "--keep-dim", "32", "--dry-run"]) == 0
        assert "would delete 10 entries" in capsys.readouterr().out
        assert main([*prune, "--keep-dim", "32"]) == 2  # paid entries: not without --yes
        capsys.readouterr()
        assert main([*prune, "--keep-dim", "32", "--yes"]) == 0
        assert "deleted 10 entries" in capsys.readouterr().out

        assert main(harvest_argv(server.url, digits, cache)) == 0
        assert "embedding store:" in capsys.readouterr().out
        after = server.billing()
        # only the prompts again: one request, no image
        assert (after["requests"], after["images"]) == (before["requests"] + 1, before["images"])


def test_keep_dim_needs_a_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cache import ResponseCache

    ResponseCache(tmp_path / "c" / "responses", spill=False).close()  # an empty cache
    assert main(["cache", "prune", "--cache", str(tmp_path / "c"), "--keep-dim", "32"]) == 2
    assert "--keep-dim needs --teacher" in capsys.readouterr().err

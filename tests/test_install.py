"""The README's install (`make`, an editable install) keeps working beside a folder named
like one of its packages (the README's examples put the cache in `./cache` until 2026-12-06).

Before 2026-12-06 setuptools' default editable finder ran after Python's path search, so
`python -m distill ...` (torchrun's way) or the README's Python snippet, started in a folder
holding `cache/`, imported that data folder as the `cache` package: "ImportError: cannot
import name 'ResponseCache' from 'cache' (unknown location)"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_cache_folder_in_the_working_directory_does_not_hide_the_cache_package(
    tmp_path: Path,
) -> None:
    (tmp_path / "cache" / "responses").mkdir(parents=True)
    (tmp_path / "distill").mkdir()
    (tmp_path / "vlmclient").mkdir()
    code = (
        "import cache, distill, vlmclient; from cache import ResponseCache; "
        "print(cache.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not done.stdout.strip().startswith(str(tmp_path)), done.stdout
    help_run = subprocess.run(
        [sys.executable, "-m", "distill", "--help"], cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert help_run.returncode == 0, help_run.stderr[-2000:]

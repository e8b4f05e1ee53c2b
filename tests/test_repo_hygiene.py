"""No file of the repository carries a merge's conflict markers (docs included: a doc with
``<<<<<<<`` in it once shipped)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(rb"^(<{7} |>{7} |={7}$)", re.M)


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [ROOT / p for p in out.decode().split("\0") if p]


def test_no_conflict_markers_in_tracked_files() -> None:
    bad = []
    for path in _tracked():
        if path.suffix in {".png", ".npy", ".safetensors", ".gz", ".zip"} or not path.is_file():
            continue
        if MARKER.search(path.read_bytes()):
            bad.append(str(path.relative_to(ROOT)))
    assert not bad, f"merge conflict markers in: {bad}"

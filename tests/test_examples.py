"""The examples a user copies actually run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_client_api_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "client_api.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "cached the second time: True" in out
    assert "refused before sending" in out

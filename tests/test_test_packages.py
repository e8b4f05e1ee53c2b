"""Any test folders can be run together: each is a package under ``tests``, so its
``conftest.py`` and modules get names of their own (``tests.data.conftest``, not a second
top-level ``conftest``). ``pytest tests/data tests/e2e`` used to stop at collection with
an import-file mismatch between the two folders' ``conftest.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_folder_is_a_package() -> None:
    folders = {p.parent for p in (ROOT / "tests").rglob("*.py")}
    assert [f for f in sorted(folders) if not (f / "__init__.py").is_file()] == []


def test_two_test_folders_collect_together() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/data", "tests/e2e"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]

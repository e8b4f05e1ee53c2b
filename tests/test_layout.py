"""Dependencies point one way: cache <- vlmclient <- distill; vlmclient never pays for torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fresh_modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_vlmclient_does_not_import_torch() -> None:
    mods = fresh_modules("import vlmclient, vlmclient.client")
    assert "torch" not in mods and "timm" not in mods
    assert not any(m == "distill" or m.startswith("distill.") for m in mods)


def test_cache_imports_nothing_of_ours() -> None:
    mods = fresh_modules("import cache")
    assert not any(m.split(".")[0] in {"vlmclient", "distill"} for m in mods)
    assert "torch" not in mods


def test_cli_help_does_not_import_torch() -> None:
    mods = fresh_modules("import distill.cli; distill.cli.build_parser()")
    assert "torch" not in mods

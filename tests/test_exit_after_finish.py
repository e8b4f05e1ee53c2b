"""A stop signal (Ctrl-C) after a command has finished: the interpreter's teardown that
follows takes about a second once torch is loaded, and a Ctrl-C in it ended a finished
`train` as interrupted (exit 130) and a finished `harvest --select` killed by the signal
(until 2026-12-08). The console script now exits at once with the command's own code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import atexit, os, signal, sys, time
import distill.cli as cli
cli.main = lambda argv=None: {code}  # a command that finished with this code
def teardown():  # the interpreter's teardown: the user presses Ctrl-C now
    os.kill(os.getpid(), signal.{signal})
    time.sleep(3)
    print("teardown went on", file=sys.stderr)
atexit.register(teardown)
cli.entry()
"""


@pytest.mark.parametrize(("code", "sig"), [(0, "SIGINT"), (3, "SIGINT"), (0, "SIGTERM")])
def test_a_stop_signal_in_the_teardown_keeps_the_command_s_exit_code(code: int, sig: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = PROBE.format(code=code, signal=sig)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == code, done.stderr
    assert "KeyboardInterrupt" not in done.stderr and "Traceback" not in done.stderr
    assert "teardown went on" not in done.stderr  # ended at the signal


def test_the_console_script_and_python_m_run_the_entry() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vlm-distill"] == "distill.cli:entry"
    assert "entry()" in (ROOT / "distill" / "__main__.py").read_text()

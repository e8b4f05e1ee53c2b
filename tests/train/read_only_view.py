"""The CLI in a child process on a folder it sees read-only, and whether it began the
long work before it was refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The CLI with ``module.name`` wrapped to say on stderr that it ran (the work a refusal
# must come before: loading the data, evaluating). The module is wrapped as the CLI imports
# it, not imported ahead: a refusal that comes before torch is imported costs no torch import.
_CODE = """\
import importlib.util
import sys

class Spy:
    def find_spec(self, fullname, path, target=None):
        if fullname != {module!r}:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        run_module = spec.loader.exec_module
        def exec_module(m):
            run_module(m)
            real = m.{name}
            def spy(*a, **k):
                print({marker!r}, file=sys.stderr)
                return real(*a, **k)
            m.{name} = spy
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Spy())
from distill.cli import main
sys.exit(main({argv!r}))
"""


def run_read_only(
    folder: Path, view: Path, argv: list[str], *, spy: str, marker: str
) -> subprocess.CompletedProcess[str]:
    """The CLI run with ``argv`` on ``folder`` seen read-only at ``view``, ``spy``
    ("package.module.function") printing ``marker`` on stderr when called: through
    ``chmod -R a-w`` for a user, through a read-only bind mount in a private mount namespace
    for root (file modes do not stop root)."""
    module, name = spy.rsplit(".", 1)
    code = _CODE.format(module=module, name=name, marker=marker, argv=argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    if os.geteuid() != 0:
        shutil.copytree(folder, view)
        subprocess.run(["chmod", "-R", "a-w", str(view)], check=True)
        try:
            return subprocess.run([sys.executable, "-c", code], capture_output=True,
                                  text=True, timeout=120, cwd=ROOT, env=env)  # fmt: skip
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(view)], check=True)
    if shutil.which("unshare") is None:
        pytest.skip("as root, needs unshare + mount to make a read-only view of a folder")
    view.mkdir()
    script = 'mount --bind "$1" "$2" && mount -o remount,ro,bind "$2" && shift 2 && exec "$@"'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         str(folder), str(view), sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip
    if marker not in done.stderr and "mount" in done.stderr:
        pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")
    return done

"""Replace a directory by another with no moment where neither exists.

Two renames (target aside, new into place) leave a window: a kill -9 between them leaves
no target at all. Linux's ``renameat2(RENAME_EXCHANGE)`` swaps two paths in one step, so
the target always names a complete directory; the old one is then at the new one's
former name, and is removed. Where the call is missing (other systems, some file
systems) the two renames are the fallback, and :func:`recover` repairs what a crash
between them leaves.

Leftover names carry the writer's pid (``<name>.tmp-<pid>-<hex>``, ``<name>.old-<pid>-<hex>``)
so a later open can tell a dead writer's leftovers from a live writer's work.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

__all__ = ["exchange", "leftover_name", "recover"]

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_LEFTOVER = re.compile(r"\.(tmp|old)-(\d+)-[0-9a-f]+$")


def _renameat2() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None  # glibc < 2.28, musl without it
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap ``a`` and ``b`` (both must exist); False if this system cannot."""
    if _RENAMEAT2 is None:
        return False
    rc = _RENAMEAT2(  # type: ignore[operator]
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE
    )
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # kernel or file system without RENAME_EXCHANGE
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def leftover_name(target: Path, kind: str) -> Path:
    """``<target>.<kind>-<pid>-<hex>``: a name :func:`recover` can attribute to a writer."""
    return target.with_name(f"{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def recover(target: Path, *, complete: str) -> list[Path]:
    """Repair and clean what dead writers of ``target`` left; returns what was removed.

    If ``target`` is missing (a crash between the two fallback renames), the newest
    complete leftover (the old version, or the new one its writer finished) is put back
    in its place. Every other
    dead writer's ``.tmp-*``/``.old-*`` is removed. ``complete`` names the file a finished
    directory always has (written last). Live writers' work is left alone.
    """
    parent = target.parent
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    dead: list[tuple[str, Path]] = []
    for name in names:
        if not name.startswith(target.name + "."):
            continue
        m = _LEFTOVER.search(name[len(target.name) :])
        if m is None or _alive(int(m.group(2))):
            continue
        dead.append((m.group(1), parent / name))
    if not target.exists():
        # A complete .tmp-* is a new version its writer finished but did not publish; an
        # .old-* is the version it replaced. Either is whole: the newest goes back.
        done = [p for _, p in dead if (p / complete).is_file()]
        done.sort(key=lambda p: (p / complete).stat().st_mtime, reverse=True)
        for p in done[:1]:
            try:
                os.rename(p, target)
                dead = [(k, q) for k, q in dead if q != p]
            except OSError:
                pass  # another process recovered it first
    removed = []
    for _, p in dead:
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed

"""An exclusive ``flock`` held while one process does what another must not do at once."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["held_lock"]


@contextmanager
def held_lock(path: Path, waiting: Callable[[], object] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the block: a lock file (made if
    missing, nothing written in it) or a folder (opened to read: nothing left beside it).
    Another process holding it: ``waiting`` is called, then this one waits for it. The
    lock goes with the process, kill -9 included; where it cannot be taken (a read-only
    folder for a new lock file, NFS without locks, Lustre without ``-o flock``) the block
    runs without it."""
    try:
        if path.is_dir():
            fd = os.open(path, os.O_RDONLY)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no locks on this file system: as before, unlocked
        yield
    finally:
        os.close(fd)

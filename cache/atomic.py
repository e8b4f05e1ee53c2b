"""Durable file writes: a file replaced in one step, and a folder's entries made durable.

:func:`atomic_write` is the one way this project writes a file that must never be seen
half-written (a run's config and state, selection state, weights): the bytes go to a
temporary file beside the target, which is flushed and fsynced, renamed over the target,
and then the folder is fsynced so the rename itself survives a power cut. A crash leaves
the old file or the new one, never part of one and never none.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .swap import leftover_name

__all__ = ["atomic_write", "atomic_write_csv", "atomic_write_files", "fsync_directory"]


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the names in ``directory`` durable (a no-op where directories cannot be
    opened or synced, as on some platforms and file systems)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Replace ``path`` with ``data`` (str is written as UTF-8) in one step, durably.

    The temporary file carries the writer's pid, so concurrent writers of one path (DDP
    ranks converting the same weights) never share one; the last rename wins.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = atomic_write(Path(d) / "state.json", '{"step": 1}\\n')
    ...     p.read_text(), sorted(f.name for f in Path(d).iterdir())
    ('{"step": 1}\\n', ['state.json'])
    """
    path = Path(path)
    atomic_write_files({path: data})
    return path


def atomic_write_files(files: Mapping[Path, bytes | str]) -> None:
    """Replace every file of ``files`` (path -> data) as :func:`atomic_write` does, all
    written before any is renamed in: a full disk or an error leaves every old file (a
    pair that belongs together, weights and their manifest, is never half replaced); only
    a crash between the renames, microseconds, can."""
    tmps: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            raw = data.encode("utf-8") if isinstance(data, str) else data
            tmps[path] = tmp = leftover_name(path, "tmp")
            with open(tmp, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        raise
    for folder in {path.parent for path in files}:
        fsync_directory(folder)


def atomic_write_csv(path: str | os.PathLike[str], rows: Iterable[Sequence[object]]) -> Path:
    """Replace ``path`` with ``rows`` as CSV (UTF-8), as :func:`atomic_write` does: a
    crash or a full disk mid-write leaves the old file (or none), never the first rows of
    the new one, which a reader would take for a smaller file without a word.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     atomic_write_csv(Path(d) / "m.csv", [("path", "label"), ("a b.png", "7")]).read_bytes()
    b'path,label\\r\\na b.png,7\\r\\n'
    """
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    return atomic_write(path, text.getvalue())

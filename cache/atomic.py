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
import shutil
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
    written before any is renamed in, so a pair that belongs together (weights and their
    manifest) is not half replaced.

    An error (a full disk while writing; a rename refused part-way, say the second target
    is a folder) leaves every old file: each old file is kept aside under a hard link (a
    copy where the file system has none) until every rename succeeded, and the ones already
    renamed over are put back (a file that did not exist before is removed again; an old
    file that cannot be put back stays beside it as ``<name>.old-<pid>-<hex>``). What no
    sequence of renames can avoid: a crash or kill -9 *between* two renames (microseconds)
    leaves the first files new and the rest old, with the old versions still beside them
    as ``<name>.old-<pid>-<hex>`` (and any unrenamed ``<name>.tmp-<pid>-<hex>``); nothing
    removes those for you. With a single file there is no such window.
    """
    tmps: dict[Path, Path] = {}
    olds: dict[Path, Path | None] = {}  # path -> its old version kept aside (None: no file)
    renamed: list[Path] = []
    try:
        for path, data in files.items():
            raw = data.encode("utf-8") if isinstance(data, str) else data
            tmps[path] = tmp = leftover_name(path, "tmp")
            with open(tmp, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
        if len(tmps) > 1:
            for path in tmps:
                olds[path] = _keep_aside(path)
        for path, tmp in tmps.items():
            os.replace(tmp, path)
            renamed.append(path)
    except BaseException:
        for path in reversed(renamed):
            if not _put_back(path, olds.get(path)):
                olds.pop(path)  # its old version stays beside it: the only copy left
        for leftover in [*tmps.values(), *olds.values()]:
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        raise
    for old in olds.values():
        if old is not None:
            old.unlink(missing_ok=True)
    for folder in {path.parent for path in files}:
        fsync_directory(folder)


def _keep_aside(path: Path) -> Path | None:
    """A second name for ``path``'s current file (None if there is no regular file there)."""
    if not path.is_file():
        return None  # nothing to restore (or a folder, which no rename of a file replaces)
    old = leftover_name(path, "old")
    try:
        os.link(path, old)
    except OSError:
        try:
            shutil.copy2(path, old)  # a file system without hard links
        except BaseException:
            old.unlink(missing_ok=True)
            raise
    return old


def _put_back(path: Path, old: Path | None) -> bool:
    """Undo a rename of :func:`atomic_write_files`; False if that failed too (the first
    error is the one raised)."""
    try:
        if old is None:
            path.unlink(missing_ok=True)
        else:
            os.replace(old, path)
    except OSError:
        return False
    return True


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

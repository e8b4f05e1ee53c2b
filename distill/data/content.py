"""What a dataset's files hold, summed up, so a store can tell whether the images it was
harvested from are still the ones on disk.

The dataset fingerprint (:meth:`Dataset.fingerprint`) sees ids, labels and domains, not the
bytes: a photo replaced in place under the same name keeps it, and the teacher's targets of
the old photo would train the student on the new one. A store therefore records two digests
of its images (:func:`files_meta`): one of every file's size and modification time (cheap:
one ``stat`` per file) and one of every file's content (the sha256 of each file's sha256
and id: a few bytes in meta.json whatever the data's size). :func:`check_files` compares
the first and, only when it differs (a copy, a ``touch``, an edit), the second.

>>> import tempfile
>>> from pathlib import Path
>>> from distill.data import scan
>>> root = Path(tempfile.mkdtemp()) / "d"
>>> _ = (root / "cat").mkdir(parents=True)
>>> from PIL import Image
>>> Image.new("RGB", (4, 4)).save(root / "cat" / "1.png")
>>> ds = scan(root)
>>> meta = files_meta(ds)
>>> check_files(meta, ds, "the store")  # unchanged: nothing said
>>> Image.new("RGB", (4, 4), "white").save(root / "cat" / "1.png")
>>> check_files(meta, ds, "the store")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
vlmclient.errors.ConfigurationError: the store was harvested ... (modified since: cat/1.png); ...
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from vlmclient.errors import ConfigurationError

from .dataset import Dataset, Sample

__all__ = [
    "CONTENT_KEY",
    "FILES_KEY",
    "LEFT_OUT_KEY",
    "STAT_KEY",
    "check_files",
    "files_meta",
    "left_out",
]

log = logging.getLogger(__name__)

# The store's meta.json key holding {"stat": digest, "content": digest}.
FILES_KEY = "files"
STAT_KEY = "stat"
CONTENT_KEY = "content"
# ... and the list of the images the store was written without, their pixels could not be
# decoded: [{"id": image id, "reason": why}, ...] (train and eval leave them out)
LEFT_OUT_KEY = "left_out"
_CHUNK = 1 << 20


def _digest(dataset: Dataset, line: Callable[[Sample], str]) -> str:
    digest = hashlib.sha256()
    for s in dataset.samples:
        digest.update(f"{s.id}\0{line(s)}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _stat(s: Sample) -> str:
    return _stat_line(os.stat(s.path))


def _stat_line(st: os.stat_result) -> str:
    return f"{st.st_size}\0{st.st_mtime_ns}"


def _sha256(s: Sample) -> str:
    with open(s.path, "rb") as f:
        return _sha256_of(f)


def _sha256_of(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def files_meta(
    dataset: Dataset, seen: Callable[[int, str], None] | None = None
) -> dict[str, Any]:
    """``{"files": {"stat": digest, "content": digest}}`` for a store's meta.json: one
    pass, each file opened once (its stat taken from the open file). ``seen(row, sha256)``
    is told each file's digest (a harvest checks it is what it sent)."""
    stat, content = hashlib.sha256(), hashlib.sha256()
    for row, s in enumerate(dataset.samples):
        with open(s.path, "rb") as f:
            stat_line, sha = _stat_line(os.fstat(f.fileno())), _sha256_of(f)
        if seen is not None:
            seen(row, sha)
        stat.update(f"{s.id}\0{stat_line}\n".encode("utf-8", "surrogateescape"))
        content.update(f"{s.id}\0{sha}\n".encode("utf-8", "surrogateescape"))
    return {FILES_KEY: {STAT_KEY: stat.hexdigest(), CONTENT_KEY: content.hexdigest()}}


def left_out(meta: Mapping[str, Any], dataset: Dataset) -> list[str]:
    """The ids of ``dataset``'s images a store (``meta``: its meta.json) was written
    without, their pixels could not be decoded when it was harvested; only for the store
    of this very dataset (the same fingerprint), [] for another."""
    entries = meta.get(LEFT_OUT_KEY)
    if not isinstance(entries, list) or meta.get("dataset_fingerprint") != dataset.fingerprint():
        return []
    return sorted(str(e["id"]) for e in entries if isinstance(e, dict) and "id" in e)


def check_files(meta: Mapping[str, Any], dataset: Dataset, where: str) -> None:
    """ConfigurationError when the dataset's files hold other content than when ``meta``
    (a store's meta.json) was written; a store without the record (written before it
    existed) is not checked."""
    record = meta.get(FILES_KEY)
    if not isinstance(record, dict) or not record.get(CONTENT_KEY):
        return
    try:
        if record.get(STAT_KEY) == _digest(dataset, _stat):
            return
        started = time.perf_counter()
        if record[CONTENT_KEY] == _digest(dataset, _sha256):
            # copied or touched, same bytes: said, since every run reads them all again
            log.warning(
                "%s: the images' sizes or modification times differ from the harvest's (a "
                "copy?), so their content was checked (%.1f s: the same images). A new "
                "harvest of this data records the new times and skips this check; it sends "
                "nothing (every answer is cached)",
                where, time.perf_counter() - started,
            )
            return
        created = float(meta.get("created", 0.0))
        newer = [s.id for s in dataset.samples if os.stat(s.path).st_mtime > created]
    except OSError as exc:
        raise ConfigurationError(f"cannot read the dataset's images: {exc}") from exc
    hint = f" (modified since: {', '.join(newer[:3])})" if newer else ""
    raise ConfigurationError(
        f"{where} was harvested from other image content: a file of this dataset was "
        f"replaced or edited since{hint}; harvest again (unchanged images are cache hits, "
        "changed ones are bought once)"
    )

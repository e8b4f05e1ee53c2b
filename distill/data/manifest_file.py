"""Writing a CSV manifest (``path,label,domain``) with its dataset description.

A manifest made from a dataset keeps what the dataset's ``dataset.json`` says (``hflip``:
whether a mirror image is the same class in the same domain) in ``NAME.dataset.json``
beside ``NAME.csv``; :func:`distill.data.scan` reads it back, as it reads a folder's
``dataset.json``. A manifest with nothing beside it allows flips, as a folder does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .dataset import META_FILE

__all__ = ["MANIFEST_COLUMNS", "manifest_meta", "write_manifest_rows"]


# the header every manifest we write starts with
MANIFEST_COLUMNS = ("path", "label", "domain")


def manifest_meta(manifest: Path) -> Path:
    """The description beside a manifest: ``labels.csv`` -> ``labels.dataset.json``.

    >>> manifest_meta(Path("out/labels.csv")).as_posix()
    'out/labels.dataset.json'
    """
    return manifest.with_suffix("." + META_FILE)


def write_manifest_rows(path: Path, rows: Iterable[tuple[str, str, str]], *, hflip: bool) -> None:
    """Write ``path`` (header ``path,label,domain``, then ``rows``) and its description.

    The description is written every time, flips allowed or not: one left by an earlier
    manifest of that name would otherwise speak for this one.
    """
    from cache import atomic_write, atomic_write_csv

    path.parent.mkdir(parents=True, exist_ok=True)
    # each atomically: a crash or a full disk mid-write leaves the old file (or none),
    # never the first rows of a manifest that `train` would read as a smaller data set
    # (the rows first: a write that fails leaves no description of a manifest not written)
    atomic_write_csv(path, [MANIFEST_COLUMNS, *rows])
    atomic_write(manifest_meta(path), json.dumps({"hflip": hflip}) + "\n")

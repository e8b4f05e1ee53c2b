"""Image datasets on disk: layouts, class lists, skipped files, held-out splits.

Four layouts are understood (see :func:`scan`)::

    DATA/<domain>/<class>/<image>     "domainbed"  (several domains)
    DATA/<class>/<image>              "single"     (one domain, named "all")
    DATA.csv  (path,label,domain)     "manifest"   (label and domain optional)
    DATA/<image>                      "unlabelled" (one domain "all", no labels)

Nothing here decodes pixels or imports torch: ``harvest`` uses it in client-only installs.
Files that cannot be used (corrupt, truncated, zero bytes, not an image, too large, unreadable)
are never fatal: they are listed in :attr:`Dataset.skipped` with a reason.

Sample ids are POSIX paths relative to the data root (or the manifest's path strings). On
Linux a file name may hold bytes that are not UTF-8; such ids carry them as lone surrogates
(Python's ``surrogateescape``), so ``root / id`` is still the file. Encode ids with
``id.encode("utf-8", "surrogateescape")`` (or ``json.dumps`` with its default
``ensure_ascii=True``) and show them with :func:`display`.

This module is the entry point (:func:`scan`); the types and class names live in
:mod:`distill.data.dataset`, the folder layouts in :mod:`distill.data.scan_folder` and the
manifest in :mod:`distill.data.scan_manifest`. Their public names are re-exported here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from .dataset import (
    DEFAULT_DOMAIN,
    DEFAULT_TEMPLATE,
    META_FILE,
    DataArgumentError,
    DataError,
    Dataset,
    Sample,
    class_prompts,
    display,
    read_class_file,
)
from .scan_folder import scan_folder
from .scan_manifest import scan_manifest

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TEMPLATE",
    "META_FILE",
    "DataError",
    "Dataset",
    "Sample",
    "class_prompts",
    "display",
    "read_class_file",
    "scan",
]

def scan(
    data: str | os.PathLike[str],
    *,
    class_file: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
    decode: bool = False,
    allow_outside_paths: bool = False,
) -> Dataset:
    """Find the images of a data folder or CSV manifest, their labels and domains.

    - ``DATA/<domain>/<class>/<image>``: "domainbed" (a top-level folder holding folders);
    - ``DATA/<class>/<image>``: "single", one domain named "all";
    - a CSV file ``path,label,domain`` (header optional; label and domain may be empty or
      missing; paths relative to the CSV's folder): "manifest";
    - ``DATA/<image>`` with no sub-folders: "unlabelled".

    Classes are the class folders (or manifest labels) sorted by name, unless ``class_file``
    (one name per line) fixes the list and its order; labelled images whose class is not in
    it are skipped. Names are compared in Unicode NFC: a folder copied from macOS (NFD) is
    the same class as its NFC spelling; ``classes`` gives such a list itself (as a run or
    a store records it). Hidden files and folders are ignored; a vlm-distill cache or run
    folder inside the data is skipped with a reason, and so is a symlinked domain or class
    folder leading back into the data (``ln -s . DATA/self``); ``DATA/dataset.json`` is
    read as metadata (``{"hflip": false}``). Unusable files are skipped with a reason, never fatal.
    ``decode=True`` also decodes every image (slow; catches corrupt pixel data). A
    manifest may only name files under its own folder unless ``allow_outside_paths``.
    Class names with control characters (newlines, escapes) are refused.

    Raises :class:`DataError` when nothing usable is found, with the reasons.

    >>> ds = scan("digits")  # doctest: +SKIP
    >>> ds.samples[0]  # doctest: +SKIP
    Sample(id='colour/0_zero/d0003.png', path=PosixPath('.../digits/colour/0_zero/d0003.png'),
           label=0, domain='colour')
    """
    path = Path(os.path.abspath(os.fspath(data)))
    if class_file is not None and classes is not None:
        raise ValueError("give class_file or classes, not both")
    names = read_class_file(class_file) if class_file is not None else None
    if classes is not None:
        names = tuple(classes)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataArgumentError(
            f"data path {display(os.fspath(data))!r} does not exist"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read {display(os.fspath(data))!r}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        return scan_folder(path, names, decode)
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device: reading it waited forever
        raise DataArgumentError(
            f"data path {display(os.fspath(data))!r} is neither a folder nor a CSV manifest "
            "file (a pipe or a device?)"
        )
    return scan_manifest(path, names, decode, allow_outside_paths)

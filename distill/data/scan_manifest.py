"""Scanning a CSV manifest (``path,label,domain``): the "manifest" layout of
:func:`distill.data.scan`; ``NAME.dataset.json`` beside ``NAME.csv`` is its description
(:mod:`distill.data.manifest_file`).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from vlmclient.errors import ConfigurationError

from .dataset import (
    DEFAULT_DOMAIN,
    NOT_IN_CLASS_FILE,
    DataError,
    Dataset,
    SamplesBuilder,
    class_key,
    class_names_of,
    display,
    finish_dataset,
    read_hflip,
)
from .images import check_image, sniff_image
from .manifest_file import manifest_meta

__all__ = ["scan_manifest"]

def _outside(base: Path, file: str) -> bool:
    """True when ``file`` (absolute and normalised) is not under ``base``, by its name or,
    through symbolic links, by where it really is."""
    root = os.fspath(base)
    if os.path.commonpath([root, file]) != root:
        return True
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(file)]) != real_root


def scan_manifest(
    path: Path, class_file_names: tuple[str, ...] | None, decode: bool, allow_outside: bool
) -> Dataset:
    """The dataset a CSV manifest (path,label,domain) lists; paths outside its folder are
    refused (ConfigurationError) unless ``allow_outside``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read manifest {display(str(path))!r}: {exc.strerror}") from exc
    if sniff_image(raw[:32]) is not None:
        raise DataError(
            f"{display(str(path))!r} is a single image; give a folder of images or a CSV "
            "manifest (path,label,domain)"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"manifest {display(str(path))!r} is not UTF-8 text (a CSV with path,label,domain "
            f"is expected): {exc}"
        ) from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [r for r in reader if any(c.strip() for c in r)]
    except csv.Error as exc:
        # e.g. a quote opened and never closed: the rest of the file is one field, past
        # csv's 131,072 characters after a few thousand rows
        raise DataError(
            f"manifest {display(str(path))!r} is not a readable CSV (line {reader.line_num}: "
            f"{exc}); look for a quote that is opened and never closed"
        ) from exc
    if not rows:
        raise DataError(f"manifest {display(str(path))!r} is empty")
    columns = ["path", "label", "domain"]
    first = [c.strip().lower() for c in rows[0]]
    start = 0
    if "path" in first:
        unknown = [c for c in first if c not in columns]
        if unknown:
            raise DataError(
                f"manifest {display(str(path))!r}: unknown column(s) {unknown}; "
                "expected path,label,domain"
            )
        columns, start = first, 1
    base = path.parent
    skipped: list[tuple[str, str]] = []
    entries: list[tuple[str, str | None, str]] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(rows[start:], start=start + 1):
        cells = dict(zip(columns, (c.strip() for c in row), strict=False))
        rel = cells.get("path", "")
        if not rel:
            skipped.append((f"row {lineno}", "empty path"))
            continue
        if "\0" in rel:  # no file is named so (a zero-filled end left by a crash)
            skipped.append((rel, "path holds a NUL byte"))
            continue
        key = os.path.normpath(os.path.join(base, rel))
        if key in seen:
            skipped.append((rel, f"duplicate of row {seen[key]}"))
            continue
        seen[key] = lineno
        entries.append((rel, cells.get("label") or None, cells.get("domain") or DEFAULT_DOMAIN))
    if not allow_outside:
        # The images are uploaded to a paid API: a manifest from elsewhere must not pick
        # arbitrary files of this machine (absolute paths, ../, links out of the folder).
        outside = [rel for rel, _, _ in entries if _outside(base, os.path.normpath(base / rel))]
        if outside:
            shown = ", ".join(repr(display(r)) for r in outside[:3])
            # A usage error (exit 2) like a missing flag: the fix is to vouch for the file.
            raise ConfigurationError(
                f"manifest {display(str(path))!r} lists {len(outside)} path(s) outside its "
                f"folder (e.g. {shown}); only files under {display(str(base))!r} are used "
                "unless you give --allow-outside-paths"
            )
    if not entries and not skipped:
        raise DataError(f"manifest {display(str(path))!r} has a header but no rows")

    if class_file_names is not None:
        class_names = class_file_names
    else:
        class_names = class_names_of(lab for _, lab, _ in entries if lab is not None)
    index = {class_key(n): i for i, n in enumerate(class_names)}
    samples = SamplesBuilder(base)  # by column; a sample's file is base / rel
    domains: set[str] = set()
    left_out: dict[tuple[str, str], int] = {}
    base_str = os.fspath(base)
    for rel, label, domain in entries:
        if label is not None and class_key(label) not in index:
            skipped.append((rel, f"label {label!r} {NOT_IN_CLASS_FILE}"))
            left_out[domain, label] = left_out.get((domain, label), 0) + 1
            continue
        # a str path for the check (an absolute rel is the file itself, as in base / rel)
        reason = check_image(os.path.join(base_str, rel), decode=decode)
        if reason is not None:
            skipped.append((rel, "file not found" if "No such file" in reason else reason))
            continue
        domains.add(domain)
        samples.add(rel, None if label is None else index[class_key(label)], domain)
    hflip = read_hflip(manifest_meta(path))  # written by our manifest writers
    return finish_dataset(
        path, "manifest", samples, class_names, sorted(domains), skipped, hflip, left_out
    )

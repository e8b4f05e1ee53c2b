"""Scanning a data folder: the "domainbed", "single" and "unlabelled" layouts of
:func:`distill.data.scan`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .dataset import DEFAULT_DOMAIN, META_FILE, DataError, Dataset, Sample, display, finish_dataset
from .images import check_image

__all__ = ["scan_folder"]

# Folders some archivers add that are never data.
_JUNK_DIRS = frozenset({"__MACOSX"})


class _Scan:
    """Mutable state of one scan: samples found, and skipped paths with reasons."""

    def __init__(self, root: Path, decode: bool) -> None:
        self.root = root
        self.decode = decode
        self.skipped: list[tuple[str, str]] = []
        self.seen_images = 0

    def rel(self, parts: Sequence[str]) -> str:
        return "/".join(parts)

    def listdir(self, parts: Sequence[str]) -> list[os.DirEntry[str]] | None:
        """Visible entries of a folder, or None (and a skip entry) when it cannot be read."""
        path = self.root.joinpath(*parts)
        try:
            with os.scandir(path) as it:
                entries = [e for e in it if not e.name.startswith(".")]
        except OSError as exc:
            self.skipped.append((self.rel(parts) or ".", f"cannot read folder: {exc.strerror}"))
            return None
        return sorted(entries, key=lambda e: e.name)

    def is_dir(self, entry: os.DirEntry[str]) -> bool:
        try:
            return entry.is_dir()
        except OSError:
            return False

    def image(self, parts: Sequence[str]) -> bool:
        """True when the file is usable; otherwise records why not."""
        self.seen_images += 1
        reason = check_image(self.root.joinpath(*parts), decode=self.decode)
        if reason is not None:
            self.skipped.append((self.rel(parts), reason))
            return False
        return True


def _read_meta(root: Path) -> bool:
    """The dataset's hflip flag from DATA/dataset.json (True when absent or unreadable)."""
    try:
        meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not (isinstance(meta, dict) and meta.get("hflip") is False)


def scan_folder(root: Path, class_file_names: tuple[str, ...] | None, decode: bool) -> Dataset:
    """The dataset of the folder ``root`` (see :func:`distill.data.scan` for the layouts)."""
    sc = _Scan(root, decode)
    top = sc.listdir([])
    if top is None:
        raise DataError(f"cannot read data folder {display(str(root))!r}: {sc.skipped[-1][1]}")
    top_dirs = [e for e in top if sc.is_dir(e)]
    top_files = [e for e in top if not sc.is_dir(e) and e.name != META_FILE]
    for e in top_dirs:
        if e.name in _JUNK_DIRS:
            sc.skipped.append((e.name, "archive metadata folder, not data"))
    top_dirs = [e for e in top_dirs if e.name not in _JUNK_DIRS]

    # (domain, class folder, [file names]) for every labelled folder found.
    groups: list[tuple[str, str, list[str]]] = []
    if not top_dirs:
        layout = "unlabelled"
        files = [e.name for e in top_files]
        raw: list[tuple[str, str | None, list[str]]] = [(DEFAULT_DOMAIN, None, files)]
        domains: list[str] = [DEFAULT_DOMAIN]
    else:
        listings: dict[str, list[os.DirEntry[str]]] = {}
        unreadable: list[str] = []
        for e in top_dirs:
            entries = sc.listdir([e.name])
            if entries is None:
                unreadable.append(e.name)
            else:
                listings[e.name] = entries
        # DomainBed when most top-level folders hold folders; a stray sub-folder inside one
        # class of a single-domain set (or a stray file in a domain) does not flip the layout.
        with_dirs = sum(any(sc.is_dir(c) for c in ents) for ents in listings.values())
        flat = sum(bool(ents) and not any(sc.is_dir(c) for c in ents) for ents in listings.values())
        nested = with_dirs > 0 and with_dirs >= flat
        if not nested:
            # An unreadable class folder still names a class: dropping it would shift the
            # labels of every class after it.
            listings.update((name, []) for name in unreadable)
        layout = "domainbed" if nested else "single"
        why = "DATA/<domain>/<class>/<image>" if nested else "DATA/<class>/<image>"
        for e in top_files:
            sc.skipped.append((e.name, f"not in a class folder (layout {why})"))
        if nested:
            for domain, ents in sorted(listings.items()):
                for c in ents:
                    if not sc.is_dir(c):
                        sc.skipped.append((f"{domain}/{c.name}", f"not in a class folder ({why})"))
                        continue
                    sub = sc.listdir([domain, c.name])
                    if sub is None:
                        groups.append((domain, c.name, []))  # keeps the class and its label
                        continue
                    files = []
                    for f in sub:
                        if sc.is_dir(f):
                            sc.skipped.append(
                                (f"{domain}/{c.name}/{f.name}", "folder below class level ignored")
                            )
                        else:
                            files.append(f.name)
                    groups.append((domain, c.name, files))
        else:
            for cls, ents in sorted(listings.items()):
                for f in ents:
                    if sc.is_dir(f):
                        sc.skipped.append((f"{cls}/{f.name}", "folder below class level ignored"))
                groups.append((DEFAULT_DOMAIN, cls, [f.name for f in ents if not sc.is_dir(f)]))
        raw = [(d, c, f) for d, c, f in groups]
        # A domain is a top-level folder holding at least one class folder.
        domains = sorted({d for d, _, _ in groups}) if nested else [DEFAULT_DOMAIN]

    folder_classes = sorted({c for _, c, _ in raw if c is not None})
    class_names = class_file_names if class_file_names is not None else tuple(folder_classes)
    index = {n: i for i, n in enumerate(class_names)}

    samples: list[Sample] = []
    for domain, folder, files in raw:
        prefix = [] if folder is None else ([folder] if layout == "single" else [domain, folder])
        if folder is not None and folder not in index:
            sc.skipped.append(
                ("/".join(prefix), f"class folder {folder!r} is not in the class file")
            )
            continue
        label = None if folder is None else index[folder]
        for name in files:
            parts = [*prefix, name]
            if sc.image(parts):
                samples.append(Sample(sc.rel(parts), root.joinpath(*parts), label, domain))

    return finish_dataset(root, layout, samples, class_names, domains, sc.skipped, _read_meta(root))

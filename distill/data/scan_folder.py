"""Scanning a data folder: the "domainbed", "single" and "unlabelled" layouts of
:func:`distill.data.scan`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cache.layout import RESPONSES_DIR, SELECT_DIR, STORES_DIR, holds_cache

from .dataset import (
    DEFAULT_DOMAIN,
    META_FILE,
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
from .images import check_image

__all__ = ["scan_folder"]

# Folders some archivers add that are never data.
_JUNK_DIRS = frozenset({"__MACOSX"})
# A cache kept in DATA itself (`--cache DATA`): its folders are not classes.
_CACHE_PARTS = frozenset({RESPONSES_DIR, STORES_DIR, SELECT_DIR})
# A run folder of `vlm-distill train` (distill/train/trainer.py): its config.json beside
# its checkpoint/, log.jsonl or metrics.json (a killed run, a finished or zero-shot one).
_RUN_CONFIG = "config.json"
_RUN_MARKERS = ("checkpoint", "log.jsonl", "metrics.json")


class _Scan:
    """Mutable state of one scan: samples found, and skipped paths with reasons."""

    def __init__(self, root: Path, decode: bool) -> None:
        self.root = root
        self.root_str = os.fspath(root)
        self.real_root = os.path.realpath(root)
        self.decode = decode
        self.skipped: list[tuple[str, str]] = []
        self.seen_images = 0

    def rel(self, parts: Sequence[str]) -> str:
        return "/".join(parts)

    def listdir(self, parts: Sequence[str]) -> tuple[list[str], list[str]] | None:
        """Names of the visible sub-folders and files of a folder, each sorted, or None
        (and a skip entry) when it cannot be read. Names only: a scan of 100k files must
        not hold 100k ``DirEntry`` objects while it builds the samples. Sub-folders that are
        vlm-distill's own (:func:`_not_data`) or symlinks leading back into the data
        (:meth:`loops_back`) are left out, with a skip entry."""
        path = os.path.join(self.root_str, *parts)
        dirs: list[str] = []
        files: list[str] = []
        links: set[str] = set()
        try:
            with os.scandir(path) as it:
                for e in it:
                    if not e.name.startswith("."):
                        (dirs if _is_dir(e) else files).append(e.name)
                        if _is_link(e):
                            links.add(e.name)
        except OSError as exc:
            self.skipped.append((self.rel(parts) or ".", f"cannot read folder: {exc.strerror}"))
            return None
        dirs.sort()
        files.sort()
        kept = []
        for name in dirs:
            why = None
            if name in links and len(parts) < 2:  # deeper folders are never read
                why = self.loops_back(path, name)
            if why is None:
                why = _not_data(os.path.join(path, name))
            if why is None:
                kept.append(name)
            else:
                self.skipped.append((self.rel([*parts, name]), why))
        return kept, files

    def loops_back(self, folder: str, name: str) -> str | None:
        """Why the symlinked folder ``folder/name`` is not read: it leads to the data
        itself, a folder of it, or a folder holding it (``ln -s . DATA/self``, a link to a
        parent). Read, it was a bogus domain or class (whose class prompts harvest bought)
        or the same images under a second name. None for a link to a folder outside the
        data (a domain or class kept elsewhere), which is read as any folder."""
        target = os.path.realpath(os.path.join(folder, name))
        if _within(target, self.real_root):
            return "a symlink to a folder inside the data, skipped"
        if _within(self.real_root, target) or _within(os.path.realpath(folder), target):
            return "a symlink to a folder holding the data (a loop), skipped"
        return None

    def image(self, parts: Sequence[str]) -> bool:
        """True when the file is usable; otherwise records why not."""
        self.seen_images += 1
        # a str path: a Path per file would also intern its name (sys.intern's table
        # keeps the size it grew to)
        reason = check_image(os.path.join(self.root_str, *parts), decode=self.decode)
        if reason is not None:
            self.skipped.append((self.rel(parts), reason))
            return False
        return True


def _not_data(folder: str) -> str | None:
    """Why ``folder`` is vlm-distill's own (a cache or a run folder kept in DATA), never
    data: read as a class or a domain, it changed the class list on every scan after the
    first harvest (and so the dataset's fingerprint). None for any other folder."""
    if holds_cache(folder):
        return "a vlm-distill cache folder, not data"
    if os.path.isfile(os.path.join(folder, _RUN_CONFIG)) and any(
        os.path.exists(os.path.join(folder, name)) for name in _RUN_MARKERS
    ):
        return "a vlm-distill run folder, not data"
    return None


def _within(path: str, folder: str) -> bool:
    """Whether the real path ``path`` is ``folder`` or below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def scan_folder(root: Path, class_file_names: tuple[str, ...] | None, decode: bool) -> Dataset:
    """The dataset of the folder ``root`` (see :func:`distill.data.scan` for the layouts)."""
    sc = _Scan(root, decode)
    top = sc.listdir([])
    if top is None:
        raise DataError(f"cannot read data folder {display(str(root))!r}: {sc.skipped[-1][1]}")
    top_dirs, top_files = top
    top_files = [name for name in top_files if name != META_FILE]
    cache_parts = _CACHE_PARTS if holds_cache(root) else frozenset()
    for name in top_dirs:
        if name in _JUNK_DIRS:
            sc.skipped.append((name, "archive metadata folder, not data"))
        elif name in cache_parts:
            sc.skipped.append((name, "part of the vlm-distill cache in the data folder"))
    top_dirs = [name for name in top_dirs if name not in _JUNK_DIRS | cache_parts]

    # (domain, class folder, [file names]) for every labelled folder found.
    groups: list[tuple[str, str, list[str]]] = []
    if not top_dirs:
        layout = "unlabelled"
        raw: list[tuple[str, str | None, list[str]]] = [(DEFAULT_DOMAIN, None, top_files)]
        domains: list[str] = [DEFAULT_DOMAIN]
    else:
        listings: dict[str, tuple[list[str], list[str]]] = {}
        unreadable: list[str] = []
        for name in top_dirs:
            entries = sc.listdir([name])
            if entries is None:
                unreadable.append(name)
            else:
                listings[name] = entries
        # DomainBed when most top-level folders hold folders; a stray sub-folder inside one
        # class of a single-domain set (or a stray file in a domain) does not flip the layout.
        # A folder holding both is read by what it holds more of: a class's images beside
        # one thumbnail folder made it a domain, and two such classes a DomainBed set.
        with_dirs = sum(bool(dirs) and len(dirs) >= len(files) for dirs, files in listings.values())
        flat = sum(len(files) > len(dirs) for dirs, files in listings.values())
        nested = with_dirs > 0 and with_dirs >= flat
        if not nested:
            # An unreadable class folder still names a class: dropping it would shift the
            # labels of every class after it.
            listings.update((name, ([], [])) for name in unreadable)
        layout = "domainbed" if nested else "single"
        why = "DATA/<domain>/<class>/<image>" if nested else "DATA/<class>/<image>"
        for name in top_files:
            sc.skipped.append((name, f"not in a class folder (layout {why})"))
        if nested:
            for domain, (classes, strays) in sorted(listings.items()):
                if not classes and not strays:
                    sc.skipped.append((domain, "empty folder: no class folders, so not a domain"))
                for name in strays:
                    sc.skipped.append((f"{domain}/{name}", f"not in a class folder ({why})"))
                for cls in classes:
                    sub = sc.listdir([domain, cls])
                    if sub is None:
                        groups.append((domain, cls, []))  # keeps the class and its label
                        continue
                    for name in sub[0]:
                        sc.skipped.append(
                            (f"{domain}/{cls}/{name}", "folder below class level ignored")
                        )
                    groups.append((domain, cls, sub[1]))
        else:
            for cls, (subdirs, files) in sorted(listings.items()):
                for name in subdirs:
                    sc.skipped.append((f"{cls}/{name}", "folder below class level ignored"))
                groups.append((DEFAULT_DOMAIN, cls, files))
        raw = [(d, c, f) for d, c, f in groups]
        # A domain is a top-level folder holding at least one class folder.
        domains = sorted({d for d, _, _ in groups}) if nested else [DEFAULT_DOMAIN]

    # names compared after NFC: a class folder copied from macOS (NFD) is the same class
    class_names = (
        class_file_names
        if class_file_names is not None
        else class_names_of(c for _, c, _ in raw if c is not None)
    )
    index = {class_key(n): i for i, n in enumerate(class_names)}

    samples = SamplesBuilder(root)  # by column: ids, labels, domains; no object per image
    left_out: dict[tuple[str, str], int] = {}
    for domain, folder, files in raw:
        prefix = [] if folder is None else ([folder] if layout == "single" else [domain, folder])
        if folder is not None and class_key(folder) not in index:
            sc.skipped.append(("/".join(prefix), f"class folder {folder!r} {NOT_IN_CLASS_FILE}"))
            left_out[domain, folder] = left_out.get((domain, folder), 0) + len(files)
            continue
        label = None if folder is None else index[class_key(folder)]
        for name in files:
            parts = [*prefix, name]
            if sc.image(parts):
                samples.add(sc.rel(parts), label, domain)

    hflip = read_hflip(root / META_FILE)
    return finish_dataset(root, layout, samples, class_names, domains, sc.skipped, hflip, left_out)

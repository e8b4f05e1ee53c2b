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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from vlmclient.errors import ConfigurationError, InputError

from .images import check_image, sniff_image

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

DEFAULT_DOMAIN = "all"
DEFAULT_TEMPLATE = "a photo of a {}"
# Optional dataset description written by our dataset builders, e.g. {"hflip": false}.
META_FILE = "dataset.json"
# Folders some archivers add that are never data.
_JUNK_DIRS = frozenset({"__MACOSX"})



class DataError(InputError):
    """The data cannot be used as a whole (missing, empty, bad manifest or class file)."""


@dataclass(frozen=True)
class Sample:
    """One image: ``id`` is its POSIX path relative to the data root (or the manifest's string)."""

    id: str
    path: Path
    label: int | None
    domain: str


def _sample_id(sample: Sample) -> str:
    return sample.id


@dataclass(frozen=True)
class Dataset:
    """The usable images of a data folder or manifest, and what was skipped and why.

    >>> ds = scan("DATA")  # doctest: +SKIP
    >>> ds.layout, ds.domains, ds.class_names[:2], len(ds.samples)  # doctest: +SKIP
    ('domainbed', ('colour', 'inverted'), ('0_zero', '1_one'), 898)
    """

    root: Path
    layout: str
    samples: tuple[Sample, ...]
    class_names: tuple[str, ...]
    domains: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    # False when the dataset says a mirror image changes the class (digits) or the domain
    # (rotations); views then never flip. Read from DATA/dataset.json.
    hflip: bool = True

    def __len__(self) -> int:
        return len(self.samples)

    def fingerprint(self) -> str:
        """sha256 of the sorted (id, label, domain) triples and the class names.

        It changes when an image is added, removed, relabelled or moved to another domain,
        or when the class list or its order changes; not when files are merely reordered.
        """
        # The hash of json.dumps({"class_names": [...], "samples": sorted(rows)}, sort_keys,
        # compact, ensure_ascii), fed row by row: only references to the samples are
        # sorted, not a list per sample and the whole text (which grew with N).
        # ensure_ascii keeps surrogate-escaped (non-UTF-8) names encodable.
        def dumps(obj: object) -> bytes:
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")

        digest = hashlib.sha256(b'{"class_names":' + dumps(list(self.class_names)))
        digest.update(b',"samples":[')
        order = sorted(self.samples, key=_sample_id)
        parts: list[bytes] = []
        written = False
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and order[end].id == order[start].id:
                end += 1
            # equal ids (a manifest may repeat one): ordered by the whole row, as before
            rows = sorted([s.id, s.label, s.domain] for s in order[start:end])
            parts.extend(dumps(row) for row in rows)
            if len(parts) >= 1024 or end == len(order):
                digest.update((b"," if written else b"") + b",".join(parts))
                written, parts = True, []
            start = end
        digest.update(b"]}")
        return digest.hexdigest()

    def in_domains(self, names: Iterable[str]) -> Dataset:
        """The same dataset restricted to the given domains (DataError for an unknown name)."""
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in self.domains]
        if unknown:
            raise DataError(
                f"unknown domain(s) {', '.join(map(repr, unknown))}; "
                f"this dataset has: {', '.join(self.domains)}"
            )
        keep = set(wanted)
        return replace(
            self,
            samples=tuple(s for s in self.samples if s.domain in keep),
            domains=tuple(d for d in self.domains if d in keep),
        )

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per domain and class name ("(unlabelled)" for samples without a label)."""
        out: dict[str, dict[str, int]] = {d: {} for d in self.domains}
        for s in self.samples:
            name = "(unlabelled)" if s.label is None else self.class_names[s.label]
            per = out.setdefault(s.domain, {})
            per[name] = per.get(name, 0) + 1
        return out


_CONTROL = ("Cc", "Zl", "Zp")  # control characters, line and paragraph separators


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) in _CONTROL for c in text)


def display(text: str) -> str:
    """A printable form of an id or path: non-UTF-8 bytes shown as ``\\xNN`` and control
    characters (newlines, terminal escapes) escaped, so one name is one line."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if not _has_control(text):
        return text
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _CONTROL else c
        for c in text
    )


def _check_class_names(names: Iterable[str], where: str) -> None:
    """Refuse class names with control characters: they would print as several lines (or
    drive the terminal) and cannot be written back to a one-name-per-line class file."""
    bad = [n for n in names if _has_control(n)]
    if bad:
        shown = ", ".join(repr(display(n)) for n in bad[:3])
        raise DataError(
            f"class name(s) {shown} in {where} contain control characters (newline, tab, "
            "escape); rename them"
        )


def read_class_file(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class names from a file, one per line (blank lines and ``#`` comments ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"class file {display(os.fspath(path))!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read class file {display(os.fspath(path))!r}: {exc}") from exc
    names = [ln.strip() for ln in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise DataError(f"class file {display(os.fspath(path))!r} lists no class names")
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise DataError(f"class file {display(os.fspath(path))!r} repeats: {', '.join(dupes)}")
    _check_class_names(names, f"class file {display(os.fspath(path))!r}")
    return tuple(names)


def class_prompts(class_names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """Teacher text prompts for the classes: underscores become spaces.

    >>> class_prompts(["golden_retriever", "cat"])
    ['a photo of a golden retriever', 'a photo of a cat']
    """
    if "{}" not in template:
        raise ConfigurationError(
            f"prompt template {template!r} has no '{{}}' for the class name, "
            "e.g. 'a photo of a {}'"
        )
    return [template.replace("{}", name.replace("_", " ").strip()) for name in class_names]



# ----------------------------------------------------------------------------- scanning


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


def _scan_folder(root: Path, class_file_names: tuple[str, ...] | None, decode: bool) -> Dataset:
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

    return _finish(root, layout, samples, class_names, domains, sc, _read_meta(root))


def _finish(
    root: Path,
    layout: str,
    samples: list[Sample],
    class_names: tuple[str, ...],
    domains: list[str],
    sc: _Scan,
    hflip: bool,
) -> Dataset:
    _check_class_names(class_names, display(str(root)))
    samples.sort(key=lambda s: s.id)
    skipped = tuple(sorted(sc.skipped))
    if not samples:
        lines = [f"no usable images in {display(str(root))!r}"]
        if skipped:
            lines.append(f"{len(skipped)} path(s) skipped, e.g.:")
            lines += [f"  {display(p)}: {r}" for p, r in skipped[:5]]
        lines.append(
            "expected DATA/<domain>/<class>/<image>, DATA/<class>/<image>, a folder of "
            "images, or a CSV manifest (path,label,domain); images must be PNG, JPEG, GIF, "
            "BMP or WebP"
        )
        raise DataError("\n".join(lines))
    return Dataset(
        root=root,
        layout=layout,
        samples=tuple(samples),
        class_names=tuple(class_names),
        domains=tuple(domains),
        skipped=skipped,
        hflip=hflip,
    )


def _outside(base: Path, file: str) -> bool:
    """True when ``file`` (absolute and normalised) is not under ``base``, by its name or,
    through symbolic links, by where it really is."""
    root = os.fspath(base)
    if os.path.commonpath([root, file]) != root:
        return True
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(file)]) != real_root


def _scan_manifest(
    path: Path, class_file_names: tuple[str, ...] | None, decode: bool, allow_outside: bool
) -> Dataset:
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
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
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
    sc = _Scan(base, decode)
    entries: list[tuple[str, str | None, str]] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(rows[start:], start=start + 1):
        cells = dict(zip(columns, (c.strip() for c in row), strict=False))
        rel = cells.get("path", "")
        if not rel:
            sc.skipped.append((f"row {lineno}", "empty path"))
            continue
        key = os.path.normpath(os.path.join(base, rel))
        if key in seen:
            sc.skipped.append((rel, f"duplicate of row {seen[key]}"))
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
    if not entries and not sc.skipped:
        raise DataError(f"manifest {display(str(path))!r} has a header but no rows")

    if class_file_names is not None:
        class_names = class_file_names
    else:
        class_names = tuple(sorted({lab for _, lab, _ in entries if lab is not None}))
    index = {n: i for i, n in enumerate(class_names)}
    samples: list[Sample] = []
    domains: set[str] = set()
    for rel, label, domain in entries:
        if label is not None and label not in index:
            sc.skipped.append((rel, f"label {label!r} is not in the class file"))
            continue
        file = Path(rel) if os.path.isabs(rel) else base / rel
        reason = check_image(file, decode=decode)
        if reason is not None:
            sc.skipped.append((rel, "file not found" if "No such file" in reason else reason))
            continue
        domains.add(domain)
        samples.append(Sample(rel, file, None if label is None else index[label], domain))
    return _finish(path, "manifest", samples, class_names, sorted(domains), sc, True)


def scan(
    data: str | os.PathLike[str],
    *,
    class_file: str | os.PathLike[str] | None = None,
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
    it are skipped. Hidden files and folders are ignored; ``DATA/dataset.json`` is read as
    metadata (``{"hflip": false}``). Unusable files are skipped with a reason, never fatal.
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
    names = read_class_file(class_file) if class_file is not None else None
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"data path {display(os.fspath(data))!r} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read {display(os.fspath(data))!r}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        return _scan_folder(path, names, decode)
    return _scan_manifest(path, names, decode, allow_outside_paths)

"""The dataset types (:class:`Dataset`, :class:`Sample`, :class:`DataError`), class names
(class files, prompts) and the printable form of ids: what :func:`distill.data.scan`
returns and checks, without the scanning (:mod:`distill.data.scan`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from vlmclient.errors import ConfigurationError, InputError

from .samples import Sample, Samples, SamplesBuilder

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TEMPLATE",
    "META_FILE",
    "DataArgumentError",
    "DataError",
    "Dataset",
    "Sample",
    "Samples",
    "SamplesBuilder",
    "check_class_names",
    "class_key",
    "class_names_of",
    "class_prompts",
    "display",
    "finish_dataset",
    "label_first",
    "read_class_file",
    "read_hflip",
]

DEFAULT_DOMAIN = "all"
DEFAULT_TEMPLATE = "a photo of a {}"
# Optional dataset description written by our dataset builders, e.g. {"hflip": false}
# (and, for a manifest, NAME.dataset.json beside NAME.csv: distill.data.manifest_file).
META_FILE = "dataset.json"


def read_hflip(meta_file: Path) -> bool:
    """The hflip flag of a dataset description (True when absent or unreadable)."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not (isinstance(meta, dict) and meta.get("hflip") is False)


class DataError(InputError):
    """The data cannot be used as a whole (missing, empty, bad manifest or class file)."""


# the end of the skip reason of a class folder (or manifest row) a class list leaves out:
# those files are counted in ``Dataset.left_out``, not unreadable
NOT_IN_CLASS_FILE = "is not in the class file"


class DataArgumentError(DataError, ConfigurationError):
    """A data argument that cannot be used as given (a path that names nothing, a class
    file that is missing, empty, repeats a name...): a usage error (the CLI exits 2), and
    still a DataError for callers that catch those."""


@dataclass(frozen=True)
class Dataset:
    """The usable images of a data folder or manifest, and what was skipped and why.

    >>> ds = scan("DATA")  # doctest: +SKIP
    >>> ds.layout, ds.domains, ds.class_names[:2], len(ds.samples)  # doctest: +SKIP
    ('domainbed', ('colour', 'inverted'), ('0_zero', '1_one'), 898)
    """

    root: Path
    layout: str
    samples: Samples  # in id order (a read-only sequence of Sample)
    class_names: tuple[str, ...]
    domains: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    # False when the dataset says a mirror image changes the class (digits) or the domain
    # (rotations); views then never flip. Read from DATA/dataset.json, or for a manifest
    # from the NAME.dataset.json our manifest writers put beside it.
    hflip: bool = True
    # (domain, class, files) of the data's classes a class list left out (``class_file``,
    # ``classes``): their files are counted as listed, not checked as images.
    left_out: tuple[tuple[str, str, int], ...] = ()

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
        # by column: no Sample is made; scans keep samples in id order, so no sort either
        samples = self.samples
        ids = samples.ids
        order = samples.id_order()
        parts: list[bytes] = []
        written = False
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and ids[order[end]] == ids[order[start]]:
                end += 1
            # equal ids (a manifest may repeat one): ordered by the whole row, as before
            rows = sorted(list(samples.row(i)) for i in order[start:end])
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
            samples=Samples(s for s in self.samples if s.domain in keep),
            domains=tuple(d for d in self.domains if d in keep),
            left_out=tuple(row for row in self.left_out if row[0] in keep),
        )

    def left_out_classes(self) -> dict[str, int]:
        """Files per class of the data the class list left out, most first (then by name).

        >>> scan("DATA", classes=["cat"]).left_out_classes()  # doctest: +SKIP
        {'dog': 12}
        """
        per: dict[str, int] = {}
        for _, name, n in self.left_out:
            per[name] = per.get(name, 0) + n
        return dict(sorted(per.items(), key=lambda kv: (-kv[1], kv[0])))

    def unreadable(self) -> tuple[tuple[str, str], ...]:
        """The skipped paths the scan could not use (unreadable, cut short, not images),
        without the class folders and rows a class list left out (``left_out_classes``)."""
        return tuple((p, why) for p, why in self.skipped if not why.endswith(NOT_IN_CLASS_FILE))

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per domain and class name ("(unlabelled)" for samples without a label)."""
        out: dict[str, dict[str, int]] = {d: {} for d in self.domains}
        for i in range(len(self.samples)):
            _, label, domain = self.samples.row(i)
            name = "(unlabelled)" if label is None else self.class_names[label]
            per = out.setdefault(domain, {})
            per[name] = per.get(name, 0) + 1
        return out


def label_first(
    ds: Dataset, data: str, class_file: str | None, *, teacher: str, cache: str,
    buy_flags: str = "",
) -> str:
    """Why ``train`` cannot use ``ds``, whose images no label names (a folder with no
    class folders, a manifest without labels), and the commands that label, harvest and
    train them (``pseudolabel`` writes the labels it keeps to CACHE/pseudolabels.csv).
    ``buy_flags`` (shell-quoted, each after a space) go on the two commands that call the
    teacher: the endpoint and cap the harvest was given.

    >>> label_first(ds, "photos", "classes.txt", teacher="local:hash", cache="c")  # doctest: +SKIP
    'photos has no labels (a folder of images with no class folders) ...'
    """
    q = shlex.quote
    what = (
        "a manifest whose rows name no label"
        if ds.layout == "manifest"
        else "a folder of images with no class folders"
    )
    flags = f"--class-file {q(class_file) if class_file else 'FILE'} --teacher {q(teacher)}"
    names = "" if class_file else "FILE: the class names, one a line; "
    flags += f" --cache {q(cache)}"
    manifest = q(os.path.join(cache, "pseudolabels.csv"))
    buy = f"{flags}{buy_flags}"
    return (
        f"{display(data)} has no labels ({what}), and `vlm-distill train` trains on "
        "labelled images only. Label them with the teacher: "
        f"`vlm-distill pseudolabel {q(data)} {buy}` ({names}add --route zeroshot for a "
        f"teacher that only embeds; it writes the labels it keeps to {manifest}), then "
        f"`vlm-distill harvest {manifest} {buy} --allow-outside-paths` (what is cached "
        f"is not bought again) and `vlm-distill train {manifest} {flags} --out RUN`. Or "
        "sort the images into class folders (DATA/<class>/<image>)."
    )


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


def class_key(name: str) -> str:
    """The form a class or domain name is compared in: Unicode NFC. A folder copied from
    macOS spells "café" as "cafe" plus a combining accent (NFD): the same class as a
    "café" typed on Linux, though the bytes differ.

    >>> class_key("cafe\u0301") == class_key("caf\u00e9")
    True
    """
    return unicodedata.normalize("NFC", name)


def class_names_of(spellings: Iterable[str]) -> tuple[str, ...]:
    """The class names of the data's class folders (or manifest labels): one per name
    after NFC (:func:`class_key`), sorted by that form so that an NFC and an NFD copy of
    the data number their classes alike. A class keeps its folder's own spelling; two
    spellings of one class (one domain copied from macOS) are named in NFC."""
    by_key: dict[str, set[str]] = {}
    for name in spellings:
        by_key.setdefault(class_key(name), set()).add(name)
    return tuple(
        next(iter(names)) if len(names) == 1 else key for key, names in sorted(by_key.items())
    )


def check_class_names(names: Iterable[str], where: str) -> None:
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
    where = f"class file {display(os.fspath(path))!r}"
    if os.path.exists(path) and not os.path.isfile(path):  # a folder, a FIFO (waited forever)
        raise DataArgumentError(f"{where} is not a file")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataArgumentError(f"{where} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataArgumentError(f"cannot read {where}: {exc}") from exc
    names = [ln.strip() for ln in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise DataArgumentError(f"{where} lists no class names")
    dupes = sorted(n for n, c in Counter(map(class_key, names)).items() if c > 1)
    if dupes:
        raise DataArgumentError(f"{where} repeats: {', '.join(dupes)}")
    try:
        check_class_names(names, where)
    except DataError as exc:
        raise DataArgumentError(str(exc)) from None
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


def finish_dataset(
    root: Path,
    layout: str,
    samples: SamplesBuilder,
    class_names: tuple[str, ...],
    domains: list[str],
    skipped: Sequence[tuple[str, str]],
    hflip: bool,
    left_out: Mapping[tuple[str, str], int] | None = None,
) -> Dataset:
    """The :class:`Dataset` of what a scan found, samples sorted by id; DataError saying what
    was skipped and which layouts are understood when nothing usable was found."""
    check_class_names(class_names, display(str(root)))
    found_skipped = tuple(sorted(skipped))
    if not samples:
        lines = [f"no usable images in {display(str(root))!r}"]
        if found_skipped:
            lines.append(f"{len(found_skipped)} path(s) skipped, e.g.:")
            lines += [f"  {display(p)}: {r}" for p, r in found_skipped[:5]]
        lines.append(
            "expected DATA/<domain>/<class>/<image>, DATA/<class>/<image>, a folder of "
            "images, or a CSV manifest (path,label,domain); images must be PNG, JPEG, GIF, "
            "BMP or WebP"
        )
        raise DataError("\n".join(lines))
    return Dataset(
        root=root,
        layout=layout,
        samples=samples.build(),
        class_names=tuple(class_names),
        domains=tuple(domains),
        skipped=found_skipped,
        hflip=hflip,
        left_out=tuple((d, c, n) for (d, c), n in sorted((left_out or {}).items())),
    )

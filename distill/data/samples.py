"""The samples of a dataset: :class:`Sample` (one image) and :class:`Samples` (all of
them, held by column so that memory per image is its id and a few bytes).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import FrozenInstanceError
from itertools import islice
from pathlib import Path
from typing import overload

__all__ = ["Sample", "Samples", "SamplesBuilder"]

# The label column's value for an unlabelled sample (labels are class indices, >= 0).
_NO_LABEL = -(2**31)


class Sample:
    """One image: ``id`` is its POSIX path relative to the data root (or the manifest's
    string), ``path`` the file, ``label`` an index into the class names (None when
    unlabelled), ``domain`` its domain's name. Immutable, compared and hashed by value.

    >>> s = Sample("cat/1.png", Path("/data/cat/1.png"), 0, "all")
    >>> s.path, s == Sample.under(Path("/data"), "cat/1.png", 0, "all")
    (PosixPath('/data/cat/1.png'), True)

    A sample of :meth:`under` shares its folder with the others of a scan and builds
    ``path`` on access: no ``Path`` per image (about 350 bytes each). A dataset does not
    even keep these objects (see :class:`Samples`); it makes them when they are read.
    """

    __slots__ = ("_base", "_path", "domain", "id", "label")

    id: str
    label: int | None
    domain: str
    _base: Path | None  # path is _base / id (shared by the samples of a scan) ...
    _path: Path | None  # ... or this path, given as is

    def __init__(self, id: str, path: Path, label: int | None, domain: str) -> None:
        _set_sample(self, id, label, domain, None, path)

    @classmethod
    def under(cls, base: Path, id: str, label: int | None, domain: str) -> Sample:
        """The sample whose file is ``base / id`` (``id`` may be absolute: then it is the
        file); ``base`` is meant to be one object shared by many samples."""
        sample = cls.__new__(cls)
        _set_sample(sample, id, label, domain, base, None)
        return sample

    @property
    def path(self) -> Path:
        """The image file (made on each access for a sample of :meth:`under`)."""
        if self._path is not None:
            return self._path
        assert self._base is not None
        return self._base / self.id

    def _key(self) -> tuple[str, int | None, str]:
        return (self.id, self.label, self.domain)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Sample)
        if self._key() != other._key():
            return False
        if self._base is not None and other._base is not None and self._base == other._base:
            return True  # same folder and id: same file, no Path built
        return self.path == other.path

    def __hash__(self) -> int:
        return hash(self._key())  # equal samples have equal keys; the path need not be hashed

    def __repr__(self) -> str:
        return (
            f"Sample(id={self.id!r}, path={self.path!r}, label={self.label!r}, "
            f"domain={self.domain!r})"
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # pickled for data-loader workers: the shared base stays one object per pickle
        return (_restore_sample, (self.id, self.label, self.domain, self._base, self._path))


def _set_sample(
    sample: Sample, id: str, label: int | None, domain: str, base: Path | None, path: Path | None
) -> None:
    setter = object.__setattr__
    setter(sample, "id", id)
    setter(sample, "label", label)
    setter(sample, "domain", domain)
    setter(sample, "_base", base)
    setter(sample, "_path", path)


def _restore_sample(
    id: str, label: int | None, domain: str, base: Path | None, path: Path | None
) -> Sample:
    sample = Sample.__new__(Sample)
    _set_sample(sample, id, label, domain, base, path)
    return sample


class Samples(Sequence[Sample]):
    """The samples of a dataset (``Dataset.samples``): a read-only sequence of
    :class:`Sample`, held by column: the id strings, a label and a domain index per image,
    and one shared folder. A :class:`Sample` is made each time one is read; equal samples
    compare equal, so nothing relies on it being the same object. About 80 bytes per image
    (mostly its id) instead of 150 for a tuple of compact samples and 650 for samples with
    a ``Path`` each: the harvest holds every sample for the whole run.

    >>> s = Samples([Sample("a.png", Path("/d/a.png"), 0, "all")])
    >>> len(s), s[0].path, s.ids
    (1, PosixPath('/d/a.png'), ('a.png',))
    """

    __slots__ = ("_base", "_domain_names", "_domains", "_ids", "_labels", "_paths")

    _base: Path | None  # sample i's file is _base / _ids[i] ...
    _paths: tuple[Path, ...] | None  # ... or _paths[i] (samples made with a path of their own)
    _ids: tuple[str, ...]
    _labels: array[int]
    _domains: array[int]  # index into _domain_names
    _domain_names: tuple[str, ...]

    def __init__(self, samples: Iterable[Sample] = ()) -> None:
        """The given samples, in the given order."""
        ids: list[str] = []
        labels: array[int] = array("i")
        domains: array[int] = array("I")
        names: dict[str, int] = {}
        base: Path | None = None
        paths: list[Path] | None = None
        for s in samples:
            if paths is None:
                if s._base is not None and (not ids or s._base == base):
                    base = s._base
                else:  # not all under one folder: keep a path per sample
                    paths = [] if base is None else [base / i for i in ids]
                    base = None
            if paths is not None:
                paths.append(s.path)
            ids.append(s.id)
            labels.append(_NO_LABEL if s.label is None else s.label)
            domains.append(names.setdefault(s.domain, len(names)))
        _set_columns(
            self, base, None if paths is None else tuple(paths), tuple(ids), labels, domains,
            tuple(names),
        )  # fmt: skip

    @property
    def ids(self) -> tuple[str, ...]:
        """Every sample's id, in order (row i of a store is ``ids[i]``)."""
        return self._ids

    def id_order(self) -> Sequence[int]:
        """Indices of the samples sorted by id (stable); a ``range`` when they are in id
        order already, as a scan's are."""
        return _id_order(self._ids)

    def row(self, index: int) -> tuple[str, int | None, str]:
        """(id, label, domain) of sample ``index``, without making a :class:`Sample`."""
        label = self._labels[index]
        return (
            self._ids[index],
            None if label == _NO_LABEL else label,
            self._domain_names[self._domains[index]],
        )

    def _sample(self, index: int) -> Sample:
        id, label, domain = self.row(index)
        if self._paths is not None:
            return Sample(id, self._paths[index], label, domain)
        assert self._base is not None
        return Sample.under(self._base, id, label, domain)

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> Samples: ...

    def __getitem__(self, index: int | slice) -> Sample | Samples:
        if isinstance(index, slice):
            part = Samples.__new__(Samples)
            _set_columns(
                part, self._base, None if self._paths is None else self._paths[index],
                self._ids[index], self._labels[index], self._domains[index], self._domain_names,
            )  # fmt: skip
            return part
        n = len(self._ids)
        if not -n <= index < n:
            raise IndexError("sample index out of range")
        return self._sample(index % n)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self._ids)):
            yield self._sample(index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Samples):
            return NotImplemented
        if self._ids != other._ids:
            return False
        return all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(self._ids)  # equal sequences have equal ids

    def __repr__(self) -> str:
        if len(self) <= 2:
            return f"Samples({list(self)!r})"
        return f"Samples(<{len(self)} samples, {self._ids[0]!r} ... {self._ids[-1]!r}>)"

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (
            _restore_samples,
            (self._base, self._paths, self._ids, self._labels, self._domains, self._domain_names),
        )


def _id_order(ids: Sequence[str]) -> Sequence[int]:
    if all(a <= b for a, b in zip(ids, islice(ids, 1, None), strict=False)):
        return range(len(ids))
    return sorted(range(len(ids)), key=ids.__getitem__)


def _set_columns(
    samples: Samples,
    base: Path | None,
    paths: tuple[Path, ...] | None,
    ids: tuple[str, ...],
    labels: array[int],
    domains: array[int],
    domain_names: tuple[str, ...],
) -> None:
    samples._base, samples._paths, samples._ids = base, paths, ids
    samples._labels, samples._domains, samples._domain_names = labels, domains, domain_names


def _restore_samples(
    base: Path | None,
    paths: tuple[Path, ...] | None,
    ids: tuple[str, ...],
    labels: array[int],
    domains: array[int],
    domain_names: tuple[str, ...],
) -> Samples:
    samples = Samples.__new__(Samples)
    _set_columns(samples, base, paths, ids, labels, domains, domain_names)
    return samples


class SamplesBuilder:
    """The samples of one scan as they are found (one folder, or a manifest's folder),
    column by column: no :class:`Sample` object per image is ever held."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._ids: list[str] = []
        self._labels: array[int] = array("i")
        self._domains: array[int] = array("I")
        self._names: dict[str, int] = {}

    def add(self, id: str, label: int | None, domain: str) -> None:
        """The image ``base / id``."""
        self._ids.append(id)
        self._labels.append(_NO_LABEL if label is None else label)
        self._domains.append(self._names.setdefault(domain, len(self._names)))

    def __len__(self) -> int:
        return len(self._ids)

    def build(self) -> Samples:
        """The samples sorted by id (stable: equal ids keep the order they were added in)."""
        ids, labels, domains = self._ids, self._labels, self._domains
        order = _id_order(ids)
        if not isinstance(order, range):
            ids = [ids[i] for i in order]
            labels = array("i", (labels[i] for i in order))
            domains = array("I", (domains[i] for i in order))
        samples = Samples.__new__(Samples)
        _set_columns(samples, self.base, None, tuple(ids), labels, domains, tuple(self._names))
        return samples

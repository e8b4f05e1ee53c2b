"""Scanned samples are compact (held by column, no ``Path`` or object per image) and still
behave as before: the right file, equality, hashing, immutability, pickling for data-loader
workers, the same dataset fingerprint."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import pickle
import tracemalloc
from pathlib import Path

import pytest

from distill.data import Sample, Samples, scan
from distill.data.splits import split_holdout

# What a scanned sample may cost, measured by tracemalloc around scan(): its id string (13
# characters here: 62 bytes), a slot in the ids tuple, a label and a domain index: about
# 85 bytes. A tuple of Sample objects with __slots__ cost about 150, a dataclass holding
# its own Path (whose parts are interned) about 450; the bound catches either.
MAX_BYTES_PER_SAMPLE = 120


def _same_as_before(s: Sample, path: Path) -> None:
    """``s`` is the file at ``path``, and equal to a sample made with that path given."""
    assert s.path == path
    assert s.path.read_bytes() == path.read_bytes()
    plain = Sample(s.id, path, s.label, s.domain)
    assert s == plain and plain == s and hash(s) == hash(plain)


def test_scanned_paths_are_the_files_in_every_layout(tmp_path, write_image):
    write_image(tmp_path / "bed" / "photo" / "cat" / "a.png", seed=1)
    write_image(tmp_path / "bed" / "sketch" / "dog" / "b.png", seed=2)
    write_image(tmp_path / "single" / "cat" / "c.png", seed=3)
    write_image(tmp_path / "flat" / "d.png", seed=4)
    for folder in ("bed", "single", "flat"):
        ds = scan(tmp_path / folder)
        assert len(ds.samples) == {"bed": 2, "single": 1, "flat": 1}[folder]
        for s in ds.samples:
            _same_as_before(s, tmp_path / folder / s.id)


def test_manifest_paths_relative_dotted_and_absolute(tmp_path, write_image):
    write_image(tmp_path / "m" / "imgs" / "a.png", seed=1)
    write_image(tmp_path / "m" / "imgs" / "b.png", seed=2)
    outside = write_image(tmp_path / "elsewhere" / "c.png", seed=3)
    csv_file = tmp_path / "m" / "data.csv"
    csv_file.write_text(f"path,label\nimgs/a.png,cat\n./imgs/b.png,dog\n{outside},cat\n")
    ds = scan(csv_file, allow_outside_paths=True)
    by_id = {s.id: s for s in ds.samples}
    assert sorted(by_id) == sorted(["imgs/a.png", "./imgs/b.png", str(outside)])
    _same_as_before(by_id["imgs/a.png"], tmp_path / "m" / "imgs" / "a.png")
    _same_as_before(by_id["./imgs/b.png"], tmp_path / "m" / "imgs" / "b.png")
    _same_as_before(by_id[str(outside)], outside)


def test_a_sample_is_an_immutable_value(tmp_path, write_image):
    write_image(tmp_path / "cat" / "a.png", seed=1)
    write_image(tmp_path / "dog" / "b.png", seed=2)
    ds = scan(tmp_path)
    a, b = ds.samples
    again = scan(tmp_path).samples
    assert again == ds.samples and {*again} == {a, b}
    assert a != b and a != Sample(a.id, a.path, 1, a.domain)
    assert a != Sample(a.id, tmp_path / "other.png", a.label, a.domain)  # another file
    assert a != (a.id, a.path, a.label, a.domain)
    assert repr(a) == (
        f"Sample(id='cat/a.png', path={tmp_path / 'cat' / 'a.png'!r}, label=0, domain='all')"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.label = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del a.id  # type: ignore[misc]
    train, hold = split_holdout(ds.samples, fraction=0.5, seed=0)
    assert {*train, *hold} == {a, b}


def test_samples_pickle_with_their_paths(tmp_path, write_image):
    # data-loader workers receive the samples pickled
    write_image(tmp_path / "cat" / "a.png", seed=1)
    write_image(tmp_path / "dog" / "b.png", seed=2)
    samples = [*scan(tmp_path).samples, Sample("x", tmp_path / "cat" / "a.png", None, "d")]
    back = pickle.loads(pickle.dumps(samples))
    assert back == samples
    assert [s.path for s in back] == [s.path for s in samples]
    assert [s.label for s in back] == [0, 1, None]


def test_scan_memory_per_sample_is_small(tmp_path, write_image):
    # 3,000 hard links to one small PNG in DATA/<class>/<image> (the harvest benchmark's
    # layout); ids like "c1/000123.png"
    n = 3000
    source = write_image(tmp_path / "source.png")
    root = tmp_path / "data"
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
    for i in range(n):
        os.link(source, root / f"c{i % 3}" / f"{i:06d}.png")
    scan(root)  # first: imports PIL's plugins, whose memory is not the samples'
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ds = scan(root)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ds.samples) == n
    assert held / n <= MAX_BYTES_PER_SAMPLE, f"{held / n:.0f} bytes per sample"


def test_samples_is_a_read_only_sequence(tmp_path, write_image):
    for i, cls in enumerate(["ant", "bee", "cat", "dog"]):
        write_image(tmp_path / "d" / cls / f"{i}.png", seed=i)
    write_image(tmp_path / "e" / "ant" / "9.png", seed=9)
    ds = scan(tmp_path)
    samples = ds.samples
    assert isinstance(samples, Samples) and len(samples) == 5
    ids = ("d/ant/0.png", "d/bee/1.png", "d/cat/2.png", "d/dog/3.png", "e/ant/9.png")
    assert samples.ids == ids
    assert [s.id for s in samples] == list(samples.ids)
    assert samples[-1] == samples[4] and samples[-1].domain == "e"
    with pytest.raises(IndexError):
        samples[5]
    with pytest.raises(IndexError):
        samples[-6]
    part = samples[1:5:2]
    assert isinstance(part, Samples) and part.ids == ("d/bee/1.png", "d/dog/3.png")
    assert [s.label for s in part] == [1, 3]
    for s in [*samples, *part]:
        _same_as_before(s, tmp_path / s.id)
    assert samples.row(2) == ("d/cat/2.png", 2, "d")
    assert samples == scan(tmp_path).samples and hash(samples) == hash(scan(tmp_path).samples)
    assert samples != part and samples != tuple(samples)
    assert samples[0] in samples and samples.index(samples[3]) == 3
    assert "5 samples" in repr(samples)
    back = pickle.loads(pickle.dumps(samples))
    assert back == samples and [s.path for s in back] == [s.path for s in samples]
    only_e = ds.in_domains(["e"]).samples
    assert only_e.ids == ("e/ant/9.png",) and only_e[0].path == tmp_path / "e/ant/9.png"


def test_samples_made_by_hand_keep_their_paths(tmp_path):
    base = Sample.under(tmp_path, "a.png", None, "x")
    other = Sample.under(tmp_path / "elsewhere", "b.png", 2, "y")
    given = Sample("c.png", tmp_path / "not-c.png", 0, "x")  # a path that is not base / id
    for order in ([base, other, given], [given, base, other], [base, base]):
        samples = Samples(order)
        assert list(samples) == order
        assert [s.path for s in samples] == [s.path for s in order]
        assert [s.label for s in samples] == [s.label for s in order]
    assert Samples() == Samples([]) and len(Samples()) == 0


def _documented_fingerprint(class_names, rows) -> str:
    text = json.dumps(
        {"class_names": list(class_names), "samples": sorted(rows)},
        separators=(",", ":"),
        ensure_ascii=True,
        sort_keys=True,
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def test_fingerprint_is_unchanged(tmp_path, write_image):
    # store folders are named by it: a new value would orphan every existing store
    write_image(tmp_path / "d" / "cat" / "b.png", seed=1)
    write_image(tmp_path / "d" / "cat" / "a b.png", seed=2)
    write_image(tmp_path / "d" / "dog" / "caf\u00e9.png", seed=3)
    write_image(tmp_path / "e" / "dog" / "a.png", seed=4)
    ds = scan(tmp_path)
    rows = [[s.id, s.label, s.domain] for s in ds.samples]
    assert ds.fingerprint() == _documented_fingerprint(ds.class_names, rows)
    # out of id order, with a repeated id (a manifest may hold one): the same rule
    made = [
        Sample.under(tmp_path, "z.png", 1, "b"),
        Sample.under(tmp_path, "m.png", 1, "b"),
        Sample.under(tmp_path, "m.png", 0, "a"),
    ]
    odd = dataclasses.replace(ds, samples=Samples(made))
    rows = [[s.id, s.label, s.domain] for s in made]
    assert odd.fingerprint() == _documented_fingerprint(ds.class_names, rows)

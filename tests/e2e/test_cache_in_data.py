"""A cache (or a run folder) kept inside the data folder is not data: every later scan
passes over it, so a rerun buys nothing and ``train`` finds the store.

Until 2026-12-06 the first harvest was fine and every later scan read the cache as a class
(``DATA/<class>/``: "a photo of a vlm-cache" bought, train "run harvest first"), as a domain
with the classes ``responses`` and ``stores`` (DomainBed), or made a flat folder's images
"not in a class folder" (no usable images).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.cli import main
from distill.data import scan
from tests.e2e.conftest import LocalTeacher


def _harvest(teacher: LocalTeacher, data: Path | str, *cache: str) -> int:
    return main(["harvest", str(data), "--teacher", "local:hash", "--base-url", teacher.url,
                 "--budget", "1", *cache])  # fmt: skip


def _zeroshot(data: Path | str, cache: Path | str, out: Path, *extra: str) -> int:
    """``train --method zeroshot``: finds the harvest's store, trains nothing."""
    return main(["train", str(data), "--cache", str(cache), "--teacher", "local:hash",
                 "--method", "zeroshot", "--out", str(out), *extra])  # fmt: skip


def _identity(data: Path) -> tuple[str, tuple[str, ...], tuple[str, ...], int]:
    ds = scan(data)
    return ds.fingerprint(), ds.class_names, ds.domains, len(ds.samples)


def _twice(teacher: LocalTeacher, data: Path | str, *cache: str) -> None:
    """A harvest, then the rerun a budget stop would ask for: it buys nothing."""
    assert _harvest(teacher, data, *cache) == 0
    bill = teacher.billing()
    assert bill["requests"] > 0
    assert _harvest(teacher, data, *cache) == 0
    assert teacher.billing() == bill  # no phantom class prompt, no image bought again


def test_the_default_cache_inside_a_one_domain_folder(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``cd DATA && vlm-distill harvest .``: the default ``--cache vlm-cache`` lands in DATA."""
    data = tmp_path / "data"
    shutil.copytree(digits_data / "upright", data)  # DATA/<class>/<image>
    before = _identity(data)
    monkeypatch.chdir(data)
    _twice(hash_teacher, ".")
    out = capsys.readouterr().out
    assert "skipped vlm-cache: a vlm-distill cache folder, not data" in out
    assert _identity(data) == before
    run = tmp_path / "run"
    assert _zeroshot(".", "vlm-cache", run) == 0
    # a run folder moved into the data (or written there before --out DATA/... was
    # refused) is passed over too
    shutil.move(run, data / "run")
    assert _identity(data) == before
    assert _zeroshot(".", "vlm-cache", tmp_path / "run2") == 0


def test_a_cache_inside_a_domainbed_folder(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(digits_data, data)  # DATA/<domain>/<class>/<image>
    before = _identity(data)
    _twice(hash_teacher, data, "--cache", str(data / "cache"))
    assert _identity(data) == before
    assert _zeroshot(data, data / "cache", tmp_path / "run", "--test-domains", "rotated") == 0


def test_a_cache_inside_a_folder_of_unlabelled_images(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    """The input of ``pseudolabel``: its cache folder made the layout DomainBed and every
    image "not in a class folder"."""
    data = tmp_path / "data"
    data.mkdir()
    for image in sorted((digits_data / "upright").glob("*/*.png"))[:12]:
        shutil.copy(image, data / f"{image.parent.name}-{image.name}")
    before = _identity(data)
    _twice(hash_teacher, data, "--cache", str(data / "vlm-cache"))
    assert _identity(data) == before


def test_the_data_folder_as_its_own_cache(
    hash_teacher: LocalTeacher, digits_data: Path, tmp_path: Path
) -> None:
    """``--cache DATA``: its responses/ and stores/ were read as classes."""
    data = tmp_path / "data"
    shutil.copytree(digits_data / "upright", data)
    before = _identity(data)
    _twice(hash_teacher, data, "--cache", str(data))
    assert _identity(data) == before
    assert _zeroshot(data, data, tmp_path / "run") == 0


def test_symlinked_folders_leading_back_into_the_data_are_skipped(
    hash_teacher: LocalTeacher,
    digits_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ln -s . DATA/self`` (or a link to a parent, or to another folder of the data) read
    as a domain or a class: until 2026-12-06 a bogus domain ``self`` with the domains as
    its (empty) classes, whose class prompts harvest bought. Now such links are skipped,
    named, and nothing more is bought than for the same data without them."""
    clean = tmp_path / "clean"
    shutil.copytree(digits_data, clean)
    data = tmp_path / "data"
    shutil.copytree(digits_data, data)
    domain = sorted(p.name for p in data.iterdir() if p.is_dir())[0]
    (data / "self").symlink_to(".")
    (data / domain / "up").symlink_to("..")
    (data / "again").symlink_to(data / domain)  # absolute, inside the data
    (data / "above").symlink_to(tmp_path)  # holds the data
    assert _identity(data)[1:] == _identity(clean)[1:]
    skipped = dict(scan(data).skipped)
    for name in ("self", f"{domain}/up", "again", "above"):
        assert "symlink" in skipped[name]
    cache = str(tmp_path / "cache")
    assert _harvest(hash_teacher, clean, "--cache", cache) == 0
    bill = hash_teacher.billing()
    capsys.readouterr()
    assert _harvest(hash_teacher, data, "--cache", cache) == 0
    assert hash_teacher.billing() == bill  # no class prompt of a bogus class bought
    assert "skipped self: a symlink to a folder inside the data" in capsys.readouterr().out

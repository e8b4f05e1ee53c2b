"""distill.data.digits: the embedded default dataset from scikit-learn's bundled digits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.data import DataError, class_prompts, scan
from distill.data.digits import CLASS_NAMES, DEFAULT_DOMAINS, DOMAINS, make_digits, sklearn_digits


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_make_digits_layout_counts_and_labels(tmp_path):
    root = make_digits(tmp_path / "digits", size=32, seed=0)
    ds = scan(root)
    assert ds.layout == "domainbed"
    assert ds.domains == tuple(sorted(DEFAULT_DOMAINS))
    assert ds.class_names == CLASS_NAMES  # sorted by name = digit order
    assert ds.skipped == () and ds.hflip is False
    # Every digit used once: the 1797 are dealt out over the 4 domains.
    sizes = {d: sum(per.values()) for d, per in ds.counts().items()}
    assert sorted(sizes.values()) == [449, 449, 449, 450]
    stems = [s.id.rsplit("/", 1)[1] for s in ds.samples]
    assert len(set(stems)) == 1797
    # The folder's label is the true sklearn label of that digit.
    _, labels = sklearn_digits()
    for s in ds.samples[::37]:
        assert s.label == labels[int(s.id.rsplit("/d", 1)[1][:4])]
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["counts"] == ds.counts() and meta["hflip"] is False
    assert class_prompts(ds.class_names, meta["prompt_template"])[3] == "a photo of a 3 three"


def test_make_digits_images_look_like_their_domain(tmp_path):
    root = make_digits(tmp_path / "d", size=24, per_class=2, domains=DOMAINS)
    corner = {}
    for domain in DOMAINS:
        files = sorted((root / domain).rglob("*.png"))
        assert len(files) == 20  # 2 per class
        with Image.open(files[0]) as im:
            assert im.size == (24, 24) and im.mode == "RGB"
            arr = np.asarray(im)
        corner[domain] = arr[0, 0]
    assert (corner["upright"] == 255).all() and (corner["rotated"] == 255).all()
    assert (corner["inverted"] == 0).all()
    colour = [np.asarray(Image.open(p))[0, 0] for p in sorted((root / "colour").rglob("*.png"))]
    assert len({tuple(c) for c in colour}) > 10  # a different background per image


def test_make_digits_is_deterministic(tmp_path):
    a = make_digits(tmp_path / "a", size=32, domains=DOMAINS)
    b = make_digits(tmp_path / "b", size=32, domains=DOMAINS)
    fa, fb = _files(a), _files(b)
    assert len(fa) == 1797 + 1
    assert fa == fb  # byte for byte
    c = make_digits(tmp_path / "c", size=32, per_class=3, seed=1)
    d = make_digits(tmp_path / "d", size=32, per_class=3, seed=0)
    assert _files(c) != _files(d)
    assert len(scan(c).samples) == 4 * 10 * 3


def test_make_digits_refuses_to_clobber(tmp_path):
    out = make_digits(tmp_path / "out", per_class=1)
    with pytest.raises(DataError, match="not empty"):
        make_digits(out, per_class=1)
    again = make_digits(out, per_class=2, force=True)
    assert len(scan(again).samples) == 4 * 10 * 2
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="refusing"):
        make_digits(foreign, force=True)
    assert (foreign / "thesis.tex").read_text() == "precious"
    # the user's own dataset.json (README: `{"hflip": false}` turns flips off) is not ours
    from distill.data.digits import BUILT_NAMES
    from distill.teacher.pool import POOL_NAME

    assert POOL_NAME in BUILT_NAMES  # a teacher pool may be rebuilt with --force
    for text in ('{"hflip": false}', '{"name": "my-photos"}', "not json", "[]"):
        (foreign / "dataset.json").write_text(text)
        with pytest.raises(DataError, match="refusing"):
            make_digits(foreign, force=True)
        assert (foreign / "thesis.tex").read_text() == "precious"
    with pytest.raises(DataError, match="unknown digits domain"):
        make_digits(tmp_path / "x", domains=["upright", "sideways"])
    assert not list(tmp_path.glob("*.tmp-*"))


def test_rotation_domains_turn_every_digit_by_their_fixed_angle(tmp_path):
    """rot<N> (the demo's RotatedMNIST recipe): rot0 is the upright look drawn the same
    way, and rot90 is exactly rot0's digit turned a quarter counter-clockwise."""
    # a single domain is dealt the same digits whatever its name
    plain = make_digits(tmp_path / "p", size=32, per_class=2, domains=["upright"])
    # the same digits, upright and at 90 degrees: deal a single domain each time
    up = make_digits(tmp_path / "u", size=32, per_class=2, domains=["rot0"])
    turned = make_digits(tmp_path / "t", size=32, per_class=2, domains=["rot90"])
    pairs = list(
        zip(
            sorted((up / "rot0").rglob("*.png")),
            sorted((turned / "rot90").rglob("*.png")),
            strict=True,
        )
    )
    assert len(pairs) == 20
    for a, b in zip(sorted((plain / "upright").rglob("*.png")), [a for a, _ in pairs], strict=True):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    for a, b in pairs:
        ink_a = 255 - np.asarray(Image.open(a))[..., 0].astype(int)
        ink_b = 255 - np.asarray(Image.open(b))[..., 0].astype(int)
        assert (ink_a > 0).any()
        # PIL's rotate(90) on the 32 px canvas: bilinear at exact quarter turns moves pixels
        assert np.abs(np.rot90(ink_a) - ink_b).max() <= 1
    meta = json.loads((turned / "dataset.json").read_text())
    assert meta["domains"] == ["rot90"]


@pytest.mark.parametrize(
    "bad", ["rot360", "rot-5", "rot05", "rotx", "sideways", "rot" + "9" * 5000]
)
def test_unknown_or_out_of_range_domains_are_refused(tmp_path, bad):
    with pytest.raises(DataError, match="unknown digits domain"):
        make_digits(tmp_path / "x", size=16, per_class=1, domains=[bad])
    assert not (tmp_path / "x").exists()


def test_a_stop_while_force_replaces_a_folder_leaves_the_old_one_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`data make-digits OUT --force` (and the demo's, the teacher pool's rebuild) deleted
    the old folder file by file before moving the new one in: Ctrl-C during the delete (a
    Fashion pool holds some 67,000 images) left a folder missing files, its dataset.json
    still saying what it held, which the next run used as it was (or, that file gone,
    refused to replace as "not written by vlm-distill")."""
    import shutil

    from distill.cli import main

    out = tmp_path / "digits"
    assert main(["data", "make-digits", str(out), "--per-class", "1"]) == 0
    before = _files(out)
    real_rmtree = shutil.rmtree

    def stopped_midway(path: object, *args: object, **kwargs: object) -> None:
        name = Path(str(path)).name
        if name.startswith(out.name) and ".tmp-" not in name:  # the old folder, file by file
            for png in sorted(Path(str(path)).rglob("*.png"))[:5]:
                png.unlink()
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "rmtree", stopped_midway)
    assert main(["data", "make-digits", str(out), "--per-class", "2", "--force"]) == 130
    capsys.readouterr()
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    # the old folder whole, or the new one whole: never a part of either
    assert _files(out) in (before, _files(make_digits(tmp_path / "new", per_class=2)))


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_during_a_build_leaves_no_partial_folder(
    signame: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM (a scheduler, `timeout`, a closed terminal's SIGHUP) while `data make-digits`
    wrote its images ended the process on the spot: OUT.tmp-PID stayed beside OUT, part of
    the images in it, and no run ever removed it (the next one has another pid)."""
    import os
    import signal

    import distill.data.digits as digits
    from distill.cli import main

    signum = getattr(signal, signame)
    real_write = digits.write_pngs
    calls: list[str] = []

    def killed_midway(tmp: Path, domain: str, items: object) -> None:
        calls.append(domain)
        if len(calls) == 2:
            os.kill(os.getpid(), signum)  # delivered to the main thread: right here
        real_write(tmp, domain, items)  # type: ignore[arg-type]

    monkeypatch.setattr(digits, "write_pngs", killed_midway)
    out = tmp_path / "digits"
    assert main(["data", "make-digits", str(out), "--per-class", "1"]) == 128 + signum
    err = capsys.readouterr().err
    assert signame in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no OUT, no OUT.tmp-*
    assert signal.getsignal(signum) is not None  # the handlers are put back


def test_a_rerun_removes_what_a_killed_build_left_beside_its_folder(tmp_path: Path) -> None:
    """kill -9 (the OOM killer, a lost machine) during `data make-*` left OUT.tmp-PID with
    part of the images (or OUT.old-PID, killed while replacing with --force); no later run
    removed it, since each looks only for its own pid's."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)  # a process that has ended
    out = tmp_path / "digits"
    for kind in ("tmp", "old"):
        left = tmp_path / f"digits.{kind}-{pid}" / "upright" / "0_zero"
        left.mkdir(parents=True)
        (left / "d0001.png").write_bytes(b"part")
    alive = tmp_path / f"digits.tmp-{os.getpid()}x"  # not ours to judge: left alone
    alive.mkdir()
    other = tmp_path / "digits2.tmp-1"  # another folder's
    other.mkdir()
    make_digits(out, per_class=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["digits", alive.name, other.name]
    )

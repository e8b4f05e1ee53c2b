"""distill.data: layouts, class files, skipped files with reasons, odd names, splits."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import distill
from cache import LEDGER_FILE, RESPONSES_DIR, STORES_DIR
from distill.data import (
    DataError,
    Sample,
    check_image,
    class_prompts,
    display,
    read_class_file,
    scan,
    split_holdout,
)
from vlmclient.errors import ConfigurationError, InputError

# ------------------------------------------------------------------------------- layouts


def test_domainbed_layout(tmp_path, write_image):
    write_image(tmp_path / "sketch" / "dog" / "b.png")
    write_image(tmp_path / "sketch" / "cat" / "a.png")
    write_image(tmp_path / "photo" / "cat" / "c.jpg", fmt="JPEG")
    write_image(tmp_path / "photo" / "cat" / "d.gif", fmt="GIF")
    write_image(tmp_path / "photo" / "elephant" / "e.bmp", fmt="BMP")
    write_image(tmp_path / "photo" / "elephant" / "f.webp", fmt="WEBP")
    ds = scan(tmp_path)
    assert ds.layout == "domainbed"
    assert ds.domains == ("photo", "sketch")
    assert ds.class_names == ("cat", "dog", "elephant")
    got = [(s.id, s.label, s.domain) for s in ds.samples]
    assert got == [
        ("photo/cat/c.jpg", 0, "photo"),
        ("photo/cat/d.gif", 0, "photo"),
        ("photo/elephant/e.bmp", 2, "photo"),
        ("photo/elephant/f.webp", 2, "photo"),
        ("sketch/cat/a.png", 0, "sketch"),
        ("sketch/dog/b.png", 1, "sketch"),
    ]
    for s in ds.samples:
        assert s.path == tmp_path / s.id and s.path.is_file()
    assert ds.skipped == ()
    assert ds.hflip is True
    assert ds.counts() == {
        "photo": {"cat": 2, "elephant": 2},
        "sketch": {"cat": 1, "dog": 1},
    }


def test_single_domain_layout_and_stray_files(tmp_path, write_image):
    write_image(tmp_path / "zebra" / "1.png")
    write_image(tmp_path / "ant" / "2.png")
    write_image(tmp_path / "loose.png")
    (tmp_path / ".hidden").mkdir()
    write_image(tmp_path / ".hidden" / "x" / "3.png")
    (tmp_path / "ant" / ".DS_Store").write_bytes(b"junk")
    ds = scan(tmp_path)
    assert ds.layout == "single"
    assert ds.domains == ("all",)
    assert ds.class_names == ("ant", "zebra")
    assert [(s.id, s.label, s.domain) for s in ds.samples] == [
        ("ant/2.png", 0, "all"),
        ("zebra/1.png", 1, "all"),
    ]
    assert len(ds.skipped) == 1
    assert ds.skipped[0][0] == "loose.png"
    assert "not in a class folder" in ds.skipped[0][1]


def test_unlabelled_layout(tmp_path, write_image):
    write_image(tmp_path / "b.png")
    write_image(tmp_path / "a.jpeg", fmt="JPEG")
    ds = scan(tmp_path)
    assert ds.layout == "unlabelled"
    assert ds.class_names == ()
    assert ds.domains == ("all",)
    assert [(s.id, s.label) for s in ds.samples] == [("a.jpeg", None), ("b.png", None)]
    (tmp_path.parent / "classes.txt").write_text("cat\ndog\n")
    ds2 = scan(tmp_path, class_file=tmp_path.parent / "classes.txt")
    assert ds2.class_names == ("cat", "dog")
    assert all(s.label is None for s in ds2.samples)
    assert ds.counts() == {"all": {"(unlabelled)": 2}}


def test_domainbed_nested_and_stray_entries(tmp_path, write_image):
    write_image(tmp_path / "d1" / "cat" / "a.png")
    write_image(tmp_path / "d1" / "cat" / "deeper" / "z.png")
    write_image(tmp_path / "d1" / "stray.png")
    write_image(tmp_path / "flat" / "x.png")  # a folder with no class folders: not a domain
    ds = scan(tmp_path)
    assert ds.layout == "domainbed"
    assert ds.domains == ("d1",)
    assert [s.id for s in ds.samples] == ["d1/cat/a.png"]
    reasons = dict(ds.skipped)
    assert "below class level" in reasons["d1/cat/deeper"]
    assert "not in a class folder" in reasons["d1/stray.png"]
    assert "not in a class folder" in reasons["flat/x.png"]


# ------------------------------------------------------------------------------ manifest


def test_manifest_with_header_labels_and_domains(tmp_path, write_image):
    write_image(tmp_path / "imgs" / "a.png")
    write_image(tmp_path / "imgs" / "b.png")
    write_image(tmp_path / "imgs" / "c.png")
    outside = write_image(tmp_path.parent / f"{tmp_path.name}-abs.png")
    csv_file = tmp_path / "train.csv"
    csv_file.write_text(
        "path,label,domain\n"
        "imgs/b.png,dog,photo\n"
        "imgs/a.png,cat,sketch\n"
        "imgs/c.png,,photo\n"
        "imgs/missing.png,cat,photo\n"
        "imgs/a.png,cat,photo\n"
        f"{outside},cat,\n"
        "\n"
    )
    with pytest.raises(ConfigurationError, match="outside its folder"):
        scan(csv_file)  # the absolute path, unless allowed
    ds = scan(csv_file, allow_outside_paths=True)
    assert ds.layout == "manifest"
    assert ds.class_names == ("cat", "dog")
    assert ds.domains == ("all", "photo", "sketch")
    by_id = {s.id: s for s in ds.samples}
    assert by_id["imgs/b.png"].label == 1 and by_id["imgs/b.png"].domain == "photo"
    assert by_id["imgs/a.png"].label == 0 and by_id["imgs/a.png"].domain == "sketch"
    assert by_id["imgs/c.png"].label is None
    assert by_id[str(outside)].path == outside and by_id[str(outside)].domain == "all"
    assert by_id["imgs/a.png"].path == tmp_path / "imgs" / "a.png"
    reasons = dict(ds.skipped)
    assert reasons["imgs/missing.png"] == "file not found"
    assert reasons["imgs/a.png"].startswith("duplicate of row")


def test_manifest_without_header_or_labels(tmp_path, write_image):
    write_image(tmp_path / "x.png")
    write_image(tmp_path / "y.png")
    (tmp_path / "list.csv").write_text("x.png\ny.png\n")
    ds = scan(tmp_path / "list.csv")
    assert ds.layout == "manifest"
    assert ds.class_names == ()
    assert [(s.id, s.label, s.domain) for s in ds.samples] == [
        ("x.png", None, "all"),
        ("y.png", None, "all"),
    ]
    # Positional columns without a header: path,label.
    (tmp_path / "lab.csv").write_text("x.png,cat\ny.png,ant\n")
    ds2 = scan(tmp_path / "lab.csv")
    assert ds2.class_names == ("ant", "cat")
    assert [s.label for s in ds2.samples] == [1, 0]


def test_manifest_errors(tmp_path, write_image):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        scan(tmp_path / "empty.csv")
    (tmp_path / "bad.csv").write_text("path,colour\nx.png,red\n")
    with pytest.raises(DataError, match="unknown column"):
        scan(tmp_path / "bad.csv")
    (tmp_path / "latin1.csv").write_bytes("caf\xe9.png\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        scan(tmp_path / "latin1.csv")
    img = write_image(tmp_path / "one.png")
    with pytest.raises(DataError, match="single image"):
        scan(img)


def test_manifest_labels_checked_against_class_file(tmp_path, write_image):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,dog\nb.png,unicorn\n")
    (tmp_path / "classes.txt").write_text("dog\ncat\n")
    ds = scan(tmp_path / "m.csv", class_file=tmp_path / "classes.txt")
    assert ds.class_names == ("dog", "cat")
    assert [(s.id, s.label) for s in ds.samples] == [("a.png", 0)]
    assert dict(ds.skipped) == {"b.png": "label 'unicorn' is not in the class file"}


# ---------------------------------------------------------------------------- class file


def test_class_file_fixes_order_and_filters(tmp_path, write_image):
    for cls in ("bird", "cat", "dog"):
        write_image(tmp_path / "d" / cls / "1.png")
    cf = tmp_path.parent / f"{tmp_path.name}-classes.txt"
    cf.write_text("# my classes\ndog\n\ncat\nzebra\n")
    ds = scan(tmp_path, class_file=cf)
    assert ds.class_names == ("dog", "cat", "zebra")
    assert {s.id: s.label for s in ds.samples} == {"d/cat/1.png": 1, "d/dog/1.png": 0}
    assert dict(ds.skipped) == {"d/bird": "class folder 'bird' is not in the class file"}


def test_wrong_class_files(tmp_path, write_image):
    write_image(tmp_path / "data" / "cat" / "1.png")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("car\ntruck\n")
    with pytest.raises(DataError) as err:
        scan(tmp_path / "data", class_file=wrong)
    assert "class folder 'cat' is not in the class file" in str(err.value)
    dup = tmp_path / "dup.txt"
    dup.write_text("cat\ncat\n")
    with pytest.raises(DataError, match="repeats: cat"):
        read_class_file(dup)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n# nothing\n")
    with pytest.raises(DataError, match="no class names"):
        scan(tmp_path / "data", class_file=blank)
    with pytest.raises(DataError, match="does not exist"):
        scan(tmp_path / "data", class_file=tmp_path / "nope.txt")


# -------------------------------------------------------------------------- bad inputs


def test_skipped_files_have_reasons(tmp_path, write_image, encode, png_bomb):
    good = encode("PNG", (40, 30))
    jpeg = encode("JPEG", (40, 30))
    cls = tmp_path / "cls"
    write_image(cls / "ok.png")
    (cls / "zero.png").write_bytes(b"")
    (cls / "text.png").write_text("this is not an image\n")
    (cls / "notes.txt").write_text("hello")
    (cls / "cut.png").write_bytes(good[: len(good) // 2])
    (cls / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (cls / "garbled.png").write_bytes(good[:8] + b"\x00" * 40 + good[-12:])
    (cls / "bomb.png").write_bytes(png_bomb)
    (cls / "scan.tif").write_bytes(encode("TIFF", (4, 4)))
    os.mkfifo(cls / "pipe.png")  # never opened: a FIFO would block a naive reader
    os.symlink(cls / "gone.png", cls / "dangling.png")
    ds = scan(tmp_path)
    assert [s.id for s in ds.samples] == ["cls/ok.png"]
    reasons = dict(ds.skipped)
    assert reasons["cls/zero.png"] == "empty file (0 bytes)"
    assert reasons["cls/text.png"].startswith("not an image")
    assert reasons["cls/notes.txt"].startswith("not an image")
    assert reasons["cls/cut.png"] == "truncated PNG file"
    assert reasons["cls/cut.jpg"] == "truncated JPEG file"
    assert reasons["cls/garbled.png"].startswith("corrupt")
    assert reasons["cls/bomb.png"].startswith("too large (20000x20000 = 400 MP")
    assert "TIFF" in reasons["cls/scan.tif"]
    assert reasons["cls/pipe.png"] == "not a regular file"
    assert reasons["cls/dangling.png"].startswith("cannot read")
    assert len(reasons) == 10


def test_decode_catches_corrupt_pixel_data(tmp_path, encode):
    data = bytearray(encode("PNG", (64, 64)))
    start = data.index(b"IDAT") + 4
    data[start + 20 : start + 200] = bytes(180)  # header and trailer intact, pixels broken
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bad.png").write_bytes(bytes(data))
    (tmp_path / "c" / "good.png").write_bytes(encode("PNG", (64, 64)))
    assert len(scan(tmp_path).samples) == 2  # the cheap check cannot see it
    deep = scan(tmp_path, decode=True)
    assert [s.id for s in deep.samples] == ["c/good.png"]
    assert deep.skipped[0][0] == "c/bad.png"
    assert check_image(tmp_path / "c" / "bad.png", decode=True) is not None


def test_images_followed_by_other_data_are_not_taken_for_truncated(tmp_path, encode):
    """A phone's motion photo is a whole JPEG with its video appended (Google's and
    Samsung's), some tools append data after a PNG's IEND: the end-of-file check found no
    end marker in the last bytes and skipped them as "truncated JPEG file"; a file really
    cut short still is."""
    jpeg, png = encode("JPEG", (40, 30)), encode("PNG", (40, 30))
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(range(200)) * 500  # no FF D9, no IEND
    cls = tmp_path / "cls"
    cls.mkdir()
    (cls / "PXL_motion.MP.jpg").write_bytes(jpeg + video)
    (cls / "appended.png").write_bytes(png + video)
    (cls / "cut.jpg").write_bytes((jpeg + video)[: len(jpeg) // 2])
    ds = scan(tmp_path)
    assert [s.id for s in ds.samples] == ["cls/PXL_motion.MP.jpg", "cls/appended.png"]
    assert dict(ds.skipped) == {"cls/cut.jpg": "truncated JPEG file"}


def test_odd_file_names(tmp_path, write_image):
    write_image(tmp_path / "my domain" / "ice cream" / "a b.png")
    write_image(tmp_path / "my domain" / "ice cream" / "crème brûlée 🍮.png")
    raw_name = os.fsencode(tmp_path / "my domain" / "ice cream") + b"/caf\xe9 latin1.png"
    with open(raw_name, "wb") as f:  # a name that is not valid UTF-8
        f.write((tmp_path / "my domain" / "ice cream" / "a b.png").read_bytes())
    ds = scan(tmp_path)
    assert ds.class_names == ("ice cream",)
    ids = [s.id for s in ds.samples]
    assert "my domain/ice cream/a b.png" in ids
    assert "my domain/ice cream/crème brûlée 🍮.png" in ids
    odd = next(s for s in ds.samples if "latin1" in s.id)
    # The id round-trips to the file: same bytes on disk, and root / id opens it.
    assert os.fsencode(odd.id) == b"my domain/ice cream/caf\xe9 latin1.png"
    assert os.fsencode(tmp_path / odd.id) == raw_name
    assert (tmp_path / odd.id).read_bytes() == odd.path.read_bytes()
    assert display(odd.id) == "my domain/ice cream/caf\\xe9 latin1.png"
    assert json.loads(json.dumps(odd.id)) == odd.id  # storable in image_ids.json
    assert len(ds.fingerprint()) == 64
    assert class_prompts(ds.class_names) == ["a photo of a ice cream"]


def _unreadable_tree(root: Path, write_image) -> Path:
    write_image(root / "d" / "cat" / "1.png")
    write_image(root / "d" / "dog" / "2.png")
    return root / "d" / "dog"


def test_unreadable_folder_is_skipped(tmp_path, write_image):
    locked = _unreadable_tree(tmp_path, write_image)
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop root from reading")
        ds = scan(tmp_path)
    finally:
        locked.chmod(0o755)
    assert [s.id for s in ds.samples] == ["d/cat/1.png"]
    assert dict(ds.skipped)["d/dog"].startswith("cannot read folder: Permission denied")


def test_unreadable_folder_simulated(tmp_path, write_image, monkeypatch):
    # Root reads everything, so make os.scandir fail the way it does for a chmod 000 folder.
    locked = _unreadable_tree(tmp_path, write_image)
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    ds = scan(tmp_path)
    assert [s.id for s in ds.samples] == ["d/cat/1.png"]
    assert ds.class_names == ("cat", "dog")
    assert dict(ds.skipped) == {"d/dog": "cannot read folder: Permission denied"}


def test_empty_and_missing_data(tmp_path):
    with pytest.raises(DataError) as err:
        scan(tmp_path)
    msg = str(err.value)
    assert "no usable images" in msg and "DATA/<domain>/<class>/<image>" in msg
    assert isinstance(err.value, InputError)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"(?s)1 path\(s\) skipped.*a/x.png: empty file"):
        scan(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        scan(tmp_path / "nothing-here")


# ---------------------------------------------------------------- dataset, prompts, split


def test_fingerprint_and_domain_filter(tmp_path, write_image):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, order in ((a, ["x", "y", "z"]), (b, ["z", "y", "x"])):
        for name in order:  # created in another order: same fingerprint
            write_image(root / ("d1" if name != "z" else "d2") / "cat" / f"{name}.png")
    fa, fb = scan(a), scan(b)
    assert fa.fingerprint() == fb.fingerprint()
    (b / "d2" / "cat" / "z.png").rename(b / "d1" / "cat" / "z.png")
    assert scan(b).fingerprint() != fa.fingerprint()
    sub = fa.in_domains(["d2"])
    assert sub.domains == ("d2",) and [s.id for s in sub.samples] == ["d2/cat/z.png"]
    assert sub.fingerprint() != fa.fingerprint()
    with pytest.raises(DataError, match="unknown domain"):
        fa.in_domains(["d3"])


def test_dataset_meta_turns_flips_off(tmp_path, write_image):
    write_image(tmp_path / "c" / "1.png")
    (tmp_path / "dataset.json").write_text(json.dumps({"hflip": False}))
    ds = scan(tmp_path)
    assert ds.hflip is False
    assert ds.skipped == ()  # the metadata file is not reported as a stray file


def test_a_manifest_written_from_a_no_flip_dataset_keeps_flips_off(tmp_path, write_image):
    """A manifest never carried dataset.json's ``hflip: false`` (until 2026-12-06): the
    views of the bundled digits harvested or trained through the manifest `harvest
    --select` or `pseudolabel` wrote were mirrored, which changes a digit's class."""
    from distill.cli.select_cmd import write_manifest
    from distill.data.digits import make_digits

    digits = scan(make_digits(tmp_path / "digits", size=8, per_class=1))
    assert digits.hflip is False
    manifest = tmp_path / "out" / "bought.csv"
    ids = [s.id for s in digits.samples[:5]]
    classes = write_manifest(manifest, digits, ids)
    bought = scan(manifest, class_file=classes, allow_outside_paths=True)
    assert {s.path for s in bought.samples} == {s.path for s in digits.samples[:5]}
    assert bought.hflip is False
    # written again from data that allows flips: the earlier description does not linger
    write_image(tmp_path / "shapes" / "c" / "1.png")
    shapes = scan(tmp_path / "shapes")
    write_manifest(manifest, shapes, [s.id for s in shapes.samples])
    assert scan(manifest, allow_outside_paths=True).hflip is True
    # a manifest written by hand, with nothing beside it, allows flips as before
    (tmp_path / "shapes" / "hand.csv").write_text("path,label,domain\nc/1.png,c,all\n")
    assert scan(tmp_path / "shapes" / "hand.csv").hflip is True


def test_class_prompts():
    assert class_prompts(["golden_retriever", "cat"]) == [
        "a photo of a golden retriever",
        "a photo of a cat",
    ]
    assert class_prompts(["3_three"], "a {} digit {{}}") == ["a 3 three digit {3 three}"]
    with pytest.raises(ConfigurationError, match=r"no '\{\}'"):
        class_prompts(["cat"], "a photo")


def _samples(n_per_domain: dict[str, int]) -> list[Sample]:
    return [
        Sample(f"{d}/c/{i}.png", Path(f"/x/{d}/{i}.png"), i % 3, d)
        for d, n in n_per_domain.items()
        for i in range(n)
    ]


def test_split_holdout_per_domain_and_deterministic():
    samples = _samples({"a": 50, "b": 20, "c": 7, "d": 1})
    train, hold = split_holdout(samples, fraction=0.2, seed=0)
    held = {d: sum(1 for s in hold if s.domain == d) for d in "abcd"}
    assert held == {"a": 10, "b": 4, "c": 1, "d": 0}
    assert len(train) + len(hold) == len(samples)
    assert not {s.id for s in train} & {s.id for s in hold}
    # Same answer for shuffled input, and again on a second call.
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    assert {s.id for s in split_holdout(shuffled, seed=0)[1]} == {s.id for s in hold}
    assert split_holdout(samples, seed=0) == (train, hold)
    # Outputs keep the input order.
    assert list(train) == [s for s in samples if s in set(train)]
    # Another seed picks other images; adding images to one domain leaves others alone.
    assert {s.id for s in split_holdout(samples, seed=1)[1]} != {s.id for s in hold}
    more = samples + _samples({"e": 30})
    hold2 = split_holdout(more, seed=0)[1]
    assert {s.id for s in hold2 if s.domain != "e"} == {s.id for s in hold}
    assert split_holdout(samples, fraction=0.0)[1] == ()
    with pytest.raises(ValueError):
        split_holdout(samples, fraction=1.0)


def test_unreadable_class_folder_keeps_its_label(tmp_path, write_image, monkeypatch):
    write_image(tmp_path / "ant" / "1.png")
    write_image(tmp_path / "bee" / "2.png")
    write_image(tmp_path / "cat" / "3.png")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == tmp_path / "bee":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    ds = scan(tmp_path)
    assert ds.layout == "single"
    assert ds.class_names == ("ant", "bee", "cat")  # "cat" is still label 2
    assert [(s.id, s.label) for s in ds.samples] == [("ant/1.png", 0), ("cat/3.png", 2)]
    assert dict(ds.skipped) == {"bee": "cannot read folder: Permission denied"}


def test_data_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import distill.data, distill.data.views, distill.data.digits\n"
        "import distill.data.builders, distill.cli.data\n"
        "bad = [m for m in ('torch', 'timm', 'sklearn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    repo = Path(distill.__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo)


def test_split_holdout_same_per_domain_or_jointly():
    # The trainer splits all source domains at once, evaluation one domain at a time.
    samples = _samples({"a": 23, "b": 17})
    _, joint = split_holdout(samples, seed=3)
    per = [split_holdout([s for s in samples if s.domain == d], seed=3)[1] for d in "ab"]
    assert set(joint) == set(per[0]) | set(per[1])


def test_stray_subfolder_does_not_flip_single_layout(tmp_path, write_image):
    for cls in ("ant", "bee", "cat"):
        write_image(tmp_path / cls / "1.png")
    write_image(tmp_path / "cat" / "raw" / "2.png")
    ds = scan(tmp_path)
    assert ds.layout == "single"
    assert ds.class_names == ("ant", "bee", "cat")
    assert len(ds.samples) == 3
    assert dict(ds.skipped) == {"cat/raw": "folder below class level ignored"}


# -------------------------------------------------- vlm-distill's own folders inside DATA
# (the whole-CLI runs are in tests/e2e/test_cache_in_data.py)


def _harvested_cache(folder: Path) -> None:
    """What a harvest leaves in a cache folder."""
    (folder / RESPONSES_DIR).mkdir(parents=True)
    (folder / RESPONSES_DIR / "cache.db").write_bytes(b"")
    (folder / STORES_DIR / "local_hash-0123").mkdir(parents=True)
    (folder / LEDGER_FILE).write_text("")


def test_a_cache_inside_a_domain_folder_is_not_a_class(tmp_path, write_image):
    # `harvest DATA/photo` (its default cache lands in DATA/photo), then `harvest DATA`
    for domain in ("photo", "sketch"):
        for cls in ("cat", "dog"):
            write_image(tmp_path / domain / cls / "1.png")
    before = scan(tmp_path)
    _harvested_cache(tmp_path / "photo" / "vlm-cache")
    ds = scan(tmp_path)
    assert (ds.class_names, ds.fingerprint()) == (before.class_names, before.fingerprint())
    assert dict(ds.skipped) == {"photo/vlm-cache": "a vlm-distill cache folder, not data"}


def test_an_interrupted_run_folder_inside_the_data_is_not_a_class(tmp_path, write_image):
    """A run killed after its first checkpoint (config.json, log.jsonl, checkpoint/), in a
    one-domain data folder: it used to be the class "run", so --resume found no store."""
    from distill.train.checkpoints import CHECKPOINT_DIR, STATE_FILE
    from distill.train.config import CONFIG_FILE
    from distill.train.trainer import LOG_FILE

    for cls in ("ant", "bee", "cat"):
        write_image(tmp_path / cls / "1.png")
    before = scan(tmp_path)
    run = tmp_path / "run"
    (run / CHECKPOINT_DIR).mkdir(parents=True)
    (run / CHECKPOINT_DIR / STATE_FILE).write_text("{}")
    (run / CONFIG_FILE).write_text("{}")
    (run / LOG_FILE).write_text("")
    ds = scan(tmp_path)
    assert (ds.class_names, ds.fingerprint()) == (before.class_names, before.fingerprint())
    assert dict(ds.skipped) == {"run": "a vlm-distill run folder, not data"}


def test_classes_named_like_a_caches_parts_are_still_data(tmp_path, write_image):
    # only a cache's own files mark it: a domain holding the classes "responses" and
    # "stores" is a domain
    for domain in ("photo", "sketch"):
        for cls in ("responses", "stores"):
            write_image(tmp_path / domain / cls / "1.png")
    write_image(tmp_path / "photo" / "checkpoint" / "1.png")
    (tmp_path / "photo" / "checkpoint" / "config.json").write_text("{}")  # not a run folder
    ds = scan(tmp_path)
    assert ds.domains == ("photo", "sketch")
    assert ds.class_names == ("checkpoint", "responses", "stores")
    assert [path for path, _ in ds.skipped] == ["photo/checkpoint/config.json"]


def test_stray_subfolder_in_one_of_two_classes_does_not_flip_single_layout(
    tmp_path, write_image
):
    """Two classes, one holding a thumbnail folder (a NAS's @eaDir, a camera's thumbs):
    the layout flipped to DomainBed, the thumbnails the only class and every real image
    skipped as "not in a class folder"."""
    for cls in ("cat", "dog"):
        for i in range(3):
            write_image(tmp_path / cls / f"{i}.png")
    write_image(tmp_path / "dog" / "thumbs" / "0.png")
    ds = scan(tmp_path)
    assert ds.layout == "single"
    assert ds.class_names == ("cat", "dog")
    assert len(ds.samples) == 6
    assert dict(ds.skipped) == {"dog/thumbs": "folder below class level ignored"}


def test_an_empty_domain_folder_is_listed_as_skipped(tmp_path, write_image):
    """DATA/sketch/ with nothing in it (a copy not finished, an unpacked archive that
    failed) was dropped without a word: `data scan` listed neither it nor a reason, and
    `train --test-domains sketch` answered "unknown domain 'sketch'" about a folder that
    is there."""
    write_image(tmp_path / "photo" / "cat" / "1.png")
    write_image(tmp_path / "photo" / "dog" / "1.png")
    (tmp_path / "sketch").mkdir()
    ds = scan(tmp_path)
    assert ds.layout == "domainbed" and ds.domains == ("photo",)
    assert dict(ds.skipped) == {"sketch": "empty folder: no class folders, so not a domain"}


def test_a_manifest_field_past_the_csv_limit_is_one_error_line(tmp_path, write_image, capsys):
    """A row opening a quote it never closes (`"my photo.png,cat`) makes the rest of the
    file one field: past csv's 131,072 characters (a manifest of a few thousand rows) that
    was a `_csv.Error` traceback from `data scan`, harvest and train."""
    from distill.cli import main

    rows = [f"img{i:05d}.png,cat" for i in range(20_000)]
    rows[3] = '"' + rows[3]
    manifest = tmp_path / "train.csv"
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"line \d+: .*field larger than field limit"):
        scan(manifest)
    assert main(["data", "scan", str(manifest)]) == 1  # as every unreadable manifest
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
def test_symlinked_folders_outside_the_data_are_read_loops_are_not(tmp_path, write_image):
    """A domain or class kept elsewhere and linked in is data; a link back into the data
    (``ln -s . DATA/self``) or to a folder holding it is skipped, named."""
    data = tmp_path / "data"
    write_image(data / "photo" / "cat" / "a.png")
    write_image(tmp_path / "elsewhere" / "sketch" / "cat" / "b.png")
    (data / "sketch").symlink_to(tmp_path / "elsewhere" / "sketch")
    (data / "self").symlink_to(".")
    (data / "photo" / "up").symlink_to("..")
    (data / "sketch" / "dog").symlink_to(tmp_path)  # via the outside link: a loop
    ds = scan(data)
    assert ds.domains == ("photo", "sketch")
    assert ds.class_names == ("cat",)
    assert sorted(s.id for s in ds.samples) == ["photo/cat/a.png", "sketch/cat/b.png"]
    skipped = dict(ds.skipped)
    assert skipped["self"] == "a symlink to a folder inside the data, skipped"
    assert skipped["photo/up"] == "a symlink to a folder inside the data, skipped"
    assert skipped["sketch/dog"] == "a symlink to a folder holding the data (a loop), skipped"


# ----------------------------------------------------------- names in NFC and NFD (macOS)


def test_a_class_spelled_nfc_in_one_domain_and_nfd_in_another_is_one_class(tmp_path, write_image):
    """A domain copied from macOS spells "café" as "cafe" + a combining accent: it was a
    second class "café" (three classes, each domain missing one)."""
    import unicodedata

    nfc, nfd = (unicodedata.normalize(f, "café") for f in ("NFC", "NFD"))
    write_image(tmp_path / "d" / "linux" / nfc / "a.png")
    write_image(tmp_path / "d" / "mac" / nfd / "a.png")
    write_image(tmp_path / "d" / "mac" / "tea" / "a.png")
    ds = scan(tmp_path / "d")
    assert ds.class_names == (nfc, "tea")
    assert ds.counts() == {"linux": {nfc: 1}, "mac": {nfc: 1, "tea": 1}}
    # a class folder only ever in NFD keeps its own spelling
    write_image(tmp_path / "s" / nfd / "a.png")
    write_image(tmp_path / "s" / "cafz" / "a.png")
    assert scan(tmp_path / "s").class_names == ("cafz", nfd)  # ordered as in NFC
    # a class file in NFC reads the NFD folder; one naming both spellings repeats a class
    (tmp_path / "c.txt").write_text(f"{nfc}\n", encoding="utf-8")
    assert [s.label for s in scan(tmp_path / "s", class_file=tmp_path / "c.txt").samples] == [0]
    (tmp_path / "c.txt").write_text(f"{nfc}\n{nfd}\n", encoding="utf-8")
    with pytest.raises(DataError, match="repeats"):
        read_class_file(tmp_path / "c.txt")
    # a manifest's labels likewise
    (tmp_path / "s" / "m.csv").write_text(
        f"path,label\n{nfd}/a.png,{nfd}\ncafz/a.png,{nfc}\n", encoding="utf-8"
    )
    ds = scan(tmp_path / "s" / "m.csv")
    assert len(ds.class_names) == 1 and [s.label for s in ds.samples] == [0, 0]


def test_a_domain_flag_typed_in_nfc_names_a_domain_folder_in_nfd(tmp_path, write_image):
    import unicodedata

    from distill.train.config import TrainConfig
    from distill.train.prepare import resolve_domains

    nfc, nfd = (unicodedata.normalize(f, "été") for f in ("NFC", "NFD"))
    for dom in (nfd, "hiver"):
        write_image(tmp_path / "data" / dom / "cat" / "a.png")
    cfg = TrainConfig(
        data=str(tmp_path / "data"),
        teacher="local:hash",
        out=str(tmp_path / "r"),
        cache=str(tmp_path / "c"),
        test_domains=(nfc,),
    )
    assert resolve_domains(scan(tmp_path / "data"), cfg) == (("hiver",), (nfd,))


@pytest.mark.parametrize("outside", [False, True])
def test_a_manifest_path_with_a_nul_byte_is_skipped(tmp_path, write_image, capsys, outside):
    """A manifest whose path cell holds a NUL byte (a CSV whose end a crash left zero-filled,
    a binary file given as the manifest) was a `ValueError: embedded null byte` traceback
    from `data scan`, harvest and train: no file can be named so; the row is skipped."""
    from distill.cli import main

    write_image(tmp_path / "a.png")
    manifest = tmp_path / "train.csv"
    manifest.write_text("path,label\na.png,cat\nb\x00\x00.png,cat\n")
    extra = ["--allow-outside-paths"] if outside else []
    assert main(["data", "scan", str(manifest), *extra]) == 0
    out = capsys.readouterr().out
    assert "images:    1 in 1 domain(s), 1 class(es)" in out
    assert "b\\x00\\x00.png: " in out

"""Bad input through the harvest CLI against the hash teacher on 127.0.0.1.

Corrupt, truncated, zero-byte and non-image files, a 20000x20000 PNG (decompression bomb),
a giant valid image, undecodable pixel data, FIFOs, broken links, odd file names (spaces,
non-UTF-8 bytes, rich markup), wrong class files, empty folders. Each is skipped with its
reason in the report or fails alone with a clear message; the run never crashes, everything
usable is bought once, and stdout stays valid UTF-8.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cache import EmbeddingStore
from distill.cli import main
from tests.reliability.conftest import Teacher, harvest_argv, ledger, teacher

ROOT = Path(__file__).resolve().parents[2]


def png(path: Path | bytes, seed: int = 0, size: tuple[int, int] = (16, 16)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels: ~50 KB on disk, 400 MP when decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    stream = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream)
        + _chunk(b"IEND", b"")
    )  # fmt: skip


def corrupt_pixels(data: bytes) -> bytes:
    """Header and trailer intact (a scan passes it), pixel data garbled."""
    b = bytearray(data)
    mid = len(b) // 2
    b[mid : mid + 64] = b"\xff" * 64
    return bytes(b)


def run_cli(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """The CLI in its own process: real stdout bytes (must be valid UTF-8)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    code = f"import sys; from distill.cli import main; sys.exit(main({argv!r}))"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )


def _printable(rel: str) -> str:
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@pytest.fixture
def hash_teacher() -> Teacher:  # type: ignore[misc]
    with teacher() as t:
        yield t


def _messy_folder(root: Path) -> tuple[list[str], dict[str, str]]:
    """DATA/<class>/<image> with good, odd-named and bad files.

    Returns (ids that must be bought, {id: expected reason fragment} for skipped files).
    """
    good: list[str] = []
    for k, c in enumerate(("bird", "cat", "dog")):
        (root / c).mkdir(parents=True)
        for i in range(3):
            png(root / c / f"{i}.png", seed=10 * k + i)
            good.append(f"{c}/{i}.png")
    cat, dog = root / "cat", root / "dog"
    png(cat / "my cat  1.png", seed=99)  # spaces
    good.append("cat/my cat  1.png")
    png(bytes(dog) + b"/ok\xff\xfe.png", seed=77)  # non-UTF-8 name, valid image
    good.append(os.fsdecode(b"dog/ok\xff\xfe.png"))
    Image.new("RGB", (3000, 2400), (200, 10, 10)).save(cat / "giant.png")  # 7 MP: downscaled
    good.append("cat/giant.png")

    skipped = {
        "cat/empty.png": "empty file",
        "cat/notes.png": "not an image",
        "cat/paper.pdf": "PDF",
        "cat/scan.tif": "TIFF",
        "cat/header.png": "corrupt",
        "cat/half.png": "truncated PNG",
        "dog/bomb.png": "too large",
        "dog/pipe.png": "not a regular file",
        "dog/gone.png": "cannot read",
        "dog/[bold red]x[blink].png": "truncated",  # rich markup in a name
        os.fsdecode(b"dog/caf\xe9.png"): "truncated",  # non-UTF-8 name, bad file
        "dog/nested": "folder below class level",
        "stray.png": "not in a class folder",
    }
    (cat / "empty.png").write_bytes(b"")
    (cat / "notes.png").write_text("this is not an image\n")
    (cat / "paper.pdf").write_bytes(b"%PDF-1.4\n%...\n")
    (cat / "scan.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    (cat / "header.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 8 + b"IEND\xaeB`\x82")
    full = png(cat / "half.png", seed=5, size=(32, 32))
    (cat / "half.png").write_bytes(full[: len(full) // 2])
    (dog / "bomb.png").write_bytes(bomb_png())
    os.mkfifo(dog / "pipe.png")
    os.symlink(root / "nowhere.png", dog / "gone.png")
    (dog / "[bold red]x[blink].png").write_bytes(full[:40])
    with open(bytes(dog) + b"/caf\xe9.png", "wb") as f:
        f.write(full[:40])
    (dog / "nested").mkdir()
    png(dog / "nested" / "deep.png", seed=3)
    png(root / "stray.png", seed=4)
    return good, skipped


def test_messy_folder_skips_and_lists_every_bad_file_and_buys_the_rest(
    hash_teacher: Teacher, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    good, skipped = _messy_folder(data)
    cache = tmp_path / "cache"
    r = run_cli(harvest_argv(hash_teacher.url, data, cache, "--budget", "1"))
    out = r.stdout.decode("utf-8")  # valid UTF-8 whatever the file names
    err = r.stderr.decode("utf-8")
    assert r.returncode == 0, out + err
    assert "Traceback" not in out + err
    assert f"{len(skipped)} files skipped" in out
    # the report lists the first ten with their reasons and says where to find the rest
    shown = [ln for ln in out.splitlines() if ln.startswith("  skipped ")]
    assert len(shown) == 10 and f"... and {len(skipped) - 10} more" in out
    for line in shown:
        rel = next(r for r in skipped if line.startswith(f"  skipped {_printable(r)}: "))
        assert skipped[rel] in line, line
    # ...and `data scan --json` lists every one of them
    listing = json.loads(run_cli(["data", "scan", str(data), "--json"]).stdout)
    reasons = {s["path"]: s["reason"] for s in listing["skipped"]}
    assert set(reasons) == set(skipped)
    for rel, reason in skipped.items():
        assert reason in reasons[rel], (rel, reasons[rel])
    # everything usable was bought once and exported
    bill = hash_teacher.billing()
    assert bill["images"] == len(good)
    [store] = (cache / "stores").iterdir()
    assert sorted(EmbeddingStore.open(store).image_ids) == sorted(good)
    assert all(rec.request_id in bill["billed_request_ids"] for rec in ledger(cache)
               if rec.outcome == "ok")  # fmt: skip


def test_undecodable_pixels_fail_alone_with_a_clear_message(
    hash_teacher: Teacher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files that pass the header scan but whose pixels cannot be decoded: a view > 0 needs
    the pixels, and a giant image must be decoded to be downscaled. Before the fix, the giant
    one raised OSError out of the client and crashed the run mid-way. Since 2026-12-06 the
    store is written without them (it was none until they were removed)."""
    data = tmp_path / "data"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(4):
            png(data / c / f"{i}.png", seed=i + (10 if c == "b" else 0))
    big = io.BytesIO()
    Image.new("RGB", (3000, 3000), (1, 2, 3)).save(big, "PNG")
    (data / "a" / "giant-broken.png").write_bytes(corrupt_pixels(big.getvalue()))
    small = png(data / "b" / "small-broken.png", seed=42, size=(40, 40))
    (data / "b" / "small-broken.png").write_bytes(corrupt_pixels(small))
    cache = tmp_path / "cache"
    argv = harvest_argv(hash_teacher.url, data, cache, "--views", "2", "--batch-size", "4")
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "left out a/giant-broken.png: cannot decode" in out
    assert "left out b/small-broken.png: cannot decode" in out
    assert "Traceback" not in out
    assert "2 images cannot be decoded" in out and "written without them" in out
    # every good view was bought (batch-mates of the broken files included), nothing twice;
    # view 0 of the small one too is decoded before it is sent, so never bought
    assert hash_teacher.billing()["images"] == 8 * 2
    [store] = (cache / "stores").iterdir()
    assert len(EmbeddingStore.open(store).image_ids) == 8
    # the user removes the broken files; the re-run buys nothing again and completes
    (data / "a" / "giant-broken.png").unlink()
    (data / "b" / "small-broken.png").unlink()
    before = hash_teacher.billing()["requests"]
    assert main(argv) == 0
    assert hash_teacher.billing()["requests"] == before


def test_a_file_a_provider_cannot_decode_fails_alone_not_its_whole_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """View 0 is sent as the file is on disk. Before 2026-12-05 a file whose header opens
    but whose pixels do not decode (a truncated download) made a provider refuse (400) its
    whole request: its batch-mates failed with it on every run, the summary said "run
    again to retry them" and no store was ever written. Against a teacher that decodes
    pixels as providers do."""
    data = tmp_path / "data"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(4):
            png(data / c / f"{i}.png", seed=i + (10 if c == "b" else 0))
    broken = data / "b" / "2-broken.png"  # inside a request of 4
    broken.write_bytes(corrupt_pixels(png(broken, seed=42, size=(40, 40))))
    cache = tmp_path / "cache"
    with teacher(decode=True) as server:
        argv = harvest_argv(server.url, data, cache, "--batch-size", "4")
        assert main(argv) == 0
        out = " ".join(capsys.readouterr().out.split())
        # decoded before it is sent (once, the provider's 400 after sending it); the store
        # is written without it
        assert "left out b/2-broken.png: cannot decode" in out
        assert "1 image cannot be decoded" in out and "written without it" in out
        assert "failed" not in out  # its batch-mates were bought
        assert server.billing()["images"] == 8
        broken.unlink()  # the user removes it; the rerun buys nothing again
        before = server.billing()["requests"]
        assert main(argv) == 0
        assert server.billing()["requests"] == before


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d.mkdir(), "no usable images"),
        (lambda d: None, "does not exist"),
        (lambda d: (d.mkdir(), (d / "junk.txt").write_text("x")), "not an image"),
        (lambda d: (d.mkdir(), (d / "a").mkdir(), (d / "b").mkdir()), "no usable images"),
        (lambda d: d.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), "is a single image"),
        (lambda d: d.write_bytes(b"\xff\xfe\x00garbage\x00"), "not UTF-8"),
    ],
    ids=["empty-folder", "missing", "only-junk", "empty-classes", "one-image", "binary-csv"],
)
def test_unusable_data_is_a_clear_error_before_any_spend(
    hash_teacher: Teacher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setup,  # type: ignore[no-untyped-def]
    message: str,
) -> None:
    data = tmp_path / "data"
    setup(data)
    code = main(harvest_argv(hash_teacher.url, data, tmp_path / "cache"))
    captured = capsys.readouterr()
    assert code in (1, 2)
    assert message in captured.err + captured.out
    assert "Traceback" not in captured.err + captured.out
    assert hash_teacher.billing()["requests"] == 0


@pytest.fixture
def two_classes(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    for k, c in enumerate(("cat", "dog", "bird")):
        (data / c).mkdir(parents=True)
        for i in range(2):
            png(data / c / f"{i}.png", seed=10 * k + i)
    return data


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "lists no class names"),
        (b"# only a comment\n\n", "lists no class names"),
        (b"cat\ncat\n", "repeats: cat"),
        (b"\xff\xfe\xfa\x00\x01", "cannot read class file"),
        (b"lion\ntiger\n", "not in the class file"),
    ],
    ids=["missing", "empty", "comments-only", "duplicate", "binary", "no-match"],
)
def test_wrong_class_file_is_a_clear_error(
    hash_teacher: Teacher,
    two_classes: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    message: str,
) -> None:
    class_file = tmp_path / "classes.txt"
    if content is not None:
        class_file.write_bytes(content)
    argv = harvest_argv(hash_teacher.url, two_classes, tmp_path / "cache")
    code = main([*argv, "--class-file", str(class_file)])
    captured = capsys.readouterr()
    # a class file that cannot be used is a usage error (exit 2; until 2026-12-06 the
    # file's own problems exited 1, "failed: run again"); one that names none of the
    # data's classes leaves no usable image (the data's problem, exit 1)
    assert code == (1 if message == "not in the class file" else 2), captured
    assert message in captured.err + captured.out, captured
    assert hash_teacher.billing()["requests"] == 0


def test_class_file_subset_skips_other_folders_and_keeps_its_order(
    hash_teacher: Teacher, two_classes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class_file = tmp_path / "classes.txt"
    class_file.write_text("dog\ncat\n")
    cache = tmp_path / "cache"
    argv = [*harvest_argv(hash_teacher.url, two_classes, cache), "--class-file", str(class_file)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "skipped bird: class folder 'bird' is not in the class file" in out
    [store] = (cache / "stores").iterdir()
    s = EmbeddingStore.open(store)
    assert s.class_names == ["dog", "cat"]
    assert hash_teacher.billing()["images"] == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_unreadable_class_folder_is_listed(
    hash_teacher: Teacher, two_classes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(two_classes / "bird", 0)
    try:
        assert main(harvest_argv(hash_teacher.url, two_classes, tmp_path / "cache")) == 0
    finally:
        os.chmod(two_classes / "bird", 0o755)
    assert "skipped bird: cannot read folder" in capsys.readouterr().out

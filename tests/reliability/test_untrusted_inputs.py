"""Issue 16 items 8-12 through the CLI: private cache files, untrusted manifests and class
names, and one-line errors (exit 2) where a traceback used to be.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.cli import main
from tests.reliability.conftest import Teacher, harvest_argv, ledger, teacher


def png(path: Path, seed: int = 0) -> None:
    arr = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


@pytest.fixture
def hash_teacher() -> Iterator[Teacher]:
    with teacher() as t:
        yield t


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for k, c in enumerate(("cat", "dog")):
        for i in range(2):
            png(root / c / f"{i}.png", seed=10 * k + i)
    return root


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cache_files_are_private_by_default(
    hash_teacher: Teacher, data: Path, tmp_path: Path
) -> None:
    """Item 8: cache.db (and sqlite's -wal/-shm beside it) 0600, like the ledger."""
    cache = tmp_path / "cache"
    assert main(harvest_argv(hash_teacher.url, data, cache)) == 0
    db = cache / "responses" / "cache.db"
    assert db.exists()
    assert _mode(db) == 0o600, oct(_mode(db))
    for side in db.parent.glob("cache.db-*"):
        assert _mode(side) == 0o600, (side, oct(_mode(side)))
    assert _mode(cache / "ledger.jsonl") == 0o600
    assert _mode(cache / "responses") == 0o700
    assert ledger(cache)


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    text = captured.err + captured.out
    assert "Traceback" not in text
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


# ----------------------------------------------------------------- 9: manifest paths


@pytest.mark.parametrize(
    "make_row",
    [
        lambda root, secret: "../secret.png",
        lambda root, secret: str(secret),
        lambda root, secret: "imgs/../../secret.png",
        lambda root, secret: (
            (root / "link.png").symlink_to(secret),
            "link.png",
        )[1],
    ],
    ids=["dotdot", "absolute", "inner-dotdot", "symlink-out"],
)
def test_manifest_paths_outside_its_folder_are_refused(
    hash_teacher: Teacher, tmp_path: Path, capsys: pytest.CaptureFixture[str], make_row
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "data"
    png(root / "imgs" / "ok.png", seed=1)
    secret = tmp_path / "secret.png"  # a private image beside, not inside, the data folder
    png(secret, seed=2)
    manifest = root / "m.csv"
    manifest.write_text(f"path,label\nimgs/ok.png,cat\n{make_row(root, secret)},dog\n")
    argv = harvest_argv(hash_teacher.url, manifest, tmp_path / "cache")
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert "outside its folder" in line and "--allow-outside-paths" in line
    assert hash_teacher.billing()["requests"] == 0
    # the user vouches for the manifest: both images are bought
    assert main([*argv, "--allow-outside-paths"]) == 0
    assert hash_teacher.billing()["images"] == 2


def test_manifest_paths_inside_its_folder_still_work(
    hash_teacher: Teacher, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    png(root / "imgs" / "a.png", seed=1)
    png(root / "b.png", seed=2)
    (root / "m.csv").write_text(f"imgs/a.png,cat\n./b.png,dog\n{root / 'imgs' / 'a.png'},cat\n")
    assert main(harvest_argv(hash_teacher.url, root / "m.csv", tmp_path / "cache")) == 0
    assert hash_teacher.billing()["images"] == 2


# -------------------------------------------------------------- 10: class names


@pytest.mark.parametrize(
    "name", ["ca\nt", "red\x1b[31m", "tab\there", "bell\x07", "sep\u2028x"],
    ids=["newline", "escape", "tab", "bell", "line-separator"],
)
def test_class_folder_with_control_characters_is_refused(
    hash_teacher: Teacher, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    root = tmp_path / "data"
    png(root / "dog" / "0.png", seed=1)
    png(root / name / "0.png", seed=2)
    assert main(harvest_argv(hash_teacher.url, root, tmp_path / "cache")) == 1  # a DataError
    line = _one_line_error(capsys)
    assert "control characters" in line
    assert name not in line and "\x1b" not in line  # shown escaped, on one line
    assert hash_teacher.billing()["requests"] == 0


def test_class_file_and_manifest_labels_with_control_characters_are_refused(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndo\x1b[2Jg\n")
    argv = harvest_argv(hash_teacher.url, data, tmp_path / "cache")
    # the class file is an argument: a usage error (exit 2) since 2026-12-06
    assert main([*argv, "--class-file", str(classes)]) == 2
    assert "control characters" in _one_line_error(capsys)
    manifest = data / "m.csv"
    manifest.write_text('path,label\ncat/0.png,"ca\nt"\ndog/0.png,dog\n')
    assert main(harvest_argv(hash_teacher.url, manifest, tmp_path / "cache")) == 1
    assert "control characters" in _one_line_error(capsys)
    assert hash_teacher.billing()["requests"] == 0


def test_skipped_file_names_print_on_one_line(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data / "cat" / "evil\n\x1b[2Jname.png").write_bytes(b"not an image")
    assert main(harvest_argv(hash_teacher.url, data, tmp_path / "cache")) == 0
    out = capsys.readouterr().out
    assert "\x1b[2J" not in out and "evil\\n\\x1b[2Jname.png" in out.replace("\n ", "")


# --------------------------------------------------- 11: one line instead of a traceback


def test_cache_that_is_a_file_is_a_one_line_error(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    assert main(harvest_argv(hash_teacher.url, data, cache)) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)
    assert main(["cache", "stats", "--cache", str(cache)]) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)
    assert hash_teacher.billing()["requests"] == 0


def test_ledger_that_is_a_folder_is_a_one_line_error(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    (cache / "ledger.jsonl").mkdir(parents=True)
    assert main(harvest_argv(hash_teacher.url, data, cache)) == 2
    assert "ledger.jsonl is a folder" in _one_line_error(capsys)
    assert hash_teacher.billing()["requests"] == 0


@pytest.mark.parametrize("secret", ["userinfo", "query"])
def test_cache_export_hint_never_echoes_a_secret_of_the_base_url(
    hash_teacher: Teacher,
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    secret: str,
) -> None:
    """`cache export --base-url http://user:PASSWORD@host` (or `...?key=KEY`) with items
    missing printed "run `vlm-distill harvest ... --base-url http://user:PASSWORD@host`":
    the secret on the terminal, in a command harvest refuses. The keys never hold it, so
    the hint names the URL without it (the same items)."""
    monkeypatch.setenv("COLUMNS", "300")
    cache = tmp_path / "cache"
    assert main(harvest_argv(hash_teacher.url, data, cache)) == 0
    more = tmp_path / "more"
    shutil.copytree(data, more)
    png(more / "cat" / "new.png", seed=99)  # not bought: export says what to run
    url = (hash_teacher.url.replace("http://", "http://user:pa55word-xyz@") if secret ==
           "userinfo" else hash_teacher.url + "/?key=pa55word-xyz")  # fmt: skip
    capsys.readouterr()
    argv = ["cache", "export", str(more), "--cache", str(cache), "--teacher", "local:hash"]
    assert main([*argv, "--base-url", url]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "1 items are not in the cache" in out, out
    assert "pa55word" not in out and "user:" not in out and "?" not in out
    clean = hash_teacher.url if secret == "userinfo" else hash_teacher.url + "/"
    assert f"--base-url {clean}`" in out


def test_base_url_with_credentials_is_refused_and_nothing_is_charged(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    url = hash_teacher.url.replace("http://", "http://user:pa55word-xyz@")
    assert main(harvest_argv(url, data, cache)) == 2
    line = _one_line_error(capsys)
    assert "contains credentials" in line and "pa55word-xyz" not in line
    records = ledger(cache) if (cache / "ledger.jsonl").exists() else []
    assert records == []  # no "cancelled" charge for a request that never left
    assert hash_teacher.billing()["requests"] == 0


@pytest.mark.parametrize("tail", ["?key=sk-query-secret-42", "#sk-query-secret-42"])
def test_base_url_with_a_query_is_refused_and_the_query_never_printed(
    hash_teacher: Teacher,
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tail: str,
) -> None:
    """Before: the query was kept in the base URL, every request path was appended after
    it, and each 'could not connect to ...' line printed the key in it."""
    cache = tmp_path / "cache"
    assert main(harvest_argv(hash_teacher.url + "/v2" + tail, data, cache)) == 2
    line = _one_line_error(capsys)
    assert "query string" in line and "sk-query-secret-42" not in line
    assert hash_teacher.billing()["requests"] == 0


@pytest.mark.parametrize("path", ["/{key}/v1", "/gw/{quoted}", "/X-{upper}"])
def test_a_base_url_holding_the_key_is_refused_and_the_key_never_printed(path: str) -> None:
    """A gateway that takes the key as a path segment: the base URL went unmasked into the
    client's repr, every "could not connect to ..." line and the ledger's `endpoint` (a
    library audit, 2026-12-08). Refused before anything is sent, without quoting it."""
    from urllib.parse import quote

    from vlmclient import ConfigurationError, TeacherClient

    key = "zz-MYSECRET/9876543210"
    url = "http://127.0.0.1:9" + path.format(key=key, quoted=quote(key, safe=""),
                                            upper=key.upper())  # fmt: skip
    with pytest.raises(ConfigurationError, match="base URL contains the API key") as refused:
        TeacherClient("local:hash", api_key=key, base_url=url)
    assert "MYSECRET" not in str(refused.value).upper()


@pytest.mark.parametrize("key", [" ", "  tok ", "tok "])
def test_a_blank_or_padded_key_is_refused_before_sending(
    hash_teacher: Teacher,
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    key: str,
) -> None:
    """Before: a key of spaces was sent (401), and the redactor then replaced every space
    of every message with ***."""
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", key)
    assert main(harvest_argv(hash_teacher.url, data, tmp_path / "cache")) == 2
    assert "blank or has spaces around it" in _one_line_error(capsys)
    assert hash_teacher.billing()["requests"] == 0


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("budget = [1, 2]\n", "budget takes one value, not a list"),
        ("budget = { usd = 1 }\n", "budget takes a value, not a table"),
        ("teacher = ['local:hash', 'local:hash']\n", "teacher takes one value"),
    ],
    ids=["list", "table", "list-of-strings"],
)
def test_config_file_with_a_list_for_a_single_value_is_a_one_line_error(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    toml: str, message: str,
) -> None:  # fmt: skip
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(toml)
    argv = harvest_argv(hash_teacher.url, data, tmp_path / "cache")
    argv = [a for a in argv if a not in ("--budget", "5")]
    assert main([*argv, "--config", str(cfg)]) == 2
    assert message in _one_line_error(capsys)
    assert hash_teacher.billing()["requests"] == 0


# -------------------------------------------------- 12: read-only is not corrupt

ROOT = Path(__file__).resolve().parents[2]


def _in_read_only_view(
    cache: Path, view: Path, argv: list[str]
) -> subprocess.CompletedProcess[str]:
    """Run the CLI on ``cache`` seen through a read-only bind mount at ``view``, in a private
    mount namespace (root cannot be kept out by file modes; a read-only mount stops it)."""
    code = f"import sys; from distill.cli import main; sys.exit(main({argv!r}))"
    script = 'mount --bind "$1" "$2" && mount -o remount,ro,bind "$2" && shift 2 && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         str(cache), str(view), sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"},
    )  # fmt: skip


def _can_mount_read_only(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    (tmp_path / "probe-a").mkdir()
    (tmp_path / "probe-b").mkdir()
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount --bind {tmp_path / 'probe-a'} {tmp_path / 'probe-b'} && "
         f"mount -o remount,ro,bind {tmp_path / 'probe-b'}"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return r.returncode == 0


def test_read_only_cache_is_not_called_corrupt(
    hash_teacher: Teacher, data: Path, tmp_path: Path
) -> None:
    if not _can_mount_read_only(tmp_path):
        pytest.skip("needs unshare + mount (root) to make a read-only view of a cache")
    cache, view = tmp_path / "cache", tmp_path / "view"
    view.mkdir()
    assert main(harvest_argv(hash_teacher.url, data, cache)) == 0

    # verified without writing (it was "cache database ... is read-only ...: make the
    # folder writable", exit 1: an archived cache could not be checked where it lies)
    verify = _in_read_only_view(cache, view, ["cache", "verify", "--cache", str(view)])
    text = verify.stdout + verify.stderr
    assert verify.returncode == 0, text
    assert "every entry reads back" in text
    assert "corrupt" not in text and "Traceback" not in text

    report = _in_read_only_view(cache, view, ["report", str(view)])
    assert report.returncode == 0, report.stderr
    assert "items in the response cache: unknown (" in report.stdout
    assert "read-only" in report.stdout and "cache: -1" not in report.stdout
    js = _in_read_only_view(cache, view, ["report", str(view), "--json"])
    doc = json.loads(js.stdout)
    assert doc["items_cached"] is None and "read-only" in doc["cache_problem"]

    # the cache itself was healthy all along
    assert main(["cache", "verify", "--cache", str(cache)]) == 0

    # a garbled entry is found read-only as it is read-write
    key = _garble_one_entry(cache / "responses" / "cache.db")
    view2 = tmp_path / "view2"
    view2.mkdir()
    verify = _in_read_only_view(cache, view2, ["cache", "verify", "--cache", str(view2)])
    text = verify.stdout + verify.stderr
    assert verify.returncode == 1, text
    assert f"corrupt {key}" in verify.stdout and "1 problems found" in verify.stdout
    assert "read-only" not in text and "Traceback" not in text


def test_stats_of_a_read_only_cache_reads_it_and_writes_nothing(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cache stats` on a read-only cache was refused ("... is read-only ...: make the
    folder writable", exit 1) while `cache verify` read it: it reads it the same way now."""
    if not _can_mount_read_only(tmp_path):
        pytest.skip("needs unshare + mount (root) to make a read-only view of a cache")
    cache, view = tmp_path / "cache", tmp_path / "view"
    view.mkdir()
    assert main(harvest_argv(hash_teacher.url, data, cache)) == 0
    capsys.readouterr()
    assert main(["cache", "stats", "--cache", str(cache)]) == 0
    writable = capsys.readouterr().out
    files = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in cache.rglob("*")}

    stats = _in_read_only_view(cache, view, ["cache", "stats", "--cache", str(view)])
    text = stats.stdout + stats.stderr
    assert stats.returncode == 0, text
    assert "read-only" not in text and "Traceback" not in text
    last = writable.strip().splitlines()[-1]  # "N entries, B bytes on disk, 0 corrupt"
    entries = last.split(" entries")[0]
    assert int(entries) == 6 and last.endswith(" 0 corrupt"), writable
    assert f"{entries} entries, " in stats.stdout and " 0 corrupt" in stats.stdout
    assert "image_embedding" in stats.stdout and "text_embedding" in stats.stdout
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in cache.rglob("*")} == files


@pytest.mark.parametrize(
    "action",
    [["stats"], ["prune", "--corrupt"], ["recover"], ["export", "DATA", "--teacher", "local:hash"]],
    ids=["stats", "prune", "recover", "export"],
)
def test_a_lost_database_is_said_so_and_nothing_is_created(
    hash_teacher: Teacher,
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    action: list[str],
) -> None:
    """`cache stats|prune|recover|export` on a cache whose responses/cache.db was lost made
    an empty database (and an 8 MB spill file) and said "0 entries", "nothing to delete",
    "the cache database is healthy ... nothing was changed" or "N items are not in the
    cache"; `cache verify` then called the lost database healthy instead of "missing or
    empty"."""
    cache = tmp_path / "cache"
    assert main(harvest_argv(hash_teacher.url, data, cache)) == 0
    responses = cache / "responses"
    for path in responses.iterdir():
        path.unlink()
    capsys.readouterr()
    argv = [str(data) if a == "DATA" else a for a in action]
    assert main(["cache", *argv, "--cache", str(cache)]) == 1
    err = capsys.readouterr().err
    assert "cache.db is missing or empty" in err and "Traceback" not in err
    assert list(responses.iterdir()) == []
    assert main(["cache", "verify", "--cache", str(cache)]) == 1
    assert "missing or empty" in capsys.readouterr().out


def _garble_one_entry(db: Path) -> str:
    """Flip bytes inside one stored value (its checksum no longer matches); its key."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(db)) as con:
        key, value = con.execute(
            "SELECT key, value FROM Cache WHERE value IS NOT NULL ORDER BY rowid LIMIT 1"
        ).fetchone()
        garbled = value[:-8] + bytes(b ^ 0xFF for b in value[-8:])
        con.execute("UPDATE Cache SET value = ? WHERE key = ?", (garbled, key))
        con.commit()
    return str(key)


def test_corrupt_cache_is_still_called_corrupt(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    assert main(harvest_argv(hash_teacher.url, data, cache)) == 0
    db = cache / "responses" / "cache.db"
    for side in db.parent.glob("cache.db-*"):
        side.unlink()
    db.write_bytes(b"this is not a sqlite database" * 100)
    capsys.readouterr()
    assert main(["cache", "verify", "--cache", str(cache)]) == 1
    out = capsys.readouterr().out
    assert "corrupt" in out and "move it" in out and "read-only" not in out


# ------------------------------------------- probes that already held (kept as tests)


@pytest.mark.parametrize(
    "yaml_text",
    [
        'budget: !!python/object/apply:os.system ["touch {marker}"]\n',
        "teacher: !custom local:hash\n",
    ],
    ids=["python-tag", "unknown-tag"],
)
def test_yaml_tags_are_refused_in_one_line(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    yaml_text: str,
) -> None:  # fmt: skip
    marker = tmp_path / "PWNED"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(yaml_text.format(marker=marker))
    argv = harvest_argv(hash_teacher.url, data, tmp_path / "cache")
    assert main([*argv, "--config", str(cfg)]) == 2
    line = _one_line_error(capsys)
    assert "does not parse" in line and "constructor for the tag" in line
    assert "\n" not in capsys.readouterr().err.strip()
    assert not marker.exists()
    assert hash_teacher.billing()["requests"] == 0


def test_symlink_loops_in_the_data_folder_end_and_are_listed(
    hash_teacher: Teacher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    for i, c in enumerate(("cat", "dog")):
        png(root / "d1" / c / "0.png", seed=i)
    (root / "d1" / "cat" / "loop").symlink_to("../cat")  # a folder that contains itself
    (root / "d1" / "cat" / "a.png").symlink_to("b.png")  # two links naming each other
    (root / "d1" / "cat" / "b.png").symlink_to("a.png")
    assert main(harvest_argv(hash_teacher.url, root, tmp_path / "cache")) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "d1/cat/loop: folder below class level ignored" in out
    assert "d1/cat/a.png" in out and "d1/cat/b.png" in out  # skipped, with a reason
    assert hash_teacher.billing()["images"] == 2  # the two real images, once each


@pytest.mark.parametrize("key", ["reliability-token-5d1e\n", "reliability-token\r\n5d1e"])
def test_key_with_a_newline_is_refused_and_nothing_is_charged(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, key: str,
) -> None:  # fmt: skip
    """A key file's trailing newline: aiohttp refused the header with a traceback, and the
    ledger recorded a "cancelled" charge for a request that never left."""
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", key)
    cache = tmp_path / "cache"
    assert main(harvest_argv(hash_teacher.url, data, cache)) == 2
    line = _one_line_error(capsys)
    assert "contains a newline" in line and "5d1e" not in line
    records = ledger(cache) if (cache / "ledger.jsonl").exists() else []
    assert records == []
    assert hash_teacher.billing()["requests"] == 0


@pytest.mark.parametrize("bad", ["127.0.0.1:{port}", "ftp://127.0.0.1:{port}", "http://[::1",
                                 "http:///v2"])
def test_base_url_without_http_scheme_or_host_is_refused_and_nothing_is_charged(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    bad: str,
) -> None:
    """Before: '127.0.0.1:8089' (no scheme) failed in the transport on every request,
    unsent, and each was charged at its worst case to the ledger ('connection'), so the
    rerun with the right URL found the budget gone; 'http://[::1' was a traceback."""
    port = hash_teacher.url.rsplit(":", 1)[1]
    cache = tmp_path / "cache"
    assert main(harvest_argv(bad.format(port=port), data, cache, budget="0.01")) == 2
    assert "base URL" in _one_line_error(capsys)
    records = ledger(cache) if (cache / "ledger.jsonl").exists() else []
    assert records == []
    assert main(harvest_argv(hash_teacher.url, data, cache, budget="0.01")) == 0
    assert hash_teacher.billing()["requests"] > 0


@pytest.mark.parametrize("key", ["reliability\u2013token", "reliability-token\u200b"])
def test_key_with_a_non_ascii_character_is_refused_and_nothing_is_charged(
    hash_teacher: Teacher, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, key: str,
) -> None:
    """A typographic dash or a zero-width space pasted into the key: before, the first
    request failed with a UnicodeEncodeError traceback (exit 1)."""
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", key)
    cache = tmp_path / "cache"
    assert main(harvest_argv(hash_teacher.url, data, cache)) == 2
    line = _one_line_error(capsys)
    assert "non-ASCII" in line and "token" not in line
    assert hash_teacher.billing()["requests"] == 0


def test_a_vertex_location_that_is_no_location_is_a_one_line_error(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: ``VERTEX_LOCATION=ev.il:1`` ended in an httpx.InvalidURL traceback (the
    location goes into the host); nothing is sent either way (refused before a URL)."""
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", "tok")
    monkeypatch.setenv("VERTEX_PROJECT", "p-1")
    monkeypatch.setenv("VERTEX_LOCATION", "ev.il:1")
    argv = ["harvest", str(data), "--teacher", "vertex:multimodalembedding@001",
            "--cache", str(tmp_path / "cache"), "--budget", "1"]
    assert main(argv) == 2
    assert "VERTEX_LOCATION is not a Google Cloud location" in _one_line_error(capsys)
    assert ledger(tmp_path / "cache") == []

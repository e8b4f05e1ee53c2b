"""`serve-teacher` on a port it cannot have: one ``error:`` line and exit 2, no traceback.

A port in use (a real socket bound on 127.0.0.1), a port out of range, a host that does not
resolve. The port is taken before the backend loads: a busy port is said at once.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.cli import main
from tests.test_cli_errors import one_error_line


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_in_use_exits_2(busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve-teacher", "--backend", "hash", "--port", str(busy_port)]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot listen on 127.0.0.1 port {busy_port}" in line
    assert "choose another --port" in line


def test_port_is_taken_before_the_backend_loads(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # a mini-clip backend whose weights are missing: had it loaded first, that would be
    # the error; the busy port is found first
    argv = [
        "serve-teacher", "--backend", "mini-clip", "--weights", "no-such.safetensors",
        "--port", str(busy_port),
    ]  # fmt: skip
    assert main(argv) == 2
    assert "cannot listen on" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("port", ["-1", "99999", "65536", "http"])
def test_port_out_of_range_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve-teacher", "--backend", "hash", f"--port={port}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: argument --port: must be a whole number from 0 to 65535" in err


def test_host_that_does_not_resolve_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "serve-teacher", "--backend", "hash", "--host", "nonexist.invalid", "--allow-remote",
        "--port", "0",
    ]  # fmt: skip
    assert main(argv) == 2
    assert "cannot listen on nonexist.invalid port 0" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("where", "token"),
    [("env", "pässwort"), ("env", " tok3n "), ("flag", "tok3n\u200b"), ("file", "секрет")],
    ids=["non-ascii-env", "spaces-env", "zero-width-flag", "cyrillic-file"],
)
def test_a_token_no_client_can_send_exits_2(
    where: str, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A token with a non-ASCII character (an umlaut, a zero-width space from a copy-paste)
    or spaces around it was served: every request then got 401 (the header arrives as
    Latin-1, or trimmed), and vlm-distill's own client refuses such a key before sending."""
    monkeypatch.delenv("VLM_DISTILL_TEACHER_TOKEN", raising=False)
    argv = ["serve-teacher", "--backend", "hash", "--port", "0"]
    if where == "env":
        monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", token)
    elif where == "flag":
        argv += ["--token", token]
    else:
        (tmp_path / "tok").write_text(token + "\n", encoding="utf-8")
        (tmp_path / "tok").chmod(0o600)
        argv += ["--token-file", str(tmp_path / "tok")]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "token" in line and "ASCII" in line, line
    assert token.strip() not in line


@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "inf", "warm"])
def test_a_temperature_that_is_not_a_positive_number_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--temperature 0` ("deterministic") divided pseudo-clip's logits by zero: every image
    embedding was NaN, which no JSON can carry, so every image request was billed and then
    answered 500 (clients retry those: billed again)."""
    with pytest.raises(SystemExit) as exc:
        main(["serve-teacher", "--backend", "pseudo-clip", "--port", "0",
              f"--temperature={value}"])  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "argument --temperature: must be a finite number > 0" in err, err


@pytest.mark.parametrize("flag", ["--latency-ms", "--timeout-sleep-s", "--body-timeout-s"])
def test_an_endless_delay_is_a_usage_error(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--latency-ms inf` was served: every request slept for ever, the server up and
    answering nothing (and `--body-timeout-s inf` turned the slow-sender deadline off)."""
    assert main(["serve-teacher", "--backend", "hash", "--port", "0", flag, "inf"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "invalid server settings" in line and "finite" in line, line

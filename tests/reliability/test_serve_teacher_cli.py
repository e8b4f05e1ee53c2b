"""Issue 16 items 4-5: where `serve-teacher` may listen, and where its token comes from.

Each case runs the real CLI; refusals must exit 2 with one line and bind nothing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from distill.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("0.0.0.0", "not a loopback address"),
        ("0", "not a loopback address"),
        ("::", "not a loopback address"),
        ("192.168.1.5", "not a loopback address"),
        ("example.com", "not a loopback address"),
        ("", "--host is empty"),
        ("  ", "--host is empty"),
    ],
)
def test_non_loopback_or_empty_host_is_refused_without_allow_remote(
    host: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve-teacher", "--backend", "hash", "--port", "0", f"--host={host}"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    if message.startswith("not"):
        assert "--allow-remote" in err


def _serve(
    argv: list[str], env: dict[str, str]
) -> tuple[str, subprocess.Popen[str], list[str]]:
    """Run serve-teacher until it answers /healthz: (url, process, banner lines)."""
    code = f"import sys; from distill.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        lines = []
        # The whole banner: its last line says where the token came from. (Lines read
        # here stay in this reader's buffer, out of reach of communicate() later.)
        while not lines or not lines[-1].lstrip().startswith(("token:", "generated token")):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        url = re.search(r"http://\S+:\d+", "".join(lines))
        assert url, lines
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url.group(0) + "/healthz")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        return url.group(0), proc, lines
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    return err


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "VLM_DISTILL_TEACHER_TOKEN"}


def test_ipv4_mapped_loopback_is_loopback_and_serves() -> None:
    from distill.cli.serve_teacher import _is_loopback

    assert _is_loopback("::ffff:127.0.0.1") and _is_loopback("LOCALHOST")
    assert _is_loopback("127.0.0.2") and _is_loopback("::1")
    assert not _is_loopback("::ffff:10.0.0.1") and not _is_loopback("0")
    url, proc, _ = _serve(
        ["serve-teacher", "--backend", "hash", "--port", "0", "--host", "::ffff:127.0.0.1"],
        {**_env(), "VLM_DISTILL_TEACHER_TOKEN": "mapped-token-1"},
    )
    try:
        assert "[::ffff:127.0.0.1]" in url
        r = httpx.post(url + "/v1/embeddings", json={"model": "m", "input": "x"},
                       headers={"Authorization": "Bearer mapped-token-1"})  # fmt: skip
        assert r.status_code == 200
    finally:
        _stop(proc)


def test_allow_remote_binds_and_warns() -> None:
    _, proc, lines = _serve(
        ["serve-teacher", "--backend", "hash", "--port", "0", "--host", "0.0.0.0",
         "--allow-remote"],
        {**_env(), "VLM_DISTILL_TEACHER_TOKEN": "remote-token-1"},
    )
    err = _stop(proc)
    assert "reachable from other machines" in "".join(lines) + err


def test_token_file_is_used_and_token_flag_is_warned_about(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-7e6d5c\n")
    token_file.chmod(0o600)
    url, proc, lines = _serve(
        ["serve-teacher", "--backend", "hash", "--port", "0", "--token-file", str(token_file)],
        _env(),
    )
    try:
        body = {"model": "m", "input": "x"}
        ok = httpx.post(url + "/v1/embeddings", json=body,
                        headers={"Authorization": "Bearer file-token-7e6d5c"})  # fmt: skip
        assert ok.status_code == 200
    finally:
        err = _stop(proc)
    text = "".join(lines) + err
    assert "file-token-7e6d5c" not in text and "token: from --token-file" in text
    assert "visible" not in text and "other users" not in text

    token_file.chmod(0o644)  # readable by everyone: said so
    url, proc, lines = _serve(
        ["serve-teacher", "--backend", "hash", "--port", "0", "--token-file", str(token_file)],
        _env(),
    )
    text = "".join(lines) + _stop(proc)
    assert "can be read by other users (mode 644); chmod 600 it" in text

    url, proc, lines = _serve(
        ["serve-teacher", "--backend", "hash", "--port", "0", "--token", "argv-token-1a2b"],
        _env(),
    )
    err = _stop(proc)
    text = "".join(lines) + err
    assert "visible to other users in the process list" in text
    assert "argv-token-1a2b" not in text


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "cannot read --token-file"),
        ("\n", [], "is empty"),
        ("t0ken-abcdef\n", ["--token", "x"], "not both"),
    ],
    ids=["missing", "empty", "both"],
)
def test_bad_token_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None,
    extra: list[str], message: str,
) -> None:  # fmt: skip
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    code = main(["serve-teacher", "--backend", "hash", "--port", "0",
                 "--token-file", str(token_file), *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_token_in_a_config_file_is_said_to_come_from_it_and_its_mode_checked(
    tmp_path: Path,
) -> None:
    """Before: a ``token`` key in a --config file was warned about as "--token is visible
    to other users in the process list" (false: only the file's path is), and the file's
    mode was never looked at, as it is for --token-file."""
    config = tmp_path / "serve.toml"
    config.write_text('backend = "hash"\nport = 0\ntoken = "config-token-5f4e3d"\n')
    config.chmod(0o600)
    url, proc, lines = _serve(["serve-teacher", "--config", str(config)], _env())
    try:
        ok = httpx.post(url + "/v1/embeddings", json={"model": "m", "input": "x"},
                        headers={"Authorization": "Bearer config-token-5f4e3d"})  # fmt: skip
        assert ok.status_code == 200
    finally:
        text = "".join(lines) + _stop(proc)
    assert "config-token-5f4e3d" not in text
    assert "visible" not in text and "other users" not in text
    assert f"token: from --config {config}" in text

    config.chmod(0o644)  # readable by everyone: said so, as for --token-file
    _, proc, lines = _serve(["serve-teacher", "--config", str(config)], _env())
    text = "".join(lines) + _stop(proc)
    assert f"--config {config} holds the token and can be read by other users (mode 644); " \
           "chmod 600 it" in text
    assert "visible" not in text

    # the flag given over the file: on the command line after all, warned about as such
    _, proc, lines = _serve(
        ["serve-teacher", "--config", str(config), "--token", "argv-token-9c8b"], _env()
    )
    text = "".join(lines) + _stop(proc)
    assert "visible to other users in the process list" in text and "token: from --token" in text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_a_stop_signal_ends_the_server_cleanly_after_its_request_in_flight(
    signum: int,
) -> None:
    """A supervisor's SIGTERM (systemd, docker stop, `timeout`) or a closed terminal's
    SIGHUP stops the server as Ctrl-C does: the request in flight is answered, the port
    is closed, "teacher stopped", exit 0 (SIGTERM was re-raised by uvicorn: exit 143, no
    word, the backend never closed; SIGHUP/SIGQUIT ended it on the spot)."""
    import concurrent.futures

    url, proc, _ = _serve(
        ["serve-teacher", "--backend", "hash", "--port", "0", "--latency-ms", "1500"],
        {**_env(), "VLM_DISTILL_TEACHER_TOKEN": "stop-token-3"},
    )
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            reply = pool.submit(
                httpx.post, url + "/v1/embeddings", json={"model": "m", "input": "x"},
                headers={"Authorization": "Bearer stop-token-3"}, timeout=20,
            )  # fmt: skip
            time.sleep(0.5)  # the request is in the server's added latency now
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=20)
            assert reply.result().status_code == 200
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "teacher stopped" in err and "Traceback" not in err, err
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz")


def test_a_stop_signal_while_the_backend_loads_ends_the_server_cleanly() -> None:
    """SIGTERM while the backend loads (pseudo-clip takes 13-25 s: a supervisor stopping
    a server that is starting) ended the process on the spot, no word; now "teacher
    stopped by SIGTERM", exit 0, as once it serves."""
    code = (
        "import sys, time\n"
        "import distill.server as server\n"
        "def loading(*args, **kwargs):\n"
        "    print('LOADING', file=sys.stderr, flush=True)\n"
        "    time.sleep(60)\n"
        "server.make_backend = loading\n"
        "from distill.cli import main\n"
        "sys.exit(main(['serve-teacher', '--backend', 'hash', '--port', '0']))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True,
        env={**_env(), "PYTHONPATH": str(ROOT), "VLM_DISTILL_TEACHER_TOKEN": "load-token-5"},
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == "LOADING"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "teacher stopped by SIGTERM" in err and "Traceback" not in err, err
    assert "spend ledger" not in err  # the paid commands' message: nothing is paid here


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--hash-dim", "1000000000"),  # one text at 10**7: 4.3 s, 300 MB, a 53 MB answer
        ("--hash-dim", "0"),
        ("--hash-dim", "-5"),
        ("--max-items", "1000000000"),  # no cap at all on the inputs of a call
        ("--max-images", "0"),
        ("--max-images", "1000000000"),
        ("--max-request-pixels", "1000000000000"),  # 3 TB of RGB in one request
        ("--max-request-pixels", "0"),
        ("--max-request-pixels", "-5"),
        ("--max-image-pixels", "1000000000"),  # PIL refuses such an image anyway
        ("--max-body-bytes", "1000000000000"),  # a terabyte read into memory
        ("--body-timeout-s", "1e300"),  # the slow-sender defence off
        ("--latency-ms", "1e300"),  # every request waits for ever
        ("--timeout-sleep-s", "1e300"),
        ("--usd-per-image", "1e1000000"),  # decimal.Overflow: a 500 on every request
        ("--usd-per-1m-input-tokens", "1e1000000"),
    ],
)
def test_a_numeric_flag_out_of_range_is_refused_at_startup(
    flag: str, value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each was accepted and served (or failed on every request, or only once a request
    came); now one line, exit 2, before anything is served."""
    from distill.server.runner import ServerThread

    served: list[bool] = []
    monkeypatch.setattr(ServerThread, "serve_forever", lambda self: served.append(True))
    try:
        code = main(["serve-teacher", "--backend", "hash", "--port", "0", flag, value])
    except SystemExit as exc:  # argparse's own refusal of a flag's type
        code = exc.code
    err = capsys.readouterr().err
    assert (code, served) == (2, []), err
    assert "Traceback" not in err, err
    # argparse's usage then "error: argument FLAG: ...", or the one line of the settings
    # check ("error: invalid server settings: max_items: ...")
    last = err.strip().splitlines()[-1]
    assert f"error: argument {flag}: " in last or (
        len(err.strip().splitlines()) == 1 and flag[2:].replace("-", "_") in last
    ), err

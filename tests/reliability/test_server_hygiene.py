"""Server hygiene beyond tests/server: where serve-teacher listens, which routes need the
token, hostile bodies, and no echo of the token in any answer.

Already covered in tests/server (not repeated here): 401 for missing/wrong/Basic tokens on
the three API routes and /admin/billing without echo, 413 for declared and streamed bodies,
the CLI banner naming 127.0.0.1 and not printing the token.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from distill.cli import build_parser
from distill.server import Faults, HashBackend, ServerConfig, ServerThread, create_app

TOKEN = "hygiene-token-0f9e8d7c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def url() -> Iterator[str]:
    cfg = ServerConfig(token=SecretStr(TOKEN), rpm=1000, max_body_bytes=64 * 1024,
                       model_name="hash", faults=Faults(malformed=0.0))  # fmt: skip
    with ServerThread(create_app(cfg, HashBackend(dim=8))) as server:
        yield server.base_url


def _bill(url: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(url + "/admin/billing", headers=AUTH).json()  # type: ignore[no-any-return]


def test_serve_teacher_defaults_to_loopback() -> None:
    args = build_parser().parse_args(["serve-teacher"])
    assert args.host == "127.0.0.1"


def _non_loopback_ip() -> str | None:
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    ips = [ip for ip in out.stdout.split() if "." in ip and not ip.startswith("127.")]
    return ips[0] if ips else None


def test_default_server_is_not_reachable_from_other_interfaces(url: str) -> None:
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection((ip, port), timeout=2):
        pass
    socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_only_loopback_addresses_count_as_private() -> None:
    from distill.cli.serve_teacher import _is_loopback  # anything else is warned about

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.5")


def test_every_route_but_healthz_needs_the_token(url: str) -> None:
    routes = [
        ("GET", "/admin/billing"),
        ("GET", "/admin/info"),
        ("POST", "/admin/reset"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v2/embed"),
        ("POST", "/v1/chat/completions"),
    ]
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer " + TOKEN[:-1]},
                        {"Authorization": "Bearer " + TOKEN + "x"}):  # fmt: skip
            r = httpx.request(method, url + path, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers)
    assert httpx.get(url + "/healthz").status_code == 200
    # the reset really is guarded: the bill survives an unauthorised reset
    httpx.post(url + "/v1/embeddings", headers=AUTH, json={"model": "hash", "input": "x"})
    httpx.post(url + "/admin/reset")
    assert _bill(url)["requests"] == 1


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10_000 + b"]" * 10_000,  # json.loads raises RecursionError (within the cap)
        b'{"model": "hash", "input": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"model": "hash", "input": "\xff\xfe"}',
        b"\x00" * 1000,
        b'{"model": "hash", "input": ' + json.dumps(["x"] * 5000).encode() + b"}",
    ],
    ids=["deep-array", "deep-field", "bad-utf8", "nul-bytes", "too-many-items"],
)
def test_hostile_bodies_get_a_4xx_and_are_not_billed(url: str, body: bytes, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.ERROR)
    r = httpx.post(url + "/v1/embeddings", headers={**AUTH, "content-type": "application/json"},
                   content=body)  # fmt: skip
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    assert "x-request-id" in r.headers
    assert _bill(url)["requests"] == 0
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    httpx.post(url + "/v2/embed", headers=AUTH, content=body)  # the Cohere route too
    assert _bill(url)["requests"] == 0


def test_no_answer_ever_contains_the_token(url: str) -> None:
    """Every status the server can produce, and the admin bodies: no token, anywhere."""
    answers: list[httpx.Response] = []
    with httpx.Client(timeout=10) as c:
        answers.append(c.post(url + "/v1/embeddings", json={"model": "hash", "input": TOKEN}))
        answers.append(c.post(url + "/v1/embeddings", headers={"Authorization": TOKEN}, json={}))
        answers.append(c.post(url + "/v1/embeddings", headers=AUTH, content=b"x" * 70_000))
        answers.append(c.post(url + "/v1/embeddings", headers=AUTH, content=b"{not json"))
        answers.append(c.post(url + "/v1/embeddings", headers=AUTH,
                              json={"model": "other", "input": "x"}))  # fmt: skip
        answers.append(c.post(url + "/v2/embed", headers=AUTH, json={"texts": [1]}))
        answers.append(c.post(url + "/v1/embeddings", headers=AUTH,
                              json={"model": "hash", "input": "ok"}))  # fmt: skip
        answers.append(c.post(url + "/v1/chat/completions", headers=AUTH, json={"model": "hash"}))
        for path in ("/admin/billing", "/admin/info"):
            answers.append(c.get(url + path, headers=AUTH))
        answers.append(c.get(url + "/nowhere", headers=AUTH))
    statuses = {r.status_code for r in answers}
    assert {200, 400, 401, 404, 413} <= statuses, statuses
    for r in answers:
        raw = r.content + json.dumps(dict(r.headers)).encode()
        # the token was sent as input text once: the answer is its vector, never the text
        assert TOKEN.encode() not in raw, (r.status_code, r.text[:200])

"""Auth, rate limit, body size and fault injection of the teacher server, with its bill."""

from __future__ import annotations

import json
import logging
from collections import Counter

import httpx
import pytest
from pydantic import SecretStr

from distill.server import Faults, HashBackend, ServerConfig, ServerThread, create_app
from tests.server.helpers import TOKEN, auth, data_uri, png


def _embed(client: httpx.Client, url: str, text: str = "hello") -> httpx.Response:
    return client.post(url + "/v1/embeddings", json={"model": "m", "input": text})


def _bill(url: str) -> dict:
    return httpx.get(url + "/admin/billing", headers=auth()).json()


def test_401_without_or_with_wrong_token_never_echoes_it(serve, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    url = serve()
    wrong = "sk-live-this-is-somebodys-real-key"
    attempts = [
        {},
        {"Authorization": f"Bearer {wrong}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ]
    for headers in attempts:
        for path, body in [
            ("/v1/embeddings", {"model": "m", "input": "x"}),
            ("/v2/embed", {"model": "m", "input_type": "search_query", "texts": ["x"]}),
            ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": ""}]}),
        ]:
            r = httpx.post(url + path, json=body, headers=headers)
            assert r.status_code == 401, (headers, path)
            raw = r.text + json.dumps(dict(r.headers))
            assert wrong not in raw and TOKEN not in raw
            assert "x-request-id" in r.headers
        assert httpx.get(url + "/admin/billing", headers=headers).status_code == 401
    assert httpx.post(url + "/v2/embed", json={}, headers=auth()).status_code == 400
    assert _bill(url)["requests"] == 0
    assert wrong not in caplog.text and TOKEN not in caplog.text


def _limited_server(rpm: int):
    now = [1000.0]
    cfg = ServerConfig(token=SecretStr(TOKEN), rpm=rpm)
    server = ServerThread(create_app(cfg, HashBackend(dim=8), clock=lambda: now[0]))
    return server, now


def test_429_with_retry_after_and_sliding_window(client: httpx.Client) -> None:
    server, now = _limited_server(rpm=3)
    with server:
        url = server.base_url
        assert [_embed(client, url).status_code for _ in range(3)] == [200, 200, 200]
        now[0] += 20.0
        r = _embed(client, url)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "40"  # the oldest admitted request frees in 40 s
        err = r.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        r = client.post(
            url + "/v2/embed", json={"model": "m", "input_type": "search_query", "texts": ["x"]}
        )
        assert r.status_code == 429 and set(r.json()) == {"id", "message"}
        assert int(r.headers["Retry-After"]) >= 1
        now[0] += 40.5  # the first three leave the 60-s window together
        assert [_embed(client, url).status_code for _ in range(3)] == [200, 200, 200]
        assert _embed(client, url).status_code == 429
        assert _bill(url)["requests"] == 6  # refusals are not billed


def test_413_when_body_too_large(serve, client: httpx.Client) -> None:
    url = serve(max_body_bytes=4096)
    big = {"model": "m", "input_type": "image", "images": [data_uri(png(1))] * 100}
    assert len(json.dumps(big)) > 4096
    r = client.post(url + "/v2/embed", json=big)
    assert r.status_code == 413 and "message" in r.json()

    def chunks():  # no Content-Length: the limit must hold while streaming too
        for _ in range(10):
            yield b"x" * 1000

    r = client.post(url + "/v1/embeddings", content=chunks())
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert _embed(client, url).status_code == 200
    assert _bill(url)["requests"] == 1


def test_fault_fractions_and_billing(serve, client: httpx.Client) -> None:
    faults = Faults(
        fail_500=0.2, fail_503=0.1, fail_529=0.1, malformed=0.1, wrong_dim=0.1, seed=7
    )
    url = serve(backend=HashBackend(dim=16), faults=faults)
    n = 300
    kinds: Counter[str] = Counter()
    paid_ids = set()
    for i in range(n):
        r = _embed(client, url, f"text {i}")
        if r.status_code != 200:
            kinds[str(r.status_code)] += 1
            continue
        paid_ids.add(r.headers["x-request-id"])
        try:
            body = r.json()
        except json.JSONDecodeError:
            kinds["malformed"] += 1
            continue
        kinds["wrong_dim" if len(body["data"][0]["embedding"]) != 16 else "ok"] += 1
    # binomial(300, p): expected 60/30/30/30/30/120, bounds at about 3.5 sigma
    assert 35 <= kinds["500"] <= 85
    for k in ("503", "529", "malformed", "wrong_dim"):
        assert 12 <= kinds[k] <= 50, kinds
    assert 90 <= kinds["ok"] <= 150, kinds
    bill = _bill(url)
    # 5xx/529 are not billed; malformed and wrong-dimension 200s are
    assert bill["requests"] == kinds["ok"] + kinds["malformed"] + kinds["wrong_dim"]
    assert set(bill["billed_request_ids"]) == paid_ids


def test_fault_draws_are_seeded(serve, client: httpx.Client) -> None:
    faults = Faults(fail_500=0.3, fail_503=0.3, seed=11)
    runs = []
    for _ in range(2):
        url = serve(faults=faults)
        runs.append([_embed(client, url).status_code for _ in range(40)])
    assert runs[0] == runs[1] and len(set(runs[0])) == 3


def test_529_body_is_anthropic_style(serve, client: httpx.Client) -> None:
    url = serve(faults=Faults(fail_529=1.0))
    r = _embed(client, url)
    assert r.status_code == 529
    assert r.json()["error"]["type"] == "overloaded_error"


def test_dropped_connection_is_a_client_connection_error_and_billed(serve, caplog) -> None:
    caplog.set_level(logging.INFO)
    url = serve(faults=Faults(drop=1.0))
    with httpx.Client(headers=auth(), timeout=5) as c, pytest.raises(httpx.RemoteProtocolError):
        _embed(c, url)
    bill = _bill(url)
    assert bill["requests"] == 1  # the server did the work: worst case for the client
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_dropped_connection_with_aiohttp(serve) -> None:
    import aiohttp

    url = serve(faults=Faults(drop=1.0))
    async with aiohttp.ClientSession(headers=auth()) as s:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await s.post(url + "/v1/embeddings", json={"model": "m", "input": "x"})


def test_timeout_fault_is_billed(serve) -> None:
    url = serve(faults=Faults(timeout=1.0, timeout_sleep_s=20))
    with httpx.Client(headers=auth(), timeout=0.5) as c, pytest.raises(httpx.ReadTimeout):
        _embed(c, url)
    assert _bill(url)["requests"] == 1


def test_latency_is_added(serve, client: httpx.Client) -> None:
    url = serve(faults=Faults(latency_ms=150))
    r = _embed(client, url)
    assert r.status_code == 200 and r.elapsed.total_seconds() >= 0.15


def test_admin_reset_clears_bill(serve, client: httpx.Client) -> None:
    url = serve()
    _embed(client, url)
    assert _bill(url)["requests"] == 1
    assert client.post(url + "/admin/reset").json() == {"reset": True}
    assert _bill(url) == {
        "requests": 0,
        "images": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "usd": "0",
        "body_bytes": 0,
        "billed_request_ids": [],
        "earlier_ids_not_listed": 0,
    }

"""The client's cheaper hot path keeps every contract: the same cache keys, the same request
bytes, and errors, retries and billing as before, through the default transport against
a raw HTTP server on 127.0.0.1 that records the bytes it receives."""

from __future__ import annotations

import base64
import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import numpy as np
import pytest

from tests.conftest import ListLedger
from vlmclient import (
    APIConnectionError,
    APITimeoutError,
    Budget,
    Image,
    ImageEmbeddingRequest,
    Price,
    RetryPolicy,
    TeacherClient,
    TextEmbeddingRequest,
    Usage,
    item_cache_key,
)
from vlmclient.providers import get_provider
from vlmclient.providers.wire import (
    header_pairs,
    header_values,
    json_post,
    raw_headers,
    request_id_of,
)

VECTOR = np.arange(4, dtype="<f4") / 4
PRICE = Price(usd_per_1m_input_tokens=Decimal("1"))


async def _nosleep(_: float) -> None:
    return None


# -- cache keys ---------------------------------------------------------------------------

# Computed by main at 5412368, before keys were made from a template: a change of any of
# them would orphan every cached answer.
PINNED = {
    "a photo of a cat": "2d970a03ca5fdc0efb2be198234891fc5fd25aca39384abe057428cbbff60d19",
    'say "hi"\\ \n\t\x7f': "f2b12ce2de24e8ea3932f544cc830a3872723a979429282fec7714c845778162",
    "café ☕ 𝔸": "c00003b3d4c6ccd7b38ee7614554bdf6a12aab2eeace0e8c6d31ef617dd955e0",
}


def test_text_keys_are_those_computed_before() -> None:
    client = TeacherClient(
        "openai:text-embedding-3-small",
        api_key="k",
        base_url="http://gpu-box:8000/v1",
        params={"dimensions": 256},
    )
    for text, key in PINNED.items():
        assert client.cache_key("text_embedding", TextEmbeddingRequest(text=text)) == key


def test_content_keys_are_those_computed_before() -> None:
    client = TeacherClient("local:hash", api_key="k")
    key = "d2d6ddf10e0c8bc69c286621e0ac8faa19614f8f5b54b852b4ac060a2a2f57a6"
    image = Image(data=b"x", media_type="image/png", content_id="view1:4f2a")
    assert client.content_key("view1:4f2a") == key
    assert client.cache_key("image_embedding", ImageEmbeddingRequest(image=image)) == key
    assert (
        client.cache_key("text_embedding", TextEmbeddingRequest(text="a cat"))
        == "9dd427b4e9347628c7eeb341e720f22bca06277dd6cf024bb5bcb12467fa504e"
    )


TEXTS = [
    "".join(map(chr, range(1, 128))),  # every ASCII character, the escaped ones included
    "plain words only",
    'a "quoted" \\ path',
    "tab\tand\nnewline\r",
    "naïve café — ☕ 𝔸",  # non-ASCII, an astral character
    "x" * 20_000,
]


@pytest.mark.parametrize(
    ("teacher", "base_url", "params"),
    [
        ("openai:text-embedding-3-small", None, {}),
        ("openai:m", "http://127.0.0.1:9/v1", {"dimensions": 64, "user": "é"}),
        ("cohere:embed-v4.0", None, {"output_dimension": 256}),
        ("local:hash", "http://127.0.0.1:8089", {}),
        ("voyage:voyage-3.5", None, {"output_dtype": "float"}),
    ],
)
def test_every_text_keys_as_item_cache_key(
    teacher: str, base_url: str | None, params: dict[str, object]
) -> None:
    client = TeacherClient(teacher, api_key="k", base_url=base_url, params=params, price=PRICE)
    provider = get_provider(teacher.split(":")[0])
    model = teacher.split(":", 1)[1]
    for text in TEXTS:
        item = TextEmbeddingRequest(text=text)
        expected = item_cache_key(
            provider, model, params, "text_embedding", item, client.endpoint
        )
        assert client.cache_key("text_embedding", item) == expected


# -- request bytes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8089/v2/embed",
        "https://api.openai.com/v1/embeddings",  # default port: no port in Host
        "http://[::1]:8000/v1/embeddings",
        "http://Gpu-Box/v1/embeddings",
    ],
)
def test_json_post_builds_the_request_httpx_builds(url: str) -> None:
    headers = {"Authorization": "Bearer sk-1", "Content-Type": "application/json"}
    body = json.dumps({"input": ['a "cat"']}).encode()
    ours = json_post(httpx.URL(url), headers, body)
    theirs = httpx.Request("POST", httpx.URL(url), headers=headers, content=body)
    assert ours.method == theirs.method and ours.url == theirs.url
    assert ours.headers.raw == theirs.headers.raw  # names, values and order
    assert ours.headers.multi_items() == theirs.headers.multi_items()
    assert ours.content == theirs.content == body
    # built without httpx.Request's constructor: every attribute it sets, and no other
    assert vars(ours).keys() == vars(theirs).keys()
    assert ours.extensions == theirs.extensions and list(ours.stream) == list(theirs.stream)
    assert repr(ours) == repr(theirs)


def test_json_post_with_a_header_it_would_set_builds_it_the_plain_way() -> None:
    headers = {"Host": "proxy.example", "Content-Type": "application/json"}
    ours = json_post(httpx.URL("http://127.0.0.1:1/x"), headers, b"{}")
    theirs = httpx.Request("POST", "http://127.0.0.1:1/x", headers=headers, content=b"{}")
    assert ours.headers.raw == theirs.headers.raw and ours.content == b"{}"


def test_header_values_reads_as_get_does() -> None:
    headers = httpx.Headers(
        [("X-Request-Id", "a"), ("Server", "s"), ("x-request-id", "b"), ("cf-ray", "r")]
    )
    names = {"x-request-id", "cf-ray", "request-id"}
    assert header_values(headers, names) == {
        name: headers[name] for name in names if name in headers
    }
    assert request_id_of(httpx.Response(200, headers=headers)) == "a, b"


# -- through the default transport, against a raw server ---------------------------------


@dataclass
class RawServer:
    """Answers each request with the next of ``script`` (``"drop"``: close the connection
    without answering; ``"hang"``: never answer, until the server stops; else (status,
    headers, JSON body)); keeps each request's bytes."""

    url: str
    script: list[object] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)


@contextmanager
def raw_server(script: list[object]) -> Iterator[RawServer]:
    state: RawServer

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = self.rfile.readline()
                    if not line:
                        return
                    head += line
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                state.received.append(head + self.rfile.read(length))
                step = state.script.pop(0) if state.script else (200, {}, None)
                if step == "drop":
                    return  # closes the connection: the request was sent, no answer
                if step == "hang":
                    state.stopping.wait(30)
                    return
                status, headers, body = step  # type: ignore[misc]
                data = json.dumps(body if body is not None else answer(1)).encode()
                lines = [f"HTTP/1.1 {status} X", "Content-Type: application/json"]
                lines += [f"{k}: {v}" for k, v in headers.items()]
                lines.append(f"Content-Length: {len(data)}")
                self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
                self.wfile.flush()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    state = RawServer(url=f"http://127.0.0.1:{server.server_address[1]}", script=script)
    # poll_interval: shutdown() waits for the serving loop's next poll (0.5 s by default,
    # half a second of every test that serves)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        state.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def answer(n: int, tokens: int = 7) -> dict[str, object]:
    row = base64.b64encode(VECTOR.tobytes()).decode()
    return {
        "data": [{"index": i, "embedding": row} for i in range(n)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _client(url: str, **kw: object) -> TeacherClient:
    kw.setdefault("retry", RetryPolicy(sleep=_nosleep))
    return TeacherClient(
        "openai:m",
        api_key="sk-test-0123456789",
        base_url=url + "/v1",
        price=PRICE,
        budget=Budget("1"),
        **kw,  # type: ignore[arg-type]
    )


def _split(raw: bytes) -> tuple[list[str], dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    first, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return first.split(" "), headers, body


async def test_the_request_on_the_wire() -> None:
    with raw_server([]) as server:
        async with _client(server.url) as client:
            [got] = await client.embed_texts([TextEmbeddingRequest(text='a "cat"\n')])
    (request,) = server.received
    line, headers, body = _split(request)
    assert line == ["POST", "/v1/embeddings", "HTTP/1.1"]
    assert body == b'{"model":"m","input":["a \\"cat\\"\\n"],"encoding_format":"base64"}'
    assert headers["host"] == server.url.removeprefix("http://")
    assert headers["content-length"] == str(len(body))
    assert headers["authorization"] == "Bearer sk-test-0123456789"
    assert headers["content-type"] == "application/json"
    assert np.array_equal(got.vector, VECTOR)
    assert client.budget.spent == Decimal("0.000007")  # the usage the answer reported


async def test_a_5xx_is_retried_and_the_answer_carries_its_request_id() -> None:
    ledger = ListLedger()
    script: list[object] = [
        (500, {"x-request-id": "req-bad"}, {"error": {"message": "boom"}}),
        (200, {"x-request-id": "req-ok", "x-ratelimit-limit-requests": "600"}, answer(1)),
    ]
    with raw_server(script) as server:
        async with _client(server.url, ledger=ledger) as client:
            [got] = await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert len(server.received) == 2 and client.stats.retries == 1
    assert got.request_id == "req-ok" and np.array_equal(got.vector, VECTOR)
    assert [(r.outcome, r.request_id) for r in ledger.records] == [
        ("http_500", "req-bad"),
        ("ok", "req-ok"),
    ]
    assert client.rpm == 600  # the rate-limit header slowed the client down
    assert client.budget.spent == Decimal("0.000007") and client.budget.reserved == 0


async def test_an_answer_without_usage_is_charged_as_reserved() -> None:
    ledger = ListLedger()
    body = {"data": answer(1)["data"]}
    with raw_server([(200, {}, body)]) as server:
        async with _client(server.url, ledger=ledger) as client:
            await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    [rec] = ledger.records
    assert rec.estimated and rec.cost_usd == rec.reserved_usd
    assert client.budget.spent == Decimal(rec.reserved_usd) > 0


async def test_a_dropped_connection_after_sending_is_charged() -> None:
    ledger = ListLedger()
    with raw_server(["drop"]) as server:
        async with _client(server.url, ledger=ledger, retry=RetryPolicy(max_attempts=1)) as c:
            with pytest.raises(APIConnectionError) as info:
                await c.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert info.value.sent is True and len(server.received) == 1
    assert [r.outcome for r in ledger.records] == ["connection"]
    assert c.budget.spent == Decimal(ledger.records[0].reserved_usd) > 0


async def test_no_answer_in_time_is_charged_as_a_timeout() -> None:
    ledger = ListLedger()
    with raw_server(["hang"]) as server:
        async with _client(
            server.url, ledger=ledger, timeout=0.2, retry=RetryPolicy(max_attempts=1)
        ) as client:
            with pytest.raises(APITimeoutError, match="no answer"):
                await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert [r.outcome for r in ledger.records] == ["timeout"]
    assert client.budget.spent == Decimal(ledger.records[0].reserved_usd) > 0


async def test_a_dropped_connection_is_retried() -> None:
    with raw_server(["drop", (200, {}, answer(1))]) as server:
        async with _client(server.url) as client:
            [got] = await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert len(server.received) == 2 and client.stats.retries == 1
    assert np.array_equal(got.vector, VECTOR)


async def test_a_refused_connection_is_released() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ledger = ListLedger()
    async with _client(
        f"http://127.0.0.1:{port}", ledger=ledger, retry=RetryPolicy(max_attempts=1)
    ) as client:
        with pytest.raises(APIConnectionError, match="nothing was sent") as info:
            await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert info.value.sent is False
    assert client.budget.spent == 0 and client.budget.reserved == 0
    assert [(r.outcome, r.cost_usd) for r in ledger.records] == [("refused", "0")]


# -- the cheaper pieces of the hot path are the plain ones, digit for digit ----------------


def _plain_cost(price: Price, usage: Usage) -> Decimal:
    """Price.cost as written before zero rates were skipped."""
    rate_in, rate_out = price.token_rates(usage.input_tokens)
    m = Decimal(1_000_000)
    return (
        price.usd_per_image * usage.images
        + rate_in * usage.input_tokens / m
        + rate_out * usage.output_tokens / m
        + price.usd_per_1m_image_tokens * usage.image_tokens / m
        + price.usd_per_1b_pixels * usage.image_pixels / Decimal(1_000_000_000)
        + price.usd_per_1k_characters * usage.characters / Decimal(1000)
    )


# "1E+6": the largest a Price takes (MAX_USD_PER_UNIT); "999999.999999": its digits
RATES = ["0", "0.0", "-0", "0E+2", "0.02", "1E+1", "12.5", "0.000001", "1E+6", "999999.999999"]
COUNTS = [0, 1, 7, 10**12, -3]


def test_price_cost_is_the_plain_sum_to_the_digit() -> None:
    fields = [
        "usd_per_image",
        "usd_per_1m_input_tokens",
        "usd_per_1m_output_tokens",
        "usd_per_1m_image_tokens",
        "usd_per_1b_pixels",
        "usd_per_1k_characters",
    ]
    units = [
        "images", "input_tokens", "output_tokens", "image_tokens", "image_pixels", "characters"
    ]
    checked = 0
    for i, rate in enumerate(RATES):
        for j in range(len(COUNTS)):
            for shift in range(len(fields)):
                # each rate in each place, the others zero or not by turns
                rates = {
                    f: Decimal(RATES[(i + k * shift) % len(RATES)]) if k % 2 else Decimal(rate)
                    for k, f in enumerate(fields)
                }
                counts = {u: COUNTS[(j + k) % len(COUNTS)] for k, u in enumerate(units)}
                for tier in ({}, {"long_prompt_above_tokens": 5,
                                  "usd_per_1m_input_tokens_long_prompt": Decimal("0.5")}):
                    price = Price(**rates, **tier)  # type: ignore[arg-type]
                    usage = Usage(**counts)
                    ours, plain = price.cost(usage), _plain_cost(price, usage)
                    assert ours.as_tuple() == plain.as_tuple(), (rates, counts, tier)
                    checked += 1
    assert checked == len(RATES) * len(COUNTS) * len(fields) * 2


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"dimensions": 64, "user": "é"},
        {"encoding_format": "float"},  # a caller's format wins
        # (an "input" param is refused by the client: test_client_built_fields.py)
        {"reasoning": "off", "extra": [1, {"b": None}]},
    ],
)
def test_an_embedding_body_is_the_json_of_its_fields(params: dict[str, object]) -> None:
    from vlmclient.providers.openai import OPENAI, embedding_body

    client = TeacherClient(
        "openai:m", api_key="k", base_url="http://127.0.0.1:9/v1", params=params, price=PRICE
    )
    items = [TextEmbeddingRequest(text=t) for t in TEXTS]
    for batch in (items[:1], items):
        spec = client._batcher.spec("text_embedding", batch)
        request = OPENAI.build_request(spec)
        plain = json.dumps(embedding_body(spec), separators=(",", ":")).encode()
        assert request.content == plain
        assert request.headers["content-length"] == str(len(plain))


def test_an_embedding_body_follows_a_change_of_its_parameters() -> None:
    from pydantic import SecretStr

    from vlmclient.providers import CallSpec
    from vlmclient.providers.openai import OPENAI

    params: dict[str, object] = {"dimensions": 64}
    item = TextEmbeddingRequest(text="a cat")
    spec = CallSpec("text_embedding", "m", [item], "http://h/v1", SecretStr("k"), params)
    assert b'"dimensions":64' in OPENAI.build_request(spec).content
    params["dimensions"] = 32  # the same dict, changed in place
    assert b'"dimensions":32' in OPENAI.build_request(spec).content
    params["input"] = ["x"]
    assert json.loads(OPENAI.build_request(spec).content)["input"] == ["x"]


RAW = [
    (b"Content-Type", b"application/json"),
    (b"X-Request-Id", b"r1"),
    (b"x-request-id", b"r2"),
    (b"X-Note", "café".encode()),
]


@pytest.mark.parametrize("raw", [RAW, RAW[:3], [(b"X-Latin", "é".encode("latin-1"))], []])
def test_headers_from_raw_bytes_read_as_httpx_reads_them(raw: list[tuple[bytes, bytes]]) -> None:
    ours, theirs = raw_headers(raw), httpx.Headers(raw)
    assert ours.raw == theirs.raw and ours.encoding == theirs.encoding
    assert ours.multi_items() == theirs.multi_items() == header_pairs(theirs)
    assert header_pairs(ours) == theirs.multi_items()
    names = frozenset({"x-request-id", "x-note", "x-latin", "absent"})
    assert header_values(ours, names) == {n: theirs[n] for n in names if n in theirs}
    assert request_id_of(httpx.Response(200, headers=ours)) == theirs.get("x-request-id")


async def test_one_transport_sends_to_each_endpoint_with_each_timeout() -> None:
    """The transport keeps aiohttp's URL per endpoint and a ClientTimeout per timeout:
    requests to two endpoints, with two timeouts, go where and as they were meant to."""
    from vlmclient.transport import ReadingAiohttpTransport

    script: list[object] = [(200, {}, {"n": 1}), (200, {}, {"n": 2}), "hang"]
    with raw_server(script) as server:
        transport = ReadingAiohttpTransport()
        try:
            for path, n in (("/v1/a", 1), ("/v1/b", 2)):
                url = httpx.URL(server.url + path)
                request = json_post(url, {"Content-Type": "application/json"}, b"{}")
                request.extensions = {"timeout": httpx.Timeout(5.0).as_dict()}
                response = await transport.handle_async_request(request)
                assert response.json() == {"n": n}
            request = json_post(httpx.URL(server.url + "/v1/a"), {}, b"{}")
            request.extensions = {"timeout": httpx.Timeout(0.2).as_dict()}
            with pytest.raises(httpx.TimeoutException):
                await transport.handle_async_request(request)
        finally:
            await transport.aclose()
    paths = [_split(r)[0][1] for r in server.received]
    assert paths == ["/v1/a", "/v1/b", "/v1/a"]

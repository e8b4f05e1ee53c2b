"""Titan: botocore's SigV4 signature checked by an independent verifier written from the
AWS SigV4 documentation, and a clear error when the optional extra is missing."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import sys
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest

from tests.providers.conftest import call_spec, client_for, image
from tests.providers.loopback import loopback
from vlmclient import (
    ConfigurationError,
    ImageEmbeddingRequest,
    Price,
    TeacherClient,
    TextEmbeddingRequest,
)
from vlmclient.providers import titan

ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "session-token-xyz",
    "AWS_REGION": "eu-central-1",
}
MODEL = "amazon.titan-embed-image-v1"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def verify_sigv4(request: httpx.Request, secret: str) -> bool:
    """Recompute the SigV4 signature of ``request`` (single-chunk, no query string)."""
    auth = request.headers["authorization"]
    algorithm, rest = auth.split(" ", 1)
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    credential = fields["Credential"].split("/")
    _, date, region, service, terminator = credential
    signed_headers = fields["SignedHeaders"].split(";")
    canonical_headers = "".join(
        f"{name}:{' '.join(request.headers[name].split())}\n" for name in signed_headers
    )
    # Every service but S3 URI-encodes the (already encoded) path once more.
    canonical_uri = quote(request.url.raw_path.decode().split("?")[0], safe="/~")
    canonical_request = "\n".join(
        [
            request.method,
            canonical_uri,
            "",
            canonical_headers,
            ";".join(signed_headers),
            hashlib.sha256(request.content).hexdigest(),
        ]
    )
    amz_date = request.headers["x-amz-date"]
    scope = f"{date}/{region}/{service}/{terminator}"
    to_sign = "\n".join(
        [algorithm, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), date), region), service), terminator)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["Signature"])


def test_botocore_signature_verifies_independently() -> None:
    pytest.importorskip("botocore")
    spec = call_spec("titan", "image_embedding", MODEL, [ImageEmbeddingRequest(image=image())])
    request = titan.signed_request(spec, env=ENV)
    assert str(request.url) == (
        "https://bedrock-runtime.eu-central-1.amazonaws.com/model/"
        "amazon.titan-embed-image-v1/invoke"
    )
    auth = request.headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-central-1/bedrock/aws4_request" in auth
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-date", "content-type", "x-amz-security-token"} <= set(signed)
    assert request.headers["x-amz-security-token"] == "session-token-xyz"
    assert verify_sigv4(request, ENV["AWS_SECRET_ACCESS_KEY"])
    # the verifier is not a rubber stamp: another body or secret fails it
    tampered = httpx.Request(
        "POST", request.url, headers=request.headers, content=request.content + b" "
    )
    assert not verify_sigv4(tampered, ENV["AWS_SECRET_ACCESS_KEY"])
    assert not verify_sigv4(request, "another-secret")


ARN = "arn:aws:bedrock:eu-central-1:123456789012:provisioned-model/abc123"


def botocore_invoke_url(model_id: str) -> str:
    """The URL botocore's own bedrock-runtime client builds for InvokeModel (not sent)."""
    session = importlib.import_module("botocore.session").get_session()
    client = session.create_client(
        "bedrock-runtime",
        region_name=ENV["AWS_REGION"],
        aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key="x",
    )
    seen: list[str] = []

    def stop(request: Any, **_: Any) -> None:
        seen.append(request.url)
        raise _Stop

    client.meta.events.register("before-send.bedrock-runtime.InvokeModel", stop)
    with pytest.raises(_Stop):
        client.invoke_model(modelId=model_id, body=b"{}", contentType="application/json")
    return seen[0]


class _Stop(Exception):
    pass


@pytest.mark.parametrize("model", [MODEL, "amazon.titan-embed-image-v1:0", ARN])
def test_a_model_arn_is_encoded_in_the_path_as_botocore_does(model: str) -> None:
    # A provisioned-throughput ARN holds ':' and '/'; sent raw, its '/' split the path
    # and Bedrock answered 404 (or the signature did not match).
    pytest.importorskip("botocore")
    spec = call_spec("titan", "text_embedding", model, [TextEmbeddingRequest(text="x")])
    request = titan.signed_request(spec, env=ENV)
    assert str(request.url) == botocore_invoke_url(model)
    assert request.url.raw_path.decode().count("/") == 3  # /model/<id>/invoke
    assert verify_sigv4(request, ENV["AWS_SECRET_ACCESS_KEY"])


def test_titan_bodies() -> None:
    pytest.importorskip("botocore")
    spec = call_spec(
        "titan",
        "text_embedding",
        MODEL,
        [TextEmbeddingRequest(text="a cat")],
        {"outputEmbeddingLength": 384},
    )
    body = json.loads(titan.signed_request(spec, env=ENV).content)
    assert body == {"inputText": "a cat", "embeddingConfig": {"outputEmbeddingLength": 384}}
    spec = call_spec("titan", "image_embedding", MODEL, [ImageEmbeddingRequest(image=image())])
    body = json.loads(titan.signed_request(spec, env=ENV).content)
    assert set(body) == {"inputImage"} and not body["inputImage"].startswith("data:")


def test_titan_region_is_required() -> None:
    pytest.importorskip("botocore")
    spec = call_spec("titan", "text_embedding", MODEL, [TextEmbeddingRequest(text="x")])
    env = {k: v for k, v in ENV.items() if k != "AWS_REGION"}
    with pytest.raises(ConfigurationError, match="AWS_REGION"):
        titan.signed_request(spec, env=env)


async def test_missing_botocore_is_a_configuration_error_before_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("botocore", "botocore.auth", "botocore.awsrequest", "botocore.credentials"):
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    async with client_for(
        f"titan:{MODEL}", handler, price=Price(usd_per_image=Decimal("0.00006"))
    ) as c:
        with pytest.raises(ConfigurationError, match=r"vlm-distill\[aws\]"):
            await c.embed_images([ImageEmbeddingRequest(image=image())])
    assert sent == [] and c.budget.spent == 0 and c.budget.reserved == 0


class BedrockStandIn:
    """``POST /model/{modelId}/invoke`` on 127.0.0.1: the id is one path segment, decoded
    as Bedrock's router does; another path is 404 (unbilled); an image is billed once."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.billed = Decimal(0)

    def respond(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parts = path.split("/")
        if len(parts) != 4 or parts[1] != "model" or parts[3] != "invoke":
            return 404, {"message": "UnknownOperationException"}
        if unquote(parts[2]) != self.model:
            return 400, {"message": f"The provided model identifier is invalid: {parts[2]}"}
        self.billed += PRICE.usd_per_image
        return 200, {"embedding": [0.6, 0.8], "inputTextTokenCount": 0}


PRICE = Price(usd_per_image=Decimal("0.00006"))


async def test_a_provisioned_model_arn_is_called_and_billed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("botocore")
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    bedrock = BedrockStandIn(ARN)
    with loopback(bedrock.respond) as server:
        async with TeacherClient(
            f"titan:{ARN}", base_url=server.url, price=PRICE, budget="0.01"
        ) as client:
            out = await client.embed_images([ImageEmbeddingRequest(image=image())])
    assert len(out) == 1 and len(server.requests) == 1
    assert client.budget.spent == bedrock.billed == PRICE.usd_per_image

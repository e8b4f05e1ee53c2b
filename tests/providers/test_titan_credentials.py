"""Titan signs with botocore's whole credential chain: no AWS_ACCESS_KEY_ID or
AWS_PROFILE is needed when a profile file, SSO, or a container/instance role provides
credentials (issue 15, expected options)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.providers.conftest import nosleep, vector
from vlmclient import ConfigurationError, Price, TeacherClient, TextEmbeddingRequest
from vlmclient.retry import RetryPolicy

MODEL = "amazon.titan-embed-image-v1"
PRICE = Price(usd_per_image=Decimal("0.00006"), usd_per_1m_input_tokens=Decimal("0.8"))
AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    pytest.importorskip("botocore")
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return tmp_path


def _client(sent: list[httpx.Request]) -> TeacherClient:
    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"embedding": vector(1), "inputTextTokenCount": 3})

    return TeacherClient(
        f"titan:{MODEL}",
        transport=httpx.MockTransport(handler),
        price=PRICE,
        retry=RetryPolicy(max_attempts=1, sleep=nosleep),
    )


async def test_credentials_from_the_shared_file_without_env_vars(no_aws_env: Path) -> None:
    (no_aws_env / "credentials").write_text(
        "[default]\naws_access_key_id = AKIAFROMFILE0000\naws_secret_access_key = s3cr3t\n"
    )
    sent: list[httpx.Request] = []
    async with _client(sent) as client:
        await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert "Credential=AKIAFROMFILE0000/" in sent[0].headers["authorization"]


async def test_no_credentials_anywhere_is_a_clear_error_and_nothing_is_sent(
    no_aws_env: Path,
) -> None:
    sent: list[httpx.Request] = []
    async with _client(sent) as client:
        with pytest.raises(ConfigurationError, match="botocore's chain"):
            await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    assert sent == [] and client.budget.spent == 0 and client.budget.reserved == 0

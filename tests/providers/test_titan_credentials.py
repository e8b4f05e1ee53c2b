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


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLEtoken\n"),  # from a key file
        ("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLEtoken\r"),  # a CRLF .env file
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY "),
    ],
)
async def test_aws_credentials_with_a_newline_or_space_are_refused_before_anything_is_charged(
    no_aws_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """Before: a session token ending in a newline (checked for the API key, not for
    the AWS secrets) went into the ``X-Amz-Security-Token`` header, which the transport
    refused after the budget was reserved: every request "failed after sending",
    charged at its worst case and retried (a CLI harvest of 80 images was charged for
    172 requests that never left); a secret key with a space signed every request
    wrongly (a 403 from AWS for each)."""
    from tests.providers.loopback import loopback
    from vlmclient import Budget

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv(name, value)

    def respond(path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
        return 200, {"embedding": vector(1), "inputTextTokenCount": 3}

    with loopback(respond) as server:
        async with TeacherClient(
            f"titan:{MODEL}",
            base_url=server.url,
            price=PRICE,
            budget=Budget(Decimal("1")),
            retry=RetryPolicy(max_attempts=3, sleep=nosleep),
        ) as client:
            with pytest.raises(ConfigurationError, match=f"{name}.*nothing was sent"):
                await client.embed_texts([TextEmbeddingRequest(text="a cat")])
        assert server.requests == []
    assert client.budget.spent == 0 and client.budget.reserved == 0
    assert value.strip() not in str(client.stats)


async def test_debug_logging_never_shows_the_session_token(
    no_aws_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: at DEBUG (``vlm-distill -vv harvest --teacher titan:...``) botocore's signer
    logged each canonical request, ``x-amz-security-token:<the session token>`` included,
    to stderr."""
    import logging

    from tests.providers.loopback import loopback

    token = "FwoGZXIvYXdzSESSIONtoken0123456789"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    caplog.set_level(logging.DEBUG)

    def respond(path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
        return 200, {"embedding": vector(1), "inputTextTokenCount": 3}

    with loopback(respond) as server:
        async with TeacherClient(f"titan:{MODEL}", base_url=server.url, price=PRICE) as client:
            await client.embed_texts([TextEmbeddingRequest(text="a cat")])
        headers = {k.lower(): v for k, v in server.requests[0][2].items()}
        assert headers["x-amz-security-token"] == token  # it was sent
    assert logging.getLogger().isEnabledFor(logging.DEBUG) and token not in caplog.text


@pytest.mark.parametrize("region", ["us-east-1 ", " us-east-1", "us-east-1\n", "ev.il:1"])
async def test_an_aws_region_that_cannot_go_in_a_host_is_refused_before_sending(
    no_aws_env: Path, monkeypatch: pytest.MonkeyPatch, region: str
) -> None:
    """Before: AWS_REGION went into the host (bedrock-runtime.{region}.amazonaws.com) and
    the signature unchecked: "us-east-1 " built a host that does not resolve, retried as
    a connection error."""
    from tests.providers.loopback import loopback
    from vlmclient import Budget

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_REGION", region)

    def respond(path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
        return 200, {"embedding": vector(1), "inputTextTokenCount": 3}

    budget = Budget(Decimal("1"))
    with loopback(respond) as server:
        with pytest.raises(ConfigurationError, match="AWS_REGION is not an AWS region"):
            TeacherClient(f"titan:{MODEL}", base_url=server.url, price=PRICE, budget=budget)
        monkeypatch.setenv("AWS_REGION", "us-east-1")  # changed after the client was made
        async with TeacherClient(
            f"titan:{MODEL}",
            base_url=server.url,
            price=PRICE,
            budget=budget,
            retry=RetryPolicy(max_attempts=3, sleep=nosleep),
        ) as client:
            monkeypatch.setenv("AWS_REGION", region)
            with pytest.raises(ConfigurationError, match="AWS_REGION is not an AWS region"):
                await client.embed_texts([TextEmbeddingRequest(text="a cat")])
        assert server.requests == []
    assert budget.spent == 0 and budget.reserved == 0 and client.stats.retries == 0


class _FakeChain:
    """What botocore's chain hands back from a profile, SSO or an assumed role: temporary
    credentials, none of them in the environment (no network)."""

    def __init__(self, secret: str, token: str) -> None:
        self.secret, self.token = secret, token

    def get_credentials(self) -> _FakeChain:
        return self

    def get_frozen_credentials(self) -> object:
        from botocore.credentials import ReadOnlyCredentials

        return ReadOnlyCredentials("ASIAFAKEROLE00000000", self.secret, self.token)


async def test_credentials_from_botocore_chain_are_scrubbed_from_errors_logs_and_ledger(
    no_aws_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: only the AWS secrets in the environment were known to the redactor; a
    session token (and secret key) from a profile, SSO or an assumed role was sent but
    never registered, so an error body or request id echoing it was kept as it came: in
    the raised error, its log lines and the ledger."""
    import logging

    from tests.conftest import ListLedger
    from tests.providers.loopback import Answer, loopback
    from vlmclient.errors import PermissionDeniedError
    from vlmclient.redact import Redactor

    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYROLESECRET"
    token = "IQoJb3JpZ2luX2VjEROLEsessionTOKEN0123456789"
    chain = _FakeChain(secret, token)
    monkeypatch.setattr("botocore.session.get_session", lambda: chain)
    caplog.set_level(logging.DEBUG)

    def respond(path: str, body: dict[str, object]) -> Answer:
        said = f"The security token included in the request is invalid: {token} ({secret})"
        return 403, {"message": said}, {"x-amzn-RequestId": f"rid-{token}"}

    ledger = ListLedger()
    with loopback(respond) as server:
        async with TeacherClient(
            f"titan:{MODEL}", base_url=server.url, price=PRICE, ledger=ledger,
            retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        ) as client:
            with pytest.raises(PermissionDeniedError) as got:
                await client.embed_texts([TextEmbeddingRequest(text="a cat")])
        headers = {k.lower(): v for k, v in server.requests[0][2].items()}
        assert headers["x-amz-security-token"] == token  # it was sent
    holds = Redactor([token, secret]).holds
    assert "***" in str(got.value) and not holds(str(got.value))
    assert not holds(repr(got.value.request_id)) and not holds(caplog.text)
    assert ledger.records and not holds(repr(ledger.records))

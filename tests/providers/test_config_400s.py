"""A 400 that no item can get past (a model id the Bedrock region does not know, a Gemini
key that is wrong or expired, an account Gemini refuses) stops the run at its first
answer, through the real CLI against a loopback server that speaks the provider's wire
format. Before 2026-12-06 each was a per-item refusal: a harvest sent one failing request
per item and ended with "run again"; pseudolabel went on until five failures in a row."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cache import SpendLedger
from distill.cli import main
from tests.conftest import png_bytes
from tests.providers.loopback import loopback

TITAN_MODEL = "amazon.titan-embed-image-v1"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "AWS_REGION": "eu-west-3",
}
INVALID_MODEL = {"message": "The provided model identifier is invalid."}
VALIDATION = {"x-amzn-ErrorType": "ValidationException:http://internal.amazon.com/coral/"}


def _exit(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def _images(folder: Path, classes: tuple[str, ...], per_class: int) -> None:
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / name / f"{i}.png").write_bytes(png_bytes(100 * c + i))


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())


def test_a_titan_model_the_region_does_not_know_stops_the_harvest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 2 prompts and 20 images each sent alone, each refused, "run again"."""
    pytest.importorskip("botocore")
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    _images(tmp_path / "data", ("cat", "dog"), 10)

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        return 400, INVALID_MODEL, VALIDATION

    with loopback(respond) as server:
        argv = [
            "harvest", str(tmp_path / "data"), "--teacher", f"titan:{TITAN_MODEL}",
            "--base-url", server.url, "--cache", str(tmp_path / "cache"), "--budget", "1",
            "--concurrency", "1",
        ]  # fmt: skip
        assert _exit(argv) == 1
        assert len(server.requests) <= 2  # the first answer stops it (one more may be queued)
    said = _said(capsys)
    assert f"{TITAN_MODEL} cannot be called in region eu-west-3" in said
    assert "AWS_REGION" in said and "inference profile" in said
    assert "run again" not in said
    records = SpendLedger.read(tmp_path / "cache" / "ledger.jsonl")
    assert sum((Decimal(r.cost_usd) for r in records), Decimal(0)) == 0


@pytest.mark.parametrize(
    ("status", "detail", "shown"),
    [
        (
            "INVALID_ARGUMENT",
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            "API key not valid",
        ),
        ("FAILED_PRECONDITION", None, "User location is not supported"),
    ],
)
def test_a_gemini_key_or_account_refusal_stops_pseudolabel(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    status: str,
    detail: dict[str, Any] | None,
    shown: str,
) -> None:
    """Before: each answer failed alone ("a rerun retries") until five in a row."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-not-a-valid-key-0123456789")
    folder = tmp_path / "unlabelled"
    _images(tmp_path, ("unlabelled",), 12)
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    message = {
        "INVALID_ARGUMENT": "API key not valid. Please pass a valid API key.",
        "FAILED_PRECONDITION": "User location is not supported for the API use.",
    }[status]
    error: dict[str, Any] = {"code": 400, "message": message, "status": status}
    if detail is not None:
        error["details"] = [detail]

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 400, {"error": error}

    with loopback(respond) as server:
        argv = [
            "pseudolabel", str(folder), "--class-file", str(classes),
            "--teacher", "gemini:gemini-3.5-flash-lite", "--base-url", server.url,
            "--cache", str(tmp_path / "cache"), "--budget", "1", "--route", "answer",
            "--check", "none", "--concurrency", "1",
        ]  # fmt: skip
        assert _exit(argv) == 1
        assert len(server.requests) <= 2  # the first answer stops it (one more may be queued)
    said = _said(capsys)
    assert shown in said and "failed at the teacher" not in said
    assert "AIza-not-a-valid-key" not in said
    records = SpendLedger.read(tmp_path / "cache" / "ledger.jsonl")
    assert sum((Decimal(r.cost_usd) for r in records), Decimal(0)) == 0

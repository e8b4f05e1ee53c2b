"""Secrets: a recognisable fake key for every provider never reaches a file, a log or output.

The harvest, train, report and cache commands run at DEBUG (-vv) in their own processes
against the hash teacher (whose bearer token is the secret in play), through faults and a
401; then every file under the test's folders and all captured output are searched for
each key, raw and base64-encoded. Exceptions and reprs of config objects hide keys too.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from distill.server import Faults, ServerConfig
from tests.reliability.conftest import TOKEN, teacher
from vlmclient import (
    AuthenticationError,
    Budget,
    RetryPolicy,
    TeacherClient,
    TextEmbeddingRequest,
    VLMError,
)
from vlmclient.providers import PROVIDERS
from vlmclient.providers.base import CallSpec

ROOT = Path(__file__).resolve().parents[2]
CANARY = "sk-CANARY-7c1f0e"
EXTRA_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "COHERE_API_KEY", "GOOGLE_API_KEY")


def fake_keys() -> dict[str, str]:
    """One distinct recognisable key per provider env var (the local token is the server's)."""
    names = sorted({v for p in PROVIDERS.values() for v in p.env_vars} | set(EXTRA_VARS))
    keys = {name: f"{CANARY}-{name.lower().replace('_', '-')}-d34db33f" for name in names}
    keys["AWS_PROFILE"] = f"{CANARY}-profile"  # a name, but treat it as secret too
    return keys


def forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw)]


def leaks(blob: bytes, secrets: list[str]) -> list[str]:
    return [s for s in secrets for f in forms(s) if f in blob]


def cli(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    code = f"import sys; from distill.cli import main; sys.exit(main({argv!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, timeout=300
    )


def cli_each(
    argvs: list[list[str]], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[bytes]:
    """Each command in turn in one process, as :func:`cli`; exit 0 only if all exit 0."""
    code = (
        "import sys; from distill.cli import main\n"
        f"codes = [main(a) for a in {argvs!r}]\n"
        "print('exit codes:', codes, file=sys.stderr)\n"
        "sys.exit(1 if any(codes) else 0)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, timeout=300
    )


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.data.digits import make_digits

    return make_digits(tmp_path_factory.mktemp("secrets") / "digits", size=16, per_class=2)


@pytest.mark.slow
def test_no_key_in_any_file_or_output_at_debug_level(
    digits: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the server runs in this process: its logs too
    keys = fake_keys()
    token = keys["VLM_DISTILL_TEACHER_TOKEN"]
    secrets = sorted(set(keys.values()))
    home, work, cache, run = (tmp_path / n for n in ("home", "work", "cache", "run"))
    for d in (home, work):
        d.mkdir()
    env = {
        **os.environ,
        **keys,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "TMPDIR": str(work),
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
    }
    outputs: list[bytes] = []
    faults = Faults(fail_500=0.1, malformed=0.1, drop=0.1, seed=1)

    def record(r: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
        outputs.extend([r.stdout, r.stderr])
        return r

    # the server's token is the client's key: the secret travels on every request
    with teacher(faults, token=token) as t:
        harvest = ["-vv", "harvest", str(digits), "--teacher", "local:hash", "--base-url",
                   t.url, "--cache", str(cache), "--budget", "1", "--batch-size", "4"]  # fmt: skip
        first = record(cli(harvest, env, work))
        last = first
        for _ in range(3):  # faults may leave items for a re-run, as a user would
            if last.returncode == 0:
                break
            last = record(cli(harvest, env, work))
        assert last.returncode == 0, (first.stdout + first.stderr)[-3000:]
        assert b"DEBUG" in first.stderr  # -vv really was at DEBUG level
    with teacher() as wrong:  # a server expecting another token: a 401 path, with messages
        r = record(cli(["-vv", "harvest", str(digits), "--teacher", "local:hash", "--base-url",
                        wrong.url, "--cache", str(tmp_path / "cache401"), "--budget", "1"],
                       env, work))  # fmt: skip
        assert r.returncode != 0 and b"401" in r.stdout + r.stderr
    reads = [
        ["-vv", "report", str(cache)],
        ["-vv", "report", str(cache), "--json"],
        ["-vv", "cache", "stats", "--cache", str(cache)],
        ["-vv", "cache", "verify", "--cache", str(cache)],
    ]
    r = record(cli_each(reads, env, work))  # one process: four interpreter starts less
    assert r.returncode == 0, r.stderr[-2000:]
    train_argv = [
        "-vv", "train", str(digits), "--cache", str(cache), "--teacher", "local:hash",
        "--method", "erm", "--student", "mobilenetv3_small_100", "--no-pretrained",
        "--steps", "3", "--image-size", "32", "--out", str(run),
    ]  # fmt: skip
    train = record(cli(train_argv, env, work))
    train_ok = train.returncode == 0

    found: dict[str, list[str]] = {}
    n_files = 0
    for base in (tmp_path, digits):
        for path in base.rglob("*"):
            if path.is_file() and not path.is_symlink():
                n_files += 1
                hit = leaks(path.read_bytes(), secrets)
                if hit:
                    found[str(path)] = hit
    for i, blob in enumerate(outputs):
        hit = leaks(blob, secrets)
        if hit:
            found[f"output #{i}"] = hit
    hit = leaks(caplog.text.encode(), secrets)
    if hit:
        found["server logs"] = hit
    assert not found, found
    assert (cache / "ledger.jsonl").exists() and (cache / "responses").is_dir()
    assert n_files > 10
    if not train_ok:
        pytest.fail(
            "train did not run, so its run folder was not searched: "
            + train.stderr.decode(errors="replace")[-2000:]
        )
    assert any(run.rglob("*")), "train wrote nothing to its run folder"


async def test_provider_echoing_the_key_never_surfaces_it() -> None:
    """A gateway that echoes the whole key in its 401 body: our error must not repeat it."""
    key = f"{CANARY}-echoed-9a8b7c6d"

    def handler(request: httpx.Request) -> httpx.Response:
        sent = request.headers["authorization"].removeprefix("Bearer ")
        return httpx.Response(
            401,
            json={"error": {"message": f"Incorrect API key provided: {sent}", "code": "bad"}},
            headers={"x-request-id": "req-1"},
        )

    client = TeacherClient(
        "openai:text-embedding-3-small",
        api_key=key,
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(max_attempts=1),
        budget=Budget("1"),
    )
    async with client:
        with pytest.raises(AuthenticationError) as info:
            await client.embed_texts([TextEmbeddingRequest(text="a cat")])
    err = info.value
    assert key not in str(err) and key not in repr(err) and key not in str(err.args)
    assert "req-1" in str(err)


def test_reprs_and_errors_hide_keys() -> None:
    key = f"{CANARY}-repr"
    client = TeacherClient("cohere:embed-v4.0", api_key=key, budget=Budget("2"))
    spec = CallSpec("text_embedding", "m", [], "https://x", SecretStr(key), {})
    config = ServerConfig(token=SecretStr(key), faults=Faults(drop=0.1))
    budget = Budget(Decimal("1"))
    objects: list[object] = [client, spec, config, budget, PROVIDERS["cohere"], config.faults]
    for obj in objects:
        assert key not in repr(obj) and key not in str(obj), type(obj)
    assert key not in str(config.model_dump()) and key not in config.model_dump_json()
    assert key not in str(vars(spec).get("api_key"))
    with pytest.raises(VLMError) as info:
        TeacherClient("openai:gpt-4o-mini", env={})
    assert "OPENAI_API_KEY" in str(info.value)
    # the local teacher's own token never shows in its config dump either
    assert TOKEN not in repr(ServerConfig(token=SecretStr(TOKEN)))


async def test_a_usage_block_echoing_the_key_in_any_form_stays_out_of_the_ledger(
    tmp_path: Path,
) -> None:
    """Before 2026-12-05 a usage block was scrubbed of the key verbatim only: a server that
    echoed it upper-cased, reversed, in base64 or hex as usage field names had those
    names written to ledger.jsonl (the cache folder)."""
    from cache import SpendLedger
    from tests.providers.loopback import loopback
    from vlmclient import Image, ImageEmbeddingRequest

    key = "sk-usage-echo-0123456789"
    forms = [key.upper(), key[::-1], base64.b64encode(key.encode()).decode(), key.encode().hex()]

    def respond(path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
        usage: dict[str, object] = {"images": 1, **{f"x-{form}": 1 for form in forms}}
        return 200, {
            "id": "echo",
            "embeddings": {"float": [[0.5] * 8]},
            "meta": {"billed_units": usage, "echo": {"note": key.upper()}},
        }

    ledger_path = tmp_path / "ledger.jsonl"
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
    )
    with loopback(respond) as server, SpendLedger(ledger_path) as ledger:
        async with TeacherClient(
            "local:hash", api_key=key, base_url=server.url, ledger=ledger,
            budget=Budget("1"), retry=RetryPolicy(max_attempts=1),
        ) as client:  # fmt: skip
            await client.embed_images(
                [ImageEmbeddingRequest(image=Image(data=png, media_type="image/png"))]
            )
    written = ledger_path.read_text()
    assert '"provider_usage":{"images":1}' in written  # the usage itself is kept
    for form in [key, *forms]:
        assert form not in written and form.lower() not in written.lower()

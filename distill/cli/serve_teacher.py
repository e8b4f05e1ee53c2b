"""``vlm-distill serve-teacher``: the local pay-per-query teacher server on loopback.

The bearer token comes from ``--token-file``, else ``$VLM_DISTILL_TEACHER_TOKEN``, else
``--token`` (visible to every user in ``ps``, so it is warned about); if none is set a
random one is generated and shown once on the console (never logged).

The server speaks plain HTTP, so it binds loopback only unless ``--allow-remote`` is given.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import secrets
import sys
from decimal import Decimal, InvalidOperation

from pydantic import SecretStr, ValidationError

from vlmclient.errors import ConfigurationError

TOKEN_ENV = "VLM_DISTILL_TEACHER_TOKEN"
DEFAULT_PORT = 8089

log = logging.getLogger(__name__)


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from exc
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"price must be a finite number >= 0: {text!r}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"fraction must be in [0, 1]: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    g.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (plain HTTP: anyone on the network sees the token)",
    )
    g.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0 = any free port)")
    g.add_argument(
        "--token",
        default=None,
        help=f"bearer token (visible in ps; prefer --token-file or ${TOKEN_ENV})",
    )
    g.add_argument(
        "--token-file",
        default=None,
        help="file whose first line is the bearer token (keep it 0600)",
    )
    g.add_argument("--model-name", default=None, help="only accept this model name (else any)")
    g.add_argument("--access-log", action="store_true", help="log every request (no headers)")

    b = parser.add_argument_group("backend")
    b.add_argument(
        "--backend",
        choices=["pseudo-clip", "hash", "open-clip", "mini-clip"],
        default="pseudo-clip",
    )
    b.add_argument("--hash-dim", type=int, default=384, help="vector size of the hash backend")
    b.add_argument("--temperature", type=float, default=None, help="pseudo-clip softmax T")
    b.add_argument("--image-tower", choices=["auto", "lite2", "lite0"], default="auto")
    b.add_argument("--open-clip-model", default=None, help="open_clip architecture, e.g. ViT-B-32")
    b.add_argument("--open-clip-weights", default=None, help="local .pt/.safetensors file")
    b.add_argument("--weights", default=None, help="mini-clip weights (from fit-teacher)")

    p = parser.add_argument_group("prices (USD)")
    p.add_argument("--usd-per-image", type=_decimal, default=Decimal("0.0001"))
    p.add_argument("--usd-per-1m-input-tokens", type=_decimal, default=Decimal("0.12"))
    p.add_argument("--usd-per-1m-output-tokens", type=_decimal, default=Decimal("0.60"))

    f = parser.add_argument_group("limits and faults")
    f.add_argument("--rpm", type=int, default=None, help="requests per minute, then 429")
    f.add_argument("--max-body-bytes", type=int, default=None, help="larger bodies get 413")
    f.add_argument("--fail-500", type=_fraction, default=0.0)
    f.add_argument("--fail-503", type=_fraction, default=0.0)
    f.add_argument("--fail-529", type=_fraction, default=0.0)
    f.add_argument("--drop-fraction", type=_fraction, default=0.0, help="close without response")
    f.add_argument("--timeout-fraction", type=_fraction, default=0.0, help="answer very late")
    f.add_argument("--timeout-sleep-s", type=float, default=30.0, help="how late a 'timeout' is")
    f.add_argument("--malformed-fraction", type=_fraction, default=0.0, help="truncated JSON 200")
    f.add_argument("--wrong-dim-fraction", type=_fraction, default=0.0, help="half-size vectors")
    f.add_argument("--latency-ms", type=float, default=0.0, help="added to every API request")
    f.add_argument("--seed", type=int, default=0, help="seed of the fault draws")


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"cannot read --token-file {path}: {type(exc).__name__}"
        ) from exc
    if not first:
        raise ConfigurationError(f"--token-file {path} is empty: put the token on its first line")
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        log.warning("--token-file %s can be read by other users (mode %o); chmod 600 it",
                    path, mode)  # fmt: skip
    return first


def _token(args: argparse.Namespace) -> tuple[str, str]:
    """(token, where it came from: "--token-file", "$VAR", "--token" or "generated")."""
    if args.token_file is not None:
        if args.token:
            raise ConfigurationError("give --token-file or --token, not both")
        return _read_token_file(args.token_file), "--token-file"
    if args.token == "":
        raise ConfigurationError("--token is empty; give a token (or leave it out)")
    if args.token:
        # argv is readable by every local user (ps, /proc/PID/cmdline).
        log.warning(
            "--token is visible to other users in the process list; use --token-file or $%s",
            TOKEN_ENV,
        )
        return args.token, "--token"
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token, "$" + TOKEN_ENV
    return secrets.token_urlsafe(24), "generated"


def _is_loopback(host: str) -> bool:
    """Only the loopback interface: 127/8, ::1, its IPv4-mapped form, ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # another name, or "0" (which binds every interface)
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def _check_host(host: str, allow_remote: bool) -> None:
    if not host.strip():
        raise ConfigurationError("--host is empty: give an address, e.g. --host 127.0.0.1")
    if not _is_loopback(host) and not allow_remote:
        raise ConfigurationError(
            f"--host {host} is not a loopback address, so other machines could reach this "
            "plain-HTTP server and see its token; add --allow-remote if that is intended"
        )


def run(args: argparse.Namespace) -> int:
    # Imported here: `vlm-distill --help` must not pay for starlette/uvicorn.
    from distill.server import (
        Faults,
        Pricing,
        ServerConfig,
        ServerThread,
        create_app,
        make_backend,
    )

    _check_host(args.host, args.allow_remote)
    token, source = _token(args)
    generated = source == "generated"
    try:
        config = ServerConfig(
            token=SecretStr(token),
            model_name=args.model_name,
            pricing=Pricing(
                usd_per_image=args.usd_per_image,
                usd_per_1m_input_tokens=args.usd_per_1m_input_tokens,
                usd_per_1m_output_tokens=args.usd_per_1m_output_tokens,
            ),
            faults=Faults(
                fail_500=args.fail_500,
                fail_503=args.fail_503,
                fail_529=args.fail_529,
                drop=args.drop_fraction,
                timeout=args.timeout_fraction,
                timeout_sleep_s=args.timeout_sleep_s,
                malformed=args.malformed_fraction,
                wrong_dim=args.wrong_dim_fraction,
                latency_ms=args.latency_ms,
                seed=args.seed,
            ),
            rpm=args.rpm,
            **({"max_body_bytes": args.max_body_bytes} if args.max_body_bytes else {}),
        )
    except ValidationError as exc:
        raise ConfigurationError(f"invalid server settings: {exc}") from exc
    if not _is_loopback(args.host):
        log.warning("binding %s: the teacher is reachable from other machines", args.host)

    extra = {} if args.temperature is None else {"temperature": args.temperature}
    try:
        backend = make_backend(
            args.backend,
            hash_dim=args.hash_dim,
            open_clip_model=args.open_clip_model,
            open_clip_weights=args.open_clip_weights,
            image_tower=args.image_tower,
            weights=args.weights,
            **extra,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigurationError(str(exc)) from exc

    server = ServerThread(
        create_app(config, backend),
        args.host,
        args.port,
        log_level="info" if args.access_log else "warning",
        access_log=args.access_log,
    )
    info = backend.info()
    tower = f", image tower {info['image_tower']}" if "image_tower" in info else ""
    print(
        f"teacher {backend.name}{tower} (dim {backend.dim}) on {server.base_url}\n"
        f"  Cohere POST /v2/embed | OpenAI POST /v1/embeddings, /v1/chat/completions\n"
        f"  bill: GET /admin/billing | Ctrl-C to stop",
        file=sys.stderr,
    )
    if generated:
        # Shown once, on the console only: set the env var to choose your own.
        print(f"  generated token (set ${TOKEN_ENV} to fix it): {token}", file=sys.stderr)
    else:
        print(f"  token: from {source}", file=sys.stderr)
    try:
        server.serve_forever()  # uvicorn handles Ctrl-C / SIGTERM in the main thread
    except KeyboardInterrupt:  # uvicorn re-raises the captured Ctrl-C after shutting down
        print("teacher stopped", file=sys.stderr)
    finally:
        backend.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    from distill.cli import main

    sys.exit(main(["serve-teacher", *sys.argv[1:]]))

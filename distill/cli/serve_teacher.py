"""``vlm-distill serve-teacher``: the local pay-per-query teacher server on loopback.

The bearer token comes from ``--token-file``, else ``$VLM_DISTILL_TEACHER_TOKEN``, else
``--token`` (visible to every user in ``ps``, so it is warned about); if none is set a
random one is generated and shown once on the console (never logged).

The server speaks plain HTTP, so it binds loopback only unless ``--allow-remote`` is given.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, ValidationError

from vlmclient.errors import ConfigurationError

from .model_flags import ModelFlags, validation_message
from .signals import Stopped
from .validate import MAX_USD, int_in, path_text, positive_float

if TYPE_CHECKING:
    from distill.server.config import ServerConfig

TOKEN_ENV = "VLM_DISTILL_TEACHER_TOKEN"
DEFAULT_PORT = 8089
MAX_PORT = 65535

log = logging.getLogger(__name__)


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from exc
    # is_finite first: comparing a NaN Decimal raises InvalidOperation. Above MAX_USD:
    # 1e1000000 was accepted, then every request's bill a decimal.Overflow (a 500).
    if not value.is_finite() or not 0 <= value <= MAX_USD:
        raise argparse.ArgumentTypeError(
            f"price must be a finite number from 0 to {MAX_USD:,}: {text[:40]!r}"
        )
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
    g.add_argument(
        "--port",
        type=int_in(0, MAX_PORT),
        default=DEFAULT_PORT,
        help=f"port, 0 to {MAX_PORT} (0 = any free port; default %(default)s)",
    )
    g.add_argument(
        "--token",
        default=None,
        action=_CommandLineToken,
        help=f"bearer token (visible in ps; prefer --token-file or ${TOKEN_ENV})",
    )
    g.add_argument(
        "--token-file",
        type=path_text,
        default=None,
        help="file whose first line is the bearer token (keep it 0600)",
    )
    g.add_argument("--access-log", action="store_true", help="log every request (no headers)")

    b = parser.add_argument_group("backend")
    b.add_argument(
        "--backend",
        choices=["pseudo-clip", "hash", "open-clip", "mini-clip"],
        default="pseudo-clip",
    )
    from distill.server.config import DEFAULT_HASH_DIM, MAX_HASH_DIM

    b.add_argument(
        "--hash-dim",
        type=int_in(2, MAX_HASH_DIM),
        default=None,  # None: not given, so a backend other than hash can refuse it
        help=f"vector size of the hash backend, 2 to {MAX_HASH_DIM} (default "
        f"{DEFAULT_HASH_DIM})",
    )
    b.add_argument(
        "--temperature", type=positive_float, default=None, help="pseudo-clip softmax T, > 0"
    )
    b.add_argument(
        "--image-tower",
        choices=["auto", "lite2", "lite0"],
        default=None,  # None: not given, so a backend other than pseudo-clip can refuse it
        help="pseudo-clip's EfficientNet-Lite (default auto: lite2, else lite0)",
    )
    b.add_argument("--open-clip-model", default=None, help="open_clip architecture, e.g. ViT-B-32")
    b.add_argument(
        "--open-clip-weights", type=path_text, default=None, help="local .pt/.safetensors file"
    )
    b.add_argument(
        "--weights", type=path_text, default=None, help="mini-clip weights (from fit-teacher)"
    )

    limits, pricing, faults = server_flags()
    limits.add_to(parser.add_argument_group("limits"))
    pricing.add_to(parser.add_argument_group("prices (USD)"))
    faults.add_to(parser.add_argument_group("faults"))


def server_flags() -> tuple[ModelFlags, ModelFlags, ModelFlags]:
    """The flags of ServerConfig, Pricing and Faults (generated from the models)."""
    from distill.server.config import Faults, Pricing, ServerConfig

    limits = ModelFlags(
        ServerConfig,
        flagless={
            "token": "a secret: from --token-file, $VLM_DISTILL_TEACHER_TOKEN or --token "
            "(warned about), else generated; see _token",
            "pricing": "a model of its own: the prices (USD) flags",
            "faults": "a model of its own: the faults flags",
        },
    )
    pricing = ModelFlags(Pricing, types=dict.fromkeys(Pricing.model_fields, _decimal))
    fractions = ("fail_500", "fail_503", "fail_529", "drop", "timeout", "malformed", "wrong_dim")
    faults = ModelFlags(
        Faults,
        # the flag names of before they were generated: "--drop" alone would read as an order
        flags={
            "drop": "--drop-fraction",
            "timeout": "--timeout-fraction",
            "malformed": "--malformed-fraction",
            "wrong_dim": "--wrong-dim-fraction",
        },
        types=dict.fromkeys(fractions, _fraction),
    )
    return limits, pricing, faults


class _CommandLineToken(argparse.Action):
    """``--token``, noting that it was given on the command line (visible in ``ps``), not
    by a ``token`` key of a --config file (which sets the flag's default, not this)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.token_on_command_line = True


def _warn_if_readable(path: str, what: str) -> None:
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        log.warning("%s can be read by other users (mode %o); chmod 600 it", what, mode)


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
    _warn_if_readable(path, f"--token-file {path}")
    return first


def _token(args: argparse.Namespace) -> tuple[str, str]:
    """(token, where it came from: "--token-file", "--config FILE", "--token", "$VAR" or
    "generated")."""
    token, source = _token_from(args)
    if not token.isascii() or not token.isprintable() or token != token.strip():
        # An umlaut, a zero-width space from a copy-paste, spaces around it: no client can
        # send it (headers are ASCII and trimmed; vlm-distill's own client refuses such a
        # key), so every request would get 401. Never echoed: it is a secret.
        raise ConfigurationError(
            f"the token from {source} has a character an HTTP header cannot carry (non-ASCII, "
            "a control character, or spaces around it); use printable ASCII only"
        )
    return token, source


def _token_from(args: argparse.Namespace) -> tuple[str, str]:
    if args.token_file is not None:
        if args.token:
            raise ConfigurationError("give --token-file or --token, not both")
        return _read_token_file(args.token_file), "--token-file"
    if args.token == "":
        raise ConfigurationError("--token is empty; give a token (or leave it out)")
    config = getattr(args, "config", None)
    if args.token and config is not None and not getattr(args, "token_on_command_line", False):
        # a ``token`` key of the --config file: not in argv, but in a file that may be
        # readable by others, as a --token-file may
        _warn_if_readable(config, f"--config {config} holds the token and")
        return args.token, f"--config {config}"
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


def _listen(host: str, port: int) -> socket.socket:
    """The bound socket, or a ConfigurationError (one line): a port in use, a host that
    does not resolve or is not this machine's. Before the backend loads: a busy port is
    said at once, not after a model took seconds to load."""
    from distill.server.runner import bind_socket

    try:
        return bind_socket(host, port)
    except (OSError, OverflowError) as exc:
        why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        hint = ""
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            hint = "; stop what uses it, or choose another --port (0 = any free port)"
        raise ConfigurationError(f"cannot listen on {host} port {port}: {why}{hint}") from None


# The flags of one backend: any other backend would serve without them, without a
# word (`--weights F` alone served pseudo-clip, and a harvest named after F's teacher
# cached pseudo-clip's answers under that name).
_BACKEND_OF_FLAG = {
    "weights": "mini-clip", "open_clip_model": "open-clip", "open_clip_weights": "open-clip",
    "temperature": "pseudo-clip",  # its softmax; the others' answers did not change
    "hash_dim": "hash",  # pseudo-clip served its own 384-d vectors whatever was asked
    "image_tower": "pseudo-clip",  # the others embedded images as before, without a word
}


def _check_backend_flags(args: argparse.Namespace) -> None:
    for dest, backend in _BACKEND_OF_FLAG.items():
        if getattr(args, dest) is not None and args.backend != backend:
            flag = "--" + dest.replace("_", "-")
            raise ConfigurationError(
                f"{flag} is for the {backend} backend, but --backend is {args.backend}, "
                f"which would not use it: add --backend {backend}"
            )


def server_config(args: argparse.Namespace, token: str) -> ServerConfig:
    """The ServerConfig the flags describe; ConfigurationError (one line) when invalid."""
    from distill.server.config import Faults, Pricing, ServerConfig

    limits, pricing, faults = server_flags()
    try:
        return ServerConfig(
            token=SecretStr(token),
            pricing=Pricing(**pricing.values(args)),
            faults=Faults(**faults.values(args)),
            **limits.values(args),
        )
    except ValidationError as exc:
        raise ConfigurationError(f"invalid server settings: {validation_message(exc)}") from None


def run(args: argparse.Namespace) -> int:
    # Imported here: `vlm-distill --help` must not pay for starlette/uvicorn.
    from distill.server import ServerThread, create_app, make_backend

    _check_backend_flags(args)
    _check_host(args.host, args.allow_remote)
    token, source = _token(args)
    generated = source == "generated"
    config = server_config(args, token)
    sock = _listen(args.host, args.port)
    if not _is_loopback(args.host):
        log.warning("binding %s: the teacher is reachable from other machines", args.host)

    extra: dict[str, Any] = {} if args.temperature is None else {"temperature": args.temperature}
    if args.hash_dim is not None:
        extra["hash_dim"] = args.hash_dim
    if args.image_tower is not None:
        extra["image_tower"] = args.image_tower
    stopped_by: list[int] = []
    serving: list[Any] = []  # the server, once it is built
    previous = _stop_gracefully_on_signals(serving, stopped_by)
    backend = None
    try:
        try:
            backend = make_backend(
                args.backend,
                open_clip_model=args.open_clip_model,
                open_clip_weights=args.open_clip_weights,
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
            sock=sock,
        )
        serving.append(server)
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
        else:
            if stopped_by:
                name = signal.Signals(stopped_by[0]).name
                print(f"teacher stopped by {name}", file=sys.stderr)
    except Stopped as exc:  # while the backend loaded (seconds for the torch ones)
        print(f"teacher stopped by {exc} before it served", file=sys.stderr)
    finally:
        sock.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if backend is not None:
            backend.close()
    return 0


def _stop_gracefully_on_signals(serving: list[Any], stopped_by: list[int]) -> dict[int, Any]:
    """SIGTERM (a supervisor: systemd, ``docker stop``, ``timeout``), SIGHUP and SIGQUIT stop
    the server as Ctrl-C does: requests in flight are answered, the port closed, exit 0.
    uvicorn handles SIGTERM itself while it serves but then raises it again with the
    handler from before it started: Python's default ended the process there (exit 143,
    the backend not closed), and SIGHUP/SIGQUIT, which uvicorn does not handle, ended it on
    the spot, cutting the requests in flight. Before the server is built (``serving``
    empty: the backend loads) they raise :class:`~distill.cli.signals.Stopped`. Returns
    the handlers to restore."""
    from .signals import stop_signals

    def stop(signum: int, frame: object) -> None:
        stopped_by.append(signum)
        if not serving:
            raise Stopped(signum)
        serving[0].server.should_exit = True

    previous = {}
    for signum in stop_signals():
        if signum == signal.SIGINT:
            continue
        try:
            previous[signum] = signal.signal(signum, stop)
        except ValueError:  # not the main thread: uvicorn handles no signal there either
            break
    return previous


if __name__ == "__main__":  # pragma: no cover
    from distill.cli import main

    sys.exit(main(["serve-teacher", *sys.argv[1:]]))

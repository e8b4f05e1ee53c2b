"""The local pay-per-query teacher server: real wire formats, real weights, real bills.

Start one in-process (tests, demo)::

    from pydantic import SecretStr
    from distill.server import HashBackend, ServerConfig, ServerThread, create_app

    config = ServerConfig(token=SecretStr("local-token"))
    with ServerThread(create_app(config, HashBackend())) as server:
        print(server.base_url)  # http://127.0.0.1:<free port>

or from the shell: ``vlm-distill serve-teacher --backend pseudo-clip``.
Backends other than ``hash`` import torch when built, never at import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import TeacherApp, create_app
    from .backends import (
        BACKENDS,
        Backend,
        HashBackend,
        OpenClipBackend,
        PseudoClipBackend,
        make_backend,
    )
    from .billing import Billing, count_tokens
    from .config import Faults, Pricing, ServerConfig
    from .runner import ServerThread, serve_in_background

# Imported on first use (PEP 562): `vlm-distill --help` builds serve-teacher's flags from
# distill.server.config, and must not pay for starlette and uvicorn to do so.
_HOME = {
    "TeacherApp": "app", "create_app": "app",
    "BACKENDS": "backends", "Backend": "backends", "HashBackend": "backends",
    "OpenClipBackend": "backends", "PseudoClipBackend": "backends", "make_backend": "backends",
    "Billing": "billing", "count_tokens": "billing",
    "Faults": "config", "Pricing": "config", "ServerConfig": "config",
    "ServerThread": "runner", "serve_in_background": "runner",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BACKENDS",
    "Backend",
    "Billing",
    "Faults",
    "HashBackend",
    "OpenClipBackend",
    "Pricing",
    "PseudoClipBackend",
    "ServerConfig",
    "ServerThread",
    "TeacherApp",
    "count_tokens",
    "create_app",
    "make_backend",
    "serve_in_background",
]

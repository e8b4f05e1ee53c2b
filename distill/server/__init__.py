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

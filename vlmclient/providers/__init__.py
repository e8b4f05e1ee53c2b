"""Provider adapters, looked up by name in one explicit dict."""

from __future__ import annotations

from ..errors import ConfigurationError
from .anthropic import ANTHROPIC
from .base import CallSpec, Parsed, Provider, RateLimitHints
from .cohere import COHERE
from .gemini import GEMINI
from .jina import JINA
from .local import LOCAL
from .nomic import NOMIC
from .openai import OPENAI
from .titan import TITAN
from .vertex import VERTEX
from .voyage import VOYAGE

__all__ = [
    "PROVIDERS",
    "CallSpec",
    "Parsed",
    "Provider",
    "RateLimitHints",
    "get_provider",
    "parse_teacher",
]

# Titan is always listed; it needs the optional botocore extra only when used.
PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (LOCAL, COHERE, OPENAI, VOYAGE, JINA, VERTEX, NOMIC, TITAN, ANTHROPIC, GEMINI)
}


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigurationError(f"unknown provider {name!r}; known: {known}") from None


def parse_teacher(teacher: str) -> tuple[Provider, str]:
    """``"cohere:embed-v4.0"`` -> (COHERE, "embed-v4.0")."""
    provider, sep, model = teacher.partition(":")
    if not sep or not provider or not model:
        raise ConfigurationError(
            f"teacher {teacher!r} must be spelled provider:model, e.g. cohere:embed-v4.0 "
            "or local:pseudo-clip"
        )
    return get_provider(provider), model

"""The API key a client sends, and the checks that keep it (and other secrets) where they
belong: in its own header, never in a URL, never echoed back into what the client keeps."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

import httpx
from pydantic import SecretStr

from .errors import ConfigurationError
from .providers import Provider

__all__ = ["SECRET_ENV", "check_credentials", "resolve_key"]

# Secrets besides the API key that a provider signs with (Titan) and could echo back.
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def resolve_key(
    provider: Provider, api_key: str | SecretStr | None, env: Mapping[str, str]
) -> SecretStr:
    """The key given, else the first of the provider's environment variables that is set;
    an empty key for providers that resolve credentials themselves."""
    if isinstance(api_key, SecretStr):
        return api_key
    if api_key:
        return SecretStr(api_key)
    for var in provider.env_vars:
        if env.get(var):
            return SecretStr(env[var])
    if provider.key_optional:
        return SecretStr("")  # the adapter resolves credentials itself when it signs
    names = " or ".join(provider.env_vars)
    raise ConfigurationError(f"no API key for {provider.name}: set {names} (nothing was sent)")


# Keys shorter than this are not looked for in the base URL (a test token "t" is in
# every URL); real API keys are far longer.
MIN_KEY_IN_URL = 8


def check_credentials(provider: Provider, api_key: SecretStr, base_url: str) -> None:
    """Refuse, before anything is sent, a key no HTTP stack can send (or a blank one) and a
    base URL that holds credentials or a query string."""
    if not api_key.get_secret_value().isascii():
        # A typographic dash or a zero-width space from a copy-paste: HTTP headers are
        # ASCII, so the first request failed with a UnicodeEncodeError traceback.
        raise ConfigurationError(
            f"the API key for {provider.name} contains a non-ASCII character (a typographic "
            "dash or an invisible space from a copy-paste?); set it again (nothing was sent)"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in api_key.get_secret_value()):
        # A trailing newline from a key file: every HTTP stack refuses the header, after
        # the budget was reserved, with a traceback.
        raise ConfigurationError(
            f"the API key for {provider.name} contains a newline or another control "
            "character; set it without one (nothing was sent)"
        )
    secret = api_key.get_secret_value()
    if secret != secret.strip() or (secret and not secret.strip()):
        # A blank key is no key, and one with spaces around it is a copy-paste slip the
        # provider refuses with a 401 (and a key of spaces would be "redacted" out of
        # every message: each space replaced by ***).
        raise ConfigurationError(
            f"the API key for {provider.name} is blank or has spaces around it; set it "
            "without them (nothing was sent)"
        )
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:  # its message may quote the URL, credentials and all
        raise ConfigurationError(
            "the base URL is not a valid URL; give it as http(s)://host[:port][/path] "
            "(nothing was sent)"
        ) from None
    if url.scheme not in ("http", "https") or not url.host:
        # Without a scheme (127.0.0.1:8080) httpx reads the host as the scheme: every
        # request then failed in the transport, unsent, yet was charged at its worst case.
        raise ConfigurationError(
            "the base URL must start with http:// or https:// and name a host, e.g. "
            "http://127.0.0.1:8080 (nothing was sent)"
        )
    if url.query or url.fragment:
        # The request path is appended to the base URL, so a query there breaks every
        # request, and messages name the base URL: a key in its query would be printed.
        raise ConfigurationError(
            "the base URL has a query string or fragment (?... or #...); give the server's "
            "base URL without it, and a key in "
            f"{' or '.join(provider.env_vars) or 'its own setting'} (nothing was sent)"
        )
    if url.userinfo:
        # It would be logged with every request URL; the key goes in its own setting.
        raise ConfigurationError(
            "the base URL contains credentials (user:password@host); remove them and "
            f"give the key in {' or '.join(provider.env_vars) or 'its own setting'} "
            "(nothing was sent)"
        )
    if len(secret) >= MIN_KEY_IN_URL and secret.lower() in unquote(base_url).lower():
        # A gateway that takes the key as a path segment: the base URL is printed in
        # errors and written to the ledger (endpoint), the key with it.
        raise ConfigurationError(
            "the base URL contains the API key; give the server's base URL without it "
            f"and the key in {' or '.join(provider.env_vars) or 'its own setting'} (a "
            "gateway that wants the key in its path cannot be used: the URL is printed "
            "and recorded) (nothing was sent)"
        )

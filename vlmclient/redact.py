"""Keep secrets out of every string that leaves the client.

A provider (or a gateway in front of it) may echo the key it was sent: in a request id
header, in an error body, sometimes base64-encoded (a Basic auth header), upper-cased or
reversed. Anything the client keeps from a response (request ids in the ledger and the
cache, messages in errors and log lines) goes through one :class:`Redactor` first, which
replaces the key in all those forms and bounds the length of what is kept.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote

__all__ = [
    "MASK", "MAX_ECHO_CHARS", "MAX_MESSAGE_CHARS", "MAX_REQUEST_ID_CHARS", "Redactor", "clip",
]

MASK = "***"
# An error message longer than this is cut: a server can send megabytes of body.
MAX_ECHO_CHARS = 300
# Our own messages quoting a setting the user gave (a region that is not one): bounded,
# and long enough that the advice around the setting is never cut.
MAX_MESSAGE_CHARS = 1000
# Real request ids are 20-80 characters; anything longer is not an id worth keeping whole.
MAX_REQUEST_ID_CHARS = 128
# Shorter secrets would match ordinary words ("tok" in "token"); they are still replaced
# verbatim (same case), but not in other cases or encodings.
_MIN_ENCODED = 8
# A key longer than this is also replaced where only its first or last this-many (or more)
# characters are echoed (a truncated echo).
_MIN_ECHOED = 16
# The end of a cut text that is part of an unbroken run (no space, quote, bracket, comma,
# semicolon or bar): a key, and its base64, hex, percent- or JSON-escaped forms, are one.
_TAIL_RUN = re.compile(r"[^\s\"'`,;|()<>\[\]{}]+\Z")


def clip(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` characters, less the part of a run the cut
    splits. Text cut before :class:`Redactor` sees it must not end in the first few
    characters of a key: fewer than it knows as the key's, they would stay unmasked.

    >>> clip("bad key sk-abcdef0123456789", 14)
    'bad key '
    >>> clip("bad key sk-abc, more", 14)
    'bad key sk-abc'
    """
    if len(value) <= limit:
        return value
    if limit <= 0:
        return ""
    head = value[:limit]
    if _TAIL_RUN.match(value[limit]):  # the cut splits a run: none of it is kept
        head = _TAIL_RUN.sub("", head)
    return head


def _b64_cores(raw: bytes) -> list[str]:
    """The base64 text that encodes ``raw`` wherever it sits in a longer encoded string.

    base64 works on 3-byte groups, so the same bytes encode differently at the three
    offsets; the characters that depend only on ``raw`` (not its neighbours) are the core.
    """
    cores = []
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        start = -(-shift * 4 // 3)  # characters that mix in the padding bytes
        end = (shift + len(raw)) * 4 // 3  # characters made of these bytes only
        core = enc[start:end]
        if len(core) >= _MIN_ENCODED:
            cores.append(core)
    return cores


class Redactor:
    """Replaces secrets (verbatim in any case, reversed, hex, base64, percent-encoded
    with or without its slashes, JSON-escaped, 16 or more of a key's first or last
    characters) and bounds length.

    >>> r = Redactor(["sk-secret-123"])
    >>> r("echo SK-SECRET-123 and 321-terces-ks")
    'echo *** and ***'
    >>> r.request_id("x" * 500) == "x" * 125 + "..."
    True
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: set[str] = set()
        self._plain: re.Pattern[str] | None = None
        self._exact: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Replace ``secrets`` too from now on: credentials the client obtains after it
        was made (a session token from botocore's chain: a profile, SSO, a role)."""
        new = {s for s in secrets if s} - self._secrets
        if not new:
            return  # (every request of a Titan client: nothing to recompile)
        self._secrets |= new
        plain: set[str] = set()
        exact: set[str] = set()
        for s in self._secrets:
            if len(s) < _MIN_ENCODED:
                exact.add(s)
                continue
            plain.add(s)
            plain.add(s[::-1])
            # as a gateway may echo it inside a URL or a JSON string: percent-encoded, or
            # with "/" escaped (AWS secrets hold "/" and "+")
            plain.add(quote(s, safe=""))
            plain.add(quote(s))  # "/" kept, as in a URL path (urllib's and encodeURI's way)
            plain.add(s.replace("/", "\\/"))
            # cut short in an echo ("sk-abc...", a log line's tail): any 16 or more of
            # its first or last characters are the key's, and no ordinary text
            for n in range(_MIN_ECHOED, len(s)):
                plain.add(s[:n])
                plain.add(s[-n:])
            raw = s.encode("utf-8")
            plain.add(raw.hex())
            for core in _b64_cores(raw):
                exact.add(core)
                exact.add(core.replace("+", "-").replace("/", "_"))  # URL-safe alphabet
        # Longest first, so a secret inside another is not half-replaced.
        parts = [re.escape(p) for p in sorted(plain, key=len, reverse=True)]
        self._plain = re.compile("|".join(parts), re.IGNORECASE) if parts else None
        parts = [re.escape(p) for p in sorted(exact, key=len, reverse=True)]
        self._exact = re.compile("|".join(parts)) if parts else None

    def __len__(self) -> int:
        """How many secrets it knows (grows with :meth:`add`)."""
        return len(self._secrets)

    def at_least(self, shortest: int) -> Redactor:
        """A redactor of this one's secrets of ``shortest`` characters or more (where a
        match drops a whole field, a short test key would match ordinary names)."""
        return Redactor(s for s in self._secrets if len(s) >= shortest)

    def text(self, value: str, limit: int = MAX_ECHO_CHARS) -> str:
        """``value`` with every secret replaced by ``***``, cut to ``limit`` characters."""
        if self._plain is not None:
            value = self._plain.sub(MASK, value)
        if self._exact is not None:
            value = self._exact.sub(MASK, value)
        if len(value) > limit:
            value = value[: limit - 3] + "..."
        return value

    __call__ = text

    def holds(self, value: str) -> bool:
        """True when ``value`` holds a secret in any form :meth:`text` replaces.

        >>> Redactor(["sk-secret-123"]).holds("c2stc2VjcmV0LTEyMw")  # base64
        True
        """
        return any(p is not None and p.search(value) for p in (self._plain, self._exact))

    def request_id(self, value: str | None) -> str | None:
        """A request id fit for the ledger: redacted, bounded, or None."""
        if value is None:
            return None
        return self.text(str(value), MAX_REQUEST_ID_CHARS)

"""Leases on cache keys, so processes buying into one cache do not buy the same item twice.

:class:`TeacherClient` takes an optional ``claims`` object (in the CLI, the cache folder's
:class:`cache.coordination.Coordinator`). Before buying a cache miss it claims the key;
keys another live process holds are not bought but waited for: the client polls the
cache until they appear, or buys them itself when their lease ends without a result
(the other process stopped, failed or died). A lease is released once the result is
cached, so a key that turns out to be ours after a wait is looked up in the cache again
before anything is paid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Protocol

__all__ = ["CLAIM_POLL_S", "RECLAIM_AFTER_S", "Claims", "LeasesLapsed"]

CLAIM_POLL_S: Final = 0.1  # seconds between looks at items another process is buying
# A request about to be sent this long after its keys were claimed claims them again and
# looks in the cache first: half the coordinator's lease time (60 s), past which a
# process stopped meanwhile (Ctrl-Z, SIGSTOP: its heartbeat stopped too) may have lost
# its leases to a process on another host, which may have bought the items already (on
# this host a live process's leases hold: see cache.coordination).
RECLAIM_AFTER_S: Final = 30.0


class LeasesLapsed(Exception):
    """Raised before sending a request some of whose keys another live process now holds,
    or that another process has cached since: the request is not sent, its reservation is
    released, and its items go back through the claims (served from the cache, waited
    for, or bought)."""


class Claims(Protocol):
    """Leases on cache keys shared between processes."""

    def claim(self, keys: Sequence[str]) -> set[str]:
        """Lease every key no live owner holds; return the keys now ours."""

    def release(self, keys: Iterable[str]) -> None:
        """End our leases on ``keys``."""

    def held_elsewhere(self, keys: Iterable[str]) -> set[str]:
        """The keys a live other owner holds."""

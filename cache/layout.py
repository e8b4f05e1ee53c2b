"""The layout of a cache folder: responses, the spend ledger, coordination, exported stores.

The one place that names what lives in a cache folder; everything else asks
:class:`CacheDir` (or, for a folder that must not be checked, the names below).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "COORDINATION_FILE",
    "LEDGER_FILE",
    "RESPONSES_DIR",
    "SELECT_DIR",
    "STORES_DIR",
    "CacheDir",
    "CacheLayoutError",
    "holds_cache",
]

RESPONSES_DIR = "responses"  # the diskcache ResponseCache
LEDGER_FILE = "ledger.jsonl"  # the SpendLedger
COORDINATION_FILE = "coordination.db"  # leases and the shared budget
STORES_DIR = "stores"  # exported EmbeddingStores, one folder each
SELECT_DIR = "select"  # the rounds of `harvest --select`, one state file each
RESPONSES_DB = "cache.db"  # diskcache's database in RESPONSES_DIR


def holds_cache(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` holds a cache's own files (its ledger, coordination database or
    response database): a cache, never a folder of data. A ``responses/`` folder alone is
    not enough: a data set may have a class of that name.

    >>> holds_cache("no-such-folder")
    False
    """
    # os.path: False, not PermissionError, for a folder that cannot be read
    return any(
        os.path.isfile(os.path.join(folder, *parts))
        for parts in ((LEDGER_FILE,), (COORDINATION_FILE,), (RESPONSES_DIR, RESPONSES_DB))
    )


class CacheLayoutError(ValueError):
    """A cache folder whose layout cannot work (a file where a folder goes, or the
    reverse); the message says what to fix."""


class CacheDir:
    """``DIR/responses/`` (diskcache), ``DIR/ledger.jsonl``, ``DIR/coordination.db``,
    ``DIR/stores/<name>/``.

    >>> CacheDir("vlm-cache").stores.as_posix()
    'vlm-cache/stores'
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._check()

    def _check(self) -> None:
        """Refuse a layout that cannot work (a file where a folder goes, or the reverse),
        with what to fix, before anything opens it (a traceback otherwise)."""
        for folder, what in ((self.root, "--cache"), (self.responses, "the response cache")):
            if folder.exists() and not folder.is_dir():
                raise CacheLayoutError(
                    f"{what} {folder} is a file, not a folder; give a folder (it is created "
                    "if missing)"
                )
        if self.ledger.is_dir():
            raise CacheLayoutError(
                f"{self.ledger} is a folder, but it must be the spend ledger file; move the "
                "folder aside"
            )

    @property
    def responses(self) -> Path:
        return self.root / RESPONSES_DIR

    @property
    def responses_db(self) -> Path:
        """diskcache's database in :attr:`responses` (the paid entries)."""
        return self.responses / RESPONSES_DB

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER_FILE

    @property
    def coordination(self) -> Path:
        """SQLite leases and shared budget of the processes using this folder."""
        return self.root / COORDINATION_FILE

    @property
    def stores(self) -> Path:
        return self.root / STORES_DIR

    def exists(self) -> bool:
        return self.responses.exists() or self.ledger.exists()

"""The layout of a cache directory: responses, the spend ledger, exported stores."""

from __future__ import annotations

from pathlib import Path

from vlmclient.errors import ConfigurationError

__all__ = ["CacheDir"]


class CacheDir:
    """``DIR/responses/`` (diskcache), ``DIR/ledger.jsonl``, ``DIR/coordination.db``,
    ``DIR/stores/<name>/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._check()

    def _check(self) -> None:
        """Refuse a layout that cannot work (a file where a folder goes, or the reverse),
        with what to fix, before anything opens it (a traceback otherwise)."""
        for folder, what in ((self.root, "--cache"), (self.responses, "the response cache")):
            if folder.exists() and not folder.is_dir():
                raise ConfigurationError(
                    f"{what} {folder} is a file, not a folder; give a folder (it is created "
                    "if missing)"
                )
        if self.ledger.is_dir():
            raise ConfigurationError(
                f"{self.ledger} is a folder, but it must be the spend ledger file; move the "
                "folder aside"
            )

    @property
    def responses(self) -> Path:
        return self.root / "responses"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.jsonl"

    @property
    def coordination(self) -> Path:
        """SQLite leases and shared budget of the processes using this folder."""
        return self.root / "coordination.db"

    @property
    def stores(self) -> Path:
        return self.root / "stores"

    def exists(self) -> bool:
        return self.responses.exists() or self.ledger.exists()

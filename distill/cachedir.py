"""The layout of a cache directory: responses, the spend ledger, exported stores."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CacheDir"]


class CacheDir:
    """``DIR/responses/`` (diskcache), ``DIR/ledger.jsonl``, ``DIR/coordination.db``,
    ``DIR/stores/<name>/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

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

"""Where a response database came from: what a buyer needs to tell an empty database that
lost its answers from one whose first answers were never written.

A harvest records each paid request in the ledger before it caches the answers. Killed in
between on its first request, it leaves a ledger that records paid items beside an empty
database, which is what a lost, replaced or pruned database looks like too; the buyer
refuses those (buying everything again would pay twice) and must not refuse this one (a
crashed run resumes). Two facts, kept in a table of the database itself so they go where
the database goes:

- ``before_purchases``: the database was first opened by a buyer while the ledger beside it
  recorded no purchase (:meth:`cache.ResponseCache.mark_origin`, written once);
- ``held``: it has held an entry (written in the transaction that stores the first one, or
  when it is marked holding some), never cleared: a pruned database stays "held".

Empty, marked before any purchase and never holding an entry, every purchase the ledger
records was bought into this database and never reached it. A database made before this
table existed is marked when a buyer first opens it: the ledger then records purchases,
so an empty one is refused as before.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

__all__ = ["ORIGIN_TABLE", "Origin", "create_table", "mark", "note_held", "read"]

ORIGIN_TABLE: Final = "VlmDistillOrigin"


class Origin(NamedTuple):
    before_purchases: bool
    held: bool


def create_table(db: Any) -> None:
    """The table, if missing (on diskcache's own connection: see response_db.query)."""
    db._sql(f"CREATE TABLE IF NOT EXISTS {ORIGIN_TABLE} (key TEXT PRIMARY KEY, value INTEGER)")


def mark(db: Any, *, before_purchases: bool, holding: bool) -> None:
    """Record ``before_purchases`` unless recorded already; ``holding``: it holds entries."""
    with db.transact(retry=True):
        db._sql(f"INSERT OR IGNORE INTO {ORIGIN_TABLE} VALUES ('before_purchases', ?)",
                (int(before_purchases),))  # fmt: skip
        if holding:
            note_held(db)


def note_held(db: Any) -> None:
    """Record that the database holds (or held) an entry; inside the caller's transaction."""
    db._sql(f"INSERT OR IGNORE INTO {ORIGIN_TABLE} VALUES ('held', 1)")  # no write if known


def read(db: Any) -> Origin | None:
    """The recorded origin, or None when the database was never marked."""
    rows = dict(db._sql(f"SELECT key, value FROM {ORIGIN_TABLE}").fetchall())
    if "before_purchases" not in rows:
        return None
    return Origin(bool(rows["before_purchases"]), bool(rows.get("held", 0)))

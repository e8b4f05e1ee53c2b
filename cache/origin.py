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

The same facts per teacher (``provider:model``), for a database that holds entries of
other teachers (lost, then harvested for another teacher first):

- ``before:T``: the ledger recorded no purchase of T when a buyer of T first opened it;
- ``held:T``: it has held an entry of T (noted in the transaction that stores it);
- ``teachers``: it held no entry at all when these rows began, so ``held:T`` is complete:
  no ``held:T`` means no entry of T.

Without ``held:T``, and either complete or marked before T's first purchase, the database
holds nothing of T: :func:`read_teacher`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, NamedTuple

__all__ = [
    "ORIGIN_TABLE",
    "Origin",
    "TeacherOrigin",
    "create_table",
    "mark",
    "note_held",
    "read",
    "read_teacher",
]

ORIGIN_TABLE: Final = "VlmDistillOrigin"


class Origin(NamedTuple):
    before_purchases: bool
    held: bool


class TeacherOrigin(NamedTuple):
    """What the database records of one teacher's entries."""

    held: bool  # it has held an entry of the teacher
    # the ledger recorded no purchase of the teacher when a buyer of it first opened the
    # database (None: no buyer of it marked it)
    before_purchases: bool | None
    complete: bool  # every teacher's entries are noted: no ``held`` means none

    @property
    def holds_none(self) -> bool:
        """The database surely holds no entry of the teacher."""
        return not self.held and (self.complete or self.before_purchases is True)


def create_table(db: Any, *, empty: bool) -> None:
    """The table, if missing (on diskcache's own connection: see response_db.query);
    ``empty``: the database holds no entry, so the per-teacher rows are complete from now."""
    db._sql(f"CREATE TABLE IF NOT EXISTS {ORIGIN_TABLE} (key TEXT PRIMARY KEY, value INTEGER)")
    # (read first: no write on every open)
    if empty and not db._sql(f"SELECT 1 FROM {ORIGIN_TABLE} WHERE key='teachers'").fetchone():
        db._sql(f"INSERT OR IGNORE INTO {ORIGIN_TABLE} VALUES ('teachers', 1)")


def mark(
    db: Any,
    *,
    before_purchases: bool,
    holding: bool,
    teacher: str | None = None,
    teacher_before: bool = False,
) -> None:
    """Record ``before_purchases`` (and for ``teacher``, ``teacher_before``: the ledger
    records no purchase of it) unless recorded already; ``holding``: it holds entries."""
    with db.transact(retry=True):
        db._sql(f"INSERT OR IGNORE INTO {ORIGIN_TABLE} VALUES ('before_purchases', ?)",
                (int(before_purchases),))  # fmt: skip
        if teacher is not None:
            db._sql(f"INSERT OR IGNORE INTO {ORIGIN_TABLE} VALUES (?, ?)",
                    ("before:" + teacher, int(teacher_before)))  # fmt: skip
        if holding:
            note_held(db)


def note_held(db: Any, teachers: Iterable[str] = ()) -> None:
    """Record that the database holds (or held) an entry, of each of ``teachers`` too;
    inside the caller's transaction."""
    db._sql(f"INSERT OR IGNORE INTO {ORIGIN_TABLE} VALUES ('held', 1)")  # no write if known
    for teacher in teachers:
        db._sql(f"INSERT OR IGNORE INTO {ORIGIN_TABLE} VALUES (?, 1)", ("held:" + teacher,))


def read(db: Any) -> Origin | None:
    """The recorded origin, or None when the database was never marked."""
    rows = dict(db._sql(f"SELECT key, value FROM {ORIGIN_TABLE}").fetchall())
    if "before_purchases" not in rows:
        return None
    return Origin(bool(rows["before_purchases"]), bool(rows.get("held", 0)))


def read_teacher(db: Any, teacher: str) -> TeacherOrigin:
    """What the database records of ``teacher``'s entries."""
    keys = ("teachers", "held:" + teacher, "before:" + teacher)
    rows = dict(db._sql(
        f"SELECT key, value FROM {ORIGIN_TABLE} WHERE key IN (?, ?, ?)", keys
    ).fetchall())  # fmt: skip
    before = rows.get(keys[2])
    return TeacherOrigin(
        held=bool(rows.get(keys[1], 0)),
        before_purchases=None if before is None else bool(before),
        complete=bool(rows.get(keys[0], 0)),
    )

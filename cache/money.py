"""Dollar arithmetic in a decimal context of its own.

``Decimal`` arithmetic rounds to the calling thread's (or task's) context: a library caller
that had set ``decimal.getcontext().prec = 2`` had every sum of a budget rounded (0.010 +
0.00012 is 0.010 at two digits), so a cap never filled. The budget, the shared total and
the price of a request compute in :data:`MONEY` instead: Python's default context, which no
caller can change.

>>> import decimal
>>> from decimal import Decimal
>>> with decimal.localcontext() as ctx:
...     ctx.prec = 2
...     with money_context():
...         print(Decimal("0.010") + Decimal("0.00012"))
0.01012
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)

__all__ = ["MONEY", "money_context"]

# decimal.DefaultContext's documented values, spelled out: DefaultContext itself can be
# changed by a caller (it is the template of every new thread's context)
MONEY = Context(
    prec=28,
    rounding=ROUND_HALF_EVEN,
    Emin=-999999,
    Emax=999999,
    capitals=1,
    clamp=0,
    flags=[],
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


def money_context() -> AbstractContextManager[Context]:
    """A block whose Decimal arithmetic runs in :data:`MONEY`."""
    return localcontext(MONEY)

"""A hard money cap: reserve the worst case before sending, settle with the bill after.

The check and the reservation happen in one step under a lock, so no number of
concurrent requests can pass the cap together (the check-then-spend race that lets
other libraries overspend).
"""

from __future__ import annotations

import numbers
import threading
from dataclasses import dataclass
from decimal import Decimal

from cache.money import money_context

from .errors import BudgetExceededError

__all__ = ["MAX_BUDGET_USD", "MIN_BUDGET_USD", "Budget", "Reservation", "cap_in_dollars"]

# Decimal takes any exponent, but its arithmetic stops at 10**999999: a cap of 1e1000000
# was a decimal.Overflow at the first reservation, 1e-1000000 a refusal a million zeros long.
MAX_BUDGET_USD = Decimal(10**12)  # a trillion dollars
MIN_BUDGET_USD = Decimal("1e-12")  # the smallest cap above $0


@dataclass
class Reservation:
    """Money (and request/item counts) held for one request until it is settled."""

    usd: Decimal
    items: int
    open: bool = True


class Budget:
    """Caps on dollars, requests and items; ``None`` means no cap.

    >>> b = Budget(usd=Decimal("1.00"))
    >>> r = b.reserve(Decimal("0.40"), items=4)
    >>> b.settle(r, Decimal("0.35"))  # True would mean an overrun
    False
    >>> b.spent
    Decimal('0.35')

    Guarantee: ``spent <= usd`` as long as every settled cost is at most its reservation
    (the provider billed no more than our worst-case estimate). A settle above the
    reservation (an overrun) is recorded as it is: money is never hidden. ``overruns``
    counts them, ``overrun_usd`` sums what was billed beyond the reservations and
    ``scale`` is the largest billed/reserved ratio seen (1 until an overrun), by which
    estimates of what is left to buy should be multiplied.
    """

    def __init__(
        self,
        usd: Decimal | str | None = None,
        *,
        max_requests: int | None = None,
        max_items: int | None = None,
    ) -> None:
        self.cap = None if usd is None else cap_in_dollars(usd)
        self.max_requests = _count_cap("max_requests", max_requests)
        self.max_items = _count_cap("max_items", max_items)
        self.spent = Decimal(0)
        self.reserved = Decimal(0)
        self.requests = 0  # sent or in flight
        self.items = 0
        self.overruns = 0  # settles above their reservation
        self.overrun_usd = Decimal(0)  # billed beyond those reservations
        self.scale = Decimal(1)  # largest billed / reserved ratio seen
        self._lock = threading.Lock()

    @property
    def remaining(self) -> Decimal | None:
        if self.cap is None:
            return None
        with money_context():
            return self.cap - self.spent - self.reserved

    def reserve(
        self,
        usd: Decimal,
        *,
        items: int = 1,
        kind: str | None = None,
        endpoint: str | None = None,
    ) -> Reservation:
        """Hold ``usd`` for one request of ``items`` items, or raise BudgetExceededError.
        ``kind`` and ``endpoint`` (its base URL, None: the provider's default) say what
        the request is for: a :class:`~vlmclient.SharedBudget` keeps them with its
        reservation for the ledger line of one a killed process leaves open."""
        if not usd.is_finite() or usd < 0:  # a negative hold would raise the cap for all
            raise ValueError(f"a reservation must be a finite amount >= 0, not {usd}")
        with self._lock, money_context():
            if self.cap is not None and self.spent + self.reserved + usd > self.cap:
                raise BudgetExceededError(
                    kind="usd", cap=self.cap, spent=self.spent, reserved=self.reserved, estimate=usd
                )
            if self.max_requests is not None and self.requests + 1 > self.max_requests:
                raise BudgetExceededError(
                    kind="requests",
                    cap=Decimal(self.max_requests),
                    spent=Decimal(self.requests),
                    reserved=Decimal(0),
                    estimate=Decimal(1),
                )
            if self.max_items is not None and self.items + items > self.max_items:
                raise BudgetExceededError(
                    kind="items",
                    cap=Decimal(self.max_items),
                    spent=Decimal(self.items),
                    reserved=Decimal(0),
                    estimate=Decimal(items),
                )
            self.reserved += usd
            self.requests += 1
            self.items += items
            return Reservation(usd=usd, items=items)

    def settle(self, reservation: Reservation, actual: Decimal) -> bool:
        """The provider billed ``actual`` for this request; True if that is an overrun."""
        if not actual.is_finite() or actual < 0:
            raise ValueError(f"a bill must be a finite amount >= 0, not {actual}")
        with self._lock, money_context():
            self._close(reservation)
            self.spent += actual
            if actual <= reservation.usd:
                return False
            self.overruns += 1
            self.overrun_usd += actual - reservation.usd
            if reservation.usd > 0:
                self.scale = max(self.scale, actual / reservation.usd)
            return True

    def charge_reservation(self, reservation: Reservation) -> None:
        """Outcome unknown after sending (timeout, dropped connection): charge the worst case."""
        self.settle(reservation, reservation.usd)

    def left_open(self, reservation: Reservation) -> bool:
        """Is ``reservation`` to be left open rather than settled and recorded: charged by
        the next run instead (see :meth:`SharedBudget.left_open`)? Never here."""
        return False

    def release(self, reservation: Reservation) -> None:
        """The provider surely did not bill (connection refused, 429, 5xx): give it back."""
        with self._lock, money_context():
            self._close(reservation)
            self.requests -= 1
            self.items -= reservation.items

    def _close(self, reservation: Reservation) -> None:
        if not reservation.open:
            raise RuntimeError("reservation already settled or released")
        reservation.open = False
        self.reserved -= reservation.usd

    def __repr__(self) -> str:
        return (
            f"Budget(cap={self.cap}, spent={self.spent}, reserved={self.reserved}, "
            f"requests={self.requests}, items={self.items})"
        )


def _count_cap(name: str, cap: object) -> int | None:
    """A cap on requests or items: None, or a whole number >= 0. NaN was no cap at all
    (every comparison with it is false), "3" a TypeError at the first request.

    >>> _count_cap("max_items", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: max_items must be a whole number >= 0 (None for no cap), not nan
    """
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, numbers.Integral) or cap < 0:
        raise ValueError(f"{name} must be a whole number >= 0 (None for no cap), not {cap!r}")
    return int(cap)


def cap_in_dollars(usd: object) -> Decimal:
    """A cap in dollars: a Decimal, a str or an int, 0 or from :data:`MIN_BUDGET_USD` to
    :data:`MAX_BUDGET_USD`. A float is refused: binary fractions are not money
    (Decimal(0.1) is 0.1000000000000000055...).

    >>> cap_in_dollars("1.50"), cap_in_dollars(2)
    (Decimal('1.50'), Decimal('2'))
    >>> cap_in_dollars(0.1)
    Traceback (most recent call last):
    ...
    ValueError: a budget is a Decimal or a str of dollars (e.g. '0.10'), not the float 0.1
    """
    if isinstance(usd, (float, bool)):
        raise ValueError(
            f"a budget is a Decimal or a str of dollars (e.g. '0.10'), not the "
            f"{type(usd).__name__} {usd!r}"
        )
    try:
        cap = Decimal(usd)  # type: ignore[arg-type]
    except (ArithmeticError, TypeError, ValueError):
        raise ValueError(f"a budget is an amount of dollars, not {usd!r}") from None
    if not cap.is_finite() or cap < 0:
        raise ValueError(f"a budget must be a finite amount >= 0, not {usd!r}")
    if cap > MAX_BUDGET_USD or (cap != 0 and cap < MIN_BUDGET_USD):
        raise ValueError(
            f"a budget must be 0 or from ${MIN_BUDGET_USD:f} to ${MAX_BUDGET_USD:,}, "
            f"not {repr(usd)[:60]}"
        )
    return cap

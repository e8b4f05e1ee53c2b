"""One budget for every run and process of a cache folder: the ledger's total is the cap.

:class:`SharedBudget` is a :class:`~vlmclient.budget.Budget` whose ``usd`` cap is a per-run
cap (``--run-budget``, optional) and whose ``total`` cap (``--budget``) is on everything
this cache's spend ledger records for the teacher, across runs and concurrent processes.
Each reservation is checked against both caps; the shared check and the reservation
are one transaction in the cache folder's coordination database
(:class:`cache.coordination.Coordinator`), so a rerun after a budget stop or a crash
never spends the cap again and two processes never spend it twice. An overrun (a provider
billing more than was reserved) is recorded there too, and stops every budget of that
teacher that was running when it happened: the estimate they all reserve by is short.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal

from cache.coordination import CoordinationError, Coordinator, Overrun, SpendView
from cache.ledger import plain
from cache.money import money_context

from .budget import Budget, Reservation, cap_in_dollars
from .errors import BudgetExceededError, BudgetOverrunError, SpendRecordError

__all__ = ["SharedBudget", "SharedReservation"]

log = logging.getLogger("vlmclient")


@dataclass
class SharedReservation(Reservation):
    """A reservation that is also held in the coordination database under ``rid``."""

    rid: int = 0
    key: str | None = None  # ``owner:rid``, named by the ledger line that settles it


class SharedBudget(Budget):
    """``total``: cap on the ledger's spend for ``teacher``; ``usd``: cap on this run.

    >>> import tempfile, os
    >>> from cache.coordination import Coordinator
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with Coordinator(os.path.join(d, "c.db"), ledger_path=os.path.join(d, "l")) as c:
    ...         b = SharedBudget(c, "local:hash", total=Decimal("1"))
    ...         overran = b.settle(b.reserve(Decimal("0.4")), Decimal("0.4"))
    ...         str(SharedBudget(c, "local:hash", total=Decimal("1")).remaining)
    '0.6'

    ``spent``/``reserved`` (inherited) are this run's; :attr:`ledger_spent` is the
    teacher's total in the ledger, every run and process included.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        teacher: str,
        *,
        total: Decimal | str | None,
        usd: Decimal | str | None = None,
        max_requests: int | None = None,
        max_items: int | None = None,
    ) -> None:
        super().__init__(usd, max_requests=max_requests, max_items=max_items)
        self.total = None if total is None else cap_in_dollars(total)
        self.teacher = teacher
        self._coord = coordinator
        self._broken: str | None = None  # why the shared total can no longer be trusted
        self._id = uuid.uuid4().hex  # this budget, in the database's overrun records
        try:
            # an overrun recorded after this is another running budget's: it stops us too
            self._overruns_seen: int = coordinator.last_overrun(teacher)
        except CoordinationError as exc:
            self._overruns_seen = 0
            self._broken = str(exc)

    def view(self) -> SpendView:
        """The teacher's settled and in-flight money across all processes."""
        try:
            return self._coord.spend(self.teacher)
        except CoordinationError as exc:
            raise self._refusal(str(exc)) from exc

    def _refusal(self, why: str) -> SpendRecordError:
        return SpendRecordError(
            f"the shared budget of this cache cannot be used ({why}); nothing more is sent: "
            "fix the cache folder and run again (cached results are kept)"
        )

    @property
    def ledger_spent(self) -> Decimal:
        """What this cache's ledger records for the teacher (all runs and processes)."""
        return self.view().settled

    @property
    def shared_remaining(self) -> Decimal | None:
        """What is left of the shared cap (``total``) for every run, whatever this run's
        own cap (:attr:`remaining` is the smaller of the two); None without a shared cap."""
        if self.total is None:
            return None
        with money_context():
            return self.total - self.view().committed

    @property
    def remaining(self) -> Decimal | None:
        run = super().remaining
        if self.total is None:
            return run
        with money_context():
            shared = self.total - self.view().committed
        return shared if run is None else min(run, shared)

    def reserve(
        self,
        usd: Decimal,
        *,
        items: int = 1,
        kind: str | None = None,
        endpoint: str | None = None,
    ) -> Reservation:
        """Hold ``usd`` under the run caps and the shared cap, or raise BudgetExceededError.
        ``kind`` and ``endpoint`` go with the shared reservation: a process killed before
        settling it is charged for it by the next one under that kind and base URL."""
        try:
            local = super().reserve(usd, items=items)
        except BudgetExceededError as err:
            if err.kind == "usd" and err.cap is not None and usd > err.cap:
                # no run under this cap can buy the request: "run again" would stop the same
                err.args = (
                    f"--run-budget ${plain(err.cap)} is below the next request's worst case "
                    f"(${plain(usd)}): raise --run-budget ${plain(err.cap)} (it caps each run) "
                    "and run again. Nothing was sent (cached work is kept).",
                )
            elif err.kind == "usd":
                err.args = (
                    f"--run-budget ${plain(err.cap)} would be exceeded: this run spent "
                    f"${plain(err.spent)}, ${plain(err.reserved)} is reserved by its requests "
                    f"in flight, and the next request may cost up to ${plain(usd)}. Nothing "
                    "was sent; run again (or raise --run-budget) to continue (cached work is "
                    "kept).",
                )
            elif err.kind in ("requests", "items"):  # --max-requests / --max-items
                err.args = (
                    f"--max-{err.kind} {err.cap} would be exceeded: this run used {err.spent} "
                    f"{err.kind}, and the next request needs {err.estimate}. Nothing was "
                    f"sent; run again (or raise --max-{err.kind}) to continue (cached work "
                    "is kept).",
                )
            raise
        try:
            if self._broken is not None:
                raise self._refusal(self._broken)
            rid, seen = self._coord.try_reserve(
                self.teacher,
                usd,
                items,
                self.total,
                budget=self._id,
                overruns_after=self._overruns_seen,
                kind=kind,
                endpoint=endpoint,
            )
        except CoordinationError as exc:
            super().release(local)
            raise self._refusal(str(exc)) from exc
        except BaseException:
            super().release(local)
            raise
        if rid is None:
            super().release(local)
            if seen.overrun is not None:
                raise self._overrun_elsewhere(seen.overrun)
            assert self.total is not None
            refused = BudgetExceededError(
                kind="usd", cap=self.total, spent=seen.settled, reserved=seen.reserved,
                estimate=usd,
            )  # fmt: skip
            refused.args = (
                f"--budget ${plain(self.total)} for {self.teacher} would be exceeded: this cache's "
                f"ledger records ${plain(seen.settled)} for it (every run and process), "
                f"${plain(seen.reserved)} is reserved by requests in flight, and the next request "
                f"may cost up to ${plain(usd)}. Nothing was sent; raise --budget to continue "
                "(cached work is kept).",
            )
            raise refused
        key = f"{self._coord.owner}:{rid}"
        return SharedReservation(usd=local.usd, items=local.items, rid=rid, key=key)

    def _overrun_elsewhere(self, seen: Overrun) -> BudgetOverrunError:
        """The error that stops this budget after another one's overrun (``seen``)."""
        with money_context():
            ratio = seen.billed / seen.reserved if seen.reserved > 0 else None
        if ratio is not None:
            with self._lock:  # our estimate is short by that factor too
                self.scale = max(self.scale, ratio)
        times = "" if ratio is None else f", {ratio:.2f}x its worst case"
        return BudgetOverrunError(
            f"OVERRUN in another run of this cache (pid {seen.pid} on {seen.host}): "
            f"{self.teacher} billed ${plain(seen.billed)} for a request for which "
            f"${plain(seen.reserved)} was reserved{times}. The price or our usage estimate "
            "for this model looks wrong, so the budget can no longer be trusted: this run "
            "sends no new requests either (those in flight finish and are recorded). Check "
            "the provider's bill and correct the price with --price-file before running again",
            billed=seen.billed,
            reserved=seen.reserved,
        )

    def settle(self, reservation: Reservation, actual: Decimal) -> bool:
        """The provider billed ``actual``: settle here and in the shared total; True if that
        is an overrun (see :meth:`Budget.settle`), which the shared database records so
        that it stops the other budgets of this teacher too."""
        overran = super().settle(reservation, actual)
        if isinstance(reservation, SharedReservation):
            try:
                self._coord.settle(
                    reservation.rid, self.teacher, actual, overran_in=self._id if overran else ""
                )
            except CoordinationError as exc:
                # The money is spent and goes to the ledger, which the next run's total
                # starts from; this run sends nothing more.
                self._broken = str(exc)
                log.critical("shared budget not updated for a $%s settle: %s", actual, exc)
        return overran

    def left_open(self, reservation: Reservation) -> bool:
        """After a stop signal, while a stopped process (Ctrl-Z) holds the coordination
        database locked (:meth:`Coordinator.given_up`): the reservation, held in the
        database, is left open there, and the next process of the cache charges it (as
        orphaned, at its worst case, as after a kill -9) once the lock is free. Written to
        the ledger now too, with its close in the database failing, it was charged twice."""
        return isinstance(reservation, SharedReservation) and self._coord.given_up()

    def release(self, reservation: Reservation) -> None:
        """The provider surely did not bill: give the money back here and in the shared total."""
        super().release(reservation)
        if isinstance(reservation, SharedReservation):
            try:
                self._coord.release_reservation(reservation.rid)
            except CoordinationError as exc:  # it then holds money back: errs on the safe side
                self._broken = str(exc)
                log.warning("shared budget: a reservation could not be given back: %s", exc)

    def __repr__(self) -> str:
        return (
            f"SharedBudget(teacher={self.teacher!r}, total={self.total}, run_cap={self.cap}, "
            f"spent={self.spent}, reserved={self.reserved})"
        )

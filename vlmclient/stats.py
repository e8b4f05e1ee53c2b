"""What a :class:`~vlmclient.TeacherClient` counts, and the hook that hears it as it happens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["ClientStats", "EventHook", "emit"]

# Called with an event name ("hit", "bought", "retry", "failure") and how many items or
# attempts it concerns (``TeacherClient(on_event=...)``, e.g. for a progress display).
EventHook = Callable[[str, int], None]


@dataclass
class ClientStats:
    """Counters since the client was made (attempts, not items, unless named so)."""

    requests_sent: int = 0
    requests_ok: int = 0
    retries: int = 0
    failures: int = 0
    cache_hits: int = 0
    items_bought: int = 0
    shared_in_flight: int = 0
    saved_usd: Decimal = Decimal(0)
    estimated: int = 0  # billed 200s charged at the reservation: they did not say the bill
    # attempts charged their reservation without an answer: a timeout or a connection lost
    # after sending, a gateway's upstream status (502, 504, 520, 524), a cancel on the wire
    charged_no_answer: int = 0


def emit(hook: EventHook | None, name: str, n: int = 1) -> None:
    """Tell ``hook`` (when there is one) that ``n`` items or attempts had event ``name``."""
    if hook is not None:
        hook(name, n)

"""Seeded fault draws: which injected fault, if any, a request gets."""

from __future__ import annotations

import random
import threading
from enum import Enum

from .config import Faults

__all__ = ["Fault", "FaultPlan"]


class Fault(str, Enum):
    NONE = "none"
    FAIL_500 = "500"
    FAIL_503 = "503"
    FAIL_529 = "529"
    DROP = "drop"
    TIMEOUT = "timeout"
    MALFORMED = "malformed"
    WRONG_DIM = "wrong_dim"


class FaultPlan:
    """One seeded uniform draw per request, mapped onto the configured fractions.

    >>> plan = FaultPlan(Faults(fail_500=1.0))
    >>> plan.draw()
    <Fault.FAIL_500: '500'>
    """

    def __init__(self, faults: Faults) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(faults.seed)
        self._table = [
            (Fault.FAIL_500, faults.fail_500),
            (Fault.FAIL_503, faults.fail_503),
            (Fault.FAIL_529, faults.fail_529),
            (Fault.DROP, faults.drop),
            (Fault.TIMEOUT, faults.timeout),
            (Fault.MALFORMED, faults.malformed),
            (Fault.WRONG_DIM, faults.wrong_dim),
        ]
        self.active = any(frac > 0 for _, frac in self._table)

    def draw(self) -> Fault:
        if not self.active:
            return Fault.NONE
        with self._lock:
            u = self._rng.random()
        edge = 0.0
        for fault, frac in self._table:
            edge += frac
            if u < edge:
                return fault
        return Fault.NONE

"""Where a run's time goes: the client's thread, phase by phase (``harvest -v``).

The client runs on one event-loop thread, so its synchronous phases (preparing
requests, parsing answers, cache and ledger writes) never overlap one another; each is
timed with ``perf_counter`` where it runs. Waiting on the provider is the time during
which at least one request is in flight and the thread is in none of those phases
(network and transport work included). Together with ``other`` (the rest of the wall
time: scheduling, polling for items another process is buying) the parts add up to the
wall time, so a slow provider (large ``wait``) is told apart from a slow disk (large
``cache``, ``ledger`` or ``store``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter

__all__ = ["PHASES", "Timings"]

PHASES = ("prepare", "parse", "cache", "ledger", "store")


@dataclass
class Timings:
    """Seconds spent per phase since the client was made.

    ``prepare``: reading images, views, re-encoding, cache keys, estimates, request
    bodies; ``parse``: decoding and checking answers; ``cache``: response-cache reads and
    writes and the leases of concurrent runs; ``ledger``: spend ledger records and budget
    reserve/settle; ``store``: writing the embedding store at the end.

    >>> t = Timings()
    >>> t0 = perf_counter(); t.add("parse", t0)
    >>> parts = t.parts(wall=1.0); round(sum(parts.values()), 6)
    1.0
    """

    prepare: float = 0.0
    parse: float = 0.0
    cache: float = 0.0
    ledger: float = 0.0
    store: float = 0.0
    _in_flight: int = field(default=0, repr=False)
    _since: float = field(default=0.0, repr=False)
    _flight_s: float = field(default=0.0, repr=False)
    _busy_in_flight: float = field(default=0.0, repr=False)
    _covered_until: float = field(default=0.0, repr=False)  # end of the last phase counted
    _flight_ended: float = field(default=0.0, repr=False)  # when requests were last all back

    def booked(self) -> float:
        """Seconds counted to the phases so far (to leave out of an enclosing phase)."""
        return self.prepare + self.parse + self.cache + self.ledger + self.store

    def add(self, phase: str, started: float, nested: float = 0.0) -> None:
        """Count ``perf_counter() - started`` seconds to ``phase`` (one of PHASES).

        ``nested``: what phases timed inside this one already counted (``booked()`` after
        minus before). Without it, a phase counts only its time after the end of the last
        phase counted: a timed stretch that held an ``await`` (another task's phases ran
        inside it) or a phase timed inside it is not counted twice, so the parts never add
        up to more than the wall time (they did on a loaded machine)."""
        now = perf_counter()
        if nested:
            seconds = max(0.0, now - started - nested)
        else:
            seconds = max(0.0, now - max(started, self._covered_until))
        self._covered_until = max(self._covered_until, now)
        self.__dict__[phase] += seconds  # (what setattr(getattr(...) + ...) does, cheaper)
        if self._in_flight:
            self._busy_in_flight += seconds
        elif started < self._flight_ended:  # it began while requests were out
            self._busy_in_flight += min(seconds, self._flight_ended - started)

    def sent(self) -> None:
        """A request left (call ``answered`` when it came back, however it ended)."""
        if self._in_flight == 0:
            self._since = perf_counter()
        self._in_flight += 1

    def answered(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._flight_ended = perf_counter()
            self._flight_s += self._flight_ended - self._since

    @property
    def wait(self) -> float:
        """Seconds with a request in flight and the thread in no phase of its own."""
        flight = self._flight_s + (perf_counter() - self._since if self._in_flight else 0.0)
        return max(0.0, flight - self._busy_in_flight)

    def parts(self, wall: float) -> dict[str, float]:
        """Every phase, ``wait`` and ``other`` (the rest of ``wall``), in seconds."""
        parts = {
            "prepare": self.prepare,
            "wait": self.wait,
            "parse": self.parse,
            "cache": self.cache,
            "ledger": self.ledger,
            "store": self.store,
        }
        parts["other"] = max(0.0, wall - sum(parts.values()))
        return parts

    def line(self, wall: float) -> str:
        """One line for a person: ``time: prepare 0.120 s · wait on the provider ...``."""
        names = {"wait": "wait on the provider"}
        parts = self.parts(wall)
        shown = " · ".join(f"{names.get(k, k)} {v:.3f} s" for k, v in parts.items())
        return f"time: {shown} (wall {wall:.3f} s)"

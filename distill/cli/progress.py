"""Live progress for long work: a rich bar on a terminal, plain lines otherwise.

:class:`LiveProgress` shows one task (a harvest, a training stage); :class:`TrainProgress`
turns the trainer's progress events into those bars for ``train`` and ``demo``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

__all__ = ["LiveProgress", "TrainProgress", "console"]

PLAIN_EVERY_S = 5.0  # seconds between plain progress lines


PLAIN_WIDTH = 110  # columns when output is not a terminal and COLUMNS is unset


def console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c = Console(stderr=stderr, highlight=False, width=PLAIN_WIDTH)
    return c


class LiveProgress:
    """One task's progress. ``update(done, extra)`` where ``extra`` is a short status text.

    On a terminal: a rich bar with done/total, the status text and an ETA. Elsewhere (CI,
    log files): one plain line every few seconds and one at the end.
    """

    def __init__(
        self,
        description: str,
        total: int,
        *,
        out: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.description = description
        self.total = total
        self.console = out or console()
        self._clock = clock
        self._live = self.console.is_terminal
        self._last_plain = -1e9
        self._started = clock()
        self._done = 0
        self._extra = ""
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> LiveProgress:
        if self._live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[extra]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, extra="")
        return self

    def update(self, done: int, extra: str = "") -> None:
        self._done, self._extra = done, extra
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, extra=extra)
            return
        now = self._clock()
        if now - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = now
            self._plain()

    def _plain(self) -> None:
        eta = ""
        elapsed = self._clock() - self._started
        if 0 < self._done < self.total and elapsed > 0:
            eta = f" · ETA {(self.total - self._done) * elapsed / self._done:.0f}s"
        line = f"{self.description}: {self._done}/{self.total} {self._extra}".rstrip() + eta
        print(line, file=sys.stdout, flush=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
        else:
            self._plain()


class TrainProgress:
    """The trainer's progress hook (events of :class:`distill.train.trainer.Progress`):
    one :class:`LiveProgress` per stage, with the loss terms and the last evaluation, e.g.
    ``adip/align: 150/150 loss -0.912 · ID 0.61 OOD 0.28`` (plain lines when the output is
    not a terminal). ``name`` (the demo's method) prefixes the stage. Call :meth:`close`
    (or use it as a context manager) when the run ends.
    """

    def __init__(
        self,
        name: str = "",
        *,
        out: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.console = out or console()
        self.live: LiveProgress | None = None
        self._clock = clock

    def __call__(self, p: Any) -> None:
        if p.total == 0:  # the end-of-run event: the last stage's bar already said it
            return
        stage = f"{self.name}/{p.stage}" if self.name else p.stage
        if p.event == "start" or self.live is None or self.live.description != stage:
            self.close()
            self.live = LiveProgress(stage, p.total, out=self.console, clock=self._clock)
            self.live.__enter__()
        terms = " ".join(f"{k} {v:.3f}" for k, v in p.losses.items())
        last = (
            f" · ID {p.mean_id:.2f} OOD {p.mean_ood:.2f}"
            if p.mean_id is not None and p.mean_ood is not None
            else ""
        )
        if p.event == "stage_end" and p.step < p.total:
            # its rule ended the stage early (Align's loss settled, SWAD's valley ended):
            # the bar stays at the steps done (it jumped to the total: 5001/5001 at 198)
            last += f" · stopped at step {p.step}: its loss settled"
        self.live.update(p.step, terms + last)

    def close(self) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

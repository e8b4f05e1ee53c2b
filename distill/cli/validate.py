"""Argparse types for every numeric flag (finite and in range) and every path (not empty),
or exit 2 before anything runs.

Config files go through the same types (``--config`` values become parser defaults that
argparse converts like command-line text), so one declaration guards both. Each type
raises ``argparse.ArgumentTypeError`` with what to fix; argparse turns that into exit 2.

>>> positive_seconds("30")
30.0
>>> positive_seconds("-1")
Traceback (most recent call last):
argparse.ArgumentTypeError: must be a finite number of seconds > 0 and <= 3600, not '-1'
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path

from vlmclient import MAX_BUDGET_USD, MIN_BUDGET_USD
from vlmclient import MIN_RATE as _MIN_RATE

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_CONCURRENCY",
    "MAX_SEEDS",
    "MAX_STEPS",
    "MAX_STUDENT_SIZE",
    "MAX_TIMEOUT_S",
    "MAX_USD",
    "MAX_VIEWS",
    "MIN_RATE",
    "MIN_USD",
    "SEED_MAX",
    "int_in",
    "money",
    "nonneg_days",
    "path_arg",
    "path_text",
    "positive_float",
    "positive_rate",
    "positive_seconds",
    "seed_arg",
]

# Upper bounds: each one far above any sensible use, low enough that a typo cannot make
# the run allocate gigabytes or wait for ever before it sends its first request.
MAX_VIEWS = 64  # teacher views per image (each view is one paid item)
MAX_CONCURRENCY = 1024  # requests in flight
MAX_BATCH_SIZE = 10_000  # items per request (providers cap it lower anyway)
MAX_STUDENT_SIZE = 1024  # a student's input side in pixels (--select-image-size, --student-size)
MAX_TIMEOUT_S = 3600.0  # seconds per request
# optimiser steps of one fit (fit-teacher --steps, demo --teacher-steps, --round-steps, and
# train's step counts: distill.train.config): the Fashion teacher's 12,000 many times over
# (train's default 5,001 too); a typo's 10**23 steps ran for ever without a word
MAX_STEPS = 100_000
# seeds one demo trains each student with (--seeds): 5 make docs/results.md; 10**23 trained
# for ever, and past 2**32 seeds the seed itself left the seed range
MAX_SEEDS = 100
MAX_USD = MAX_BUDGET_USD  # a budget: a trillion dollars (the library's bound too)
MIN_USD = MIN_BUDGET_USD  # the smallest budget above $0
MIN_RATE = _MIN_RATE  # --rpm / --tpm: one request (or token) an hour at the slowest (the client's)


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def money(text: str) -> Decimal:
    """A budget in USD: a finite amount from 0 to :data:`MAX_USD` (``nan``, ``inf`` and
    negatives refused), nothing finer than :data:`MIN_USD`.

    Decimal takes any exponent, but its arithmetic stops at 10**999999: ``1e1000000``
    was a ``decimal.Overflow`` traceback, and ``1e-1000000`` printed a million zeros.
    """
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount of dollars: {text!r}") from None
    # is_finite first: comparing a NaN Decimal raises InvalidOperation
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(
            f"the budget must be a finite amount of dollars >= 0, not {text!r}"
        )
    if value > MAX_USD or (value != 0 and value < MIN_USD):
        raise argparse.ArgumentTypeError(
            f"the budget must be 0 or from ${MIN_USD:f} to ${MAX_USD:,}, not {text[:40]!r}"
        )
    return value


def positive_seconds(text: str) -> float:
    """Seconds per request: finite, > 0 and <= :data:`MAX_TIMEOUT_S`.

    A zero or negative timeout times out every request after it was sent: each one is
    billed and nothing is cached, so a whole budget goes per run.
    """
    value = _float(text)
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds > 0 and <= {MAX_TIMEOUT_S:g}, not {text!r}"
        )
    return value


def positive_rate(text: str) -> float:
    """A requests- or tokens-per-minute limit: finite and >= :data:`MIN_RATE` (leave the
    flag out for none).

    A tinier rate (``--rpm 1e-300``; ``1e-320`` makes the interval infinite) sent one
    request, then paced the next one years away: the run waited for ever without a word.
    """
    value = _float(text)
    if not (math.isfinite(value) and value >= MIN_RATE):
        raise argparse.ArgumentTypeError(
            f"must be a finite rate per minute >= 0.0167 (at most an hour between requests, "
            f"or per token; leave the flag out for no limit), not {text!r}"
        )
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a softmax temperature: 0 divides by zero, every vector NaN)."""
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text!r}")
    return value


def nonneg_days(text: str) -> float:
    """An age in days: finite and >= 0."""
    value = _float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of days >= 0, not {text!r}")
    return value


def path_text(text: str) -> str:
    """An argparse type for a file or folder path kept as text: not empty.

    An empty path means the current folder: `--cache "$CACHE"` with CACHE unset made the
    current folder a cache, `harvest ""` scanned it.

    >>> path_text("")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must not be empty (an empty path would mean the current folder...
    """
    if not text:
        raise argparse.ArgumentTypeError(
            "must not be empty (an empty path would mean the current folder; an unset variable?)"
        )
    if "\0" in text:  # only a config file's string can hold one: open() raised ValueError
        raise argparse.ArgumentTypeError("must not hold a NUL character (\\0)")
    return text


def path_arg(text: str) -> Path:
    """An argparse type for a file or folder path: a :class:`~pathlib.Path`, not empty
    (``Path("")`` is ``Path(".")``, the current folder).

    >>> path_arg("vlm-cache").name
    'vlm-cache'
    """
    return Path(path_text(text))


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type for a whole number in ``[lo, hi]`` (``hi=None``: no upper bound)."""

    def convert(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            span = f">= {lo}" if hi is None else f"from {lo} to {hi}"
            raise argparse.ArgumentTypeError(f"must be a whole number {span}, not {text!r}")
        return value

    convert.__name__ = "whole number"  # argparse names the type in its messages
    return convert


# numpy's legacy generators (and scikit-learn) take seeds in [0, 2**32): a wider or negative
# seed was a numpy traceback, after paying for prompts in ``harvest --select``
SEED_MAX = 2**32 - 1


def seed_arg(text: str) -> int:
    """An argparse type for a seed: a whole number in ``[0, 2**32 - 1]``.

    >>> seed_arg("7")
    7
    """
    return int_in(0, SEED_MAX)(text)

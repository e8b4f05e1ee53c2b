"""Settling a response: what a request cost, what it records, and what it stops.

A 2xx is parsed and charged at its usage (or, when the provider did not say what it
billed, at the reservation, marked ``estimated``); a bill above its reservation is an
overrun and stops new requests; billed answers we cannot use are recorded, never retried,
and stop the run once they are too many (the circuit breaker). An error status is
released (providers do not bill it), except a gateway's status for an upstream answer it
gave up on or lost (502, 504, 520, 524: charged, the provider behind it may have billed),
and turned into our error class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

import httpx
from pydantic import SecretStr

from cache import MAX_RECORD_USD

from .budget import Budget, Reservation
from .errors import (
    APIStatusError,
    BudgetOverrunError,
    MalformedResponsesError,
    RateLimitError,
    ResponseValidationError,
)
from .http11 import CUT
from .models import UNIT_PRICE_FIELDS, Kind, Price, Usage
from .providers import CallSpec, Parsed, Provider
from .providers.wire import request_id_of
from .ratelimit import RateLimiter
from .redact import Redactor
from .stats import ClientStats
from .storage import Storage
from .timing import Timings

__all__ = [
    "MALFORMED_STOP_FRACTION",
    "MALFORMED_STOP_MIN",
    "MIN_SCRUBBED_SECRET",
    "UPSTREAM_MAY_HAVE_BILLED",
    "Settler",
]

log = logging.getLogger("vlmclient")

# The circuit breaker: a 200 we cannot use is billed and never retried, and a run whose
# billed answers are mostly unusable stops instead of spending its budget on garbage.
MALFORMED_STOP_MIN = 5  # unusable billed answers before the breaker may open ...
MALFORMED_STOP_FRACTION = 0.2  # ... and their least share of all billed 200s
# Secrets shorter than this are not looked for in a usage block (a 1-letter test token
# would match every field name); real API keys are far longer.
MIN_SCRUBBED_SECRET = 8
# Statuses a gateway (an OpenAI-compatible proxy, Cloudflare) answers when the request
# reached the provider behind it but no answer came back: it gave up waiting (504, 524)
# or the upstream's answer was invalid or its connection reset (502, Cloudflare's 520).
# The provider may have billed, so, as a timeout after sending, they are charged the
# reservation (and retried). So is a 408: LiteLLM's proxy answers it when its upstream
# timeout fires after it forwarded the request, Bedrock when the model timed out (a plain
# server's 408, the request never read, is then charged too: the safe side). Statuses
# saying the upstream was never reached (521-523, 525, 526) are released like every other
# error status.
UPSTREAM_MAY_HAVE_BILLED = frozenset({408, 502, 504, 520, 524})


def _scrub(obj: Mapping[str, Any], key: Redactor) -> dict[str, Any]:
    """``obj`` without any field whose name or value holds the key, in any form ``key``
    finds (verbatim in any case, reversed, hex, base64)."""
    return {
        k: _scrub(v, key) if isinstance(v, Mapping) else v
        for k, v in obj.items()
        if not key.holds(str(k)) and not (isinstance(v, str) and key.holds(v))
    }


def _again(exc: Exception) -> Exception:
    """A fresh copy of a stored stop error, so concurrent raises share no traceback."""
    if isinstance(exc, BudgetOverrunError):
        return BudgetOverrunError(str(exc), billed=exc.spent, reserved=exc.reserved)
    copy = MalformedResponsesError("")
    copy.args, copy.provider = exc.args, getattr(exc, "provider", "")
    return copy


class Settler:
    """Settles the responses of one teacher's requests against its budget and ledger.

    Holds what stops a client: :attr:`overrun` (the provider billed more than reserved)
    and :attr:`breaker` (too many billed answers could not be used).
    """

    def __init__(
        self,
        provider: Provider,
        *,
        teacher: str,
        base_url: str,
        price: Price,
        price_entry: str,
        budget: Budget,
        api_key: SecretStr,
        redact: Redactor,
        limiter: RateLimiter,
        storage: Storage,
        stats: ClientStats,
        timings: Timings,
        dims: dict[str, int],
        asked_dims: Mapping[str, int] | None = None,
        default_dims: Mapping[str, int] | None = None,
    ) -> None:
        self.provider = provider
        self.teacher = teacher
        self.base_url = base_url
        self.price = price
        self.price_entry = price_entry
        self.budget = budget
        self.stats = stats
        self.timings = timings
        self._api_key = api_key
        self._redact = redact
        # the secrets a usage block is scrubbed of (a server knows the key it was sent,
        # a gateway may echo AWS credentials): the client's redactor's, but for a short
        # test key, which would match every field name
        self._key_forms = redact.at_least(MIN_SCRUBBED_SECRET)
        self._key_forms_of = len(redact)
        self._limiter = limiter
        self._storage = storage
        self._dims = dims  # shared with the client: the dimension each kind was seen with
        self._asked_dims = dict(asked_dims or {})  # the ones the params ask for
        self._default_dims = dict(default_dims or {})  # the model's, where none is asked
        self.overrun: BudgetOverrunError | None = None
        self.breaker: MalformedResponsesError | None = None
        self.billed_ok = 0  # billed 200s we could use
        self.billed_malformed = 0  # billed 200s we could not use
        self._warned_estimated = False

    def stopped_elsewhere(self, err: BudgetOverrunError) -> None:
        """Another run of the shared budget overran: stop this client as if we had."""
        if self.overrun is None:
            self.overrun = err
            log.error("%s", err)

    def raise_if_stopped(self) -> None:
        """Raise (a fresh copy of) the overrun or breaker error once either happened."""
        if self.overrun is not None:
            raise _again(self.overrun)
        if self.breaker is not None:
            raise _again(self.breaker)

    def _usage_scrubber(self) -> Redactor:
        """The secrets a reported usage block is scrubbed of, with those the client
        learnt since it was made (Titan's credentials from botocore's chain)."""
        if len(self._redact) != self._key_forms_of:
            self._key_forms = self._redact.at_least(MIN_SCRUBBED_SECRET)
            self._key_forms_of = len(self._redact)
        return self._key_forms

    def _masked_texts(self, parsed: Parsed) -> Parsed:
        """``parsed`` with a key quoted in an answer's text masked (a debugging gateway,
        a model asked to repeat its request): the text is returned, cached and written
        to manifests, none of which may hold a secret."""
        scrub = self._usage_scrubber()
        texts = [scrub.text(t, max(len(t), 3)) for t in parsed.texts or ()]
        return parsed if texts == parsed.texts else replace(parsed, texts=texts)

    def handle(
        self, spec: CallSpec, response: httpx.Response, reservation: Reservation
    ) -> tuple[Parsed, Decimal]:
        """The parsed answer of ``response`` and what it cost; raises our error for an
        error status or a billed answer that cannot be used (after recording it)."""
        self._limiter.update(self.provider.rate_limit_hints(response.headers))
        if not 200 <= response.status_code < 300:  # (response.is_success)
            err = self._status_error(response)
            if response.status_code in UPSTREAM_MAY_HAVE_BILLED:
                # a gateway lost the provider's answer; the provider may have billed
                self.stats.charged_no_answer += 1
                charge_in_full(
                    self._storage, self.budget, spec, reservation,
                    f"http_{response.status_code}", err.request_id,
                )  # fmt: skip
            else:
                self.budget.release(reservation)  # providers do not bill error statuses
                self._storage.record(
                    spec.kind,
                    len(spec.items),
                    Decimal(0),
                    Usage(),
                    outcome=f"http_{response.status_code}",
                    request_id=err.request_id,
                )
            if isinstance(err, RateLimitError) and err.retry_after is not None:
                self._limiter.pause(err.retry_after)  # everyone waits, not only this task
            raise err
        started = time.perf_counter()
        try:
            cut = response.extensions.get(CUT)
            if cut:
                raise ResponseValidationError(
                    f"the answer (HTTP {response.status_code}) was cut off ({cut}); the "
                    "provider billed it: charged at its reservation, not retried",
                    provider=self.provider.name, request_id=request_id_of(response),
                )
            parsed = self.provider.parse_response(spec, response)
            rid = self._redact.request_id(parsed.request_id)
            if rid != parsed.request_id:
                parsed = replace(parsed, request_id=rid)
            if parsed.texts:
                parsed = self._masked_texts(parsed)
            self._check_dim(spec.kind, parsed, response)
        except ResponseValidationError as exc:
            self.timings.add("parse", started)
            exc.request_id = self._redact.request_id(exc.request_id)
            exc.args = tuple(self._redact(str(a)) for a in exc.args)
            # Billed, recorded, and never retried (the retry policy goes by status only).
            usage = exc.usage if isinstance(exc.usage, Usage) else Usage()
            reported = exc.reported if isinstance(exc.reported, Mapping) else None
            self.billed_malformed += 1
            self._settle(
                spec, reservation, usage, reported, outcome="malformed",
                request_id=exc.request_id, unpriced=exc.unpriced,
            )  # fmt: skip
            log.warning("rejected a billed response (not retried): %s", exc)
            self._check_breaker(exc)
            raise
        self.timings.add("parse", started)
        self.billed_ok += 1
        cost = self._settle(
            spec,
            reservation,
            parsed.usage,
            parsed.reported,
            outcome="ok",
            request_id=parsed.request_id,
            unpriced=parsed.unpriced,
        )
        self.stats.requests_ok += 1
        return parsed, cost

    def _settle(
        self,
        spec: CallSpec,
        reservation: Reservation,
        usage: Usage,
        reported: Mapping[str, Any] | None,
        *,
        outcome: str,
        request_id: str | None,
        unpriced: str | None = None,
    ) -> Decimal:
        """Charge a billed 200: its usage at our prices, or, when the provider did not
        say what it billed, the reservation (our worst case), marked ``estimated`` (where
        the units it did report cost more than that, those and the ones it left out at
        our estimate: an overrun). A bill
        at rates we do not hold (``unpriced``) is charged the reservation too, and stops
        new requests as an overrun does."""
        cost = self.price.cost(usage)
        if cost > MAX_RECORD_USD:
            # no call costs this much: recorded at the ledger's ceiling, which its readers
            # take (an amount above it would be read as damage and left out of every total,
            # so the next run would see the money as unspent); still an overrun
            log.error(
                "%s reported usage pricing one request at $%s: recorded as $%s, the most a "
                "ledger line holds (check the provider's bill)",
                self.teacher,
                cost,
                MAX_RECORD_USD,
            )
            cost = MAX_RECORD_USD
        # No usage block, one that prices what was sent at $0 (a gateway's empty usage),
        # or one that leaves out (or garbles) a unit we are charged for and sent some of
        # (an answer's output tokens, a local teacher's images): unknown.
        estimated = not self.provider.usage_in_response or reported is None or cost <= 0
        missing = [] if estimated else self._unreported(spec, usage)
        if estimated or missing or unpriced:
            if missing and cost > reservation.usd:
                # the units it did report already cost more than the reservation: those,
                # and the ones it left out at our estimate (an overrun; charging the
                # reservation hid it, so every such answer went out)
                estimate = self.provider.estimate_usage(spec)
                filled = usage.model_copy(update={u: getattr(estimate, u) for u in missing})
                cost = min(self.price.cost(filled), MAX_RECORD_USD)
            else:
                cost = reservation.usd
            estimated = True
            self.stats.estimated += 1
            if not unpriced:
                self._warn_estimated(reported is None, missing)
        if reported is not None:
            reported = _scrub(reported, self._usage_scrubber())
        if unpriced is None and cost <= reservation.usd and self.budget.left_open(reservation):
            return cost  # charged by the next run, at its reservation (see left_open)
        started = time.perf_counter()
        # The ledger line first, then the budget's (and the shared total's) settle: a kill
        # between the two leaves the reservation open, which the next run charges as
        # orphaned (the ledger above the bill, never below it); the other order closed the
        # reservation and lost the line (the ledger below the bill).
        try:
            self._storage.record(
                spec.kind,
                len(spec.items),
                cost,
                usage,
                outcome=outcome,
                request_id=request_id,
                reserved=reservation.usd,
                estimated=estimated,
                reported=reported,
                reservation=reservation,
            )
        finally:
            overran = self.budget.settle(reservation, cost)
        self.timings.add("ledger", started)
        if overran and self.overrun is None:
            self.overrun = self._overrun_error(spec, reservation, usage, cost, request_id)
            log.error("%s", self.overrun)
        elif unpriced and self.overrun is None:
            rid = f" (request id {request_id})" if request_id else ""
            self.overrun = BudgetOverrunError(
                f"STOPPED: {self.teacher} served a request{rid} at {unpriced}. It is "
                f"charged ${cost}, its reservation (marked 'estimated' in the ledger), "
                "which may be below the provider's bill: check the bill. No new requests "
                "are sent (those in flight finish and are recorded). Set the project's "
                "default service tier to default, or pass the param service_tier "
                "'default', before running again",
                billed=cost,
                reserved=reservation.usd,
            )
            log.error("%s", self.overrun)
        return cost

    def _unreported(self, spec: CallSpec, usage: Usage) -> list[str]:
        """The units our price charges that this request was estimated to use but its
        usage puts at 0: the provider did not say what it billed for them (a usage block
        without ``completion_tokens``, a count sent as a string or below zero)."""
        zero = [
            unit
            for unit, field in UNIT_PRICE_FIELDS.items()
            if getattr(usage, unit) == 0 and getattr(self.price, field) > 0
        ]
        if not zero:  # the usual case: every unit we are charged for was reported
            return []
        estimate = self.provider.estimate_usage(spec)
        return [unit for unit in zero if getattr(estimate, unit) > 0]

    def _warn_estimated(self, no_usage: bool, missing: list[str] | None = None) -> None:
        if self._warned_estimated:
            return
        self._warned_estimated = True
        if not self.provider.usage_in_response:
            what = f"{self.teacher} answers never say what they billed"
        elif no_usage:
            what = f"{self.teacher} at {self.base_url} answered a 200 without usage"
        elif missing:
            what = (
                f"{self.teacher} at {self.base_url} reported usage without a valid count of "
                + ", ".join(missing)
            )
        else:
            what = f"{self.teacher} at {self.base_url} reported usage that prices at $0"
        log.warning(
            "%s: such requests are charged at our worst-case estimate and marked "
            "'estimated' in the ledger (said once per run); compare the ledger with the "
            "provider's bill",
            what,
        )

    def _overrun_error(
        self,
        spec: CallSpec,
        reservation: Reservation,
        usage: Usage,
        cost: Decimal,
        request_id: str | None,
    ) -> BudgetOverrunError:
        estimate = self.provider.estimate_usage(spec).model_dump()
        billed = usage.model_dump()
        units = ", ".join(
            f"{name} {billed[name]} billed vs {estimate[name]} estimated"
            for name in UNIT_PRICE_FIELDS  # the billed units (not surcharge_tokens)
            if billed[name] > estimate[name]
        )
        ratio = cost / reservation.usd if reservation.usd > 0 else Decimal("Infinity")
        rid = f" (request id {request_id})" if request_id else ""
        verified = f" (read on {self.price.verified_on})" if self.price.verified_on else ""
        return BudgetOverrunError(
            f"OVERRUN: {self.teacher} billed ${cost} for a request of {len(spec.items)} "
            f"{spec.kind.replace('_', ' ')} items{rid} for which ${reservation.usd} was "
            f"reserved, {ratio:.2f}x our worst case ({units or 'units within the estimate'}). "
            f"The {self.price_entry}{verified} or our usage estimate for this model looks "
            "wrong, so the budget can no longer be trusted: no new requests are sent (those "
            "in flight finish and are recorded). Check the provider's bill and correct the "
            "price with --price-file before running again",
            billed=cost,
            reserved=reservation.usd,
        )

    def _check_breaker(self, exc: ResponseValidationError) -> None:
        bad, good = self.billed_malformed, self.billed_ok
        if self.breaker is not None or bad < MALFORMED_STOP_MIN:
            return
        if bad < MALFORMED_STOP_FRACTION * (bad + good):
            return
        self.breaker = MalformedResponsesError(
            f"{bad} of {bad + good} billed answers from {self.teacher} could not be used "
            f"(last: {exc}), so no further requests are sent. Each is charged in the ledger "
            "as 'malformed' and none was retried. Check the model name, its parameters and "
            "--base-url before running again"
        )
        self.breaker.provider = self.provider.name
        log.error("%s", self.breaker)

    def _status_error(self, response: httpx.Response) -> APIStatusError:
        err = self.provider.classify_error(response)
        err.provider = self.provider.name
        message = err.args[0] if err.args else ""
        # Some gateways echo the key they were sent, in the body or in a request id.
        err.request_id = self._redact.request_id(err.request_id)
        err.args = (f"{self.provider.name} ({self.teacher}): {self._redact(str(message))}",)
        return err

    def _check_dim(self, kind: Kind, parsed: Parsed, response: httpx.Response) -> None:
        if not parsed.vectors:
            return
        dim = int(parsed.vectors[0].shape[0])
        expected = self._dims.setdefault(kind, dim)
        if dim != expected and self._asked_dims.get(kind) == expected:
            raise ResponseValidationError(
                f"embedding dimension {dim} differs from the {expected} the request's params "
                "ask for",
                provider=self.provider.name,
                request_id=parsed.request_id,
            )
        if dim != expected and self._default_dims.get(kind) == expected:
            raise ResponseValidationError(
                f"embedding dimension {dim} differs from the {expected} {self.teacher} "
                "answers with by default",
                provider=self.provider.name,
                request_id=parsed.request_id,
            )
        if dim != expected:
            raise ResponseValidationError(
                f"embedding dimension {dim} differs from the {expected} seen before (if "
                f"the {expected}-long answers are the wrong ones, `vlm-distill cache prune "
                f"--teacher {self.teacher} --keep-dim {dim}` removes those that were cached)",
                provider=self.provider.name,
                request_id=parsed.request_id,
            )


def charge_in_full(
    storage: Storage, budget: Budget, spec: CallSpec, reservation: Reservation, outcome: str,
    request_id: str | None = None,
) -> None:
    """Charge ``reservation`` whole, the provider having maybe billed it without saying
    what: the ledger line (``estimated``) first, then the budget's charge, so that a kill
    between the two leaves the reservation open for the next run to charge as orphaned
    (the ledger above the bill, never below it). Neither when the budget leaves it open
    for the next run to charge (:meth:`Budget.left_open`)."""
    if budget.left_open(reservation):
        return
    try:
        storage.record(
            spec.kind,
            len(spec.items),
            reservation.usd,
            Usage(),
            outcome=outcome,
            request_id=request_id,
            reserved=reservation.usd,
            estimated=True,
            reservation=reservation,
        )
    finally:
        budget.charge_reservation(reservation)

"""Whether an agreement's payment duties (``odrl:compensate``) are fulfilled, from the payments
the provider recorded: a pure function of the agreement, the payments and the time.

The two IDS payment classes, as the templates ``perpetual-sale`` and ``rental`` write them:

- perpetual sale: a compensate duty ``payAmount eq PRICE`` with ``odrl:unit CURRENCY``. It is
  fulfilled once the payments in that currency, paid by now, add up to at least PRICE.
- rental: the same duty with ``timeInterval eq INTERVAL`` (an ``xsd:duration``, calendar months
  and years included). The rental starts at the permission's ``dateTime gteq`` bound (else when
  the agreement was signed) and ends at its ``dateTime lteq``/``lt`` bound (else never). Each
  PRICE paid pays one INTERVAL, from the start on, in order: period ``k`` runs from
  ``start + k * INTERVAL`` to ``start + (k+1) * INTERVAL``. The duty is fulfilled at ``now``
  only inside a paid period, and never before the start or after the end.

Payments in another currency never count. A duty that cannot be checked (no amount, no currency,
an amount that is not a number, a bad interval) fails closed: it is unmet, and the reason says
why. An unmet duty is reported ``Violated`` (the state the compiled decider denies on), so a
caller feeds ``PaymentCheck.duties`` to ``DecisionRequest.duties`` and says ``reason``.

Amounts are exact ``Decimal``s; currencies IRIs. A user may write a known ISO 4217 code
(``EUR``) or a CURIE; ``currency_iri`` maps it to the IRI the templates use, and reasons show
those IRIs as their codes again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from rdflib import Literal, URIRef

from connector.odrl import terms as T
from connector.odrl.evaluate import FULFILLED, VIOLATED
from connector.odrl.model import XSD_NS, Constraint, Policy, Rule, Value
from connector.store.rows import Payment
from connector.usage.window import Window, rule_window

COMPENSATE = T.O + "compensate"
PAY_AMOUNT = T.O + "payAmount"
TIME_INTERVAL = T.O + "timeInterval"
DBPEDIA = "http://dbpedia.org/resource/"
# ISO 4217 codes -> the currency IRIs the templates use (DBpedia resources)
CURRENCIES: Mapping[str, str] = {
    "EUR": DBPEDIA + "Euro",
    "USD": DBPEDIA + "United_States_dollar",
    "GBP": DBPEDIA + "Pound_sterling",
    "CHF": DBPEDIA + "Swiss_franc",
    "JPY": DBPEDIA + "Japanese_yen",
    "CNY": DBPEDIA + "Renminbi",
}
_CODES = {iri: code for code, iri in CURRENCIES.items()}
MAX_AMOUNT_DIGITS = 30


class PaymentError(ValueError):
    """An amount or currency that cannot be recorded; the message says why."""


def currency_iri(text: str) -> str:
    """``EUR``, ``eur``, a CURIE or a full IRI -> the currency's IRI (known codes only)."""
    given = text.strip()
    if given.upper() in CURRENCIES:
        return CURRENCIES[given.upper()]
    iri = T.expand_curie(given)
    if iri in _CODES:
        return iri
    if "://" in iri or iri.startswith("urn:"):
        if any(c.isspace() for c in iri):
            raise PaymentError(f"currency {text!r} is not an IRI")
        return iri
    raise PaymentError(
        f"unknown currency {text!r}: use an ISO 4217 code of {', '.join(CURRENCIES)} or the currency's IRI"
    )


def currency_label(iri: str) -> str:
    """The short code of a known currency IRI (``EUR``), else the IRI itself."""
    return _CODES.get(iri, iri)


def parse_amount(raw: Any) -> Decimal:
    """A positive, finite amount from a string or a number (a float by its shortest text)."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float, Decimal)):
        raise PaymentError(f"amount {raw!r} must be a decimal number")
    try:
        amount = Decimal(repr(raw) if isinstance(raw, float) else str(raw).strip())
    except InvalidOperation:
        raise PaymentError(f"amount {raw!r} is not a decimal number") from None
    if not amount.is_finite() or amount <= 0:
        raise PaymentError(f"amount {raw!r} must be a positive number")
    if len(amount.as_tuple().digits) > MAX_AMOUNT_DIGITS:
        raise PaymentError(f"amount {raw!r} has more than {MAX_AMOUNT_DIGITS} digits")
    return amount


def format_amount(amount: Decimal) -> str:
    """``10.00`` -> ``10``, ``200.50`` -> ``200.5``, ``1E+3`` -> ``1000``."""
    return format(amount.normalize(), "f")


def money(amount: Decimal, currency: str) -> str:
    return f"{format_amount(amount)} {currency_label(currency)}"


def _when(t: datetime) -> str:
    """A period's start as people write it: the date alone at midnight UTC."""
    if (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0):
        return t.date().isoformat()
    return t.isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------ the duties


@dataclass(frozen=True, slots=True)
class DutyCheck:
    """One compensate duty at one instant: met or not, and why."""

    duty_id: str
    label: str  # how explanations name it: "duty 1 (urn:...#payment)"
    fulfilled: bool
    reason: str

    @property
    def state(self) -> str:
        return FULFILLED if self.fulfilled else VIOLATED


@dataclass(frozen=True, slots=True)
class PaymentCheck:
    """Every compensate duty of an agreement, checked."""

    checks: tuple[DutyCheck, ...] = ()

    @property
    def duties(self) -> dict[str, str]:
        """Duty id -> deontic state IRI, for ``DecisionRequest.duties``."""
        return {c.duty_id: c.state for c in self.checks}

    @property
    def fulfilled(self) -> bool:
        return all(c.fulfilled for c in self.checks)

    @property
    def reason(self) -> str | None:
        """The first unmet duty's reason (None: every payment duty is met)."""
        return next((c.reason for c in self.checks if not c.fulfilled), None)


@dataclass(frozen=True, slots=True)
class _Terms:
    price: Decimal
    currency: str
    interval: Any | None  # a timedelta or a calendar duration (rdflib's Duration); None: once


class _Malformed(Exception):
    pass


def compensate_duties(policy: Policy) -> list[tuple[Rule, Window]]:
    """The compensate duties of the policy: each permission's (with the permission's window)
    and the policy's obligations (no window)."""
    found = [(duty, rule_window(p)) for p in policy.permissions for duty in p.duties if _compensates(duty)]
    found += [(o, Window()) for o in policy.obligations if _compensates(o)]
    return found


def _compensates(rule: Rule) -> bool:
    return any(a.iri == COMPENSATE for a in rule.actions)


def _constraints(duty: Rule) -> Iterable[Constraint]:
    for c in (*duty.constraints, *(r for a in duty.actions for r in a.refinements)):
        if isinstance(c, Constraint):
            yield c


def _terms(duty: Rule) -> _Terms:
    amount = next((c for c in _constraints(duty) if c.left_operand == PAY_AMOUNT), None)
    if amount is None:
        raise _Malformed("it names no amount (odrl:payAmount)")
    if amount.operator not in (T.EQ, T.GTEQ) or len(amount.right) != 1:
        raise _Malformed("its odrl:payAmount is not one amount (eq)")
    price = amount.right[0].py
    if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
        raise _Malformed(f"its amount {amount.right[0].lexical!r} is not a positive number")
    if not amount.unit:
        raise _Malformed("its amount names no currency (odrl:unit)")
    interval = next((c for c in _constraints(duty) if c.left_operand == TIME_INTERVAL), None)
    every = None
    if interval is not None:
        if interval.operator != T.EQ or len(interval.right) != 1:
            raise _Malformed("its odrl:timeInterval is not one duration (eq)")
        every = _duration(interval.right[0])
    return _Terms(price, amount.unit, every)


def _duration(value: Value) -> Any:
    """The interval as a calendar duration: P1M is a month, not 30 days."""
    parsed = Literal(value.lexical.strip(), datatype=URIRef(XSD_NS + "duration")).toPython()
    if isinstance(parsed, (Literal, str)) or not hasattr(parsed, "__radd__"):
        raise _Malformed(f"its interval {value.lexical!r} is not an xsd:duration")
    probe = datetime(2000, 1, 1)
    if probe + parsed <= probe:
        raise _Malformed(f"its interval {value.lexical!r} is not a positive duration")
    return parsed


def check_payments(
    policy: Policy, payments: Sequence[Payment], *, now: datetime, agreement_start: datetime
) -> PaymentCheck:
    """Each compensate duty of ``policy`` (an agreement) at ``now``, against the ``payments``
    recorded for it; ``agreement_start``: when it was signed (a rental without a start bound
    starts then). Payments paid after ``now`` do not count yet."""
    paid = [p for p in payments if p.paid_at <= now]
    checks = []
    for duty, window in compensate_duties(policy):
        try:
            terms = _terms(duty)
        except _Malformed as exc:
            checks.append(
                DutyCheck(duty.id, duty.label, False, f"{duty.label} cannot be checked: {exc} (fail closed)")
            )
            continue
        if terms.interval is None:
            checks.append(_once(duty, terms, paid))
        else:
            checks.append(_recurring(duty, terms, paid, window, now, agreement_start))
    return PaymentCheck(tuple(checks))


def duty_states(
    policy: Policy, payments: Sequence[Payment], *, now: datetime, agreement_start: datetime
) -> tuple[dict[str, str], str | None]:
    """``check_payments`` as the decider takes it: duty id -> deontic state IRI, and the first
    unmet duty's reason (None: all met)."""
    result = check_payments(policy, payments, now=now, agreement_start=agreement_start)
    return result.duties, result.reason


def _in_currency(terms: _Terms, paid: Sequence[Payment]) -> tuple[Decimal, list[str]]:
    """The total paid in the duty's currency, and the other currencies paid in."""
    total = sum((p.amount for p in paid if p.currency == terms.currency), Decimal(0))
    others = sorted({currency_label(p.currency) for p in paid if p.currency != terms.currency})
    return total, others


def _unmet(what: str, terms: _Terms, total: Decimal, others: list[str]) -> str:
    notes = []
    if total > 0:
        notes.append(f"{money(total, terms.currency)} received")
    if others:
        notes.append(f"payments in {', '.join(others)} do not count")
    return what + (f" ({'; '.join(notes)})" if notes else "")


def _once(duty: Rule, terms: _Terms, paid: Sequence[Payment]) -> DutyCheck:
    total, others = _in_currency(terms, paid)
    if total >= terms.price:
        return DutyCheck(duty.id, duty.label, True, f"{money(total, terms.currency)} received")
    what = f"payment of {money(terms.price, terms.currency)} not yet received"
    return DutyCheck(duty.id, duty.label, False, _unmet(what, terms, total, others))


def _recurring(
    duty: Rule,
    terms: _Terms,
    paid: Sequence[Payment],
    window: Window,
    now: datetime,
    agreement_start: datetime,
) -> DutyCheck:
    start = window.start or agreement_start
    every: Any = terms.interval  # a timedelta or a calendar duration
    if now < start:
        return DutyCheck(duty.id, duty.label, False, f"the rental starts on {_when(start)}")
    if window.ended(now):
        assert window.end is not None
        return DutyCheck(duty.id, duty.label, False, f"the rental ended on {_when(window.end)}")
    period = _period(start, every, now)
    period_start = start + every * period
    total, others = _in_currency(terms, paid)
    periods_paid = int(total // terms.price)
    if period < periods_paid:
        until = start + every * periods_paid
        return DutyCheck(duty.id, duty.label, True, f"paid until {_when(until)}")
    what = (
        f"payment for the period from {_when(period_start)} not yet received "
        f"({money(terms.price, terms.currency)} per period"
    )
    if total > 0:
        what += f"; {money(total, terms.currency)} received"
    if others:
        what += f"; payments in {', '.join(others)} do not count"
    return DutyCheck(duty.id, duty.label, False, what + ")")


def _period(start: datetime, every: Any, now: datetime) -> int:
    """The index k of the period holding ``now``: start + k*every <= now < start + (k+1)*every."""
    probe = datetime(2000, 1, 1)
    approx = (probe + every) - probe  # a month as its first month's length: only a first guess
    k = max(0, int((now - start) / approx) if approx > timedelta(0) else 0)
    while k > 0 and start + every * k > now:
        k -= 1
    while start + every * (k + 1) <= now:
        k += 1
    return k


__all__ = [
    "COMPENSATE",
    "CURRENCIES",
    "DutyCheck",
    "PaymentCheck",
    "PaymentError",
    "check_payments",
    "compensate_duties",
    "currency_iri",
    "currency_label",
    "duty_states",
    "format_amount",
    "money",
    "parse_amount",
]

"""Payment duties (odrl:compensate) checked against recorded payments: connector.usage.payments."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from connector.odrl.compile import DecisionRequest, compile_policy
from connector.odrl.evaluate import FULFILLED, VIOLATED
from connector.odrl.model import Policy
from connector.odrl.parse import load_policy
from connector.odrl.plain import policy_document
from connector.odrl.templates import fill
from connector.store.rows import Payment
from connector.usage.payments import (
    CURRENCIES,
    PaymentError,
    check_payments,
    currency_iri,
    currency_label,
    duty_states,
    format_amount,
    parse_amount,
)

EUR, USD = CURRENCIES["EUR"], CURRENCIES["USD"]
SIGNED = datetime(2026, 1, 10, 9, 30, tzinfo=UTC)
_ids = itertools.count()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def paid(
    amount: str, currency: str = EUR, when: str = "2026-01-10T10:00:00Z", agreement: str = "urn:agreement:1"
) -> Payment:
    t = at(when)
    return Payment(
        id=f"urn:payment:{next(_ids)}",
        agreement_id=agreement,
        amount=Decimal(amount),
        currency=currency,
        paid_at=t,
        recorded_at=t,
    )


def sale(price: str = "10", currency: str = EUR) -> Policy:
    return load_policy(
        fill(
            "perpetual-sale",
            {"price": price, "currency": currency},
            policy_id="urn:agreement:1",
            target="urn:asset:x",
            assigner="urn:participant:p",
        )
    )


def rental(
    price: str = "200",
    interval: str = "P1M",
    start: str | None = "2027-01-01T00:00:00Z",
    end: str | None = "2027-06-30T23:59:59Z",
) -> Policy:
    params = {"price": price, "paymentInterval": interval, "start": start or "2000-01-01T00:00:00Z"}
    if end:
        params["end"] = end
    doc = fill(
        "rental", params, policy_id="urn:agreement:1", target="urn:asset:x", assigner="urn:participant:p"
    )
    if not start:  # the template needs a start: drop its bound to test "from the signature"
        perm = doc["permission"][0]
        perm["constraint"] = [c for c in perm["constraint"] if c["operator"] != "gteq"]
    return load_policy(doc)


def check(policy: Policy, payments: list[Payment], now: str) -> tuple[dict[str, str], str | None]:
    return duty_states(policy, payments, now=at(now), agreement_start=SIGNED)


# ------------------------------------------------------------------ amounts and currencies


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10", Decimal("10")),
        ("10.50", Decimal("10.50")),
        (10, Decimal("10")),
        (0.1, Decimal("0.1")),
        (" 1500.00 ", Decimal("1500.00")),
        ("1e3", Decimal("1000")),
    ],
)
def test_amounts_are_exact_decimals(raw: Any, expected: Decimal) -> None:
    assert parse_amount(raw) == expected


@pytest.mark.parametrize("raw", ["", "ten", "0", "-5", "NaN", "Infinity", "1" * 31, True, None, [1]])
def test_bad_amounts_are_refused_with_a_reason(raw: Any) -> None:
    with pytest.raises(PaymentError, match="amount"):
        parse_amount(raw)


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("10.00", "10"),
        ("200.50", "200.5"),
        ("1E+3", "1000"),
        ("0.010", "0.01"),
        ("1500", "1500"),
    ],
)
def test_amounts_are_shown_without_trailing_noise(amount: str, shown: str) -> None:
    assert format_amount(Decimal(amount)) == shown


@pytest.mark.parametrize(
    ("given", "iri"),
    [
        ("EUR", EUR),
        ("eur", EUR),
        ("USD", USD),
        (EUR, EUR),
        ("http://example.org/currency/XBT", "http://example.org/currency/XBT"),
    ],
)
def test_currencies_map_to_the_templates_iris(given: str, iri: str) -> None:
    assert currency_iri(given) == iri


@pytest.mark.parametrize("given", ["EURO", "XYZ", "dollars", "€", "http://x y"])
def test_unknown_currencies_are_refused(given: str) -> None:
    with pytest.raises(PaymentError, match="currency"):
        currency_iri(given)


def test_currency_labels() -> None:
    assert currency_label(EUR) == "EUR" and currency_label(USD) == "USD"
    assert currency_label("http://example.org/c") == "http://example.org/c"


# ------------------------------------------------------------------ perpetual sale


def test_unpaid_sale_is_violated_with_the_reason() -> None:
    duties, reason = check(sale(), [], "2026-02-01T00:00:00Z")
    assert duties == {"urn:agreement:1#payment": VIOLATED}
    assert reason == "payment of 10 EUR not yet received"


def test_paid_sale_is_fulfilled() -> None:
    duties, reason = check(sale("1500.00"), [paid("1500")], "2026-02-01T00:00:00Z")
    assert duties == {"urn:agreement:1#payment": FULFILLED} and reason is None


def test_partial_payments_add_up() -> None:
    policy = sale("10")
    duties, reason = check(policy, [paid("4"), paid("5.99")], "2026-02-01T00:00:00Z")
    assert duties["urn:agreement:1#payment"] == VIOLATED
    assert reason == "payment of 10 EUR not yet received (9.99 EUR received)"
    duties, reason = check(policy, [paid("4"), paid("6.00")], "2026-02-01T00:00:00Z")
    assert duties["urn:agreement:1#payment"] == FULFILLED and reason is None


def test_overpayment_fulfils() -> None:
    assert check(sale("10"), [paid("25")], "2026-02-01T00:00:00Z")[1] is None


def test_payments_in_another_currency_do_not_count() -> None:
    duties, reason = check(sale("10"), [paid("100", USD)], "2026-02-01T00:00:00Z")
    assert duties["urn:agreement:1#payment"] == VIOLATED
    assert reason == "payment of 10 EUR not yet received (payments in USD do not count)"


def test_a_dollar_sale_counts_dollars() -> None:
    policy = sale("1600", USD)
    assert check(policy, [paid("1600", EUR)], "2026-02-01T00:00:00Z")[1] == (
        "payment of 1600 USD not yet received (payments in EUR do not count)"
    )
    assert check(policy, [paid("1600", USD)], "2026-02-01T00:00:00Z")[1] is None


def test_an_unknown_currency_is_shown_as_its_iri() -> None:
    policy = sale("5", "http://example.org/currency/XBT")
    assert check(policy, [], "2026-02-01T00:00:00Z")[1] == (
        "payment of 5 http://example.org/currency/XBT not yet received"
    )


def test_a_payment_paid_later_does_not_count_yet() -> None:
    payments = [paid("10", when="2026-03-01T00:00:00Z")]
    assert check(sale(), payments, "2026-02-01T00:00:00Z")[1] == "payment of 10 EUR not yet received"
    assert check(sale(), payments, "2026-03-01T00:00:00Z")[1] is None


# ------------------------------------------------------------------ rental


def test_rental_periods_are_paid_one_by_one() -> None:
    policy = rental("200")
    jan = [paid("200", when="2026-12-20T00:00:00Z")]
    assert check(policy, jan, "2027-01-15T12:00:00Z")[1] is None
    # February is not paid: from its first instant on, use is not permitted
    assert check(policy, jan, "2027-01-31T23:59:59Z")[1] is None
    duties, reason = check(policy, jan, "2027-02-01T00:00:00Z")
    assert duties["urn:agreement:1#payment"] == VIOLATED
    assert reason == (
        "payment for the period from 2027-02-01 not yet received (200 EUR per period; 200 EUR received)"
    )
    both = [*jan, paid("200", when="2027-02-01T08:00:00Z")]
    assert check(policy, both, "2027-02-01T00:00:00Z")[1] is not None  # paid later that day
    assert check(policy, both, "2027-02-10T00:00:00Z")[1] is None
    assert str(check(policy, both, "2027-03-01T00:00:00Z")[1]).startswith(
        "payment for the period from 2027-03-01 not yet received"
    )


def test_rental_with_nothing_paid() -> None:
    assert check(rental("200"), [], "2027-01-01T00:00:00Z")[1] == (
        "payment for the period from 2027-01-01 not yet received (200 EUR per period)"
    )


def test_one_payment_may_cover_several_periods_and_partial_ones_accumulate() -> None:
    policy = rental("200")
    assert check(policy, [paid("600")], "2027-03-31T23:00:00Z")[1] is None
    assert check(policy, [paid("600")], "2027-04-01T00:00:00Z")[1] is not None
    halves = [paid("100"), paid("100"), paid("100")]  # one and a half periods
    assert check(policy, halves, "2027-01-20T00:00:00Z")[1] is None
    assert check(policy, halves, "2027-02-20T00:00:00Z")[1] == (
        "payment for the period from 2027-02-01 not yet received (200 EUR per period; 300 EUR received)"
    )


def test_calendar_months_not_thirty_days() -> None:
    policy = rental("1", start="2027-01-31T00:00:00Z", end=None)
    two = [paid("2")]
    # periods: Jan 31 - Feb 28, Feb 28 - Mar 31 (start + 2 months), then Mar 31 on
    assert check(policy, two, "2027-03-30T23:59:59Z")[1] is None
    assert check(policy, two, "2027-03-31T00:00:00Z")[1] == (
        "payment for the period from 2027-03-31 not yet received (1 EUR per period; 2 EUR received)"
    )


def test_short_intervals_over_a_long_time() -> None:
    policy = rental("1", interval="PT1H", start="2027-01-01T00:00:00Z", end=None)
    hours = 24 * 365 * 3
    now = at("2027-01-01T00:00:00Z") + timedelta(hours=hours, minutes=30)
    assert duty_states(policy, [paid(str(hours + 1))], now=now, agreement_start=SIGNED)[1] is None
    reason = duty_states(policy, [paid(str(hours))], now=now, agreement_start=SIGNED)[1]
    assert reason is not None and reason.startswith("payment for the period from 2029-12-31 not yet received")


def test_rental_before_start_and_after_end() -> None:
    policy = rental("200")
    lots = [paid("100000")]
    assert check(policy, lots, "2026-12-31T23:59:59Z")[1] == "the rental starts on 2027-01-01"
    assert check(policy, lots, "2027-06-30T23:59:59Z")[1] is None  # lteq: the end is inside
    assert check(policy, lots, "2027-07-01T00:00:00Z")[1] == ("the rental ended on 2027-06-30T23:59:59Z")


def test_rental_without_start_runs_from_the_signature() -> None:
    policy = rental("200", start=None, end=None)
    # signed 2026-01-10T09:30Z: the first period runs to 2026-02-10T09:30Z
    assert check(policy, [paid("200")], "2026-02-10T09:29:59Z")[1] is None
    assert check(policy, [paid("200")], "2026-02-10T09:30:00Z")[1] == (
        "payment for the period from 2026-02-10T09:30:00Z not yet received "
        "(200 EUR per period; 200 EUR received)"
    )


def test_rental_in_another_currency() -> None:
    assert check(rental("200"), [paid("200", USD)], "2027-01-05T00:00:00Z")[1] == (
        "payment for the period from 2027-01-01 not yet received "
        "(200 EUR per period; payments in USD do not count)"
    )


# ------------------------------------------------------------------ several duties, malformed ones


def _plain(duties: list[dict[str, Any]], obligations: list[dict[str, Any]] | None = None) -> Policy:
    doc: dict[str, Any] = {"permission": [{"action": "use", "target": "urn:asset:x", "duty": duties}]}
    if obligations:
        doc["obligation"] = obligations
    return load_policy(policy_document(doc, "urn:agreement:2"))


def _compensate(duty_id: str, amount: Any = None, unit: str | None = EUR) -> dict[str, Any]:
    constraint = []
    if amount is not None:
        c: dict[str, Any] = {"leftOperand": "payAmount", "operator": "eq", "rightOperand": amount}
        if unit:
            c["odrl:unit"] = {"@id": unit}
        constraint.append(c)
    return {"@id": duty_id, "action": "compensate", "constraint": constraint}


def test_several_duties_each_checked_first_unmet_reason_given() -> None:
    policy = _plain([_compensate("urn:duty:a", 10), _compensate("urn:duty:b", 5, USD)])
    result = check_payments(policy, [paid("10")], now=at("2026-02-01T00:00:00Z"), agreement_start=SIGNED)
    assert result.duties == {"urn:duty:a": FULFILLED, "urn:duty:b": VIOLATED}
    assert not result.fulfilled
    assert result.reason == "payment of 5 USD not yet received (payments in EUR do not count)"
    both = [paid("10"), paid("5", USD)]
    assert check_payments(policy, both, now=at("2026-02-01T00:00:00Z"), agreement_start=SIGNED).fulfilled


def test_an_obligation_to_compensate_counts_too() -> None:
    policy = _plain([], obligations=[{**_compensate("urn:duty:o", 7), "assignee": "urn:p:c"}])
    assert check(policy, [], "2026-02-01T00:00:00Z") == (
        {"urn:duty:o": VIOLATED},
        "payment of 7 EUR not yet received",
    )


def test_a_duty_without_an_amount_fails_closed() -> None:
    duties, reason = check(_plain([_compensate("urn:duty:x")]), [paid("1000")], "2026-02-01T00:00:00Z")
    assert duties == {"urn:duty:x": VIOLATED}
    assert reason == (
        "duty 1 (urn:duty:x) cannot be checked: it names no amount (odrl:payAmount) (fail closed)"
    )


def test_a_duty_without_a_currency_fails_closed() -> None:
    duties, reason = check(
        _plain([_compensate("urn:duty:x", 10, unit=None)]), [paid("10")], "2026-02-01T00:00:00Z"
    )
    assert duties == {"urn:duty:x": VIOLATED}
    assert reason is not None and "names no currency (odrl:unit)" in reason


@pytest.mark.parametrize(
    ("interval", "says"),
    [
        ("P0D", "is not a positive duration"),
        ("-P1M", "is not a positive duration"),
    ],
)
def test_a_bad_interval_fails_closed(interval: str, says: str) -> None:
    duty = _compensate("urn:duty:r", 10)
    duty["constraint"].append(
        {
            "leftOperand": "timeInterval",
            "operator": "eq",
            "rightOperand": {"@value": interval, "@type": "http://www.w3.org/2001/XMLSchema#duration"},
        }
    )
    duties, reason = check(_plain([duty]), [paid("1000")], "2026-02-01T00:00:00Z")
    assert duties == {"urn:duty:r": VIOLATED}
    assert reason is not None and says in reason and reason.endswith("(fail closed)")


def test_a_policy_without_payment_duties_has_none() -> None:
    policy = load_policy(
        fill(
            "allow-usage", {}, policy_id="urn:agreement:3", target="urn:asset:x", assigner="urn:participant:p"
        )
    )
    assert check(policy, [], "2026-02-01T00:00:00Z") == ({}, None)


# ------------------------------------------------------------------ fed to the decider


def test_the_states_feed_the_compiled_decider() -> None:
    policy = sale("10")
    decide = compile_policy(policy)
    now = at("2026-02-01T00:00:00Z")

    def decision(payments: list[Payment]) -> bool:
        states, _ = duty_states(policy, payments, now=now, agreement_start=SIGNED)
        return decide(
            DecisionRequest(
                action="http://www.w3.org/ns/odrl/2/use", now=now, target="urn:asset:x", duties=states
            )
        ).permit

    assert decision([]) is False
    assert decision([paid("10")]) is True

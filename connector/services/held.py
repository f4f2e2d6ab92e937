"""The provider's held facts (state, active events: operands its policies test) and the payments
it records under its agreements. Both go through `connector.usage.held.HeldFacts`, shared with
the data plane of this process, so a change counts there at once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from connector.audit.log import AuditLog
from connector.odrl.parse import PolicyError
from connector.services.agreements import Agreements
from connector.services.errors import InvalidInput, NotFound
from connector.services.records import Page, iso_time
from connector.store import HeldFact, Payment, ReferenceViolation, Store
from connector.usage.held import HeldFacts, UnknownOperand
from connector.usage.payments import PaymentError, currency_iri, parse_amount
from connector.wireformat import Clock


class Facts:
    def __init__(self, held: HeldFacts, clock: Clock) -> None:
        self._held = held
        self._clock = clock

    async def active(self) -> list[HeldFact]:
        now = self._clock()
        return [f for f in await self._held.held() if f.active(now)]

    async def set(self, name: str, values: Sequence[Any], until: datetime | None) -> HeldFact:
        """`NotFound` for an operand no policy can test, `InvalidInput` for a bad value."""
        try:
            return await self._held.set(name, values, until=until, now=self._clock())
        except UnknownOperand as exc:
            raise NotFound(f"no such operand: {exc}") from exc
        except PolicyError as exc:
            raise InvalidInput(f"invalid fact: {exc}") from exc

    async def unset(self, name: str) -> None:
        try:
            found = await self._held.unset(name)
        except PolicyError as exc:
            raise InvalidInput(f"invalid fact: {exc}") from exc
        if not found:
            raise NotFound("no such fact")


@dataclass(frozen=True, slots=True)
class NewPayment:
    """A payment as the provider's operator reports it."""

    agreement_id: str
    amount: str | int | float
    currency: str
    paid_at: datetime | None = None
    reference: str | None = None
    receipt: str | None = None


class Payments:
    def __init__(
        self, store: Store, held: HeldFacts, agreements: Agreements, clock: Clock, audit: AuditLog | None
    ) -> None:
        self._store = store
        self._held = held
        self._agreements = agreements
        self._clock = clock
        self._audit = audit

    async def list(self, agreement_id: str | None, page: Page) -> list[Payment]:
        async with self._store.transaction(readonly=True) as tx:
            return await tx.payments.list(agreement_id=agreement_id, limit=page.limit, offset=page.offset)

    async def record(self, p: NewPayment) -> Payment:
        """Record a payment under an agreement of this provider, and log it in the audit trail;
        `InvalidInput` for an amount or currency that cannot be read, `NotFound` for an
        agreement that is not this provider's."""
        try:
            amount, currency = parse_amount(p.amount), currency_iri(p.currency)
        except PaymentError as exc:
            raise InvalidInput(str(exc)) from exc
        agreement = await self._agreements.of_provider(p.agreement_id)
        now = self._clock()
        payment = Payment(
            id=f"urn:payment:{uuid.uuid4()}",
            agreement_id=agreement.id,
            amount=amount,
            currency=currency,
            paid_at=p.paid_at.astimezone(UTC) if p.paid_at else now,
            recorded_at=now,
            reference=p.reference,
            receipt=p.receipt,
        )
        try:
            await self._held.record(payment)
        except ReferenceViolation as exc:  # the agreement went away meanwhile
            raise NotFound(f"no agreement {p.agreement_id} of this provider") from exc
        if self._audit is not None:
            await self._audit.aappend(
                "payment.recorded",
                {
                    "amount": format(payment.amount, "f"),
                    "currency": currency,
                    "paidAt": iso_time(payment.paid_at),
                    "reference": p.reference,
                    "payment": payment.id,
                },
                agreement_id=agreement.id,
                participant_id=agreement.consumer_id,
            )
        return payment

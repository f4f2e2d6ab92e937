"""Facts the provider holds (provider-side state, active events) and the payments it received,
for the enforcement points: read from the store, cached briefly.

A decision reads these on every data request, so they are cached for ``ttl`` seconds (one second
by default: a fact set through the management API of this process counts at once, because the
setter goes through the same ``HeldFacts`` and invalidates it; another replica sees it within
``ttl``). Expiry (``until``) is applied at the instant of each decision, not when the cache was
filled, so a fact never outlives its ``until``.

Names are operands in any spelling a policy may use (``idsc:STATE``, ``odrl:event``, ``event``),
stored as the full IRI of the operand the engine tests (``canonical_operand``); values are full
IRIs (CURIEs expanded) or literals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from connector.odrl.facts import context_facts
from connector.odrl.model import Policy
from connector.odrl.parse import PolicyError
from connector.odrl.plain import canonical_operand, expand_term, to_value
from connector.odrl.terms import short, vocabulary
from connector.store import HeldFact, Payment, Store
from connector.usage.payments import PaymentCheck, check_payments

MAX_VALUES = 100


class UnknownOperand(PolicyError):
    """A fact named by an operand no policy can test: setting it would change nothing."""


def _hint(operand: str) -> str:
    local = operand.rsplit("/", 1)[-1].rsplit("#", 1)[-1]
    candidate = canonical_operand(expand_term("idsc:" + local.upper()))
    if candidate != operand and vocabulary().known_left_operand(candidate):
        return f" (did you mean {short(candidate)}?)"
    return ""


def fact_name(name: str) -> str:
    """The operand IRI a held fact is stored under (``idsc:STATE`` -> ``https://w3id.org/idsa/code/STATE``)."""
    if not name.strip():
        raise PolicyError("a fact needs a name (an operand such as idsc:STATE or odrl:event)")
    return canonical_operand(expand_term(name))


def fact_values(name: str, values: Sequence[Any]) -> tuple[Any, ...]:
    """``values`` as stored: CURIEs expanded to IRIs, literals as given; `PolicyError` for a
    value that does not fit the operand."""
    if not values:
        raise PolicyError("a fact needs at least one value (unset it to remove it)")
    if len(values) > MAX_VALUES:
        raise PolicyError(f"a fact holds at most {MAX_VALUES} values")
    operand = fact_name(name)
    if not vocabulary().known_left_operand(operand):
        raise UnknownOperand(f"{short(operand)} is not an operand a policy can test{_hint(operand)}")
    out = []
    for raw in values:
        value = to_value(raw, operand)
        out.append(value.lexical if value.is_iri else raw)
    return tuple(out)


class HeldFacts:
    """The provider's held facts and payments, cached for ``ttl`` seconds (``clock``: a
    monotonic clock in seconds)."""

    def __init__(
        self, store: Store, *, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._facts: tuple[float, list[HeldFact]] | None = None
        self._payments: dict[str, tuple[float, tuple[Payment, ...]]] = {}

    # -- reads (cached)

    async def held(self) -> list[HeldFact]:
        """Every stored fact, expired ones included (filter with ``HeldFact.active``)."""
        cached = self._facts
        if cached is not None and self.clock() < cached[0]:
            return cached[1]
        async with self.store.transaction(readonly=True) as tx:
            rows = await tx.held_facts.list()
        self._facts = (self.clock() + self.ttl, rows)
        return rows

    async def facts(self, now: datetime) -> dict[str, tuple[Any, ...]]:
        """Operand IRI -> values of the facts active at ``now``, as ``DecisionRequest.context``
        takes them (``connector.odrl.facts.context_facts``)."""
        return context_facts({f.name: list(f.values) for f in await self.held() if f.active(now)})

    async def payments(self, agreement_id: str) -> tuple[Payment, ...]:
        """The payments recorded for the agreement, oldest first."""
        cached = self._payments.get(agreement_id)
        if cached is not None and self.clock() < cached[0]:
            return cached[1]
        async with self.store.transaction(readonly=True) as tx:
            rows = tuple(await tx.payments.list(agreement_id=agreement_id, limit=None))
        if len(self._payments) > 10_000:  # agreements come and go: keep the cache bounded
            self._payments.clear()
        self._payments[agreement_id] = (self.clock() + self.ttl, rows)
        return rows

    async def payment_check(
        self, agreement_id: str, policy: Policy, *, signed_at: datetime, now: datetime
    ) -> PaymentCheck:
        """The agreement's compensate duties at ``now`` against its recorded payments.
        ``policy`` must be the very ``Policy`` the decider was compiled from: a duty without an
        ``@id`` is a blank node, named anew by every parse. ``.duties`` goes to
        ``DecisionRequest.duties``; ``.reason`` is what a denial says."""
        return check_payments(policy, await self.payments(agreement_id), now=now, agreement_start=signed_at)

    # -- writes (through the store, invalidating this cache)

    async def set(
        self, name: str, values: Sequence[Any], *, until: datetime | None, now: datetime
    ) -> HeldFact:
        fact = HeldFact(name=fact_name(name), values=fact_values(name, values), until=until, set_at=now)
        async with self.store.transaction() as tx:
            await tx.held_facts.set(fact)
        self._facts = None
        return fact

    async def unset(self, name: str) -> bool:
        async with self.store.transaction() as tx:
            found = await tx.held_facts.unset(fact_name(name))
        self._facts = None
        return found

    async def record(self, payment: Payment) -> Payment:
        async with self.store.transaction() as tx:
            await tx.payments.add(payment)
        self._payments.pop(payment.agreement_id, None)
        return payment

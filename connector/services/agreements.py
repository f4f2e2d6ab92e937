"""Agreements with their status now (active, retired, expired), and their retirement by the
provider (the control plane ends the transfers under it)."""

from __future__ import annotations

from dataclasses import dataclass

from connector.odrl.model import Policy
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import standalone_policy
from connector.runtime import ControlPlane
from connector.services.errors import NotFound, translated
from connector.services.records import Page, Records
from connector.store import AgreementRow
from connector.usage.lifecycle import AgreementStatus, agreement_status

TERMS_CACHED = 10_000  # agreements whose parsed terms are kept (they never change)


@dataclass(frozen=True, slots=True)
class AgreementNow:
    """An agreement and its status at the time it was read."""

    row: AgreementRow
    status: AgreementStatus


class Agreements:
    def __init__(self, cp: ControlPlane) -> None:
        self._cp = cp
        self._records = Records(cp.store, lambda tx: tx.agreements, "agreement")
        self._terms: dict[str, Policy | None] = {}  # agreement id -> its parsed terms

    def _policy(self, a: AgreementRow) -> Policy | None:
        if a.id not in self._terms:
            if len(self._terms) > TERMS_CACHED:
                self._terms.clear()
            try:
                self._terms[a.id] = standalone_policy(a.policy)
            except ProtocolError:  # unreadable terms: no window to expire, shown active
                self._terms[a.id] = None
        return self._terms[a.id]

    def now(self, a: AgreementRow) -> AgreementNow:
        policy = self._policy(a)
        if policy is None:
            status: AgreementStatus = "retired" if a.retired_at is not None else "active"
        else:
            status = agreement_status(policy, a.retired_at, self._cp.clock())
        return AgreementNow(a, status)

    async def get(self, agreement_id: str) -> AgreementNow:
        return self.now(await self._records.get(agreement_id))

    async def list(self, page: Page) -> list[AgreementNow]:
        return [self.now(a) for a in await self._records.list(page)]

    async def retire(self, agreement_id: str, reason: str) -> AgreementNow:
        """Provider: retire the agreement (`NotFound` unless this provider's)."""
        with translated():
            row = await self._cp.retire_agreement(agreement_id, reason)
        return self.now(row)

    async def of_provider(self, agreement_id: str) -> AgreementRow:
        """An agreement this connector signed as the provider; `NotFound` otherwise."""
        async with self._cp.store.transaction(readonly=True) as tx:
            row = await tx.agreements.get(agreement_id)
            negotiation = (
                await tx.negotiations.get(row.negotiation_id)
                if row is not None and row.negotiation_id
                else None
            )
        if row is None or negotiation is None or negotiation.role != "provider":
            raise NotFound(f"no agreement {agreement_id} of this provider")
        return row

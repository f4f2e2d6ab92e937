"""Local use of vault copies: the only way the connector hands a copy out again.

Each read is decided on the agreement (time window, purpose, count: local reads count against
the agreement's use limit), the agreement's duties (connector.consumer.duties) are fulfilled
before a byte is served (every use logged; the informed party notified with a signed use notice,
and no notice means no read; a copy whose delete duty is due is not read, whether or not the
scheduler has deleted it yet), and the read is counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from connector.consumer.config import ConsumerConfig
from connector.consumer.duties import agreement_duties
from connector.consumer.errors import Denied
from connector.consumer.notices import sign_use_notice
from connector.consumer.ports import ControlPlanePort
from connector.consumer.vault import Vault, VaultItem
from connector.odrl import terms as T
from connector.odrl.compile import DecisionRequest
from connector.store import AgreementRow
from connector.usage import pipeline


def _shown(stated: Mapping[str, tuple[Any, ...]]) -> dict[str, Any]:
    """The facts a local use stated, for its audit entry (short names, plain values)."""
    return {T.short(k): [str(v) for v in vs] for k, vs in stated.items()}


class LocalUse:
    def __init__(self, cp: ControlPlanePort, config: ConsumerConfig, vault: Vault) -> None:
        self.cp = cp
        self.config = config
        self.vault = vault
        self._locks: dict[str, asyncio.Lock] = {}

    async def list_items(self) -> list[dict[str, Any]]:
        await self.vault.open()
        return [i.to_json() for i in await self.vault.items()]

    async def item(self, item_id: str) -> VaultItem:
        await self.vault.open()
        item = await self.vault.get(item_id)
        if item is None:
            raise Denied(404, f"no vault item {item_id}")
        return item

    async def use(
        self, item_id: str, purpose: str | None = None, *, stated: Mapping[str, tuple[Any, ...]] | None = None
    ) -> tuple[VaultItem, Path]:
        """Decide one local use (a read) of a vault copy with the agreement's one decider, fed
        as the provider's data plane is (connector.usage.pipeline): this connector's attested
        attributes, the facts the use states, and time. The use counts against the agreement's
        one limit, which the provider keeps: under a counted agreement the provider counts the
        use (a signed use notice) before the copy is read, so pulls, pushes and local uses
        share it. Fulfils the duties first. Returns the item and the file to serve, or raises
        Denied with the reason."""
        facts_stated = dict(stated or {})
        if purpose:
            facts_stated = {**pipeline.stated(purpose=purpose), **facts_stated}
        first = await self.item(item_id)
        # one lock per agreement: its copies share the agreement's use count
        lock = self._locks.setdefault(first.agreement_id, asyncio.Lock())
        async with lock:
            item = await self.item(item_id)
            now: datetime = self.cp.clock()
            async with self.cp.store.transaction(readonly=True) as tx:
                agreement = await tx.agreements.get(item.agreement_id)
            if agreement is None:
                raise Denied(404, f"the agreement {item.agreement_id} is unknown here")
            duties = agreement_duties(agreement.policy, agreement.signed_at)
            due = item.delete_at is not None and datetime.fromisoformat(item.delete_at) <= now
            if item.deleted_at or due or duties.deletion_due(now):
                when = item.delete_at or (duties.delete_at.isoformat() if duties.delete_at else "")
                raise Denied(410, f"the copy is deleted (due {when}) under the agreement's delete duty")
            path = Path(item.path)
            if not path.is_file():
                raise Denied(410, "the copy is no longer on disk")
            policy = pipeline.compiled_agreement(agreement.id, agreement.target, agreement.policy)
            if policy.uses is None:
                raise Denied(403, f"the agreement cannot be enforced: {policy.unenforceable}")
            used = await self.vault.agreement_uses(item.agreement_id)
            attested = await self._attested()
            held = await self.cp.held.facts(now) if self.cp.held is not None else {}
            decision = policy.decider(
                DecisionRequest(
                    action=pipeline.DATA_ACTION,
                    now=now,
                    assignee=self.cp.participant_id,
                    target=policy.target,
                    count=0,
                    started_at=agreement.signed_at,
                    context=pipeline.request_facts(attested, stated=facts_stated, held=held),
                )
            )
            shown = _shown(facts_stated)
            if not decision.permit:
                await self._log("vault.denied", item, {"reason": decision.reason, **shown})
                raise Denied(403, decision.reason)
            if duties.unhandled:
                raise Denied(
                    403,
                    f"the agreement's duty {duties.unhandled[0]} cannot be fulfilled "
                    "by this connector, so the copy is not used",
                )
            if duties.log and self.cp.audit is None:
                raise Denied(
                    403, "the agreement requires every use to be logged and this connector keeps no audit log"
                )
            informed = list(duties.inform)
            counted: int | None = None
            if policy.uses.counted and not any(self._is_provider(p, item, agreement) for p in informed):
                informed.append(item.provider_id)  # the provider keeps the one count
            for party in informed:
                counted = await self._inform(party, item, used + 1, purpose, agreement) or counted
            # counted only if not deleted meanwhile (the duty scheduler runs beside this)
            counted_item = await self.vault.count_use(item)
            if counted_item is None:
                raise Denied(410, "the copy was deleted under the agreement's delete duty")
            await self._log(
                "vault.used",
                counted_item,
                {
                    "use": used + 1,
                    **shown,
                    "agreementUse": counted,
                    "informed": list(duties.inform) or None,
                    "logDuty": duties.log,
                },
            )
            return counted_item, path

    async def _attested(self) -> Mapping[str, Any]:
        """This connector's attributes as the authority attests them in its own DAT."""
        try:
            return await self.cp.own_attributes()
        except Exception as exc:  # any failure to get the DAT: fail closed
            raise Denied(503, f"this connector's attested attributes are not available: {exc}") from exc

    @staticmethod
    def _is_provider(party: str, item: VaultItem, agreement: AgreementRow) -> bool:
        return party.rstrip("/") in {
            item.provider_id,
            item.provider_address.rstrip("/"),
            agreement.provider_id,
        }

    async def _log(self, kind: str, item: VaultItem, data: dict[str, Any]) -> None:
        if self.cp.audit is not None:
            await self.cp.audit.aappend(
                kind,
                {"vaultId": item.id, "sha256": item.sha256, **data},
                agreement_id=item.agreement_id,
                transfer_id=item.transfer_id,
                participant_id=item.provider_id,
            )

    async def _inform(
        self, party: str, item: VaultItem, number: int, purpose: str | None, agreement: AgreementRow
    ) -> int | None:
        """Deliver a signed use notice to ``party`` before the use; Denied if it cannot be, or
        if the provider refuses to count the use (the agreement's uses are used up). Returns
        the agreement's use number the provider counted, when it counts uses."""
        if party and not self._is_provider(party, item, agreement):
            raise Denied(
                403,
                f"the agreement requires informing {party} of every use; this "
                "connector delivers use notices to the provider only",
            )
        notice = sign_use_notice(
            self.config.signing_key,
            self.config.certificate,
            item,
            audience=item.provider_id,
            use_number=number,
            purpose=purpose,
            now=self.cp.clock(),
        )
        d = await self.cp.client.post(f"{item.provider_address.rstrip('/')}/notices", {"notice": notice})
        if d.status == 403:  # delivered, and the provider refuses the use: its reason
            reason = d.reason.removeprefix("403").strip()
            await self._log("vault.denied", item, {"reason": reason})
            raise Denied(403, reason)
        if not d.ok:
            await self._log("vault.denied", item, {"reason": f"use notice not delivered: {d.reason}"})
            raise Denied(
                403,
                "the agreement's use must be reported to the provider, and "
                f"the use notice could not be delivered: {d.reason}",
            )
        await self._log("use-notice.sent", item, {"notice": notice, "use": number})
        body = d.body if isinstance(d.body, dict) else {}
        count = body.get("agreementUse")
        return count if isinstance(count, int) and not isinstance(count, bool) else None


__all__ = ["LocalUse"]

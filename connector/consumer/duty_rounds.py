"""The consumer's duties on its copies, run in rounds: a copy whose delete duty fell due is
deleted, and its provider gets a signed deletion notice (connector.consumer.notices); a notice
not delivered is sent again in the next round. Also where a copy enters the vault under its
agreement's duties (``register_local_copy``), for pulls, pushes and the management API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from connector.consumer.config import ConsumerConfig
from connector.consumer.duties import agreement_duties
from connector.consumer.notices import sign_notice
from connector.consumer.ports import ControlPlanePort
from connector.consumer.vault import Vault, VaultItem
from connector.faults import StoreUnavailable
from connector.protocol.errors import ProtocolError

log = logging.getLogger(__name__)
DUTY_INTERVAL = 1.0  # seconds between rounds


class DutyRunner:
    def __init__(self, cp: ControlPlanePort, config: ConsumerConfig, vault: Vault) -> None:
        self.cp = cp
        self.config = config
        self.vault = vault
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run rounds in the background until ``stop``."""
        if self._task is None:
            self._task = asyncio.create_task(self._rounds(), name="consumer-duties")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _rounds(self) -> None:
        while True:
            pause = DUTY_INTERVAL
            try:
                await self.run_duties()
            except StoreUnavailable as exc:  # a storage fault: wait for the operator, go on
                pause = max(DUTY_INTERVAL, float(exc.retry_after))
                log.warning("duty round: %s; next round in %.0f s", exc.reason, pause)
            except Exception:
                log.exception("duty round failed")
            await asyncio.sleep(pause)

    async def register_local_copy(self, path: Path, transfer_id: str) -> VaultItem:
        """A file now held locally under the consumer transfer's agreement (ProtocolError 404
        for a transfer this consumer does not have)."""
        await self.vault.open()
        async with self.cp.store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(transfer_id)
            agreement = await tx.agreements.get(row.agreement_id) if row is not None else None
        if row is None or agreement is None or row.role != "consumer":
            raise ProtocolError(404, "404", [f"no transfer {transfer_id} of this consumer"])
        return await self.vault.register(
            path,
            agreement_id=agreement.id,
            duties=agreement_duties(agreement.policy, agreement.signed_at),
            transfer_id=transfer_id,
            provider_id=row.counter_party_id or "",
            provider_address=row.counter_party_address or "",
            now=self.cp.clock(),
        )

    async def run_duties(self) -> int:
        """Delete the copies whose delete duty fell due, and tell their providers; the number
        of deletion notices delivered."""
        await self.vault.open()
        audit = self.cp.audit
        done = 0
        for item in await self.vault.due(self.cp.clock()):
            if item.deleted_at is None:
                with contextlib.suppress(FileNotFoundError):
                    Path(item.path).unlink()
                item = await self.vault.mark_deleted(item, self.cp.clock())
                if audit is not None:
                    await audit.aappend(
                        "duty.deleted",
                        {"path": item.path, "sha256": item.sha256},
                        agreement_id=item.agreement_id,
                        transfer_id=item.transfer_id,
                    )
            notice = sign_notice(self.config.signing_key, self.config.certificate, item, self.cp.clock())
            d = await self.cp.client.post(f"{item.provider_address.rstrip('/')}/notices", {"notice": notice})
            if not d.ok:
                log.warning("deletion notice for %s not delivered: %s", item.path, d.reason)
                continue
            await self.vault.mark_notice_sent(item)
            done += 1
            if audit is not None:
                await audit.aappend(
                    "deletion-notice.sent",
                    {"notice": notice},
                    agreement_id=item.agreement_id,
                    transfer_id=item.transfer_id,
                    participant_id=item.provider_id,
                )
        return done


__all__ = ["DUTY_INTERVAL", "DutyRunner"]

"""The consumer's push endpoint's view of its transfers (connector.dataplane.receiver): which
transfer a push is for, with the secret this connector put in its push address, and the check of
the provider's receipts once the data is in. Verified receipts go into the audit log as for a
pull (responses the provider declares broke off are logged as its claim, under ``unreceived``),
and the copy into the vault."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time

import jwt

from connector.audit.receipts import RECEIPT_KIND, receipt_data
from connector.consumer.config import ConsumerConfig
from connector.consumer.duty_rounds import DutyRunner
from connector.consumer.ports import ControlPlanePort
from connector.consumer.pulls import at_rest_modification, vault_name
from connector.dataplane.receipts import ReceiptError, ReceiptVerifier, certified_keys
from connector.dataplane.receiver import PushTarget
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import PUSH, DataAddress
from connector.protocol.transfer import TransferState
from connector.store.rows import TransferRow

PROVIDER_PID_WAIT = 50  # checks, 50 ms apart, for the provider's pid to arrive


class PushInbox:
    def __init__(self, cp: ControlPlanePort, config: ConsumerConfig, duties: DutyRunner) -> None:
        self.cp = cp
        self.ca = config.ca
        self.vault_dir = config.vault_dir
        self.duties = duties
        self._logged: dict[str, set[str]] = {}

    async def resolve(self, transfer_id: str) -> PushTarget | None:
        async with self.cp.store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(transfer_id)
            agreement = await tx.agreements.get(row.agreement_id) if row is not None else None
        if (
            row is None
            or row.role != "consumer"
            or row.format != PUSH
            or not TransferState(row.state).awaits_push
            or not row.data.get("data_address")
        ):
            return None
        secret = DataAddress.parse(row.data["data_address"]).property("authorization")
        if not secret:
            return None
        # the upload lands beside the copy; it becomes the copy once its receipts verify
        final = self.vault_dir / vault_name(row.agreement_id) / vault_name(transfer_id)
        return PushTarget(
            transfer_id,
            hashlib.sha256(secret.encode()).hexdigest(),
            final.with_name(final.name + ".unverified"),
            at_rest_modification(agreement.policy) if agreement is not None else None,
        )

    async def on_receipts(
        self,
        target: PushTarget,
        receipts: list[str],
        received: list[tuple[int, int, bytes]],
        failed: list[tuple[int, int, bytes]],
    ) -> str | None:
        row: TransferRow | None = None
        for _ in range(PROVIDER_PID_WAIT):  # the provider's pid arrives with the answer to our request
            async with self.cp.store.transaction(readonly=True) as tx:
                row = await tx.transfers.get(target.transfer_id)
            if row is None:
                return "unknown transfer"
            if row.provider_pid:
                break
            await asyncio.sleep(0.05)
        if row is None or not row.provider_pid:
            return "the provider's process id is not known here yet"
        if not receipts:
            return "no receipt covers the data"
        provider = row.counter_party_id or ""
        try:
            keys = certified_keys(ca=self.ca, provider_id=provider, now=time.time())
            verifier = ReceiptVerifier(
                keys, transfer_id=row.provider_pid, agreement_id=row.agreement_id, issuer=provider
            )
            # one push comes from one provider process: its chain is the receipts' chain
            chain = jwt.decode(receipts[0], options={"verify_signature": False}).get("chain", "")
            for seq, n, d in [*received, *failed]:
                verifier.add(seq, n, d, chain if isinstance(chain, str) else "")
            verifier.verify(receipts)
        except (ReceiptError, jwt.PyJWTError) as exc:
            with contextlib.suppress(FileNotFoundError):
                target.path.unlink()  # unverified data is not kept
            return str(exc)
        if self.cp.audit is not None:
            responses = {seq: (n, d) for seq, n, d in [*received, *failed]}
            broke_off = {seq for seq, _, _ in failed}
            logged = self._logged.setdefault(row.id, set())
            events = []
            for token in receipts:
                if token in logged:
                    continue
                claims = jwt.decode(token, options={"verify_signature": False})  # verified above
                span = range(claims["seq_from"], claims["seq_to"] + 1)
                data = receipt_data(token, [(s, *responses[s]) for s in span])
                if broke_off.intersection(span):
                    data["unreceived"] = sorted(broke_off.intersection(span))
                events.append(
                    (
                        RECEIPT_KIND,
                        data,
                        {"transfer_id": row.id, "agreement_id": row.agreement_id, "participant_id": provider},
                    )
                )
            if events:
                await self.cp.audit.aappend_many(events)
            logged.update(receipts)
        final = target.path.with_name(target.path.name.removesuffix(".unverified"))
        try:
            os.replace(target.path, final)
            await self.duties.register_local_copy(final, row.id)
        except FileNotFoundError:
            return "the pushed data is no longer here"
        except ProtocolError as exc:
            return "; ".join(exc.reasons)
        return None


__all__ = ["PushInbox"]

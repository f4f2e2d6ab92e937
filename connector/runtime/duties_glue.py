"""The consumer's duties on its local copies, as the control plane runs them today: the duty
loop (delete what fell due, tell the provider), a pulled file registered in the vault, and the
provider's side of deletion and use notices. Kept apart from the engine so the consumer's side
(``connector.duties``, ``connector.consumer``) can move without touching it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from connector.audit.log import AuditLog
from connector.dataplane.pep import ConsumeUse
from connector.duties import NOTICE_TYP, NoticeError, Vault, VaultItem, sign_notice, verify_notice
from connector.identity.keys import SigningKey
from connector.odrl.compile import DecisionRequest
from connector.runtime.errors import Forbidden, Invalid, NotFound
from connector.runtime.transport import Poster
from connector.store import AgreementRow, Store, StoreUnavailable
from connector.usage.pipeline import DATA_ACTION, compiled_agreement
from connector.wireformat import Clock

log = logging.getLogger(__name__)
DUTY_INTERVAL = 1.0  # seconds between checks of the delete duties on local copies


@dataclass(frozen=True)
class LocalCopyDuties:
    """What the consumer's duties on local copies need: the vault of copies, the key and
    certificate that sign its notices, and the data-space CA that checks consumers' notices."""

    vault: Vault
    key: SigningKey
    certificate: x509.Certificate
    ca: x509.Certificate

    @classmethod
    def of(cls, given: LocalCopyDuties | tuple[Vault, SigningKey, x509.Certificate, x509.Certificate]
           ) -> LocalCopyDuties:
        """Also takes the (vault, key, certificate, ca) tuple callers passed before."""
        return given if isinstance(given, LocalCopyDuties) else cls(*given)

    # Transitional: connector/consumer.py and serve.py still read the duties by position
    # (``duties[0]``, ``_, key, certificate, _ = duties``); they move to the fields in the
    # consumer package's branch, and these two methods go then.
    def __iter__(self) -> Iterator[Any]:
        return iter((self.vault, self.key, self.certificate, self.ca))

    def __getitem__(self, i: int) -> Any:
        return (self.vault, self.key, self.certificate, self.ca)[i]


class LocalCopies:
    """Runs the duties on local copies and takes in consumers' notices."""

    def __init__(self, store: Store, client: Poster, duties: LocalCopyDuties | None, *,
                 participant_id: str, clock: Clock, audit: AuditLog | None = None) -> None:
        self.store = store
        self.client = client
        self.duties = duties
        self.participant_id = participant_id
        self.clock = clock
        self.audit = audit
        # the counter the data plane draws on (its use reservations); the store's own if None
        self.consume_use: ConsumeUse | None = None

    async def loop(self, stopping: Callable[[], bool]) -> None:
        while not stopping():
            pause = DUTY_INTERVAL
            try:
                await self.run_duties()
            except StoreUnavailable as exc:  # a storage fault: wait for the operator, go on
                pause = max(DUTY_INTERVAL, float(exc.retry_after))
                log.warning("duty round: %s; next round in %.0f s", exc.reason, pause)
            except Exception:
                log.exception("duty round failed")
            await asyncio.sleep(pause)

    async def run_duties(self) -> int:
        """Delete the local copies whose delete duty fell due, and tell their providers."""
        if self.duties is None:
            return 0
        vault, key, certificate = self.duties.vault, self.duties.key, self.duties.certificate
        done = 0
        for item in vault.due(self.clock()):
            path = Path(item.path)
            if item.deleted_at is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                item.deleted_at = self.clock().isoformat()
                vault.save(item)
                if self.audit is not None:
                    await self.audit.aappend("duty.deleted", {"path": item.path, "sha256": item.sha256},
                                             agreement_id=item.agreement_id,
                                             transfer_id=item.transfer_id)
            notice = sign_notice(key, certificate, item, self.clock())
            d = await self.client.post(f"{item.provider_address.rstrip('/')}/notices",
                                       {"notice": notice})
            if d.ok:
                item.notice_sent = True
                vault.save(item)
                done += 1
                if self.audit is not None:
                    await self.audit.aappend("deletion-notice.sent", {"notice": notice},
                                             agreement_id=item.agreement_id,
                                             transfer_id=item.transfer_id,
                                             participant_id=item.provider_id)
            else:
                log.warning("deletion notice for %s not delivered: %s", item.path, d.reason)
        return done

    async def register_local_copy(self, path: Path, transfer_id: str) -> VaultItem:
        """Consumer: a pulled file now held locally under the transfer's agreement."""
        if self.duties is None:
            raise NotFound("this connector keeps no vault")
        async with self.store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(transfer_id)
            agreement = await tx.agreements.get(row.agreement_id) if row is not None else None
        if row is None or agreement is None or row.role != "consumer":
            raise NotFound(f"no transfer {transfer_id} of this consumer")
        # hashing a large copy takes a while: off the event loop
        return await asyncio.to_thread(
            self.duties.vault.register, path, agreement=agreement.policy,
            agreement_id=agreement.id, signed_at=agreement.signed_at, transfer_id=transfer_id,
            provider_id=row.counter_party_id or "",
            provider_address=row.counter_party_address or "", now=self.clock())

    async def deletion_notice(self, body: Any, sender: str) -> dict[str, Any]:
        """Provider: a consumer reports it deleted (or used) its copy; verify and keep it."""
        if self.duties is None:
            raise NotFound("this connector takes no notices")
        token = body.get("notice") if isinstance(body, dict) else None
        try:
            claims = verify_notice(token, ca=self.duties.ca, sender=sender,  # type: ignore[arg-type]
                                   audience=self.participant_id, now=self.clock())
        except NoticeError as exc:
            raise Invalid(str(exc)) from exc
        async with self.store.transaction(readonly=True) as tx:
            agreement = await tx.agreements.get(claims["agreementId"])
        if agreement is None or agreement.consumer_id != sender:
            raise NotFound(f"no agreement {claims['agreementId']}")
        if self.audit is not None and claims["typ"] == NOTICE_TYP:
            await self.audit.aappend("deletion-notice", {
                "notice": token, "sha256": claims["sha256"], "deletedAt": claims["deletedAt"]},
                agreement_id=claims["agreementId"], transfer_id=claims["transferId"],
                participant_id=sender)
        counted: int | None = None
        if claims["typ"] != NOTICE_TYP:
            counted = await self.count_local_use(agreement)
        if self.audit is not None and claims["typ"] != NOTICE_TYP:
            await self.audit.aappend("use-notice", {
                "notice": token, "sha256": claims["sha256"], "usedAt": claims["usedAt"],
                "useNumber": claims["useNumber"], "purpose": claims.get("purpose"),
                "agreementUse": counted},
                agreement_id=claims["agreementId"], transfer_id=claims["transferId"],
                participant_id=sender)
        return {"received": True, "agreementId": claims["agreementId"], "agreementUse": counted}

    async def count_local_use(self, agreement: AgreementRow) -> int | None:
        """A consumer's local use of its copy, counted against the agreement's one limit (the
        same counter its pulls and pushes draw on): the use number, or None when the agreement
        counts no uses; a 403 with the reason when its uses are used up."""
        policy = compiled_agreement(agreement.id, agreement.target, agreement.policy)
        if policy.uses is None:
            raise Forbidden(f"the agreement cannot be enforced: {policy.unenforceable}")
        if not policy.uses.counted:
            return None
        consume = self.consume_use or self.store.consume_use
        allowed, count = await consume(agreement.id, agreement.consumer_id,
                                       agreement.target, policy.uses.limit)
        if not allowed:  # the engine's own words for the count that is exhausted
            said = policy.decider(DecisionRequest(
                action=DATA_ACTION, now=self.clock(), assignee=agreement.consumer_id,
                target=agreement.target, count=count, started_at=agreement.signed_at))
            raise Forbidden(said.reason if not said.permit else
                            f"the agreement's {policy.uses.limit} uses are used up")
        return count

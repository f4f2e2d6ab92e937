"""A copy leaves the consumer's vault: decided on the agreement, encrypted to a named recipient.

``VaultExport.prepare`` decides one export of a vault copy (``connector.usage.distribute``):
refused with the engine's reason when the agreement does not grant ``distribute``; refused
unencrypted when it obliges encryption (there is then no unencrypted export at all); the next
policy attached when the agreement obliges one (its document when the agreement embeds it,
otherwise its IRI, and the export says so). The recipient is named by its certificate, which
must be issued by the data-space CA this connector trusts. Every export is written to the audit
log (``vault.distributed``: item, agreement, recipient fingerprint, encrypted or not, next policy)
before a byte leaves; every refusal too (``vault.denied`` with ``action: distribute``).

``Export.stream()`` then yields the envelope (``connector.usage.envelope``) or, for a permitted
plain export, the bytes of the copy.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from connector.audit.log import AuditLog
from connector.consumer.duties import agreement_duties
from connector.consumer.errors import Denied
from connector.consumer.vault import VaultItem
from connector.odrl.parse import PolicyError, jsonld_to_graph, policy_from_graph
from connector.store import Store
from connector.usage.distribute import NEXT_POLICY, DistributionTerms, decide, distribution_terms
from connector.usage.envelope import (
    EnvelopeError,
    Recipient,
    RecipientRefused,
    Sender,
    load_certificate,
    recipient_from_certificate,
    seal,
)
from connector.usage.pipeline import agreement_document

DISTRIBUTED_KIND = "vault.distributed"
DENIED_KIND = "vault.denied"
READ_BLOCK = 1 << 20
IRI_ONLY = (
    "the agreement names the next policy by its IRI only: the IRI is attached, the "
    "recipient obtains the policy's document from the provider"
)


@dataclass(frozen=True)
class Export:
    """One decided export: what leaves, to whom, with which next policy."""

    item: VaultItem
    path: Path
    recipient: Recipient | None  # None: a plain export (the agreement permits it)
    fields: dict[str, Any]  # the envelope's header fields of the sender
    next_policy: dict[str, Any] | None
    note: str | None  # what the caller should know (only the next policy's IRI is known)
    sender: Sender | None = None  # signs the envelope's header

    @property
    def encrypted(self) -> bool:
        return self.recipient is not None

    def stream(self) -> Iterator[bytes]:
        """The bytes that leave: the envelope, or the plain copy. Blocking file reads."""
        if self.recipient is None:
            yield from _read(self.path)
            return
        size = self.path.stat().st_size
        yield from seal(
            self.recipient,
            _read(self.path),
            plaintext_sha256=self.item.sha256,
            plaintext_size=size,
            fields=self.fields,
            sender=self.sender,
        )


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(READ_BLOCK):
            yield block


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for block in _read(path):
        digest.update(block)
    return digest.hexdigest()


def embedded_next_policy(agreement: dict[str, Any], duty_id: str) -> dict[str, Any] | None:
    """The next policy's document when the agreement embeds it as the duty's target (a JSON
    object), with the agreement's context; None when the duty names it by IRI."""
    for rule in agreement.get("permission") or []:
        if not isinstance(rule, dict):
            continue
        for duty in rule.get("duty") or []:
            if not isinstance(duty, dict):
                continue
            action = duty.get("action")
            name = action.get("@id") if isinstance(action, dict) else action
            same = duty.get("@id") == duty_id or (
                duty_id.startswith("_:")
                and isinstance(name, str)
                and name.rsplit("/", 1)[-1].rsplit(":", 1)[-1] in ("nextPolicy", "NEXT_POLICY")
            )
            target = duty.get("target")
            if same and isinstance(target, dict) and len(target) > 1:
                return {"@context": agreement_document(agreement)["@context"], **target}
    return None


class VaultIndex(Protocol):
    """Where an export finds the copy (connector.consumer.vault.Vault)."""

    async def get(self, item_id: str) -> VaultItem | None: ...


class VaultExport:
    """The consumer connector's exports of vault copies."""

    def __init__(
        self,
        *,
        store: Store,
        vault: VaultIndex,
        ca: x509.Certificate,
        audit: AuditLog | None,
        clock: Callable[[], datetime],
        participant_id: str,
        sender: Sender | None = None,
    ) -> None:
        """``sender``: this connector's participant key and certificate, to sign envelopes."""
        self._store = store
        self._vault = vault
        self._ca = ca
        self._audit = audit
        self._clock = clock
        self._participant_id = participant_id
        self._sender = sender
        self._terms: dict[str, DistributionTerms] = {}

    async def prepare(self, item_id: str, *, recipient_pem: str | None, plain: bool) -> Export:
        """Decide one export; Denied with the status and reason when it may not happen."""
        item = await self._vault.get(item_id)
        if item is None:
            raise Denied(404, f"no vault item {item_id}")
        now = self._clock()
        if item.deleted_at or (item.delete_at and datetime.fromisoformat(item.delete_at) <= now):
            raise Denied(410, f"the copy is deleted (due {item.delete_at}) under the agreement's delete duty")
        path = Path(item.path)
        if not path.is_file():
            raise Denied(410, "the copy is no longer on disk")
        if not plain and not recipient_pem:
            raise Denied(
                400,
                "name the recipient by its certificate (recipientCertificate), or "
                "ask for a plain export if the agreement permits one",
            )
        async with self._store.transaction(readonly=True) as tx:
            agreement = await tx.agreements.get(item.agreement_id)
        if agreement is None:
            raise Denied(404, f"the agreement {item.agreement_id} is unknown here")
        duties = agreement_duties(agreement.policy, agreement.signed_at)
        if duties.deletion_due(now):  # read as local use reads it, whatever the index says
            raise Denied(
                410, f"the copy is deleted (due {duties.delete_at}) under the agreement's delete duty"
            )
        terms = self._terms.get(agreement.id)
        if terms is None:
            try:
                # the agreement's own node: a next policy it embeds is a second policy
                graph = jsonld_to_graph(agreement_document(agreement.policy), "agreement")
                policy = policy_from_graph(graph, agreement.id)
            except PolicyError as exc:
                raise Denied(403, f"the agreement cannot be enforced: {exc}") from exc
            terms = self._terms[agreement.id] = distribution_terms(policy)
        recipient = None
        if recipient_pem:
            try:
                recipient = recipient_from_certificate(load_certificate(recipient_pem), self._ca, now)
            except RecipientRefused as exc:
                await self._log(DENIED_KIND, item, {"action": "distribute", "reason": str(exc)})
                raise Denied(400, str(exc)) from exc
        next_doc: dict[str, Any] | None = None
        note = None
        if terms.requires_next_policy and terms.next_policy is not None:
            next_doc = embedded_next_policy(agreement.policy, terms.next_policy_duties[0])
            if next_doc is None:
                next_doc, note = {"@id": terms.next_policy}, IRI_ONLY
        encrypted = not plain
        decision = decide(
            terms,
            encrypted=encrypted,
            # a plain copy carries nothing with it: no policy travels along
            next_policy_attached=encrypted and next_doc is not None,
            now=now,
            assignee=self._participant_id,
            target=agreement.target,
            count=await asyncio.to_thread(self._distributions, agreement.id),
            started_at=agreement.signed_at,
        )
        if not decision.permit:
            reason = decision.reason
            if plain and terms.requires_next_policy and not terms.requires_encryption:
                reason += "; the next policy travels only in an envelope: export to a recipient certificate"
            await self._log(
                DENIED_KIND, item, {"action": "distribute", "reason": reason, "encrypted": encrypted}
            )
            raise Denied(403, reason)
        actual = await asyncio.to_thread(_sha256, path)
        if actual != item.sha256:
            raise Denied(
                409,
                "the copy on disk is not the one registered in the vault "
                f"(sha256 {actual}, registered {item.sha256})",
            )
        fields: dict[str, Any] = {
            "agreementId": agreement.id,
            "provider": agreement.provider_id,
            "sender": self._participant_id,
            "target": agreement.target,
            "created": now.isoformat(),
            "nextPolicy": next_doc,
        }
        if note:
            fields["nextPolicyNote"] = note
        await self._log(
            DISTRIBUTED_KIND,
            item,
            {
                "encrypted": encrypted,
                "recipient": recipient.to_json() if recipient else None,
                "alg": recipient.alg if encrypted and recipient else None,
                "nextPolicy": terms.next_policy if next_doc is not None else None,
                "nextPolicyDocument": next_doc is not None and note is None,
                "decision": decision.reason,
            },
        )
        return Export(item, path, recipient if encrypted else None, fields, next_doc, note, self._sender)

    def _distributions(self, agreement_id: str) -> int:
        """Exports already made under the agreement (for a count on distribute)."""
        if self._audit is None:
            return 0
        return sum(
            1
            for e in self._audit.entries()
            if e.kind == DISTRIBUTED_KIND and e.ids.get("agreement_id") == agreement_id
        )

    async def _log(self, kind: str, item: VaultItem, data: dict[str, Any]) -> None:
        if self._audit is None:
            if kind == DENIED_KIND:
                return
            raise Denied(
                403, "a copy leaves the vault only with an audit entry, and this connector keeps no audit log"
            )
        await self._audit.aappend(
            kind,
            {"vaultId": item.id, "sha256": item.sha256, **data},
            agreement_id=item.agreement_id,
            transfer_id=item.transfer_id,
            participant_id=item.provider_id,
        )


__all__ = [
    "DISTRIBUTED_KIND",
    "NEXT_POLICY",
    "EnvelopeError",
    "Export",
    "VaultExport",
    "embedded_next_policy",
]

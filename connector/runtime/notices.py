"""The provider's side of consumers' notices: a consumer reports that it deleted its copy under
the agreement's delete duty, or that it used it (a use counted against the agreement's one
limit, the same counter its pulls and pushes draw on). The consumer's side of the duties (the
vault, the duty rounds that delete and send these notices) is connector.consumer.
"""

from __future__ import annotations

import logging
from typing import Any

from cryptography import x509

from connector.audit.log import AuditLog
from connector.consumer.notices import NOTICE_TYP, NoticeError, verify_notice
from connector.dataplane.pep import ConsumeUse
from connector.odrl.compile import DecisionRequest
from connector.runtime.errors import Forbidden, Invalid, NotFound
from connector.store import AgreementRow, Store
from connector.usage.pipeline import DATA_ACTION, compiled_agreement
from connector.wireformat import Clock

log = logging.getLogger(__name__)
DUTY_INTERVAL = 1.0  # seconds between checks of the delete duties on local copies


class Notices:
    """Takes in consumers' notices, checked against the data-space CA (``ca``; None: this
    connector takes no notices)."""

    def __init__(
        self,
        store: Store,
        ca: x509.Certificate | None,
        *,
        participant_id: str,
        clock: Clock,
        audit: AuditLog | None = None,
    ) -> None:
        self.store = store
        self.ca = ca
        self.participant_id = participant_id
        self.clock = clock
        self.audit = audit
        # the counter the data plane draws on (its use reservations); the store's own if None
        self.consume_use: ConsumeUse | None = None

    async def deletion_notice(self, body: Any, sender: str) -> dict[str, Any]:
        """Provider: a consumer reports it deleted (or used) its copy; verify and keep it."""
        if self.ca is None:
            raise NotFound("this connector takes no notices")
        token = body.get("notice") if isinstance(body, dict) else None
        try:
            claims = verify_notice(
                token,  # type: ignore[arg-type]
                ca=self.ca,
                sender=sender,
                audience=self.participant_id,
                now=self.clock(),
            )
        except NoticeError as exc:
            raise Invalid(str(exc)) from exc
        async with self.store.transaction(readonly=True) as tx:
            agreement = await tx.agreements.get(claims["agreementId"])
        if agreement is None or agreement.consumer_id != sender:
            raise NotFound(f"no agreement {claims['agreementId']}")
        if self.audit is not None and claims["typ"] == NOTICE_TYP:
            await self.audit.aappend(
                "deletion-notice",
                {"notice": token, "sha256": claims["sha256"], "deletedAt": claims["deletedAt"]},
                agreement_id=claims["agreementId"],
                transfer_id=claims["transferId"],
                participant_id=sender,
            )
        counted: int | None = None
        if claims["typ"] != NOTICE_TYP:
            counted = await self.count_local_use(agreement)
        if self.audit is not None and claims["typ"] != NOTICE_TYP:
            await self.audit.aappend(
                "use-notice",
                {
                    "notice": token,
                    "sha256": claims["sha256"],
                    "usedAt": claims["usedAt"],
                    "useNumber": claims["useNumber"],
                    "purpose": claims.get("purpose"),
                    "agreementUse": counted,
                },
                agreement_id=claims["agreementId"],
                transfer_id=claims["transferId"],
                participant_id=sender,
            )
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
        allowed, count = await consume(
            agreement.id, agreement.consumer_id, agreement.target, policy.uses.limit
        )
        if not allowed:  # the engine's own words for the count that is exhausted
            said = policy.decider(
                DecisionRequest(
                    action=DATA_ACTION,
                    now=self.clock(),
                    assignee=agreement.consumer_id,
                    target=agreement.target,
                    count=count,
                    started_at=agreement.signed_at,
                )
            )
            raise Forbidden(
                said.reason if not said.permit else f"the agreement's {policy.uses.limit} uses are used up"
            )
        return count

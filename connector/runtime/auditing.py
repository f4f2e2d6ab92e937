"""The audit hook: one entry in the hash-chained, signed audit log (``connector.audit``) per
state a process reaches, written after its commit (a crash in between loses the entry, never
the state). Transfer entries name both parties' attested jurisdictions where known (this side's
from its own DAT, the peer's from the DAT its message came with)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from connector.audit.crossborder import transfer_jurisdictions
from connector.audit.log import AuditLog, Event
from connector.identity.tokens import Claims
from connector.protocol import transfer as xfer
from connector.protocol.common import Role
from connector.runtime.engine import Committed
from connector.store import StoreUnavailable
from connector.usage.lifecycle import AGREEMENT_RETIRED

log = logging.getLogger(__name__)


class ProcessAudit:
    def __init__(self, audit: AuditLog, own_claims: Callable[[], Awaitable[Claims | None]],
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.audit = audit
        self.own_claims = own_claims
        self.spawn = spawn  # runs the append beside the transition (the engine's spawn)

    def __call__(self, done: Committed) -> None:
        """The after-commit hook."""
        if done.changed:
            self.spawn(self.record(done))

    async def record(self, done: Committed) -> None:
        p = done.process
        reasons = list(p.termination_reason)
        data: dict[str, Any] = {"role": p.role.value, "state": p.wire_state.value,
                                "internalState": p.state.value}
        if reasons:
            data["reason"] = reasons
        ids: dict[str, Any] = {"process_id": p.id, "participant_id": p.counter_party_id}
        if isinstance(p, xfer.Transfer):
            ids["transfer_id"] = p.id
            ids["agreement_id"] = p.agreement_id
            data.update(transfer_jurisdictions(p.role.value, await self.own_claims(), done.peer))
        elif p.agreement is not None:
            ids["agreement_id"] = str(p.agreement.get("@id"))
        events: list[Event] = [(f"{done.kind}.{p.state.value.lower()}", data, ids)]
        if (isinstance(p, xfer.Transfer) and p.role is Role.CONSUMER
                and p.state is xfer.TransferState.TERMINATED
                and p.termination_code == AGREEMENT_RETIRED):
            # the provider retired the agreement: the consumer's log records that too
            events.append(("agreement.retired", {"reason": reasons, "role": "consumer"},
                           {"agreement_id": p.agreement_id, "participant_id": p.counter_party_id}))
        await self.append(events)

    async def append(self, events: Sequence[Event]) -> None:
        try:
            await self.audit.aappend_many(events)
        except StoreUnavailable as exc:  # written once the storage takes it (data waits till then)
            log.warning("audit entries %s deferred: %s", [e[0] for e in events], exc.reason)
            self.audit.defer(events)
        except Exception:  # the audit trail must not take the protocol down with it
            log.exception("audit append failed for %s", [e[0] for e in events])

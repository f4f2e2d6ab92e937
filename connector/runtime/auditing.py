"""The audit hook: one entry in the hash-chained, signed audit log (``connector.audit``) per
state a process reaches, written after its commit (a crash in between loses the entry, never
the state). The hook only queues the committed transition; one writer task per process takes
everything queued, in commit order, and appends it with one write (one head signature, one
thread hop) per batch, off the transition's path. Transfer entries name both parties' attested
jurisdictions where known (this side's from its own DAT, the peer's from the DAT its message
came with)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
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
    def __init__(self, audit: AuditLog, own_claims: Callable[[], Awaitable[Claims | None]]) -> None:
        self.audit = audit
        self.own_claims = own_claims
        self._queue: asyncio.Queue[Committed] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    def __call__(self, done: Committed) -> None:
        """The after-commit hook: queue the entry for the writer (started on first use)."""
        if not done.changed:
            return
        self._queue.put_nowait(done)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="audit-writer")

    async def _write(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                own: list[Claims | None] = []  # this side's claims, asked once per batch
                events: list[Event] = []
                for done in batch:
                    events.extend(await self.events(done, own))
                await self.append(events)
            except Exception:  # the audit trail must not take the protocol down with it
                log.exception("audit entries of %d transition(s) not written", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued entry is written (or its failure logged)."""
        await self._queue.join()

    async def stop(self) -> None:
        """Write what is queued, then end the writer."""
        if self._writer is None:
            return
        if not self._writer.done():
            await self.drain()
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None

    async def events(self, done: Committed, own: list[Claims | None]) -> list[Event]:
        """The entries of one committed transition (``own``: this side's claims once asked)."""
        p = done.process
        reasons = list(p.termination_reason)
        data: dict[str, Any] = {
            "role": p.role.value,
            "state": p.wire_state.value,
            "internalState": p.state.value,
        }
        if reasons:
            data["reason"] = reasons
        ids: dict[str, Any] = {"process_id": p.id, "participant_id": p.counter_party_id}
        if isinstance(p, xfer.Transfer):
            ids["transfer_id"] = p.id
            ids["agreement_id"] = p.agreement_id
            if not own:
                own.append(await self.own_claims())
            data.update(transfer_jurisdictions(p.role.value, own[0], done.peer))
        elif p.agreement is not None:
            ids["agreement_id"] = str(p.agreement.get("@id"))
        events: list[Event] = [(f"{done.kind}.{p.state.value.lower()}", data, ids)]
        if (
            isinstance(p, xfer.Transfer)
            and p.role is Role.CONSUMER
            and p.state is xfer.TransferState.TERMINATED
            and p.termination_code == AGREEMENT_RETIRED
        ):
            # the provider retired the agreement: the consumer's log records that too
            events.append(
                (
                    "agreement.retired",
                    {"reason": reasons, "role": "consumer"},
                    {"agreement_id": p.agreement_id, "participant_id": p.counter_party_id},
                )
            )
        return events

    async def append(self, events: Sequence[Event]) -> None:
        try:
            await self.audit.aappend_many(events)
        except StoreUnavailable as exc:  # written once the storage takes it (data waits till then)
            log.warning("audit entries %s deferred: %s", [e[0] for e in events], exc.reason)
            self.audit.defer(events)
        except Exception:  # the audit trail must not take the protocol down with it
            log.exception("audit append failed for %s", [e[0] for e in events])

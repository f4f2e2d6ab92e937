"""The audit hook in-process, on a real audit log file with a real key: the entries of the
transitions committed one after another are written in commit order, together, by one write."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from connector.audit.log import AuditLog, Entry, Event
from connector.identity.keys import generate_private_key
from connector.identity.tokens import Claims
from connector.protocol import negotiation as neg
from connector.protocol.common import Role
from connector.runtime.auditing import ProcessAudit
from connector.runtime.engine import Committed

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
STATES = [
    neg.NegotiationState.REQUESTED,
    neg.NegotiationState.AGREED,
    neg.NegotiationState.VERIFIED,
    neg.NegotiationState.FINALIZED,
]


def negotiation(i: int, state: neg.NegotiationState) -> neg.Negotiation:
    return neg.Negotiation(
        id=f"urn:uuid:n{i}",
        role=Role.PROVIDER,
        provider_pid=f"urn:uuid:n{i}",
        consumer_pid=f"urn:uuid:c{i}",
        state=state,
        counter_party_id="urn:test:consumer",
        counter_party_address="https://consumer.test/dsp",
        offer={},
        created_at=NOW,
        updated_at=NOW,
    )


async def no_claims() -> Claims | None:
    return None


async def test_transitions_are_audited_in_commit_order_with_one_batch_write(tmp_path: Path) -> None:
    key = generate_private_key("EdDSA")
    log = AuditLog.open(tmp_path / "audit.jsonl", key, key.public_key(), time.time, fsync=False)
    batches: list[int] = []
    append_many = log.append_many

    def counted(events: list[Event]) -> list[Entry]:
        batches.append(len(events))
        return append_many(events)

    log.append_many = counted  # type: ignore[method-assign]
    hook = ProcessAudit(log, no_claims)
    committed = [
        Committed("negotiation", negotiation(i, state), changed=True, queued=False)
        for i in range(5)
        for state in STATES
    ]
    unchanged = Committed("negotiation", negotiation(9, STATES[0]), changed=False, queued=False)
    for done in committed[:7]:  # committed one after another, before the writer runs
        hook(done)
    hook(unchanged)  # no state change: no entry
    for done in committed[7:]:
        hook(done)
    await hook.stop()
    try:
        entries = list(log.entries())
        assert [(e.kind, e.process_id) for e in entries] == [
            (f"negotiation.{d.process.state.value.lower()}", d.process.id) for d in committed
        ]
        assert batches == [len(committed)]  # one write for the whole batch
        assert log.verify().problem is None
    finally:
        log.close()

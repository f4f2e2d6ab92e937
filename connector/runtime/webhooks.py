"""Webhook events for negotiation, transfer and agreement state changes.

The engine asks `Webhooks.messages` inside the transaction that commits a state change, so the
events are written to the outbox with the change itself (never an event for a change that did
not commit, never a change without its events); the outbox dispatcher delivers them with its
retries and backoff through a `WebhookSender` (connector.http.webhooks: signed, through the
hook's own outbound-address policy). Events of one process are delivered in order (the outbox
orders the messages of a process; a hook's events are their own process
``webhook:<hook>:<process id>``, so a slow hook never holds up DSP messages or another hook).
The hook's name in that process id is what the delivery is sent as: its key and its ``allow``
list are that hook's, never another's.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from connector.protocol import negotiation as neg
from connector.protocol import transfer as xfer
from connector.runtime.transport import Reply
from connector.store import OutboxMessage

WEBHOOK_KIND = "webhook"
EVENT_KINDS = frozenset({"negotiation", "transfer", "agreement"})


class WebhookSender(Protocol):
    async def send(self, hook: str, url: str, event: Mapping[str, Any], delivery_id: str) -> Reply:
        """Deliver ``event`` to ``url`` as the hook named ``hook`` (its key, its allow list)."""
        ...


@dataclass(frozen=True)
class Webhook:
    name: str  # short, stable: part of the outbox ordering key
    url: str
    events: frozenset[str] = EVENT_KINDS


def _process_view(kind: str, p: neg.Negotiation | xfer.Transfer) -> dict[str, Any]:
    view: dict[str, Any] = {
        "kind": kind,
        "id": p.id,
        "role": p.role.value.lower(),
        "state": p.wire_state.value,
        "internalState": p.state.value,
        "counterPartyId": p.counter_party_id,
        "terminationReason": list(p.termination_reason) or None,
    }
    if isinstance(p, xfer.Transfer):
        view["agreementId"] = p.agreement_id
    elif p.agreement is not None:
        view["agreementId"] = str(p.agreement.get("@id"))
    return view


def events_of(
    kind: str, before: str | None, process: neg.Negotiation | xfer.Transfer, now: datetime
) -> list[dict[str, Any]]:
    """The events a committed transition makes: its process's new state, and for a negotiation
    that reached FINALIZED the agreement it signed. Pure."""
    if before == process.state.value:
        return []
    at = now.isoformat().replace("+00:00", "Z")
    out = [
        {
            "type": f"{kind}.state",
            "occurredAt": at,
            "previousState": before,
            "process": _process_view(kind, process),
        }
    ]
    if (
        isinstance(process, neg.Negotiation)
        and process.state is neg.NegotiationState.FINALIZED
        and process.agreement is not None
    ):
        a = process.agreement
        out.append(
            {
                "type": "agreement.signed",
                "occurredAt": at,
                "agreement": {
                    "id": str(a.get("@id")),
                    "target": a.get("target"),
                    "assigner": a.get("assigner"),
                    "assignee": a.get("assignee"),
                    "negotiationId": process.id,
                },
            }
        )
    return out


class Webhooks:
    def __init__(self, hooks: Sequence[Webhook], sender: WebhookSender) -> None:
        self.hooks = tuple(hooks)
        self.sender = sender

    def messages(
        self, kind: str, before: str | None, process: neg.Negotiation | xfer.Transfer, now: datetime
    ) -> list[OutboxMessage]:
        """The outbox rows for every hook that takes these events."""
        rows = []
        for event in events_of(kind, before, process, now):
            family = event["type"].split(".", 1)[0]
            for hook in self.hooks:
                if family not in hook.events:
                    continue
                event_id = f"urn:uuid:{uuid.uuid4()}"
                rows.append(
                    OutboxMessage.new(
                        message_key=event_id,
                        destination=hook.url,
                        payload={**event, "id": event_id},
                        now=now,
                        process_kind=WEBHOOK_KIND,
                        process_id=f"{WEBHOOK_KIND}:{hook.name}:{process.id}",
                    )
                )
        return rows

    async def deliver(self, m: OutboxMessage) -> Reply:
        return await self.sender.send(hook_of(m), m.destination, m.payload, m.message_key)


def hook_of(m: OutboxMessage) -> str:
    """The name of the hook an event row was written for (its process ``webhook:<hook>:<id>``);
    "" for a row that names none (no configured hook has that name: it is refused)."""
    kind, _, rest = (m.process_id or "").partition(":")
    return rest.partition(":")[0] if kind == WEBHOOK_KIND else ""

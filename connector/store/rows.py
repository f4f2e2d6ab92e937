"""Row types: plain frozen dataclasses, one per table, no ORM.

Times are timezone-aware UTC `datetime`s; the store rejects naive ones. JSON columns hold plain
`dict`/`list` values. Change a row with `dataclasses.replace` and hand it back to its repository.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from connector.wireformat import ProcessRole

ProcessKind = Literal["negotiation", "transfer"]
OutboxStatus = Literal["pending", "in_flight", "sent", "dead"]
OUTBOX_STATUSES: tuple[OutboxStatus, ...] = ("pending", "in_flight", "sent", "dead")


def _empty() -> dict[str, Any]:
    return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantSeen:
    """A counter-party this connector has talked to (for the management API's overview)."""

    id: str
    first_seen: datetime
    last_seen: datetime
    address: str | None = None
    attributes: dict[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True, kw_only=True)
class AssetRow:
    """A dataset offered by this connector.

    `data_address` tells the data plane where the bytes are. Written in full; read back through
    `get`/`list` with secret values (header values, passwords, tokens, keys) replaced by
    `MASK`, and in full only through `AssetRepository.get_secret_address`.
    """

    id: str
    created_at: datetime
    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()
    content_type: str | None = None
    data_address: dict[str, Any] = field(default_factory=_empty)
    properties: dict[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRow:
    """An ODRL policy as the user wrote it: the JSON-LD text, kept verbatim."""

    id: str
    body: str
    created_at: datetime

    def document(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferRow:
    """A contract definition: which assets (selector) are offered under which policies."""

    id: str
    access_policy_id: str
    contract_policy_id: str
    created_at: datetime
    asset_selector: Any = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class CatalogOffer:
    """One offer with both its policies, as `load_catalog_offers` returns it (one query)."""

    offer: OfferRow
    access_policy: PolicyRow
    contract_policy: PolicyRow


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiationRow:
    """A contract negotiation, provider or consumer side.

    `state` is the machine's (internal) state name; `data` holds the rest of the machine's
    state. `version` is managed by the store (1 after `add`, +1 on every `save`). The lease
    fields are written only by the lease methods; `save` leaves them alone.
    """

    id: str
    role: ProcessRole
    state: str
    created_at: datetime
    updated_at: datetime
    provider_pid: str | None = None
    consumer_pid: str | None = None
    counter_party_id: str | None = None
    counter_party_address: str | None = None
    offer: dict[str, Any] | None = None
    agreement_id: str | None = None
    data: dict[str, Any] = field(default_factory=_empty)
    version: int = 0
    lease_owner: str | None = None
    lease_until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgreementRow:
    """A concluded contract agreement (its terms immutable once written). The provider may
    retire it: `retired_at` and `retired_reason` are then set, once."""

    id: str
    provider_id: str
    consumer_id: str
    target: str
    policy: dict[str, Any]
    signed_at: datetime
    negotiation_id: str | None = None
    retired_at: datetime | None = None
    retired_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldFact:
    """A fact the provider holds and states itself: operand `name` (its full IRI) has `values`
    (full IRIs or literals) until `until` (None: until unset)."""

    name: str
    values: tuple[Any, ...]
    set_at: datetime
    until: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True, kw_only=True)
class Payment:
    """A payment received under an agreement: an exact `amount` in `currency` (an IRI)."""

    id: str
    agreement_id: str
    amount: Decimal
    currency: str
    paid_at: datetime
    recorded_at: datetime
    reference: str | None = None
    receipt: str | None = None  # a signed payment receipt (compact JWS), when one came with it


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRow:
    """A transfer process, provider or consumer side; same versioning and leases as negotiations."""

    id: str
    role: ProcessRole
    state: str
    created_at: datetime
    updated_at: datetime
    agreement_id: str
    provider_pid: str | None = None
    consumer_pid: str | None = None
    format: str | None = None
    counter_party_id: str | None = None
    counter_party_address: str | None = None
    data: dict[str, Any] = field(default_factory=_empty)
    version: int = 0
    lease_owner: str | None = None
    lease_until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessedMessage:
    """A received message already handled, and the response to replay for a duplicate."""

    message_key: str
    created_at: datetime
    response: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxMessage:
    """A message to deliver, written in the same transaction as the state change that causes it.

    `message_key` is the idempotency key (the receiver de-duplicates by it; adding the same key
    twice is a no-op). Messages of one process (`process_kind`, `process_id`) are delivered in
    the order they were added: a message is not claimed while an earlier one of its process is
    pending or in flight. `seq` is that order, assigned by the store.
    """

    id: str
    message_key: str
    destination: str
    payload: Any
    created_at: datetime
    next_attempt_at: datetime
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    process_kind: str | None = None
    process_id: str | None = None
    status: OutboxStatus = "pending"
    attempts: int = 0
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    last_error: str | None = None
    sent_at: datetime | None = None
    seq: int = 0

    @classmethod
    def new(
        cls,
        *,
        message_key: str,
        destination: str,
        payload: Any,
        now: datetime,
        process_kind: str | None = None,
        process_id: str | None = None,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        id: str | None = None,
    ) -> OutboxMessage:
        """A pending message due at `now`."""
        return cls(
            id=id or str(uuid.uuid4()),
            message_key=message_key,
            destination=destination,
            payload=payload,
            created_at=now,
            next_attempt_at=now,
            method=method,
            headers=dict(headers or {}),
            process_kind=process_kind,
            process_id=process_id,
        )


class UseResult(NamedTuple):
    """What `consume_use` decided: `allowed`, and the use counter after the call."""

    allowed: bool
    count_after: int


class UseReservation(NamedTuple):
    """What `reserve_uses` granted: `granted` uses, numbered `count_after - granted + 1` to
    `count_after` (the counter after the call; 0 granted: none are left under the limit)."""

    granted: int
    count_after: int


@dataclass(frozen=True, slots=True)
class WireStateQuery:
    """Selects the negotiations or transfers whose DSP (wire) state is `state`, in SQL.

    A process reports its internal state unless that is a "sending" state (a message of ours
    in flight); then it reports the state the counter-party last acknowledged (`acked_state`
    in the row's data) or, with nothing acknowledged yet, the state its sending state leads
    to. `sending` names every sending state, `reported_by` those that lead to `state` (the
    protocol's tables say which: `connector.services.listing.wire_state_query`)."""

    state: str
    sending: frozenset[str]
    reported_by: frozenset[str]

"""The one owner of the row <-> process mapping: how a negotiation or a transfer (the pure
machines' state, ``connector.protocol``) is kept in its store row, and the JSON layout of the
row's ``data`` column. Nothing else reads or writes ``data``'s keys."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from connector.identity.tokens import Claims, attested_snapshot
from connector.protocol import negotiation as neg
from connector.protocol import transfer as xfer
from connector.protocol.common import Role
from connector.protocol.messages import DataAddress
from connector.store.rows import NegotiationRow, TransferRow

__all__ = [
    "negotiation_to_row",
    "row_to_negotiation",
    "row_to_transfer",
    "transfer_to_row",
    "with_peer_attested",
]


def negotiation_to_row(n: neg.Negotiation, version: int = 0) -> NegotiationRow:
    agreement_id = n.agreement.get("@id") if n.agreement else None
    return NegotiationRow(
        id=n.id,
        role="provider" if n.role is Role.PROVIDER else "consumer",
        state=n.state.value,
        created_at=n.created_at,
        updated_at=n.updated_at,
        provider_pid=n.provider_pid,
        consumer_pid=n.consumer_pid,
        counter_party_id=n.counter_party_id,
        counter_party_address=n.counter_party_address,
        offer=dict(n.offer),
        agreement_id=str(agreement_id) if agreement_id else None,
        data={
            "agreement": dict(n.agreement) if n.agreement else None,
            "termination_reason": list(n.termination_reason),
            "termination_code": n.termination_code,
            "processed": list(n.processed),
            "origin": n.origin,
            "pending_message_id": n.pending_message_id,
            "acked_state": n.acked_state.value if n.acked_state else None,
            "in_doubt": n.in_doubt,
            "delivery_error": n.delivery_error,
        },
        version=version,
    )


def row_to_negotiation(row: NegotiationRow) -> neg.Negotiation:
    d = row.data
    return neg.Negotiation(
        id=row.id,
        role=Role.PROVIDER if row.role == "provider" else Role.CONSUMER,
        provider_pid=row.provider_pid,
        consumer_pid=row.consumer_pid,
        state=neg.NegotiationState(row.state),
        counter_party_id=row.counter_party_id or "",
        counter_party_address=row.counter_party_address or "",
        offer=row.offer or {},
        created_at=row.created_at,
        updated_at=row.updated_at,
        agreement=d.get("agreement"),
        termination_reason=tuple(d.get("termination_reason") or ()),
        termination_code=d.get("termination_code"),
        processed=tuple(d.get("processed") or ()),
        origin=d.get("origin"),
        pending_message_id=d.get("pending_message_id"),
        acked_state=neg.NegotiationState(d["acked_state"]) if d.get("acked_state") else None,
        in_doubt=bool(d.get("in_doubt")),
        delivery_error=d.get("delivery_error"),
    )


def transfer_to_row(t: xfer.Transfer, version: int = 0) -> TransferRow:
    return TransferRow(
        id=t.id,
        role="provider" if t.role is Role.PROVIDER else "consumer",
        state=t.state.value,
        created_at=t.created_at,
        updated_at=t.updated_at,
        agreement_id=t.agreement_id,
        provider_pid=t.provider_pid,
        consumer_pid=t.consumer_pid,
        format=t.format,
        counter_party_id=t.counter_party_id,
        counter_party_address=t.counter_party_address,
        data={
            "data_address": t.data_address.to_json() if t.data_address else None,
            "suspended_by": sorted(r.value for r in t.suspended_by),
            "suspension_reason": list(t.suspension_reason),
            "suspension_code": t.suspension_code,
            "termination_reason": list(t.termination_reason),
            "termination_code": t.termination_code,
            "processed": list(t.processed),
            "origin": t.origin,
            "pending_message_id": t.pending_message_id,
            "acked_state": t.acked_state.value if t.acked_state else None,
            "in_doubt": t.in_doubt,
            "delivery_error": t.delivery_error,
        },
        version=version,
    )


def with_peer_attested(new: TransferRow, old: TransferRow | None, peer: Claims | None) -> TransferRow:
    """Keep with the transfer what the peer's latest DAT attested (``peer_attested``: the
    ``attested`` and ``attestedAt`` of transfer tokens), so decisions without a transfer token
    (the provider's pushes) read the same facts."""
    if peer is not None:
        snap: Any = {"attested": attested_snapshot(peer), "attestedAt": int(peer.issued_at)}
    else:
        snap = old.data.get("peer_attested") if old is not None else None
    return replace(new, data={**new.data, "peer_attested": snap}) if snap else new


def row_to_transfer(row: TransferRow) -> xfer.Transfer:
    d = row.data
    return xfer.Transfer(
        id=row.id,
        role=Role.PROVIDER if row.role == "provider" else Role.CONSUMER,
        provider_pid=row.provider_pid,
        consumer_pid=row.consumer_pid,
        state=xfer.TransferState(row.state),
        counter_party_id=row.counter_party_id or "",
        counter_party_address=row.counter_party_address or "",
        agreement_id=row.agreement_id,
        format=row.format or "",
        created_at=row.created_at,
        updated_at=row.updated_at,
        data_address=DataAddress.parse(d["data_address"]) if d.get("data_address") else None,
        suspended_by=frozenset(Role(r) for r in d.get("suspended_by") or ()),
        suspension_reason=tuple(d.get("suspension_reason") or ()),
        suspension_code=d.get("suspension_code"),
        termination_reason=tuple(d.get("termination_reason") or ()),
        termination_code=d.get("termination_code"),
        processed=tuple(d.get("processed") or ()),
        origin=d.get("origin"),
        pending_message_id=d.get("pending_message_id"),
        acked_state=xfer.TransferState(d["acked_state"]) if d.get("acked_state") else None,
        in_doubt=bool(d.get("in_doubt")),
        delivery_error=d.get("delivery_error"),
    )

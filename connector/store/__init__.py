"""Persistence: one schema on SQLite (embedded default) and PostgreSQL, SQLAlchemy Core, async.

store = await Store.open("sqlite:///var/connector.db")   # or postgresql://...?schema=NAME
await store.migrate()
async with store.transaction() as tx:
    negotiation = await tx.negotiations.get_by_consumer_pid(pid, role="provider")
    await tx.negotiations.save(replace(negotiation, state="AGREEING", updated_at=now))
    await tx.outbox.add(OutboxMessage.new(message_key=..., destination=..., payload=..., now=now))
await store.close()
"""

from connector.store.backoff import backoff_ceiling, next_backoff
from connector.store.database import Store, Transaction
from connector.store.errors import (
    ConcurrentUpdate,
    DuplicateKey,
    NestedTransaction,
    NotFound,
    ReferenceViolation,
    SchemaTooNew,
    StillReferenced,
    StoreBusy,
    StoreError,
    StoreFull,
    StoreIOError,
    StoreReadOnly,
    StoreUnavailable,
    StoreUnreachable,
)
from connector.store.rows import (
    AgreementRow,
    AssetRow,
    CatalogOffer,
    HeldFact,
    NegotiationRow,
    OfferRow,
    OutboxMessage,
    OutboxStatus,
    ParticipantSeen,
    Payment,
    PolicyRow,
    ProcessedMessage,
    ProcessKind,
    TransferRow,
    UseReservation,
    UseResult,
    WireStateQuery,
)
from connector.store.secrets import MASK, mask_secrets

__all__ = [
    "MASK",
    "AgreementRow",
    "AssetRow",
    "CatalogOffer",
    "ConcurrentUpdate",
    "DuplicateKey",
    "HeldFact",
    "NegotiationRow",
    "NestedTransaction",
    "NotFound",
    "OfferRow",
    "OutboxMessage",
    "OutboxStatus",
    "ParticipantSeen",
    "Payment",
    "PolicyRow",
    "ProcessKind",
    "ProcessedMessage",
    "ReferenceViolation",
    "SchemaTooNew",
    "StillReferenced",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoreFull",
    "StoreIOError",
    "StoreReadOnly",
    "StoreUnavailable",
    "StoreUnreachable",
    "Transaction",
    "TransferRow",
    "UseReservation",
    "UseResult",
    "WireStateQuery",
    "backoff_ceiling",
    "mask_secrets",
    "next_backoff",
]

"""The consumer's vault index: one row per local copy held under an agreement (the files stay
on disk; connector.consumer.vault owns them).

Every statement is built once, here, with bound parameters; a call only binds values. The
upsert differs in syntax between the databases (``ON CONFLICT`` is dialect-specific in
SQLAlchemy), so it is built once per dialect. ``due`` is the duty scheduler's question, answered
by the ``(notice_sent, delete_at)`` index.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from connector.store.schema import vault_items as v

if TYPE_CHECKING:
    from connector.store.database import Transaction


@dataclass(frozen=True, slots=True)
class VaultRow:
    id: str
    path: str
    agreement_id: str
    transfer_id: str
    provider_id: str
    provider_address: str
    sha256: str
    delete_at: datetime | None
    registered_at: datetime
    deleted_at: datetime | None = None
    notice_sent: bool = False
    uses: int = 0


_COLUMNS = [f.name for f in dataclasses.fields(VaultRow)]
# a copy registered again (the same agreement and path): a new file and duty, its uses kept
_REFRESHED = (
    "path",
    "transfer_id",
    "provider_id",
    "provider_address",
    "sha256",
    "delete_at",
    "registered_at",
    "deleted_at",
    "notice_sent",
)


# INSERTs take their values from the row's parameters (one per column, named as the column)
def _upsert(insert: Any) -> Any:
    stmt = insert(v)
    return stmt.on_conflict_do_update(index_elements=[v.c.id], set_={c: stmt.excluded[c] for c in _REFRESHED})


_UPSERT = {"sqlite": _upsert(sqlite.insert), "postgresql": _upsert(postgresql.insert)}
_INSERT_NEW = {
    "sqlite": sqlite.insert(v).on_conflict_do_nothing(index_elements=[v.c.id]),
    "postgresql": postgresql.insert(v).on_conflict_do_nothing(index_elements=[v.c.id]),
}
_GET = sa.select(v).where(v.c.id == sa.bindparam("item_id"))
_LIST = sa.select(v).order_by(v.c.id)
_DUE = (
    sa.select(v)
    .where(
        v.c.notice_sent.is_(False),
        v.c.delete_at.is_not(None),
        v.c.delete_at <= sa.bindparam("now", type_=v.c.delete_at.type),
    )
    .order_by(v.c.delete_at, v.c.id)
)
_MARK_DELETED = (
    sa.update(v)
    .where(v.c.id == sa.bindparam("item_id"), v.c.deleted_at.is_(None))
    .values(deleted_at=sa.bindparam("at", type_=v.c.deleted_at.type))
)
_MARK_NOTICE_SENT = sa.update(v).where(v.c.id == sa.bindparam("item_id")).values(notice_sent=True)
_ADD_USE = (
    sa.update(v)
    .where(v.c.id == sa.bindparam("item_id"), v.c.deleted_at.is_(None))
    .values(uses=v.c.uses + 1)
    .returning(v.c.uses)
)
_AGREEMENT_USES = sa.select(sa.func.coalesce(sa.func.sum(v.c.uses), 0)).where(
    v.c.agreement_id == sa.bindparam("agreement_id")
)


def _row(mapping: Any) -> VaultRow:
    return VaultRow(**{c: mapping[c] for c in _COLUMNS})


class VaultRepository:
    """The vault index inside one transaction (``tx.vault``)."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def save(self, row: VaultRow) -> None:
        """Insert, or refresh a copy registered again (its local uses are kept)."""
        await self._tx.execute(_UPSERT[self._tx.dialect], dataclasses.asdict(row))

    async def add_if_absent(self, row: VaultRow) -> bool:
        """Insert unless the id is there (an import of old records); True if inserted."""
        result = await self._tx.execute(_INSERT_NEW[self._tx.dialect], dataclasses.asdict(row))
        return bool(result.rowcount)

    async def get(self, item_id: str) -> VaultRow | None:
        row = (await self._tx.execute(_GET, {"item_id": item_id})).first()
        return None if row is None else _row(row._mapping)

    async def all(self) -> list[VaultRow]:
        return [_row(r._mapping) for r in await self._tx.execute(_LIST)]

    async def due(self, now: datetime) -> list[VaultRow]:
        """The copies whose delete duty fell due by ``now`` and whose provider was not told yet."""
        return [_row(r._mapping) for r in await self._tx.execute(_DUE, {"now": now})]

    async def mark_deleted(self, item_id: str, at: datetime) -> None:
        """The copy's file is gone (the first deletion time is kept)."""
        await self._tx.execute(_MARK_DELETED, {"item_id": item_id, "at": at})

    async def mark_notice_sent(self, item_id: str) -> None:
        await self._tx.execute(_MARK_NOTICE_SENT, {"item_id": item_id})

    async def add_use(self, item_id: str) -> int | None:
        """Count one local use of a copy not deleted; its new count, or None (gone, deleted)."""
        row = (await self._tx.execute(_ADD_USE, {"item_id": item_id})).first()
        return None if row is None else int(row[0])

    async def agreement_uses(self, agreement_id: str) -> int:
        """The local uses of all of an agreement's copies."""
        result = await self._tx.execute(_AGREEMENT_USES, {"agreement_id": agreement_id})
        return int(result.scalar_one())


__all__ = ["VaultRepository", "VaultRow"]

"""The dashboard's sessions (connector.ui.session), in the store so that every replica of a
connector knows them: one row per session, keyed by the SHA-256 of the cookie's random id (the
id itself never reaches the database, so a copy of the table opens no session), with the
session's CSRF token, when it ends and the messages its next page shows.

Every statement is built once, here, with bound parameters. Expired rows are deleted when a
login adds one (`prune`), and when one is found expired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from connector.store.schema import ui_sessions as u

if TYPE_CHECKING:
    from connector.store.database import Transaction


@dataclass(frozen=True, slots=True)
class UiSessionRow:
    id_hash: str
    csrf: str
    expires_at: datetime
    created_at: datetime
    flash: tuple[str, ...] = ()


_INSERT = sa.insert(u)
_GET = sa.select(u.c.id_hash, u.c.csrf, u.c.expires_at, u.c.created_at, u.c.flash).where(
    u.c.id_hash == sa.bindparam("key")
)
_GET_FOR_UPDATE = _GET.with_for_update()
_DELETE = sa.delete(u).where(u.c.id_hash == sa.bindparam("key"))
_SET_FLASH = (
    sa.update(u)
    .where(u.c.id_hash == sa.bindparam("key"))
    .values(flash=sa.bindparam("messages", type_=u.c.flash.type))
)
_DELETE_EXPIRED = sa.delete(u).where(u.c.expires_at <= sa.bindparam("now", type_=u.c.expires_at.type))
# beyond `keep` live sessions the ones that end first go (the oldest logins)
_KEPT = sa.select(u.c.id_hash).order_by(u.c.expires_at.desc(), u.c.id_hash).limit(sa.bindparam("keep"))
_DELETE_BEYOND = sa.delete(u).where(u.c.id_hash.not_in(_KEPT.scalar_subquery()))


def _row(mapping: sa.RowMapping) -> UiSessionRow:
    return UiSessionRow(
        id_hash=mapping["id_hash"],
        csrf=mapping["csrf"],
        expires_at=mapping["expires_at"],
        created_at=mapping["created_at"],
        flash=tuple(str(m) for m in mapping["flash"] or ()),
    )


class UiSessionRepository:
    """The dashboard's sessions inside one transaction (``tx.ui_sessions``)."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def add(self, row: UiSessionRow) -> None:
        await self._tx.execute(
            _INSERT,
            {
                "id_hash": row.id_hash,
                "csrf": row.csrf,
                "expires_at": row.expires_at,
                "created_at": row.created_at,
                "flash": list(row.flash),
            },
        )

    async def get(self, id_hash: str, *, for_update: bool = False) -> UiSessionRow | None:
        """The session (`for_update`: its row locked until the transaction ends, on PostgreSQL;
        SQLite's writers are serialised anyway)."""
        stmt = _GET_FOR_UPDATE if for_update and not self._tx.readonly else _GET
        found = (await self._tx.execute(stmt, {"key": id_hash})).first()
        return None if found is None else _row(found._mapping)

    async def delete(self, id_hash: str) -> bool:
        return bool((await self._tx.execute(_DELETE, {"key": id_hash})).rowcount)

    async def set_flash(self, id_hash: str, messages: tuple[str, ...]) -> None:
        await self._tx.execute(_SET_FLASH, {"key": id_hash, "messages": list(messages)})

    async def prune(self, now: datetime, keep: int) -> int:
        """Delete the sessions ended by `now`, then all but the `keep` that end last; how many."""
        gone = (await self._tx.execute(_DELETE_EXPIRED, {"now": now})).rowcount
        gone += (await self._tx.execute(_DELETE_BEYOND, {"keep": keep})).rowcount
        return int(gone)


__all__ = ["UiSessionRepository", "UiSessionRow"]

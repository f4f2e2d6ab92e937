"""Repositories: the queries, one class per table, all bound to one open transaction.

Every method runs inside the caller's transaction (`async with store.transaction() as tx:
tx.negotiations...`), so a state change and the outbox messages it causes commit together. The
SQL is the same on both databases; where they differ in syntax (upserts) SQLAlchemy's
dialect-specific `insert` renders the common `ON CONFLICT` form, and `FOR UPDATE SKIP LOCKED`
renders on PostgreSQL only (SQLite serialises writers with BEGIN IMMEDIATE instead).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from connector.store import schema as t
from connector.store.errors import (
    ConcurrentUpdate,
    DuplicateKey,
    NotFound,
    StillReferenced,
    StoreError,
)
from connector.store.rows import (
    OUTBOX_STATUSES,
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
from connector.store.secrets import mask_secrets, restore_masked
from connector.wireformat import ProcessRole

if TYPE_CHECKING:
    from connector.store.database import Transaction

Upsert = postgresql.Insert | sqlite.Insert
P = TypeVar("P", NegotiationRow, TransferRow)
S = TypeVar("S", bound=sa.Executable)
MAX_ERROR_LENGTH = 4000
REFERRERS_NAMED = 10  # ids of referring rows a StillReferenced names, per kind


# The hot-path statements, built once per (dialect, shape) with bound parameters and run with
# fresh values: SQLAlchemy then neither rebuilds them nor walks them for a cache key per call
# (memoised on the statement object), and its compiled cache always hits. Construction and
# cache keying were about a sixth of a connector's CPU time in a negotiation (bench/RESULTS.md).
_BUILT: dict[tuple[Any, ...], Any] = {}


def _values(row: Any) -> dict[str, Any]:
    return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}


def _page(stmt: sa.Select[Any], limit: int | None, offset: int) -> sa.Select[Any]:
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError("limit and offset must not be negative")
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt.offset(offset) if offset else stmt


def _match(column: sa.ColumnElement[Any], value: str | Sequence[str]) -> sa.ColumnElement[bool]:
    if isinstance(value, str):
        return column == value
    return column.in_(list(value))


class _Repository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    def _insert(self, table: sa.Table) -> Upsert:
        return self._tx.insert(table)

    def _built(self, key: tuple[Any, ...], build: Callable[[], S]) -> S:
        """The statement `build` makes, made once per database dialect and `key` and reused
        (it must depend on nothing but `key`: values go in as bound parameters)."""
        full = (self._tx.dialect, type(self).__name__, *key)
        stmt: S | None = _BUILT.get(full)
        if stmt is None:
            stmt = _BUILT[full] = build()
        return stmt

    async def _execute(
        self, stmt: sa.Executable, params: Mapping[str, Any] | None = None
    ) -> sa.CursorResult[Any]:
        return await self._tx.execute(stmt, params)

    async def _count(self, table: sa.Table, where: Sequence[sa.ColumnElement[bool]] = ()) -> int:
        result = await self._execute(sa.select(sa.func.count()).select_from(table).where(*where))
        return int(result.scalar_one())

    async def _referrers(
        self, id_column: sa.ColumnElement[Any], where: sa.ColumnElement[bool]
    ) -> tuple[tuple[str, ...], bool]:
        """Up to REFERRERS_NAMED ids of the rows ``where`` selects, and whether there are more."""
        stmt = sa.select(id_column).where(where).order_by(id_column).limit(REFERRERS_NAMED + 1)
        ids = tuple(row[0] for row in await self._execute(stmt))
        return ids[:REFERRERS_NAMED], len(ids) > REFERRERS_NAMED

    def _offer_lists(self, asset_id: str) -> sa.ColumnElement[bool]:
        """An offer's selector lists ``asset_id`` in its assetIds (``allAssets`` offers do not
        refer to any asset in particular: a deleted asset just leaves their datasets)."""
        selector = t.offers.c.asset_selector
        if self._tx.dialect == "postgresql":
            listed = selector.op("->", return_type=postgresql.JSONB)("assetIds")
            return listed.op("@>", return_type=sa.Boolean)(
                sa.func.jsonb_build_array(sa.cast(asset_id, sa.Text))
            )
        each = sa.func.json_each(selector, "$.assetIds").table_valued("value")
        return sa.select(sa.literal(1)).select_from(each).where(each.c.value == asset_id).exists()


# --------------------------------------------------------------------------- participants


class ParticipantRepository(_Repository):
    async def touch(
        self,
        participant_id: str,
        now: datetime,
        *,
        address: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Record contact with a counter-party (insert, or update last_seen and what is known)."""
        p = t.participants_seen
        with_attributes = attributes is not None

        def build() -> Upsert:
            stmt = self._insert(p)
            update: dict[str, Any] = {
                "last_seen": stmt.excluded.last_seen,
                "address": sa.func.coalesce(stmt.excluded.address, p.c.address),
            }
            if with_attributes:
                update["attributes"] = stmt.excluded.attributes
            return stmt.on_conflict_do_update(index_elements=[p.c.id], set_=update)

        await self._execute(
            self._built(("touch", with_attributes), build),
            {
                "id": participant_id,
                "address": address,
                "attributes": dict(attributes or {}),
                "first_seen": now,
                "last_seen": now,
            },
        )

    async def get(self, participant_id: str) -> ParticipantSeen | None:
        p = t.participants_seen
        row = (await self._execute(sa.select(p).where(p.c.id == participant_id))).first()
        return None if row is None else ParticipantSeen(**row._mapping)

    async def list(self, *, limit: int | None = 50, offset: int = 0) -> list[ParticipantSeen]:
        p = t.participants_seen
        stmt = _page(sa.select(p).order_by(p.c.last_seen.desc(), p.c.id), limit, offset)
        return [ParticipantSeen(**row._mapping) for row in await self._execute(stmt)]


# --------------------------------------------------------------------------- assets

_ASSET_PUBLIC = [c for c in t.assets.c if c.name != "data_address_secret"]


def _asset(row: sa.Row[Any]) -> AssetRow:
    values = dict(row._mapping)
    values["keywords"] = tuple(values["keywords"])
    return AssetRow(**values)


class AssetRepository(_Repository):
    """Assets. Reads return the data address with secrets masked; see `get_secret_address`."""

    async def add(self, asset: AssetRow) -> AssetRow:
        """Insert; `DuplicateKey` if the id exists. Returns the asset as reads will show it."""
        a = t.assets
        values = self._columns(asset, asset.data_address)
        result = await self._execute(
            self._insert(a).values(values).on_conflict_do_nothing(index_elements=[a.c.id]).returning(a.c.id)
        )
        if result.first() is None:
            raise DuplicateKey(f"asset {asset.id!r} exists")
        return dataclasses.replace(asset, data_address=values["data_address"])

    async def update(self, asset: AssetRow) -> AssetRow:
        """Replace the asset's fields. Values equal to `MASK` keep the stored secret."""
        a = t.assets
        previous = await self.get_secret_address(asset.id)
        if previous is None:
            raise NotFound(f"asset {asset.id!r}")
        full = restore_masked(asset.data_address, previous)
        values = self._columns(asset, full)
        del values["id"], values["created_at"]
        await self._execute(sa.update(a).where(a.c.id == asset.id).values(values))
        return dataclasses.replace(asset, data_address=values["data_address"])

    @staticmethod
    def _columns(asset: AssetRow, full_address: dict[str, Any]) -> dict[str, Any]:
        values = _values(asset)
        values["keywords"] = list(asset.keywords)
        values["data_address"] = mask_secrets(full_address)
        values["data_address_secret"] = full_address
        return values

    async def delete(self, asset_id: str) -> bool:
        """Delete; False if unknown. `StillReferenced` (and nothing deleted: the caller's
        transaction rolls back) while an offer lists the asset or an agreement targets it.

        The row is deleted first and the referrers looked up after: the delete holds the row's
        lock, so on PostgreSQL an offer or agreement being added for the asset meanwhile (they
        share-lock it: `lock`, `AgreementRepository.add`) either committed before and is seen
        here, or waits and then finds the asset gone."""
        a = t.assets
        if (await self._execute(sa.delete(a).where(a.c.id == asset_id))).rowcount != 1:
            return False
        offers, more_offers = await self._referrers(t.offers.c.id, self._offer_lists(asset_id))
        agreements, more_agreements = await self._referrers(
            t.agreements.c.id, t.agreements.c.target == asset_id
        )
        if offers or agreements:
            raise StillReferenced(
                "asset", asset_id, {"offer": offers, "agreement": agreements}, more_offers or more_agreements
            )
        return True

    async def lock(self, asset_ids: Sequence[str]) -> list[str]:
        """Those of ``asset_ids`` that exist, share-locked until the transaction ends (on
        PostgreSQL; SQLite's writer lock covers it): they cannot be deleted meanwhile."""
        a = t.assets
        stmt = self._built(
            ("lock",),
            lambda: (
                sa.select(a.c.id)
                .where(a.c.id.in_(sa.bindparam("ids", expanding=True)))
                .with_for_update(read=True)
            ),
        )
        return [row[0] for row in await self._execute(stmt, {"ids": list(asset_ids)})]

    async def get(self, asset_id: str) -> AssetRow | None:
        a = t.assets
        row = (await self._execute(sa.select(*_ASSET_PUBLIC).where(a.c.id == asset_id))).first()
        return None if row is None else _asset(row)

    async def get_secret_address(self, asset_id: str) -> dict[str, Any] | None:
        """The unmasked data address, for the data plane only; None if the asset is unknown."""
        a = t.assets
        result = await self._execute(sa.select(a.c.data_address_secret).where(a.c.id == asset_id))
        address: dict[str, Any] | None = result.scalar_one_or_none()
        return address

    async def list(
        self, *, ids: Sequence[str] | None = None, limit: int | None = 50, offset: int = 0
    ) -> list[AssetRow]:
        a = t.assets
        stmt = sa.select(*_ASSET_PUBLIC).order_by(a.c.created_at, a.c.id)
        if ids is not None:
            stmt = stmt.where(a.c.id.in_(list(ids)))
        return [_asset(row) for row in await self._execute(_page(stmt, limit, offset))]

    async def count(self) -> int:
        return await self._count(t.assets)


# --------------------------------------------------------------------------- policies and offers


def _policy(row: sa.Row[Any]) -> PolicyRow:
    return PolicyRow(**row._mapping)


class PolicyRepository(_Repository):
    async def add(self, policy: PolicyRow) -> PolicyRow:
        p = t.policies
        result = await self._execute(
            self._insert(p)
            .values(_values(policy))
            .on_conflict_do_nothing(index_elements=[p.c.id])
            .returning(p.c.id)
        )
        if result.first() is None:
            raise DuplicateKey(f"policy {policy.id!r} exists")
        return policy

    async def update(self, policy: PolicyRow) -> PolicyRow:
        p = t.policies
        result = await self._execute(sa.update(p).where(p.c.id == policy.id).values(body=policy.body))
        if result.rowcount != 1:
            raise NotFound(f"policy {policy.id!r}")
        return policy

    async def delete(self, policy_id: str) -> bool:
        """Delete; False if unknown. `StillReferenced` while an offer uses the policy (its
        foreign keys keep a concurrent offer from slipping in between: `ReferenceViolation`)."""
        o, p = t.offers, t.policies
        offers, more = await self._referrers(
            o.c.id, sa.or_(o.c.access_policy_id == policy_id, o.c.contract_policy_id == policy_id)
        )
        if offers:
            raise StillReferenced("policy", policy_id, {"offer": offers}, more)
        return (await self._execute(sa.delete(p).where(p.c.id == policy_id))).rowcount == 1

    async def get(self, policy_id: str) -> PolicyRow | None:
        p = t.policies
        row = (await self._execute(sa.select(p).where(p.c.id == policy_id))).first()
        return None if row is None else _policy(row)

    async def list(
        self, *, ids: Sequence[str] | None = None, limit: int | None = 50, offset: int = 0
    ) -> list[PolicyRow]:
        p = t.policies
        stmt = sa.select(p).order_by(p.c.created_at, p.c.id)
        if ids is not None:
            stmt = stmt.where(p.c.id.in_(list(ids)))
        return [_policy(row) for row in await self._execute(_page(stmt, limit, offset))]

    async def count(self) -> int:
        return await self._count(t.policies)


class OfferRepository(_Repository):
    async def add(self, offer: OfferRow) -> OfferRow:
        """Insert; `DuplicateKey` if the id exists, `ReferenceViolation` if a policy is missing."""
        o = t.offers
        result = await self._execute(
            self._insert(o)
            .values(_values(offer))
            .on_conflict_do_nothing(index_elements=[o.c.id])
            .returning(o.c.id)
        )
        if result.first() is None:
            raise DuplicateKey(f"offer {offer.id!r} exists")
        return offer

    async def update(self, offer: OfferRow) -> OfferRow:
        o = t.offers
        values = _values(offer)
        del values["id"], values["created_at"]
        result = await self._execute(sa.update(o).where(o.c.id == offer.id).values(values))
        if result.rowcount != 1:
            raise NotFound(f"offer {offer.id!r}")
        return offer

    async def delete(self, offer_id: str) -> bool:
        o = t.offers
        return (await self._execute(sa.delete(o).where(o.c.id == offer_id))).rowcount == 1

    async def get(self, offer_id: str) -> OfferRow | None:
        o = t.offers
        row = (await self._execute(sa.select(o).where(o.c.id == offer_id))).first()
        return None if row is None else OfferRow(**row._mapping)

    async def load_catalog_offers(self, *, limit: int | None = None, offset: int = 0) -> list[CatalogOffer]:
        """Every offer with its access and contract policies, in one query."""
        o = t.offers
        access = t.policies.alias("access_policy")
        contract = t.policies.alias("contract_policy")
        stmt = (
            sa.select(
                o,
                access.c.body.label("access_body"),
                access.c.created_at.label("access_created_at"),
                contract.c.body.label("contract_body"),
                contract.c.created_at.label("contract_created_at"),
            )
            .join(access, access.c.id == o.c.access_policy_id)
            .join(contract, contract.c.id == o.c.contract_policy_id)
            .order_by(o.c.created_at, o.c.id)
        )
        offers: list[CatalogOffer] = []
        for row in await self._execute(_page(stmt, limit, offset)):
            m = row._mapping
            offer = OfferRow(**{c.name: m[c] for c in o.c})
            offers.append(
                CatalogOffer(
                    offer=offer,
                    access_policy=PolicyRow(
                        id=offer.access_policy_id, body=m["access_body"], created_at=m["access_created_at"]
                    ),
                    contract_policy=PolicyRow(
                        id=offer.contract_policy_id,
                        body=m["contract_body"],
                        created_at=m["contract_created_at"],
                    ),
                )
            )
        return offers

    async def list(self, *, limit: int | None = 50, offset: int = 0) -> list[OfferRow]:
        o = t.offers
        stmt = _page(sa.select(o).order_by(o.c.created_at, o.c.id), limit, offset)
        return [OfferRow(**row._mapping) for row in await self._execute(stmt)]

    async def count(self) -> int:
        return await self._count(t.offers)


# --------------------------------------------------------------------------- processes


class _ProcessRepository(_Repository, Generic[P]):
    """Negotiations and transfers: optimistic versions, role-scoped process ids, leases."""

    _table: sa.Table
    _row: type[P]
    _kind: str
    # Written by the lease methods only, never by `save`; `created_at` never changes.
    _NOT_SAVED = frozenset({"id", "version", "lease_owner", "lease_until", "created_at"})

    def _from(self, row: sa.Row[Any]) -> P:
        return self._row(**row._mapping)

    async def add(self, row: P) -> P:
        """Insert at version 1; `DuplicateKey` if the id or (role, pid) exists."""
        stored = dataclasses.replace(row, version=1)
        c = self._table.c
        stmt = self._built(
            ("add",), lambda: self._insert(self._table).on_conflict_do_nothing().returning(c.id)
        )
        result = await self._execute(stmt, _values(stored))
        if result.first() is None:
            raise DuplicateKey(f"{self._kind} {row.id!r} or its process id exists")
        return stored

    async def save(self, row: P, expected_version: int | None = None) -> P:
        """Write `row` if the stored version is `expected_version` (default: `row.version`).

        Returns the row at its new version; raises `ConcurrentUpdate` if the row changed (or is
        gone) since it was read. Lease fields are not written.
        """
        expected = row.version if expected_version is None else expected_version
        c = self._table.c
        values = {k: v for k, v in _values(row).items() if k not in self._NOT_SAVED}
        values["version"] = expected + 1
        values["match_id"] = row.id
        values["match_version"] = expected
        stmt = self._built(
            ("save",),
            lambda: sa.update(self._table).where(
                c.id == sa.bindparam("match_id"), c.version == sa.bindparam("match_version")
            ),
        )
        result = await self._execute(stmt, values)
        if result.rowcount != 1:
            raise ConcurrentUpdate(self._kind, row.id, expected)
        return dataclasses.replace(row, version=expected + 1)

    async def _get_where(self, by: str, params: Mapping[str, Any], for_update: bool) -> P | None:
        """The row whose column `by` (and role, unless `by` is the id) has the values `params`
        binds (``key``, ``role``)."""
        c = self._table.c

        def build() -> sa.Select[Any]:
            where = [c[by] == sa.bindparam("key")]
            if by != "id":
                where.append(c.role == sa.bindparam("role"))
            stmt = sa.select(self._table).where(*where)
            return stmt.with_for_update() if for_update else stmt

        row = (await self._execute(self._built(("get", by, for_update), build), params)).first()
        return None if row is None else self._from(row)

    async def get(self, process_id: str, *, for_update: bool = False) -> P | None:
        """By internal id. `for_update` row-locks on PostgreSQL (SQLite's writer lock covers it)."""
        return await self._get_where("id", {"key": process_id}, for_update)

    async def get_by_provider_pid(
        self, provider_pid: str, *, role: ProcessRole, for_update: bool = False
    ) -> P | None:
        return await self._get_where("provider_pid", {"key": provider_pid, "role": role}, for_update)

    async def get_by_consumer_pid(
        self, consumer_pid: str, *, role: ProcessRole, for_update: bool = False
    ) -> P | None:
        return await self._get_where("consumer_pid", {"key": consumer_pid, "role": role}, for_update)

    async def get_by_pid(self, pid: str, *, for_update: bool = False) -> P | None:
        """The process this connector names ``pid``: its provider process by its providerPid, else
        its consumer process by its consumerPid (one statement for the two lookups)."""
        c = self._table.c

        def build() -> sa.Select[Any]:
            provider = sa.and_(c.role == "provider", c.provider_pid == sa.bindparam("key"))
            consumer = sa.and_(c.role == "consumer", c.consumer_pid == sa.bindparam("key"))
            stmt = (
                sa.select(self._table)
                .where(sa.or_(provider, consumer))
                .order_by(sa.case((c.role == "provider", 0), else_=1))
                .limit(1)
            )
            return stmt.with_for_update() if for_update else stmt

        row = (await self._execute(self._built(("get_by_pid", for_update), build), {"key": pid})).first()
        return None if row is None else self._from(row)

    def _filters(
        self,
        state: str | Sequence[str] | None,
        role: ProcessRole | None,
        counter_party_id: str | None,
        lease_free_at: datetime | None,
    ) -> list[sa.ColumnElement[bool]]:
        c = self._table.c
        where: list[sa.ColumnElement[bool]] = []
        if state is not None:
            where.append(_match(c.state, state))
        if role is not None:
            where.append(c.role == role)
        if counter_party_id is not None:
            where.append(c.counter_party_id == counter_party_id)
        if lease_free_at is not None:
            where.append(sa.or_(c.lease_owner.is_(None), c.lease_until <= lease_free_at))
        return where

    def _in_wire_state(self, q: WireStateQuery) -> sa.ColumnElement[bool]:
        """`q` in SQL: settled in the state, or sending and reporting it (see WireStateQuery)."""
        c = self._table.c
        acked = c.data["acked_state"].as_string()
        sending = list(q.sending)
        return sa.or_(
            sa.and_(c.state == q.state, c.state.not_in(sending)),
            sa.and_(c.state.in_(sending), acked == q.state),
            sa.and_(c.state.in_(list(q.reported_by)), acked.is_(None)),
        )

    async def _list(
        self, where: list[sa.ColumnElement[bool]], limit: int | None, offset: int, newest_first: bool = False
    ) -> list[P]:
        c = self._table.c
        order = (c.created_at.desc(), c.id.desc()) if newest_first else (c.created_at, c.id)
        stmt = _page(sa.select(self._table).where(*where).order_by(*order), limit, offset)
        return [self._from(row) for row in await self._execute(stmt)]

    async def acquire_lease(self, process_id: str, owner: str, now: datetime, seconds: float) -> bool:
        """Compare-and-set: take (or renew) the lease if it is free, expired or already `owner`'s."""
        c = self._table.c
        result = await self._execute(
            sa.update(self._table)
            .where(
                c.id == process_id,
                sa.or_(c.lease_owner.is_(None), c.lease_owner == owner, c.lease_until <= now),
            )
            .values(lease_owner=owner, lease_until=now + timedelta(seconds=seconds))
        )
        return result.rowcount == 1

    async def release_lease(self, process_id: str, owner: str) -> bool:
        """Give the lease back; False if `owner` does not hold it (any more)."""
        c = self._table.c
        result = await self._execute(
            sa.update(self._table)
            .where(c.id == process_id, c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )
        return result.rowcount == 1


class NegotiationRepository(_ProcessRepository[NegotiationRow]):
    _table = t.negotiations
    _row = NegotiationRow
    _kind = "negotiation"

    async def list(
        self,
        *,
        state: str | Sequence[str] | None = None,
        role: ProcessRole | None = None,
        counter_party_id: str | None = None,
        lease_free_at: datetime | None = None,
        wire_state: WireStateQuery | None = None,
        newest_first: bool = False,
        limit: int | None = 50,
        offset: int = 0,
    ) -> list[NegotiationRow]:
        """Oldest first (`newest_first`: the reverse), filtered before paging. `state` is the
        internal state, `wire_state` the DSP one; `lease_free_at=now` keeps those nobody holds
        a live lease on."""
        where = self._filters(state, role, counter_party_id, lease_free_at)
        if wire_state is not None:
            where.append(self._in_wire_state(wire_state))
        return await self._list(where, limit, offset, newest_first)

    async def count(
        self,
        *,
        state: str | Sequence[str] | None = None,
        role: ProcessRole | None = None,
        counter_party_id: str | None = None,
    ) -> int:
        return await self._count(self._table, self._filters(state, role, counter_party_id, None))


class TransferRepository(_ProcessRepository[TransferRow]):
    _table = t.transfers
    _row = TransferRow
    _kind = "transfer"

    async def list(
        self,
        *,
        state: str | Sequence[str] | None = None,
        role: ProcessRole | None = None,
        counter_party_id: str | None = None,
        agreement_id: str | None = None,
        lease_free_at: datetime | None = None,
        wire_state: WireStateQuery | None = None,
        newest_first: bool = False,
        limit: int | None = 50,
        offset: int = 0,
    ) -> list[TransferRow]:
        """Oldest first (`newest_first`: the reverse), filtered before paging; as
        `NegotiationRepository.list`."""
        where = self._filters(state, role, counter_party_id, lease_free_at)
        if agreement_id is not None:
            where.append(self._table.c.agreement_id == agreement_id)
        if wire_state is not None:
            where.append(self._in_wire_state(wire_state))
        return await self._list(where, limit, offset, newest_first)

    async def count(
        self,
        *,
        state: str | Sequence[str] | None = None,
        role: ProcessRole | None = None,
        counter_party_id: str | None = None,
        agreement_id: str | None = None,
    ) -> int:
        where = self._filters(state, role, counter_party_id, None)
        if agreement_id is not None:
            where.append(self._table.c.agreement_id == agreement_id)
        return await self._count(self._table, where)


class LeaseRepository(_Repository):
    """Leases by process kind, for code that handles negotiations and transfers alike."""

    def _repo(self, kind: ProcessKind) -> _ProcessRepository[Any]:
        if kind == "negotiation":
            return self._tx.negotiations
        if kind == "transfer":
            return self._tx.transfers
        raise ValueError(f"unknown process kind {kind!r}")

    async def acquire(
        self, kind: ProcessKind, process_id: str, owner: str, now: datetime, seconds: float
    ) -> bool:
        return await self._repo(kind).acquire_lease(process_id, owner, now, seconds)

    async def release(self, kind: ProcessKind, process_id: str, owner: str) -> bool:
        return await self._repo(kind).release_lease(process_id, owner)


# --------------------------------------------------------------------------- agreements


class AgreementRepository(_Repository):
    async def add(self, agreement: AgreementRow, *, lock_target: bool = True) -> AgreementRow:
        """Insert; `DuplicateKey` if the id exists. Agreements are never changed. The target
        asset, if this store has it (a provider's agreement), is share-locked first, so it
        cannot be deleted under the new agreement (see `AssetRepository.delete`);
        ``lock_target=False`` for a consumer's agreement, whose target is the provider's asset."""
        if lock_target:
            await AssetRepository(self._tx).lock([agreement.target])
        a = t.agreements
        stmt = self._built(
            ("add",),
            lambda: self._insert(a).on_conflict_do_nothing(index_elements=[a.c.id]).returning(a.c.id),
        )
        result = await self._execute(stmt, _values(agreement))
        if result.first() is None:
            raise DuplicateKey(f"agreement {agreement.id!r} exists")
        return agreement

    async def get(self, agreement_id: str) -> AgreementRow | None:
        a = t.agreements
        stmt = self._built(("get",), lambda: sa.select(a).where(a.c.id == sa.bindparam("key")))
        row = (await self._execute(stmt, {"key": agreement_id})).first()
        return None if row is None else AgreementRow(**row._mapping)

    @staticmethod
    def _filters(
        consumer_id: str | None, provider_id: str | None, target: str | None, negotiation_id: str | None
    ) -> list[sa.ColumnElement[bool]]:
        c = t.agreements.c
        pairs = (
            (c.consumer_id, consumer_id),
            (c.provider_id, provider_id),
            (c.target, target),
            (c.negotiation_id, negotiation_id),
        )
        return [column == value for column, value in pairs if value is not None]

    async def list(
        self,
        *,
        consumer_id: str | None = None,
        provider_id: str | None = None,
        target: str | None = None,
        negotiation_id: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> list[AgreementRow]:
        a = t.agreements
        stmt = sa.select(a).where(*self._filters(consumer_id, provider_id, target, negotiation_id))
        stmt = _page(stmt.order_by(a.c.signed_at, a.c.id), limit, offset)
        return [AgreementRow(**row._mapping) for row in await self._execute(stmt)]

    async def count(
        self,
        *,
        consumer_id: str | None = None,
        provider_id: str | None = None,
        target: str | None = None,
        negotiation_id: str | None = None,
    ) -> int:
        return await self._count(
            t.agreements, self._filters(consumer_id, provider_id, target, negotiation_id)
        )

    async def retire(self, agreement_id: str, reason: str, now: datetime) -> AgreementRow | None:
        """Mark the agreement retired at `now` with `reason`; a retired one keeps its first
        retirement. None if there is no such agreement."""
        a = t.agreements
        await self._execute(
            sa.update(a)
            .where(a.c.id == agreement_id, a.c.retired_at.is_(None))
            .values(retired_at=now, retired_reason=reason)
        )
        return await self.get(agreement_id)


# --------------------------------------------------------------------------- provider-held facts


class HeldFactRepository(_Repository):
    async def set(self, fact: HeldFact) -> HeldFact:
        """Set (replace) the fact named `fact.name`."""
        h = t.held_facts
        values = {
            "name": fact.name,
            "fact_values": list(fact.values),
            "until": fact.until,
            "set_at": fact.set_at,
        }
        await self._execute(
            self._insert(h)
            .values(values)
            .on_conflict_do_update(
                index_elements=[h.c.name], set_={k: v for k, v in values.items() if k != "name"}
            )
        )
        return fact

    async def unset(self, name: str) -> bool:
        """Remove the fact; False if it was not set."""
        h = t.held_facts
        result = await self._execute(sa.delete(h).where(h.c.name == name))
        return result.rowcount == 1

    async def list(self, now: datetime | None = None) -> list[HeldFact]:
        """The facts by name; with `now`, only those active then (not expired)."""
        h = t.held_facts
        stmt = sa.select(h).order_by(h.c.name)
        if now is not None:
            stmt = stmt.where(sa.or_(h.c.until.is_(None), h.c.until > now))
        return [
            HeldFact(name=r.name, values=tuple(r.fact_values), until=r.until, set_at=r.set_at)
            for r in await self._execute(stmt)
        ]


# --------------------------------------------------------------------------- payments


class PaymentRepository(_Repository):
    async def add(self, payment: Payment) -> Payment:
        """Record a payment; `DuplicateKey` if its id exists, `ReferenceViolation` for an
        unknown agreement."""
        p = t.payments
        values = {**_values(payment), "amount": str(payment.amount)}
        result = await self._execute(
            self._insert(p).values(values).on_conflict_do_nothing(index_elements=[p.c.id]).returning(p.c.id)
        )
        if result.first() is None:
            raise DuplicateKey(f"payment {payment.id!r} exists")
        return payment

    async def list(
        self, *, agreement_id: str | None = None, limit: int | None = 500, offset: int = 0
    ) -> list[Payment]:
        """Payments in the order they were paid (all agreements' without `agreement_id`)."""
        p = t.payments
        stmt = sa.select(p)
        if agreement_id is not None:
            stmt = stmt.where(p.c.agreement_id == agreement_id)
        stmt = _page(stmt.order_by(p.c.paid_at, p.c.id), limit, offset)
        return [
            Payment(**{**row._mapping, "amount": Decimal(row.amount)}) for row in await self._execute(stmt)
        ]


# --------------------------------------------------------------------------- usage counting


class UsageRepository(_Repository):
    async def consume(self, agreement_id: str, consumer_id: str, target: str, limit: int | None) -> UseResult:
        """Count one use if that stays within `limit` (None: unlimited), in one atomic statement.

        `INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 WHERE count < :limit RETURNING
        count`: the row lock (PostgreSQL) or the writer lock (SQLite) makes concurrent callers,
        in any process, see each other's increments, so exactly `limit` uses are allowed.
        """
        if limit is not None and limit <= 0:
            return UseResult(False, await self.get(agreement_id, consumer_id, target))
        u = t.usage_counters
        count = u.c["count"]
        stmt = self._insert(u).values(
            agreement_id=agreement_id, consumer_id=consumer_id, target=target, count=1
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[u.c.agreement_id, u.c.consumer_id, u.c.target],
            set_={"count": count + 1},
            where=None if limit is None else count < limit,
        ).returning(count)
        after = (await self._execute(upsert)).scalar_one_or_none()
        if after is None:
            return UseResult(False, await self.get(agreement_id, consumer_id, target))
        return UseResult(True, int(after))

    async def reserve(
        self,
        agreement_id: str,
        consumer_id: str,
        target: str,
        limit: int,
        want: int,
        *,
        divisor: int = 1,
    ) -> UseReservation:
        """Reserve a block of uses for one replica to hand out: the counter goes up by the number
        granted, never above `limit`.

        Of the `left = limit - count` uses still free, grants `min(want, max(1, left // divisor))`
        (none if none is left), so a large `divisor` shrinks blocks to single uses near the limit.
        The counter row is locked before it is read (`FOR UPDATE` on PostgreSQL; on SQLite the
        writer lock is held from BEGIN IMMEDIATE), so the grant is computed from a count nobody
        else can change before the update, which re-checks `count + granted <= limit` anyway.
        """
        if want <= 0 or divisor <= 0:
            raise ValueError("want and divisor must be positive")
        u = t.usage_counters
        count = u.c["count"]
        key = (u.c.agreement_id == agreement_id, u.c.consumer_id == consumer_id, u.c.target == target)
        for _ in range(3):
            current = (
                await self._execute(sa.select(count).where(*key).with_for_update())
            ).scalar_one_or_none()
            if current is None:
                if limit <= 0:
                    return UseReservation(0, 0)
                granted = min(want, max(1, limit // divisor))
                created = await self._execute(
                    self._insert(u)
                    .values(agreement_id=agreement_id, consumer_id=consumer_id, target=target, count=granted)
                    .on_conflict_do_nothing(index_elements=[u.c.agreement_id, u.c.consumer_id, u.c.target])
                    .returning(count)
                )
                if created.first() is not None:
                    return UseReservation(granted, granted)
                continue  # a concurrent first use created the row: lock it and read it
            current = int(current)
            if current >= limit:
                return UseReservation(0, current)
            granted = min(want, max(1, (limit - current) // divisor))
            after = (
                await self._execute(
                    sa.update(u)
                    .where(*key, count + granted <= limit)
                    .values(count=count + granted)
                    .returning(count)
                )
            ).scalar_one_or_none()
            if after is None:  # pragma: no cover - the row is locked since it was read
                raise StoreError("the use counter changed under its row lock")
            return UseReservation(granted, int(after))
        raise StoreError("the use counter row kept appearing and vanishing")  # pragma: no cover

    async def release(self, agreement_id: str, consumer_id: str, target: str, n: int) -> int:
        """Give back `n` reserved uses that were never handed out; returns the counter after."""
        if n < 0:
            raise ValueError("n must not be negative")
        u = t.usage_counters
        count = u.c["count"]
        after = (
            await self._execute(
                sa.update(u)
                .where(u.c.agreement_id == agreement_id, u.c.consumer_id == consumer_id, u.c.target == target)
                .values(count=sa.case((count >= n, count - n), else_=0))
                .returning(count)
            )
        ).scalar_one_or_none()
        return 0 if after is None else int(after)

    async def get(self, agreement_id: str, consumer_id: str, target: str) -> int:
        u = t.usage_counters
        result = await self._execute(
            sa.select(u.c["count"]).where(
                u.c.agreement_id == agreement_id, u.c.consumer_id == consumer_id, u.c.target == target
            )
        )
        value = result.scalar_one_or_none()
        return 0 if value is None else int(value)


# --------------------------------------------------------------------------- receiver de-duplication


class ProcessedMessageRepository(_Repository):
    """The receiver's side of idempotent delivery.

    In the transaction that handles a message: `earlier = await reserve(key, now)`; if `earlier`
    is not None the message is a duplicate (answer with `earlier.response`); otherwise handle it
    and `complete(key, response)`. A concurrent duplicate waits on the key's unique index until
    the first transaction ends, then sees its record: never handled twice.
    """

    def _insert_new(self) -> sa.Executable:
        pm = t.processed_messages
        return self._built(
            ("insert",),
            lambda: (
                self._insert(pm)
                .on_conflict_do_nothing(index_elements=[pm.c.message_key])
                .returning(pm.c.message_key)
            ),
        )

    async def reserve(self, message_key: str, now: datetime) -> ProcessedMessage | None:
        result = await self._execute(
            self._insert_new(), {"message_key": message_key, "response": None, "created_at": now}
        )
        if result.first() is not None:
            return None
        earlier = await self.get(message_key)
        if earlier is None:  # pragma: no cover - the conflicting row cannot vanish in between
            raise DuplicateKey(f"processed message {message_key!r} conflicted but is gone")
        return earlier

    async def complete(self, message_key: str, response: Any) -> None:
        pm = t.processed_messages
        stmt = self._built(
            ("complete",), lambda: sa.update(pm).where(pm.c.message_key == sa.bindparam("key"))
        )
        result = await self._execute(stmt, {"key": message_key, "response": response})
        if result.rowcount != 1:
            raise NotFound(f"processed message {message_key!r} was not reserved")

    async def record(self, message_key: str, response: Any, now: datetime) -> bool:
        """Reserve and complete at once; False if the key was already recorded."""
        result = await self._execute(
            self._insert_new(), {"message_key": message_key, "response": response, "created_at": now}
        )
        return result.first() is not None

    async def get(self, message_key: str) -> ProcessedMessage | None:
        pm = t.processed_messages
        stmt = self._built(("get",), lambda: sa.select(pm).where(pm.c.message_key == sa.bindparam("key")))
        row = (await self._execute(stmt, {"key": message_key})).first()
        return None if row is None else ProcessedMessage(**row._mapping)

    async def purge(self, older_than: datetime) -> int:
        """Forget records created before `older_than` (past any sender's retry horizon)."""
        pm = t.processed_messages
        return (await self._execute(sa.delete(pm).where(pm.c.created_at < older_than))).rowcount


# --------------------------------------------------------------------------- outbox


def _outbox(row: sa.Row[Any]) -> OutboxMessage:
    return OutboxMessage(**row._mapping)


class OutboxRepository(_Repository):
    """The transactional outbox.

    Lifecycle: pending -> (claim_due) in_flight -> (mark_sent) sent, or (mark_failed) pending
    again at a later time, or dead. An in_flight row whose claim expired is due again, so a
    crashed worker's messages are retried by another (at-least-once; receivers de-duplicate
    by `message_key`).
    """

    async def add(self, message: OutboxMessage) -> bool:
        """Queue a message; False (and nothing written) if its `message_key` is already queued."""
        o = t.outbox
        values = _values(message)
        ordered = message.process_kind is not None and message.process_id is not None

        def build() -> sa.Executable:
            stmt = self._insert(o)
            if ordered:  # the next seq of the process, drawn in the INSERT itself
                earlier = o.alias("earlier")
                stmt = stmt.values(
                    seq=sa.select(sa.func.coalesce(sa.func.max(earlier.c.seq), 0) + 1)
                    .where(
                        earlier.c.process_kind == sa.bindparam("seq_kind"),
                        earlier.c.process_id == sa.bindparam("seq_process"),
                    )
                    .scalar_subquery()
                )
            return stmt.on_conflict_do_nothing(index_elements=[o.c.message_key]).returning(o.c.id)

        if ordered:
            del values["seq"]
            values["seq_kind"] = message.process_kind
            values["seq_process"] = message.process_id
        else:
            values["seq"] = 0
        try:
            result = await self._execute(self._built(("add", ordered), build), values)
        except DuplicateKey as error:
            # Two transactions queued for one process at once and drew the same seq.
            raise ConcurrentUpdate(
                message.process_kind or "process",
                message.process_id or "",
                None,
                f"concurrent outbox writes for {message.process_kind} {message.process_id!r}; retry",
            ) from error
        return result.first() is not None

    async def claim_due(
        self, worker_id: str, now: datetime, limit: int, lease_seconds: float
    ) -> list[OutboxMessage]:
        """Atomically move up to `limit` due messages to in_flight, claimed by `worker_id`.

        Due: pending with next_attempt_at <= now, or in_flight with an expired claim. Skipped:
        messages with an earlier unfinished message of the same process (per-process order).
        On PostgreSQL `FOR UPDATE SKIP LOCKED` keeps concurrent claimers apart without waiting;
        on SQLite the transaction holds the database's write lock. Attempts count claims.
        """
        if limit <= 0:
            return []
        o = t.outbox
        earlier = o.alias("earlier")
        unfinished_before = (
            sa.select(earlier.c.id)
            .where(
                earlier.c.process_kind == o.c.process_kind,
                earlier.c.process_id == o.c.process_id,
                earlier.c.seq < o.c.seq,
                earlier.c.status.in_(("pending", "in_flight")),
            )
            .exists()
        )
        due = sa.or_(
            sa.and_(o.c.status == "pending", o.c.next_attempt_at <= now),
            sa.and_(o.c.status == "in_flight", o.c.claimed_until <= now),
        )
        candidates = (
            sa.select(o.c.id)
            .where(due, ~unfinished_before)
            .order_by(o.c.next_attempt_at, o.c.created_at, o.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=o)
        )
        stmt = (
            sa.update(o)
            .where(o.c.id.in_(candidates.scalar_subquery()))
            .values(
                status="in_flight",
                claimed_by=worker_id,
                claimed_until=now + timedelta(seconds=lease_seconds),
                attempts=o.c.attempts + 1,
            )
            .returning(*o.c)
        )
        claimed = [_outbox(row) for row in await self._execute(stmt)]
        claimed.sort(key=lambda m: (m.next_attempt_at, m.created_at, m.id))
        return claimed

    def _claimed(self) -> sa.Update:
        """An UPDATE of the message ``claim_id`` if ``claim_worker`` holds its claim."""
        o = t.outbox
        return self._built(
            ("claimed",),
            lambda: sa.update(o).where(
                o.c.id == sa.bindparam("claim_id"),
                o.c.status == "in_flight",
                o.c.claimed_by == sa.bindparam("claim_worker"),
            ),
        )

    async def mark_sent(self, message_id: str, worker_id: str, now: datetime) -> bool:
        """Record delivery. False if `worker_id` is not the current claimant (another worker
        re-claimed the message after this one's claim expired); nothing is changed then."""
        result = await self._execute(
            self._claimed(),
            {
                "claim_id": message_id,
                "claim_worker": worker_id,
                "status": "sent",
                "sent_at": now,
                "claimed_until": None,
                "last_error": None,
            },
        )
        return result.rowcount == 1

    async def mark_failed(
        self, message_id: str, worker_id: str, error: str, next_attempt_at: datetime | None
    ) -> bool:
        """Record a failed attempt: retry at `next_attempt_at`, or dead-letter it when None.

        False if `worker_id` is not the current claimant; nothing is changed then.
        """
        values: dict[str, Any] = {
            "claim_id": message_id,
            "claim_worker": worker_id,
            "status": "dead" if next_attempt_at is None else "pending",
            "claimed_by": None,
            "claimed_until": None,
            "last_error": error[:MAX_ERROR_LENGTH],
        }
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        result = await self._execute(self._claimed(), values)
        return result.rowcount == 1

    async def release_claims(self, worker_id: str, now: datetime) -> int:
        """A restarted worker takes back what it had in flight when it stopped (a crash): those
        messages are due again at once instead of after their lease. The receiver
        de-duplicates, so one that was delivered before the crash does no harm."""
        o = t.outbox
        result = await self._execute(
            sa.update(o)
            .where(o.c.status == "in_flight", o.c.claimed_by == worker_id)
            .values(status="pending", claimed_by=None, claimed_until=None, next_attempt_at=now)
        )
        return int(result.rowcount or 0)

    async def requeue(self, message_id: str, now: datetime) -> bool:
        """Give a dead message another chance (operator action); attempts restart at 0."""
        o = t.outbox
        result = await self._execute(
            sa.update(o)
            .where(o.c.id == message_id, o.c.status == "dead")
            .values(status="pending", next_attempt_at=now, attempts=0)
        )
        return result.rowcount == 1

    async def get(self, message_id: str) -> OutboxMessage | None:
        o = t.outbox
        stmt = self._built(("get",), lambda: sa.select(o).where(o.c.id == sa.bindparam("key")))
        row = (await self._execute(stmt, {"key": message_id})).first()
        return None if row is None else _outbox(row)

    async def get_by_key(self, message_key: str) -> OutboxMessage | None:
        o = t.outbox
        row = (await self._execute(sa.select(o).where(o.c.message_key == message_key))).first()
        return None if row is None else _outbox(row)

    async def list(
        self,
        *,
        status: OutboxStatus | Sequence[OutboxStatus] | None = None,
        process_kind: str | None = None,
        process_id: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> list[OutboxMessage]:
        o = t.outbox
        statuses = None if status is None else (status,) if isinstance(status, str) else tuple(status)
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("limit and offset must not be negative")
        # one statement per shape of the filters (the runtime asks this per outgoing message)
        shape = (statuses is not None, process_kind is not None, process_id is not None, limit is not None)

        def build() -> sa.Select[Any]:
            stmt = sa.select(o)
            if statuses is not None:
                stmt = stmt.where(o.c.status.in_(sa.bindparam("statuses", expanding=True)))
            if process_kind is not None:
                stmt = stmt.where(o.c.process_kind == sa.bindparam("kind"))
            if process_id is not None:
                stmt = stmt.where(o.c.process_id == sa.bindparam("process"))
            stmt = stmt.order_by(o.c.created_at, o.c.seq, o.c.id)
            if limit is not None:
                stmt = stmt.limit(sa.bindparam("page_limit", type_=sa.Integer))
            return stmt.offset(sa.bindparam("page_offset", type_=sa.Integer))

        params = {
            "statuses": statuses,
            "kind": process_kind,
            "process": process_id,
            "page_limit": limit,
            "page_offset": offset,
        }
        return [_outbox(row) for row in await self._execute(self._built(("list", *shape), build), params)]

    async def count_by_status(self) -> dict[OutboxStatus, int]:
        o = t.outbox
        result = await self._execute(sa.select(o.c.status, sa.func.count().label("n")).group_by(o.c.status))
        counts: dict[OutboxStatus, int] = dict.fromkeys(OUTBOX_STATUSES, 0)
        for row in result:
            counts[row._mapping["status"]] = int(row._mapping["n"])
        return counts

    async def next_due_at(self) -> datetime | None:
        """When the earliest message becomes due (pending or claim expiry), for a sleeping dispatcher."""
        o = t.outbox

        def build() -> sa.Select[Any]:
            pending = (
                sa.select(sa.func.min(o.c.next_attempt_at)).where(o.c.status == "pending").scalar_subquery()
            )
            expiring = (
                sa.select(sa.func.min(o.c.claimed_until)).where(o.c.status == "in_flight").scalar_subquery()
            )
            return sa.select(pending.label("p"), expiring.label("e"))

        row = (await self._execute(self._built(("next_due_at",), build))).one()
        times = [time for time in (row.p, row.e) if time is not None]
        return min(times) if times else None

    async def purge_sent(self, older_than: datetime) -> int:
        o = t.outbox
        result = await self._execute(sa.delete(o).where(o.c.status == "sent", o.c.sent_at < older_than))
        return result.rowcount


# --------------------------------------------------------------------------- usage receipts


class ReceiptRepository(_Repository):
    """Signed usage receipts by transfer and chain (one chain per provider process)."""

    async def add(
        self, transfer_id: str, chain: str, seq_from: int, seq_to: int, token: str, now: datetime
    ) -> bool:
        """Keep one receipt; False if that chain's receipt from ``seq_from`` is already kept."""
        r = t.receipts
        result = await self._execute(
            self._insert(r)
            .values(
                transfer_id=transfer_id,
                chain=chain,
                seq_from=seq_from,
                seq_to=seq_to,
                token=token,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=[r.c.transfer_id, r.c.chain, r.c.seq_from])
            .returning(r.c.seq_from)
        )
        return result.first() is not None

    async def list(self, transfer_id: str, limit: int = 10_000) -> list[str]:
        """A transfer's receipts, each chain's in order."""
        r = t.receipts
        stmt = (
            sa.select(r.c.token)
            .where(r.c.transfer_id == transfer_id)
            .order_by(r.c.chain, r.c.seq_from)
            .limit(limit)
        )
        return [row[0] for row in await self._execute(stmt)]

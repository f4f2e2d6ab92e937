"""The broker's tables, beside the connector's in the same database (connector.store.Store:
SQLite embedded, PostgreSQL for replicas), and keyword search in the database itself.

Tables (their own SQLAlchemy metadata, created by :func:`create_schema`, idempotent):

* ``broker_registrations``: one row per registered connector (id derived from the connector
  IRI), its owner (the registering DAT's subject), DSP endpoint, the listed SHACL violations
  and the registration / last renewal times (epoch seconds);
* ``broker_descriptions``: each registration's description as sorted N-Triples (the SPARQL
  indexes are built from these);
* ``broker_changes``: a row per registration saved or removed, for the replicas' indexes;
* ``broker_datasets``: the datasets read from the descriptions (``source`` ``description``) and
  from the connectors' crawled DSP catalogs (``source`` ``catalog``, with the dataset as the
  catalog listed it in ``wire``), with the indexed text; a description's dataset that the crawled
  catalog lists too is ``shadowed`` (left out of search: the live catalog's entry stands);
* ``broker_dataset_terms``: (kind, value) filter terms of each dataset (theme, license, format,
  publisher, policy template), matched exactly;
* ``broker_crawls``: each registration's crawl (connector.broker.crawl): when it is due (a lease
  while it runs, so replicas never crawl one connector at once), its failures (backoff), the
  crawled catalog's head (its id, participant and services) and triples.

Keyword search: SQLite FTS5 (``broker_datasets_fts``, rowid = the dataset's pk, kept in step in
the same transaction); PostgreSQL a generated ``tsvector`` column with a GIN index. Both use the
simple configuration (no stemming); every word must match, exactly, or as a prefix when it ends
in ``*`` (``motor*``: prefix matching of short words costs, so it is asked for, not implied).
User text never reaches SQL: it is cut into word tokens (``\\w+``) and bound as a parameter.

Availability is computed, not swept: an entry whose ``renewed_at`` is older than the configured
time is unavailable, the same answer on every replica without a background writer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from connector.broker.description import DatasetEntry, Described
from connector.store import Store

metadata = sa.MetaData()

registrations = sa.Table(
    "broker_registrations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("connector", sa.Text, nullable=False, unique=True),
    sa.Column("owner", sa.Text, nullable=False, index=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("endpoint", sa.Text, nullable=False),
    sa.Column("violations", sa.JSON, nullable=False),
    sa.Column("registered_at", sa.Float, nullable=False),
    sa.Column("renewed_at", sa.Float, nullable=False),
)

# the description apart from the registration row: search reads registration rows for every hit,
# and a description of 100 datasets (~100 KB) would make each such read walk its overflow pages
descriptions = sa.Table(
    "broker_descriptions",
    metadata,
    sa.Column(
        "registration_id",
        sa.String(64),
        sa.ForeignKey("broker_registrations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("ntriples", sa.Text, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),  # SHA-256 of ntriples: heartbeats compare it
)

datasets = sa.Table(
    "broker_datasets",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "registration_id",
        sa.String(64),
        sa.ForeignKey("broker_registrations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("dataset_id", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("keywords", sa.JSON, nullable=False),
    sa.Column("keyword_text", sa.Text, nullable=False),
    sa.Column("publisher", sa.Text, nullable=False),
    sa.Column("source", sa.String(16), nullable=False, server_default="description"),
    sa.Column("shadowed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("wire", sa.JSON, nullable=True),  # last: search never reads it
)
# columns added after the first broker release: (name, SQLite DDL, PostgreSQL DDL)
_ADDED = (
    ("source", "TEXT NOT NULL DEFAULT 'description'", "VARCHAR(16) NOT NULL DEFAULT 'description'"),
    ("shadowed", "BOOLEAN NOT NULL DEFAULT 0", "BOOLEAN NOT NULL DEFAULT false"),
    ("wire", "JSON", "JSON"),
)

crawls = sa.Table(
    "broker_crawls",
    metadata,
    sa.Column(
        "registration_id",
        sa.String(64),
        sa.ForeignKey("broker_registrations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("next_at", sa.Float, nullable=False, index=True),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("attempted_at", sa.Float, nullable=True),
    sa.Column("crawled_at", sa.Float, nullable=True),  # the last successful crawl
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("datasets", sa.Integer, nullable=False, server_default="0"),
    sa.Column("pages", sa.Integer, nullable=False, server_default="0"),
    sa.Column("head", sa.JSON, nullable=True),  # the catalog without its datasets
    sa.Column("ntriples", sa.Text, nullable=True),
)

dataset_terms = sa.Table(
    "broker_dataset_terms",
    metadata,
    sa.Column(
        "dataset_pk",
        sa.Integer,
        sa.ForeignKey("broker_datasets.pk", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index("broker_dataset_terms_kind_value", "kind", "value"),
)

# one row per registration change (saved or removed), for the other replicas' SPARQL indexes
changes = sa.Table(
    "broker_changes",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("registration_id", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False, index=True),
)

_FTS_SQLITE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS broker_datasets_fts USING fts5("
    "title, description, keywords, publisher, "
    "tokenize = 'unicode61 remove_diacritics 2')"
)
_TSV = (
    "setweight(to_tsvector('simple', title), 'A') || "
    "setweight(to_tsvector('simple', keyword_text), 'B') || "
    "setweight(to_tsvector('simple', description), 'C') || "
    "setweight(to_tsvector('simple', publisher), 'D')"
)
_PG_DDL = (
    f"ALTER TABLE broker_datasets ADD COLUMN IF NOT EXISTS search tsvector "
    f"GENERATED ALWAYS AS ({_TSV}) STORED",
    "CREATE INDEX IF NOT EXISTS broker_datasets_search ON broker_datasets USING GIN (search)",
)
_PG_LOCK_KEY = 0x62726F6B6572  # "broker": serialises schema creation of concurrent replicas

MAX_TOKENS = 16
MAX_TOKEN_CHARS = 64
_WORD = re.compile(r"(\w+)(\*?)")


def registration_id(connector: str) -> str:
    """The registration's id: the same connector IRI always gets the same id."""
    return hashlib.sha256(connector.encode("utf-8")).hexdigest()[:32]


def _digest(ntriples: str) -> str:
    return hashlib.sha256(ntriples.encode("utf-8")).hexdigest()


def tokens(text: str) -> list[tuple[str, bool]]:
    """The words of a keyword query, each with whether it ends in ``*`` (a prefix); at most
    MAX_TOKENS, each cut to MAX_TOKEN_CHARS."""
    return [(w[:MAX_TOKEN_CHARS].lower(), bool(star)) for w, star in _WORD.findall(text)[:MAX_TOKENS]]


async def create_schema(store: Store) -> None:
    async with store.transaction() as tx:
        if store.dialect == "postgresql":
            await tx.execute(sa.text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=_PG_LOCK_KEY))
            await store.ensure_schema(tx)  # a broker on its own schema (?schema=) creates it
        await tx.connection.run_sync(metadata.create_all)
        if store.dialect == "sqlite":
            have = {r.name for r in await tx.connection.exec_driver_sql("PRAGMA table_info(broker_datasets)")}
            for name, lite, _ in _ADDED:
                if name not in have:
                    await tx.connection.exec_driver_sql(
                        f"ALTER TABLE broker_datasets ADD COLUMN {name} {lite}"
                    )
            await tx.connection.exec_driver_sql(_FTS_SQLITE)
        else:
            for name, _, pg in _ADDED:
                await tx.connection.exec_driver_sql(
                    f"ALTER TABLE broker_datasets ADD COLUMN IF NOT EXISTS {name} {pg}"
                )
            for ddl in _PG_DDL:
                await tx.connection.exec_driver_sql(ddl)


@dataclass(frozen=True, slots=True)
class Registration:
    id: str
    connector: str
    owner: str
    title: str
    endpoint: str
    violations: tuple[str, ...]
    registered_at: float
    renewed_at: float
    datasets: int = 0

    def available(self, now: float, ttl: float) -> bool:
        return self.renewed_at >= now - ttl

    def view(self, now: float, ttl: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "connector": self.connector,
            "participant": self.owner,
            "title": self.title,
            "endpoint": self.endpoint,
            "datasets": self.datasets,
            "violations": list(self.violations),
            "registeredAt": self.registered_at,
            "renewedAt": self.renewed_at,
            "available": self.available(now, ttl),
        }


def _registration(row: Any, count: int = 0) -> Registration:
    return Registration(
        id=row.id,
        connector=row.connector,
        owner=row.owner,
        title=row.title,
        endpoint=row.endpoint,
        violations=tuple(row.violations or ()),
        registered_at=row.registered_at,
        renewed_at=row.renewed_at,
        datasets=count,
    )


async def get(store: Store, reg_id: str) -> Registration | None:
    async with store.transaction(readonly=True) as tx:
        row = (await tx.execute(sa.select(registrations).where(registrations.c.id == reg_id))).first()
        if row is None:
            return None
        count = (
            await tx.execute(
                sa.select(sa.func.count()).select_from(datasets).where(datasets.c.registration_id == reg_id)
            )
        ).scalar_one()
        return _registration(row, count)


async def list_registrations(store: Store) -> list[Registration]:
    counts = (
        sa.select(datasets.c.registration_id, sa.func.count().label("n"))
        .group_by(datasets.c.registration_id)
        .subquery()
    )
    stmt = (
        sa.select(registrations, sa.func.coalesce(counts.c.n, 0).label("n"))
        .outerjoin(counts, counts.c.registration_id == registrations.c.id)
        .order_by(registrations.c.title, registrations.c.id)
    )
    async with store.transaction(readonly=True) as tx:
        return [_registration(r, r.n) for r in (await tx.execute(stmt)).all()]


async def count_registrations(store: Store, *, now: float, ttl: float) -> tuple[int, int]:
    """(available, unavailable) registrations: renewed within ``ttl`` of ``now``, or not."""
    fresh = registrations.c.renewed_at >= now - ttl
    stmt = sa.select(
        sa.func.sum(sa.case((fresh, 1), else_=0)).label("available"),
        sa.func.sum(sa.case((fresh, 0), else_=1)).label("unavailable"),
    )
    async with store.transaction(readonly=True) as tx:
        row = (await tx.execute(stmt)).one()
    return int(row.available or 0), int(row.unavailable or 0)


async def all_ntriples(store: Store) -> list[tuple[str, str]]:
    """(registration id, N-Triples) of every registration (its description and its crawled
    catalog), for the SPARQL index."""
    stmt = sa.select(
        descriptions.c.registration_id, descriptions.c.ntriples, crawls.c.ntriples.label("crawled")
    ).outerjoin(crawls, crawls.c.registration_id == descriptions.c.registration_id)
    async with store.transaction(readonly=True) as tx:
        return [(r.registration_id, r.ntriples + (r.crawled or "")) for r in await tx.execute(stmt)]


async def ntriples_of(store: Store, reg_id: str) -> str | None:
    """The registration's triples (description and crawled catalog); None if it is gone."""
    stmt = (
        sa.select(descriptions.c.ntriples, crawls.c.ntriples.label("crawled"))
        .outerjoin(crawls, crawls.c.registration_id == descriptions.c.registration_id)
        .where(descriptions.c.registration_id == reg_id)
    )
    async with store.transaction(readonly=True) as tx:
        row = (await tx.execute(stmt)).first()
    return None if row is None else row.ntriples + (row.crawled or "")


class OwnedByAnother(Exception):
    """The connector is registered by another participant."""

    status = 403

    def __init__(self, owner: str) -> None:
        self.owner = owner
        super().__init__(
            f"this connector is registered by another participant ({owner}); only "
            "its owner may replace or remove it"
        )


async def _delete_datasets(tx: Any, dialect: str, reg_id: str, source: str | None = None) -> None:
    """The registration's datasets from ``source`` (None: from both)."""
    which = [datasets.c.registration_id == reg_id]
    if source is not None:
        which.append(datasets.c.source == source)
    pks = sa.select(datasets.c.pk).where(*which)
    if dialect == "sqlite":
        await tx.execute(sa.delete(_fts).where(_fts.c.rowid.in_(pks)))
    await tx.execute(sa.delete(dataset_terms).where(dataset_terms.c.dataset_pk.in_(pks)))
    await tx.execute(sa.delete(datasets).where(*which))


async def _shadow(tx: Any, reg_id: str) -> None:
    """Mark the description's datasets that the crawled catalog lists too."""
    crawled = datasets.alias("crawled")
    await tx.execute(
        sa.update(datasets)
        .where(datasets.c.registration_id == reg_id, datasets.c.source == "description")
        .values(
            shadowed=sa.exists().where(
                crawled.c.registration_id == reg_id,
                crawled.c.source == "catalog",
                crawled.c.dataset_id == datasets.c.dataset_id,
            )
        )
    )


async def save(
    store: Store, described: Described, *, owner: str, ntriples: str, violations: Sequence[str], now: float
) -> tuple[Registration, bool]:
    """Insert or replace the registration; (it, whether it is new). OwnedByAnother if the
    connector is someone else's (checked in the same transaction as the write)."""
    reg_id = registration_id(described.connector)
    async with store.transaction() as tx:
        lock = sa.select(registrations.c.owner, registrations.c.registered_at).where(
            registrations.c.id == reg_id
        )
        if store.dialect == "postgresql":
            lock = lock.with_for_update()
        existing = (await tx.execute(lock)).first()
        if existing is not None and existing.owner != owner:
            raise OwnedByAnother(existing.owner)
        values = {
            "connector": described.connector,
            "owner": owner,
            "title": described.title,
            "endpoint": described.endpoint,
            "violations": list(violations),
            "renewed_at": now,
        }
        if existing is None:
            await tx.execute(sa.insert(registrations).values(id=reg_id, registered_at=now, **values))
            await tx.execute(
                sa.insert(descriptions).values(
                    registration_id=reg_id, ntriples=ntriples, digest=_digest(ntriples)
                )
            )
            registered_at = now
        else:
            await _delete_datasets(tx, store.dialect, reg_id, "description")
            await tx.execute(sa.update(registrations).where(registrations.c.id == reg_id).values(**values))
            await tx.execute(
                sa.update(descriptions)
                .where(descriptions.c.registration_id == reg_id)
                .values(ntriples=ntriples, digest=_digest(ntriples))
            )
            registered_at = existing.registered_at
        if described.datasets:
            await tx.connection.run_sync(_insert_datasets, store.dialect, reg_id, described.datasets)
            await _shadow(tx, reg_id)
        await _crawl_soon(tx, reg_id, now)
        await tx.execute(sa.insert(changes).values(registration_id=reg_id, at=now))
    reg = Registration(
        id=reg_id,
        connector=described.connector,
        owner=owner,
        title=described.title,
        endpoint=described.endpoint,
        violations=tuple(violations),
        registered_at=registered_at,
        renewed_at=now,
        datasets=len(described.datasets),
    )
    return reg, existing is None


_fts = sa.table(
    "broker_datasets_fts",
    sa.column("rowid"),
    sa.column("title"),
    sa.column("description"),
    sa.column("keywords"),
    sa.column("publisher"),
    sa.column("broker_datasets_fts"),
)


def _insert_datasets(
    connection: sa.Connection,
    dialect: str,
    reg_id: str,
    items: Sequence[DatasetEntry],
    wire: Mapping[str, dict[str, Any]] | None = None,
) -> None:
    """Executemany inserts (SQLAlchemy batches them into multi-row statements, compiled once);
    pks matched back by dataset id (unique per description or catalog). With ``wire`` (dataset
    id -> the dataset as its catalog lists it) the rows are a crawled catalog's. Sync: run with
    ``run_sync``."""
    source = "description" if wire is None else "catalog"
    rows = connection.execute(
        sa.insert(datasets).returning(datasets.c.pk, datasets.c.dataset_id),
        [
            {
                "registration_id": reg_id,
                "dataset_id": d.id,
                "title": d.title,
                "description": d.description,
                "keywords": list(d.keywords),
                "keyword_text": " ".join(d.keywords),
                "publisher": d.publisher,
                "source": source,
                "shadowed": False,
                "wire": None if wire is None else wire[d.id],
            }
            for d in items
        ],
    )
    pks = {r.dataset_id: r.pk for r in rows}
    terms = [{"dataset_pk": pks[d.id], "kind": k, "value": v} for d in items for k, v in d.terms()]
    if terms:
        connection.execute(sa.insert(dataset_terms), terms)
    if dialect == "sqlite":
        connection.execute(
            sa.insert(_fts),
            [
                {
                    "rowid": pks[d.id],
                    "title": d.title,
                    "description": d.description,
                    "keywords": " ".join(d.keywords),
                    "publisher": d.publisher,
                }
                for d in items
            ],
        )


async def renew_unchanged(
    store: Store, connector: str, owner: str, ntriples: str, now: float
) -> Registration | None:
    """A heartbeat with the description already stored: mark it renewed and return it; None if
    there is no such registration of this owner with exactly this description."""
    reg_id = registration_id(connector)
    async with store.transaction() as tx:
        result = await tx.execute(
            sa.update(registrations)
            .where(
                registrations.c.id == reg_id,
                registrations.c.owner == owner,
                sa.exists().where(
                    descriptions.c.registration_id == reg_id, descriptions.c.digest == _digest(ntriples)
                ),
            )
            .values(renewed_at=now)
        )
        if not result.rowcount:
            return None
    return await get(store, reg_id)


async def delete(store: Store, reg_id: str, owner: str, now: float) -> None:
    """Remove a registration; KeyError if there is none, OwnedByAnother if not the owner's."""
    async with store.transaction() as tx:
        row = (await tx.execute(sa.select(registrations.c.owner).where(registrations.c.id == reg_id))).first()
        if row is None:
            raise KeyError(reg_id)
        if row.owner != owner:
            raise OwnedByAnother(row.owner)
        await _delete_datasets(tx, store.dialect, reg_id)
        await tx.execute(sa.delete(crawls).where(crawls.c.registration_id == reg_id))
        await tx.execute(sa.delete(descriptions).where(descriptions.c.registration_id == reg_id))
        await tx.execute(sa.delete(registrations).where(registrations.c.id == reg_id))
        await tx.execute(sa.insert(changes).values(registration_id=reg_id, at=now))


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    registration_id: str
    ntriples: str | None  # None: the registration is gone


async def changes_since(store: Store, since: float) -> list[Change]:
    """Registration changes recorded at or after ``since`` (epoch seconds), oldest first, each
    with the registration's current description."""
    stmt = (
        sa.select(
            changes.c.seq,
            changes.c.registration_id,
            descriptions.c.ntriples,
            crawls.c.ntriples.label("crawled"),
        )
        .outerjoin(descriptions, descriptions.c.registration_id == changes.c.registration_id)
        .outerjoin(crawls, crawls.c.registration_id == changes.c.registration_id)
        .where(changes.c.at >= since)
        .order_by(changes.c.seq)
    )
    async with store.transaction(readonly=True) as tx:
        return [
            Change(r.seq, r.registration_id, None if r.ntriples is None else r.ntriples + (r.crawled or ""))
            for r in await tx.execute(stmt)
        ]


async def prune_changes(store: Store, before: float) -> int:
    async with store.transaction() as tx:
        return int((await tx.execute(sa.delete(changes).where(changes.c.at < before))).rowcount)


# --------------------------------------------------------------------------- search


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str = ""
    filters: Mapping[str, Sequence[str]] | None = None  # kind -> values (any of them)
    limit: int = 20
    offset: int = 0
    include_unavailable: bool = False
    sort: str = "relevance"  # one of SORTS


SORTS = ("relevance", "title", "-title")


@dataclass(frozen=True, slots=True)
class SearchHit:
    dataset_id: str
    title: str
    description: str
    keywords: tuple[str, ...]
    publisher: str
    registration_id: str
    connector: str
    participant: str
    endpoint: str
    available: bool
    source: str = "description"  # or "catalog": found in the connector's crawled catalog

    def view(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset_id,
            "title": self.title,
            "description": self.description,
            "keywords": list(self.keywords),
            "publisher": self.publisher,
            "registration": self.registration_id,
            "connector": self.connector,
            "participant": self.participant,
            "endpoint": self.endpoint,
            "available": self.available,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class SearchPage:
    total: int
    hits: tuple[SearchHit, ...]


async def search(store: Store, query: SearchQuery, *, now: float, ttl: float) -> SearchPage:
    words = tokens(query.text)
    fresh = registrations.c.renewed_at >= now - ttl
    where: list[Any] = [datasets.c.shadowed == sa.false()]
    if not query.include_unavailable:
        where.append(fresh)
    for kind, values in (query.filters or {}).items():
        where.append(
            sa.exists().where(
                dataset_terms.c.dataset_pk == datasets.c.pk,
                dataset_terms.c.kind == kind,
                dataset_terms.c.value.in_(list(values)),
            )
        )
    joined = datasets.join(registrations, registrations.c.id == datasets.c.registration_id)
    rank: Any = sa.literal(0)
    if words:
        if store.dialect == "sqlite":
            # \w+ tokens: no FTS5 syntax inside the quotes
            match = " ".join(f'"{w}"' + ("*" if prefix else "") for w, prefix in words)
            joined = joined.join(_fts, _fts.c.rowid == datasets.c.pk)
            where.append(_fts.c.broker_datasets_fts.op("MATCH")(sa.bindparam("fts_q", match)))
            # bm25: smaller is better; weights as PostgreSQL's A-D
            rank = sa.func.bm25(sa.literal_column("broker_datasets_fts"), 8.0, 2.0, 4.0, 1.0)
        else:
            tsq = sa.func.to_tsquery(
                "simple",
                sa.bindparam("ts_q", " & ".join(w + (":*" if prefix else "") for w, prefix in words)),
            )
            search_col: Any = sa.literal_column("broker_datasets.search")
            where.append(search_col.op("@@")(tsq))
            rank = -sa.func.ts_rank(search_col, tsq)
    columns = [
        datasets.c.dataset_id,
        datasets.c.title,
        datasets.c.description,
        datasets.c.keywords,
        datasets.c.publisher,
        registrations.c.id.label("rid"),
        registrations.c.connector,
        registrations.c.owner,
        registrations.c.endpoint,
        fresh.label("fresh"),
        datasets.c.source,
    ]
    windowed = store.dialect == "postgresql"
    if windowed:
        # the total of all hits in the same scan as the page (a window over the matches,
        # before LIMIT): one query, one pass over the index and one round trip, where a
        # separate count read them again (SQLite's bm25 cannot sit beside a window function)
        columns.append(sa.func.count().over().label("total"))
    order: list[Any] = [rank, datasets.c.title]
    if query.sort == "title":
        order = [datasets.c.title]
    elif query.sort == "-title":
        order = [datasets.c.title.desc()]
    stmt = (
        sa.select(*columns)
        .select_from(joined)
        .where(*where)
        .order_by(*order, datasets.c.dataset_id, datasets.c.pk)
        .limit(query.limit)
        .offset(query.offset)
    )
    count = sa.select(sa.func.count()).select_from(joined).where(*where)
    async with store.transaction(readonly=True) as tx:
        rows = (await tx.execute(stmt)).all()
        # past the last page no row carries the total: ask for it alone
        total = rows[0].total if windowed and rows else (await tx.execute(count)).scalar_one()
    hits = tuple(
        SearchHit(
            dataset_id=r.dataset_id,
            title=r.title,
            description=r.description,
            keywords=tuple(r.keywords or ()),
            publisher=r.publisher,
            registration_id=r.rid,
            connector=r.connector,
            participant=r.owner,
            endpoint=r.endpoint,
            available=bool(r.fresh),
            source=r.source,
        )
        for r in rows
    )
    return SearchPage(total=int(total), hits=hits)


# --------------------------------------------------------------------------- crawls


async def _crawl_soon(tx: Any, reg_id: str, now: float) -> None:
    """A (re-)registration makes the connector's crawl due now, unless it is failing (then its
    backoff stands: re-registering never hammers a connector that cannot answer)."""
    row = (await tx.execute(sa.select(crawls.c.failures).where(crawls.c.registration_id == reg_id))).first()
    if row is None:
        await tx.execute(sa.insert(crawls).values(registration_id=reg_id, next_at=now))
    elif not row.failures:
        await tx.execute(sa.update(crawls).where(crawls.c.registration_id == reg_id).values(next_at=now))


@dataclass(frozen=True, slots=True)
class DueCrawl:
    registration_id: str
    endpoint: str
    owner: str
    failures: int


async def due_crawls(store: Store, *, now: float, ttl: float, limit: int) -> list[DueCrawl]:
    """Crawls of available connectors due at ``now``, the longest waiting first."""
    stmt = (
        sa.select(
            crawls.c.registration_id, crawls.c.failures, registrations.c.endpoint, registrations.c.owner
        )
        .join(registrations, registrations.c.id == crawls.c.registration_id)
        .where(crawls.c.next_at <= now, registrations.c.renewed_at >= now - ttl)
        .order_by(crawls.c.next_at)
        .limit(limit)
    )
    async with store.transaction(readonly=True) as tx:
        return [DueCrawl(r.registration_id, r.endpoint, r.owner, r.failures) for r in await tx.execute(stmt)]


async def claim_crawl(store: Store, reg_id: str, *, now: float, lease: float) -> bool:
    """Take the due crawl (its next_at moves past the lease); False if another replica (or an
    earlier claim) has it."""
    async with store.transaction() as tx:
        result = await tx.execute(
            sa.update(crawls)
            .where(crawls.c.registration_id == reg_id, crawls.c.next_at <= now)
            .values(next_at=now + lease, attempted_at=now)
        )
        return bool(result.rowcount)


async def save_crawl(
    store: Store,
    reg_id: str,
    *,
    head: dict[str, Any],
    items: Sequence[DatasetEntry],
    wire: Mapping[str, dict[str, Any]],
    ntriples: str,
    pages: int,
    now: float,
    next_at: float,
) -> bool:
    """Replace the registration's crawled datasets; False if it is gone meanwhile."""
    async with store.transaction() as tx:
        if (
            await tx.execute(sa.select(crawls.c.registration_id).where(crawls.c.registration_id == reg_id))
        ).first() is None:
            return False
        await _delete_datasets(tx, store.dialect, reg_id, "catalog")
        if items:
            await tx.connection.run_sync(_insert_datasets, store.dialect, reg_id, items, wire)
        await _shadow(tx, reg_id)
        await tx.execute(
            sa.update(crawls)
            .where(crawls.c.registration_id == reg_id)
            .values(
                next_at=next_at,
                failures=0,
                crawled_at=now,
                error=None,
                datasets=len(items),
                pages=pages,
                head=head,
                ntriples=ntriples,
            )
        )
        await tx.execute(sa.insert(changes).values(registration_id=reg_id, at=now))
    return True


async def crawl_failed(store: Store, reg_id: str, *, error: str, failures: int, next_at: float) -> None:
    """Record a failed crawl; the datasets of the last good one stay indexed."""
    async with store.transaction() as tx:
        await tx.execute(
            sa.update(crawls)
            .where(crawls.c.registration_id == reg_id)
            .values(failures=failures, error=error[:1000], next_at=next_at)
        )


@dataclass(frozen=True, slots=True)
class CrawlStatus:
    registration_id: str
    connector: str
    endpoint: str
    next_at: float
    failures: int
    attempted_at: float | None
    crawled_at: float | None
    error: str | None
    datasets: int
    pages: int

    def view(self) -> dict[str, Any]:
        return {
            "registration": self.registration_id,
            "connector": self.connector,
            "endpoint": self.endpoint,
            "nextAt": self.next_at,
            "failures": self.failures,
            "attemptedAt": self.attempted_at,
            "crawledAt": self.crawled_at,
            "error": self.error,
            "datasets": self.datasets,
            "pages": self.pages,
            "state": "failing"
            if self.failures
            else ("crawled" if self.crawled_at is not None else "pending"),
        }


async def crawl_statuses(store: Store) -> list[CrawlStatus]:
    stmt = (
        sa.select(
            crawls.c.registration_id,
            crawls.c.next_at,
            crawls.c.failures,
            crawls.c.attempted_at,
            crawls.c.crawled_at,
            crawls.c.error,
            crawls.c.datasets,
            crawls.c.pages,
            registrations.c.connector,
            registrations.c.endpoint,
        )
        .join(registrations, registrations.c.id == crawls.c.registration_id)
        .order_by(registrations.c.connector)
    )
    async with store.transaction(readonly=True) as tx:
        return [
            CrawlStatus(
                r.registration_id,
                r.connector,
                r.endpoint,
                r.next_at,
                r.failures,
                r.attempted_at,
                r.crawled_at,
                r.error,
                r.datasets,
                r.pages,
            )
            for r in await tx.execute(stmt)
        ]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One crawled dataset as its catalog listed it, with the catalog's head."""

    registration_id: str
    dataset_id: str
    wire: dict[str, Any]
    head: dict[str, Any]


async def crawled_page(
    store: Store, *, after: tuple[str, str] | None, limit: int, now: float, ttl: float
) -> list[CatalogEntry]:
    """Crawled datasets of available connectors by (registration, dataset id), after ``after``."""
    where: list[Any] = [datasets.c.source == "catalog", registrations.c.renewed_at >= now - ttl]
    if after is not None:
        where.append(
            sa.tuple_(datasets.c.registration_id, datasets.c.dataset_id)
            > sa.tuple_(sa.literal(after[0]), sa.literal(after[1]))
        )
    stmt = (
        sa.select(datasets.c.registration_id, datasets.c.dataset_id, datasets.c.wire, crawls.c.head)
        .join(registrations, registrations.c.id == datasets.c.registration_id)
        .join(crawls, crawls.c.registration_id == datasets.c.registration_id)
        .where(*where)
        .order_by(datasets.c.registration_id, datasets.c.dataset_id)
        .limit(limit)
    )
    async with store.transaction(readonly=True) as tx:
        return [
            CatalogEntry(r.registration_id, r.dataset_id, r.wire or {}, r.head or {})
            for r in await tx.execute(stmt)
        ]

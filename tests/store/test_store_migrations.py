"""Migrations: idempotent, safe when several processes start at once, and the schema they build
is the one `schema.py` describes."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from store_testlib import NOW, PG_ENV, PG_SKIP_REASON, OpenStore, asyncpg_dsn

from connector.store import SchemaTooNew, Store
from connector.store import schema as tables
from connector.store.migrations import LATEST


async def test_migrate_is_idempotent(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.schema_version() == 0
    assert await store.migrate() == LATEST
    assert await store.migrate() == LATEST
    assert await store.schema_version() == LATEST
    async with store.transaction(readonly=True) as tx:
        versions = (await tx.execute(sa.select(tables.schema_version.c.version))).scalars().all()
    assert sorted(versions) == list(range(1, LATEST + 1))


async def test_concurrent_migrate_from_separate_pools(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(3)]
    results = await asyncio.gather(*(store.migrate() for store in stores))
    assert results == [LATEST] * 3
    async with stores[0].transaction(readonly=True) as tx:
        count = (await tx.execute(sa.select(sa.func.count()).select_from(tables.schema_version))).scalar_one()
    assert count == LATEST
    # And the schema works from every pool.
    for store in stores:
        assert await store.consume_use("agreement", "consumer", "target", None) is not None


async def test_built_schema_matches_schema_module(store: Store) -> None:
    def reflect(connection: Connection) -> dict[str, dict[str, bool]]:
        inspector = sa.inspect(connection)
        return {
            name: {column["name"]: bool(column["nullable"]) for column in inspector.get_columns(name)}
            for name in inspector.get_table_names()
        }

    async with store.transaction(readonly=True) as tx:
        reflected = await tx.connection.run_sync(reflect)
    expected = {
        table.name: {column.name: bool(column.nullable) for column in table.columns}
        for table in tables.metadata.sorted_tables
    }
    assert reflected == expected


async def test_refuses_a_schema_newer_than_the_code(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.execute(
            sa.insert(tables.schema_version).values(version=LATEST + 1, description="future", applied_at=NOW)
        )
    with pytest.raises(SchemaTooNew):
        await store.migrate()


async def test_sqlite_pragmas_and_plain_path(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "connector.db"
    store = await Store.open(str(path))
    try:
        assert store.dialect == "sqlite"
        await store.migrate()
        async with store.transaction(readonly=True) as tx:
            pragma = tx.connection.exec_driver_sql
            assert (await pragma("PRAGMA journal_mode")).scalar() == "wal"
            assert (await pragma("PRAGMA foreign_keys")).scalar() == 1
            # the driver waits only briefly on a lock; the store waits the rest asynchronously
            assert (await pragma("PRAGMA busy_timeout")).scalar() == 5
            assert store._busy_timeout == 30.0
        assert path.exists()
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "schema"),
    [
        (":memory:", None),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("mysql://u@h/db", None),
        ("sqlite:///x.db", "s"),
        ("postgresql://u@h/db?schema=a", "b"),
        ("postgresql://u@h/db?schema=bad;name", None),
        ("postgresql://u@h/db", 'x"; DROP TABLE y; --'),
    ],
)
async def test_open_rejects_bad_urls(url: str, schema: str | None) -> None:
    with pytest.raises(ValueError):
        await Store.open(url, schema=schema)


@pytest.mark.postgres
async def test_postgres_migrate_creates_a_missing_schema() -> None:
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.skip(PG_SKIP_REASON)
    schema = f"test_store_{uuid.uuid4().hex[:16]}"
    stores = [await Store.open(server, schema=schema) for _ in range(2)]
    try:
        # Two processes starting at once on an empty database: the advisory lock serialises them.
        assert await asyncio.gather(*(store.migrate() for store in stores)) == [LATEST, LATEST]
        assert stores[0].schema == schema
        async with stores[1].transaction(readonly=True) as tx:
            current = (await tx.execute(sa.text("SELECT current_schema()"))).scalar()
        assert current == schema
    finally:
        for store in stores:
            await store.close()
        admin = await asyncpg.connect(asyncpg_dsn(server))
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()

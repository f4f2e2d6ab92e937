"""Every store test runs on SQLite (a temporary file) and on PostgreSQL (its own schema).

PostgreSQL tests read the server URL from CONNECTOR_TEST_PG and are skipped without it. Each
test gets a uniquely named schema (set as the search_path of every connection) that is dropped
afterwards, so parallel workers never see each other's tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from store_testlib import PG_ENV, PG_SKIP_REASON, OpenStore, asyncpg_dsn

from connector.store import Store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'connector.db'}"
        return
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.skip(PG_SKIP_REASON)
    schema = f"test_store_{uuid.uuid4().hex[:16]}"
    dsn = asyncpg_dsn(server)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield sa.make_url(server).update_query_dict({"schema": schema}).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.fixture
async def open_store(db_url: str) -> AsyncIterator[OpenStore]:
    """Opens further `Store`s (separate connection pools) on the test's database; closes them all."""
    opened: list[Store] = []

    async def _open() -> Store:
        store = await Store.open(db_url)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    store = await open_store()
    await store.migrate()
    return store

"""The consumer side's tests run on a real store: SQLite (a temporary file) and PostgreSQL (its
own schema, when CONNECTOR_TEST_PG names a server; skipped otherwise)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from connector.store import Store

PG_ENV = "CONNECTOR_TEST_PG"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'connector.db'}", None
    else:
        server = os.environ.get(PG_ENV)
        if not server:
            pytest.skip(f"{PG_ENV} not set: the PostgreSQL variant needs a server")
        schema = f"test_consumer_{uuid.uuid4().hex[:16]}"
        dsn = sa.make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
        admin = await asyncpg.connect(dsn)
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        url = sa.make_url(server).update_query_dict({"schema": schema}).render_as_string(
            hide_password=False)
        drop = (admin, schema)
    s = await Store.open(url)
    try:
        await s.migrate()
        yield s
    finally:
        await s.close()
        if drop is not None:
            await drop[0].execute(f'DROP SCHEMA IF EXISTS "{drop[1]}" CASCADE')
            await drop[0].close()

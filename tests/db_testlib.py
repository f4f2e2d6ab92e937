"""The test database: a SQLite file, or a PostgreSQL schema of the test's own (CONNECTOR_TEST_PG).

Shared by tests/conftest.py's fixtures and by tests that need a schema outside a fixture."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
import sqlalchemy as sa

from connector.store import Store

PG_ENV = "CONNECTOR_TEST_PG"
PG_SKIP_REASON = f"{PG_ENV} not set: PostgreSQL tests need a server"
PG = os.environ.get(PG_ENV)

OpenStore = Callable[[], Awaitable[Store]]


def asyncpg_dsn(url: str) -> str:
    """The server URL in the form asyncpg.connect accepts."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def pg_schema(prefix: str) -> AsyncIterator[str]:
    """A store URL on a fresh schema (dropped afterwards); skips the test without a server."""
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.skip(PG_SKIP_REASON)
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield sa.make_url(server).update_query_dict({"schema": schema}).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()

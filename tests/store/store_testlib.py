"""Helpers of the store tests: the fixed clock and PostgreSQL URL handling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from connector.store import Store

PG_ENV = "CONNECTOR_TEST_PG"
PG_SKIP_REASON = f"{PG_ENV} not set: PostgreSQL tests need a server"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

OpenStore = Callable[[], Awaitable[Store]]


def asyncpg_dsn(url: str) -> str:
    """The server URL in the form asyncpg.connect accepts."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

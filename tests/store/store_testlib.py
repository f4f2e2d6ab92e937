"""Helpers of the store tests: the fixed clock (the database handling is tests/db_testlib.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from db_testlib import PG_ENV, PG_SKIP_REASON, OpenStore, asyncpg_dsn

__all__ = ["NOW", "PG_ENV", "PG_SKIP_REASON", "OpenStore", "asyncpg_dsn"]

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

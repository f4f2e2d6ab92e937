"""Storage faults in the store, produced for real in the drivers, never mocked: each becomes a
typed `StoreUnavailable` (classified by SQLite result code or PostgreSQL SQLSTATE), the
transaction is rolled back, and the same write succeeds on the same `Store` (no reopen, no
restart) once the cause is gone.

SQLite: SQLITE_FULL from ``PRAGMA max_page_count``, SQLITE_READONLY from ``PRAGMA query_only``
(a read-only file behaves the same for the driver; root ignores file modes, and the kernel
refuses to remount a file system read-only while the store holds its files open for writing),
SQLITE_BUSY from another connection holding the write lock, SQLITE_CANTOPEN from a database path
that is a directory. PostgreSQL (CONNECTOR_TEST_PG): a dedicated role and schema per test,
dropped afterwards; read-only sessions (``default_transaction_read_only`` on the role), revoked
privileges, the role's connection limit, and the role's own backends terminated. Nothing global
is stopped or changed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from storage_testlib import PgRole, closed_port, pg_role_fixture  # noqa: F401 (a fixture)

from connector.store import (
    Store,
    StoreBusy,
    StoreFull,
    StoreReadOnly,
    StoreUnavailable,
    StoreUnreachable,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Pragmas:
    """PRAGMAs applied to every connection the store checks out (the real driver's own limits)."""

    max_page_count: int = 1_000_000
    query_only: bool = False


async def sqlite_store(path: Path, pragmas: Pragmas, **options: Any) -> Store:
    store = await Store.open(f"sqlite:///{path}", **options)
    await store.migrate()

    @event.listens_for(store.engine, "checkout")
    def _apply(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pragmas.max_page_count}")
        dbapi_connection.execute(f"PRAGMA query_only = {int(pragmas.query_only)}")

    return store


async def add_receipt(store: Store, n: int, size: int = 100) -> None:
    async with store.transaction() as tx:
        await tx.receipts.add(f"urn:transfer:{n}", "c", 1, 1, "t" * size, NOW)
        await tx.receipts.add(f"urn:transfer:{n}", "c", 2, 2, "u" * size, NOW)


async def receipts(store: Store, n: int) -> list[str]:
    return await store.list_receipts(f"urn:transfer:{n}")


async def page_count(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("PRAGMA page_count").fetchone()[0])


async def test_sqlite_full_is_store_full_rolled_back_and_recovers(tmp_path: Path) -> None:
    pragmas = Pragmas()
    store = await sqlite_store(tmp_path / "c.db", pragmas)
    try:
        pragmas.max_page_count = await page_count(tmp_path / "c.db")
        with pytest.raises(StoreFull) as caught:
            await add_receipt(store, 1, size=50_000)
        fault = caught.value
        assert "SQLITE_FULL" in fault.reason and fault.retry_after > 0
        assert str(tmp_path) in fault.check and str(tmp_path) not in fault.reason
        assert isinstance(fault.__cause__, sa.exc.OperationalError)
        assert await receipts(store, 1) == []  # the first insert of the transaction is gone too
        pragmas.max_page_count = 1_000_000  # space is back: the same store, the same write
        await add_receipt(store, 1, size=50_000)
        assert len(await receipts(store, 1)) == 2
    finally:
        await store.close()


async def test_sqlite_read_only_is_store_read_only_and_recovers(tmp_path: Path) -> None:
    pragmas = Pragmas(query_only=True)
    store = await sqlite_store(tmp_path / "c.db", pragmas)
    try:
        with pytest.raises(StoreReadOnly) as caught:
            await add_receipt(store, 2)
        assert "SQLITE_READONLY" in caught.value.reason
        assert await receipts(store, 2) == []  # reads still work
        pragmas.query_only = False
        await add_receipt(store, 2)
        assert len(await receipts(store, 2)) == 2
    finally:
        await store.close()


async def test_sqlite_lock_held_past_the_busy_timeout_is_store_busy(tmp_path: Path) -> None:
    store = await sqlite_store(tmp_path / "c.db", Pragmas(), busy_timeout_seconds=0.2)
    other = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's writer
        with pytest.raises(StoreBusy) as caught:
            await add_receipt(store, 3)
        assert caught.value.retry_after >= 1
        other.execute("ROLLBACK")
        await add_receipt(store, 3)
        assert len(await receipts(store, 3)) == 2
    finally:
        other.close()
        await store.close()


async def test_sqlite_that_cannot_be_opened_is_unreachable(tmp_path: Path) -> None:
    (tmp_path / "c.db").mkdir()  # the database path is a directory
    with pytest.raises(StoreUnreachable) as caught:
        await Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    assert "SQLITE_CANTOPEN" in caught.value.reason


async def test_a_store_directory_that_cannot_be_made_is_a_fault(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailable) as caught:
        await Store.open(f"sqlite:///{tmp_path / 'file' / 'sub' / 'c.db'}")
    assert "directory" in caught.value.reason


async def test_postgresql_server_not_running_is_unreachable() -> None:
    with pytest.raises(StoreUnreachable) as caught:
        await Store.open(f"postgresql://nobody:secret@127.0.0.1:{closed_port()}/connector")
    assert "ECONNREFUSED" in caught.value.reason
    assert "secret" not in caught.value.check and "127.0.0.1" in caught.value.check


# ------------------------------------------------------------------ PostgreSQL


async def terminate_own_backends(pg: PgRole) -> None:
    """Only the dedicated role's sessions: the shared server keeps running."""
    await pg.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{pg.role}'")


async def write_until_it_works(store: Store, n: int, attempts: int = 3) -> int:
    """The write, retried as a client honouring 503 would; returns the faults seen first."""
    for seen in range(attempts):
        try:
            await add_receipt(store, n)
            return seen
        except StoreUnavailable:
            continue
    raise AssertionError(f"the write still failed after {attempts} attempts")


async def faults_of_two_writes(store: Store, n: int) -> list[StoreUnavailable]:
    """Two attempts of a write that must fail both times; the faults, in order."""
    faults: list[StoreUnavailable] = []
    for _ in range(2):
        with pytest.raises(StoreUnavailable) as caught:
            await add_receipt(store, n)
        faults.append(caught.value)
    return faults


@pytest.mark.postgres
async def test_postgresql_read_only_session_and_recovery(pg_role: PgRole) -> None:
    store = await Store.open(pg_role.url)
    try:
        await store.migrate()
        await pg_role.sql(f'ALTER ROLE "{pg_role.role}" SET default_transaction_read_only = on')
        await terminate_own_backends(pg_role)  # new sessions take the role's setting
        faults = await faults_of_two_writes(store, 10)
        # the pooled session was terminated: at most one request sees that, then read-only
        assert isinstance(faults[-1], StoreReadOnly) and "25006" in faults[-1].reason
        assert await receipts(store, 10) == []  # reads go on
        await pg_role.sql(f'ALTER ROLE "{pg_role.role}" RESET default_transaction_read_only')
        # a session refused as read-only is dropped with its fault; the one the read above
        # opened meanwhile is read-only too and goes at its first refusal: a retry succeeds
        assert await write_until_it_works(store, 10) <= 1
        assert len(await receipts(store, 10)) == 2
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgresql_revoked_privilege_is_read_only_then_recovers(pg_role: PgRole) -> None:
    store = await Store.open(pg_role.url)
    try:
        await store.migrate()
        await pg_role.sql(f'ALTER TABLE "{pg_role.schema}".receipts OWNER TO postgres')
        await pg_role.sql(f'GRANT SELECT ON "{pg_role.schema}".receipts TO "{pg_role.role}"')
        with pytest.raises(StoreReadOnly) as caught:
            await add_receipt(store, 11)
        assert "42501" in caught.value.reason
        await pg_role.sql(f'GRANT INSERT ON "{pg_role.schema}".receipts TO "{pg_role.role}"')
        assert await write_until_it_works(store, 11) <= 1
        assert len(await receipts(store, 11)) == 2
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgresql_connection_lost_and_no_slot_left(pg_role: PgRole) -> None:
    store = await Store.open(pg_role.url)
    try:
        await store.migrate()
        await add_receipt(store, 12)
        await terminate_own_backends(pg_role)
        # the pooled connection died while idle: at most one request sees it, then a new one
        assert await write_until_it_works(store, 13) <= 1
        await pg_role.sql(f'ALTER ROLE "{pg_role.role}" CONNECTION LIMIT 0')
        await terminate_own_backends(pg_role)
        faults = await faults_of_two_writes(store, 14)
        assert isinstance(faults[-1], StoreBusy) and "53300" in faults[-1].reason
        await pg_role.sql(f'ALTER ROLE "{pg_role.role}" CONNECTION LIMIT -1')
        await add_receipt(store, 14)
        assert len(await receipts(store, 14)) == 2
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgresql_missing_database_is_unreachable(pg_role: PgRole) -> None:
    url = sa.make_url(pg_role.url).set(database=f"no_such_{pg_role.role}")
    with pytest.raises(StoreUnreachable) as caught:
        await Store.open(url.render_as_string(hide_password=False))
    assert "3D000" in caught.value.reason

"""`Store`: the connection pool, the unit of work, and the migrations entry point.

One code path for both databases. SQLite (embedded default) runs in WAL mode with foreign keys
on and a busy timeout; every write transaction starts with BEGIN IMMEDIATE, so it holds the
database's single writer lock from its first statement (no deadlock-prone lock upgrades), and
within one process writers queue on an asyncio lock instead of polling the busy handler.
PostgreSQL runs at READ COMMITTED; concurrency comes from row locks, `SKIP LOCKED`, atomic
upserts and optimistic versions, never from a process-local lock, so replicas can share it.

Storage faults (a full disk, a read-only file or database, a database that cannot be opened or
reached, a lock held too long) leave every transaction as `StoreUnavailable` (connector.faults),
classified from SQLite result codes and PostgreSQL SQLSTATEs, never from message text; the
transaction is rolled back. A fault that may live in the connection itself (read-only, cannot
open, connection lost, I/O error) is treated as a disconnect: SQLAlchemy drops the connection and
every pooled one opened before it, so the next transaction opens fresh ones and succeeds as soon
as the cause is fixed (a file made writable, a server back, a role no longer read-only).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import UpdateBase

from connector.faults import from_os_error
from connector.metrics import STORE_READ, STORE_WRITE
from connector.store import migrations
from connector.store.errors import (
    DuplicateKey,
    NestedTransaction,
    ReferenceViolation,
    StoreBusy,
    StoreError,
    StoreFull,
    StoreIOError,
    StoreReadOnly,
    StoreUnavailable,
    StoreUnreachable,
)
from connector.store.repositories import (
    AgreementRepository,
    AssetRepository,
    HeldFactRepository,
    LeaseRepository,
    NegotiationRepository,
    OfferRepository,
    OutboxRepository,
    ParticipantRepository,
    PaymentRepository,
    PolicyRepository,
    ProcessedMessageRepository,
    ReceiptRepository,
    TransferRepository,
    Upsert,
    UsageRepository,
)
from connector.store.rows import (
    AssetRow,
    CatalogOffer,
    OutboxMessage,
    ProcessKind,
    UseReservation,
    UseResult,
)
from connector.store.schema import schema_version
from connector.store.ui_sessions import UiSessionRepository
from connector.store.vault import VaultRepository

Dialect = Literal["sqlite", "postgresql"]
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_READONLY = "connector_readonly"
INLINE_BUSY_MS = 5


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_SQLITE_DUPLICATE = frozenset({sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY})
# SQLite reports ON DELETE RESTRICT as a trigger's constraint (the schema has no triggers of its own)
_SQLITE_REFERENCE = frozenset({sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY, sqlite3.SQLITE_CONSTRAINT_TRIGGER})


def _translate_integrity_error(error: sa.exc.IntegrityError) -> StoreError:
    code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    sqlite_code = getattr(error.orig, "sqlite_errorcode", None)
    text = str(error.orig)
    if code == "23505" or sqlite_code in _SQLITE_DUPLICATE:
        return DuplicateKey(text)
    if code == "23503" or sqlite_code in _SQLITE_REFERENCE:
        return ReferenceViolation(text)
    return StoreError(text)


# ------------------------------------------------------------------ storage faults

_SQLITE_WRITABLE = (
    "that {path}, its -wal and -shm files and {dir} are writable by this user and "
    "the file system is mounted read-write"
)
# SQLite primary result code -> (fault, what happened, what the operator checks)
_SQLITE_FAULTS: dict[int, tuple[type[StoreUnavailable], str, str]] = {
    sqlite3.SQLITE_FULL: (
        StoreFull,
        "the disk holding the database is full",
        "free space on the file system of {path}",
    ),
    sqlite3.SQLITE_READONLY: (StoreReadOnly, "the database is read-only", _SQLITE_WRITABLE),
    sqlite3.SQLITE_PERM: (StoreReadOnly, "access to the database is denied", _SQLITE_WRITABLE),
    sqlite3.SQLITE_CANTOPEN: (
        StoreUnreachable,
        "the database file cannot be opened",
        "that {dir} exists and is writable by this user (SQLite keeps -wal "
        "and -shm files beside the database) and the file system is "
        "mounted read-write",
    ),
    sqlite3.SQLITE_IOERR: (
        StoreIOError,
        "a disk I/O error",
        "the disk and file system of {path} (kernel log)",
    ),
    sqlite3.SQLITE_BUSY: (
        StoreBusy,
        "the database is locked by another process",
        "which other process holds the write lock of {path}",
    ),
    sqlite3.SQLITE_LOCKED: (
        StoreBusy,
        "the database is locked",
        "which other process holds the write lock of {path}",
    ),
    sqlite3.SQLITE_NOMEM: (StoreBusy, "SQLite is out of memory", "the memory of this host"),
}
_PG_FULL = "free disk space on the database server"
_PG_READONLY = (
    "default_transaction_read_only, whether the server is a standby, and the "
    "database user's privileges on the schema"
)
_PG_REACH = "that PostgreSQL runs there and accepts connections, and that the database and user exist"
_PG_LOAD = "the database server's load and max_connections"
# PostgreSQL SQLSTATE -> (fault, what happened, what the operator checks)
_PG_FAULTS: dict[str, tuple[type[StoreUnavailable], str, str]] = {
    "53000": (StoreBusy, "the database server is out of resources", _PG_LOAD),
    "53100": (StoreFull, "the database server's disk is full", _PG_FULL),
    "53200": (StoreBusy, "the database server is out of memory", _PG_LOAD),
    "53300": (StoreBusy, "the database server has no connection slot left", _PG_LOAD),
    "53400": (StoreBusy, "a limit of the database server is exceeded", _PG_LOAD),
    "25006": (StoreReadOnly, "the database is read-only", _PG_READONLY),
    "42501": (StoreReadOnly, "the database user lacks a privilege", _PG_READONLY),
    "57014": (StoreBusy, "a statement was cancelled by the server (a timeout)", _PG_LOAD),
    "55P03": (StoreBusy, "a lock was not available in time", _PG_LOAD),
    "57P01": (StoreUnreachable, "the database server is shutting down", _PG_REACH),
    "57P02": (StoreUnreachable, "the database server crashed", _PG_REACH),
    "57P03": (StoreUnreachable, "the database server does not accept connections now", _PG_REACH),
    "57P04": (StoreUnreachable, "the database was dropped", _PG_REACH),
    "3D000": (StoreUnreachable, "the database does not exist", _PG_REACH),
    "28000": (StoreUnreachable, "the database server refused the login", _PG_REACH),
    "28P01": (StoreUnreachable, "the database server refused the password", _PG_REACH),
    "58030": (StoreIOError, "the database server had an I/O error", "the database server's disks"),
}
# faults that may live in the connection itself: drop it (and older pooled ones), reconnect
_STALE_CONNECTION = (StoreReadOnly, StoreUnreachable, StoreIOError)
_DRIVER_ERRORS = (sa.exc.DBAPIError, sa.exc.TimeoutError, sqlite3.Error)


def _sqlite_code(error: BaseException) -> int:
    """SQLite's primary result code of a driver error (0: none)."""
    return int(getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF


def _unwrap(error: BaseException) -> BaseException:
    orig = getattr(error, "orig", None) if isinstance(error, sa.exc.DBAPIError) else None
    return orig if isinstance(orig, BaseException) else error


def classify(error: BaseException, *, url: sa.URL, readonly: bool = False) -> StoreUnavailable | None:
    """The storage fault a driver error means (None: not a fault of the storage), by SQLite
    result code or PostgreSQL SQLSTATE. `url` names the database in what the operator checks;
    `readonly`: the transaction was declared read-only, so a read-only refusal is our bug."""
    if isinstance(error, sa.exc.TimeoutError):  # the pool's checkout timeout
        return StoreBusy(
            "every database connection of this process is in use",
            check="long-running transactions and the load on this process",
        )
    orig = _unwrap(error)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        found = _SQLITE_FAULTS.get(_sqlite_code(orig))
        if found is None:
            return None
        kind, happened, check = found
        name = getattr(orig, "sqlite_errorname", "") or ""
        return kind(
            f"{happened} ({name})" if name else happened, check=check.format(path=path, dir=path.parent)
        )
    server = f"the PostgreSQL server {_shown(url)}"
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str):
        if state == "25006" and readonly:
            return None
        found_pg = _PG_FAULTS.get(state)
        if found_pg is not None:
            kind, happened, check = found_pg
            return kind(f"{happened} (SQLSTATE {state})", check=f"{server}: {check}")
        if state.startswith("08"):  # connection exception
            return StoreUnreachable(
                f"the connection to the database failed (SQLSTATE {state})", check=f"{server}: {_PG_REACH}"
            )
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return StoreUnreachable("the connection to the database was lost", check=f"{server}: {_PG_REACH}")
    return None


def _unreachable(error: OSError, url: sa.URL) -> StoreUnavailable:
    """A socket error connecting to PostgreSQL (refused, unresolvable host, timeout)."""
    what = errno.errorcode.get(error.errno or 0, type(error).__name__)
    return StoreUnreachable(
        f"the database server cannot be reached ({what})",
        check=f"the PostgreSQL server {_shown(url)}: {_PG_REACH}",
    )


def _shown(url: sa.URL) -> str:
    """The URL as the operator wrote it: no driver name, no password."""
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


class InlineConnection:
    """A sync SQLite connection behind the async interface the repositories use.

    SQLite is an embedded library: a statement costs microseconds, while each hop to a driver
    thread (aiosqlite) costs a wake-up of the event loop, ~0.3 ms here, and a transaction makes
    nine of them. Run inline, a whole transaction takes well under a millisecond. WAL mode keeps
    readers from waiting on the writer, and writers in this process queue on an asyncio lock, so
    the only way a statement can block the loop is another process holding the write lock (the
    busy timeout bounds it).
    """

    def __init__(self, connection: Connection) -> None:
        self.sync_connection = connection

    async def execute(
        self, stmt: sa.Executable, params: Mapping[str, Any] | None = None
    ) -> sa.CursorResult[Any]:
        return self.sync_connection.execute(stmt, params)

    async def exec_driver_sql(self, sql: str) -> sa.CursorResult[Any]:
        return self.sync_connection.exec_driver_sql(sql)

    async def run_sync(self, fn: Any, *args: Any) -> Any:
        return fn(self.sync_connection, *args)


class Transaction:
    """One unit of work: the repositories, all on one connection inside one transaction."""

    def __init__(
        self, connection: AsyncConnection | InlineConnection, dialect: Dialect, *, readonly: bool = False
    ) -> None:
        self.connection = connection
        self.dialect: Dialect = dialect
        self.readonly = readonly

    def insert(self, table: sa.Table) -> Upsert:
        """An INSERT that supports `on_conflict_do_nothing/update` on either database."""
        return postgresql.insert(table) if self.dialect == "postgresql" else sqlite.insert(table)

    async def execute(
        self, stmt: sa.Executable, params: Mapping[str, Any] | None = None
    ) -> sa.CursorResult[Any]:
        """Run `stmt`, with `params` for its bound parameters (a statement built once and run
        with fresh values skips SQLAlchemy's per-call construction and cache-key walk)."""
        if self.readonly and isinstance(stmt, UpdateBase):
            # PostgreSQL would refuse too; on SQLite a write here would bypass the writer lock.
            raise StoreError("write in a read-only transaction")
        try:
            return await self.connection.execute(stmt, params)
        except sa.exc.IntegrityError as error:
            raise _translate_integrity_error(error) from error
        except sa.exc.StatementError as error:
            # A value our column types refused (a naive datetime): the caller's bug, say so plainly.
            if not isinstance(error, sa.exc.DBAPIError) and isinstance(error.orig, ValueError | TypeError):
                raise error.orig from error
            raise

    @cached_property
    def participants(self) -> ParticipantRepository:
        return ParticipantRepository(self)

    @cached_property
    def receipts(self) -> ReceiptRepository:
        return ReceiptRepository(self)

    @cached_property
    def assets(self) -> AssetRepository:
        return AssetRepository(self)

    @cached_property
    def policies(self) -> PolicyRepository:
        return PolicyRepository(self)

    @cached_property
    def offers(self) -> OfferRepository:
        return OfferRepository(self)

    @cached_property
    def negotiations(self) -> NegotiationRepository:
        return NegotiationRepository(self)

    @cached_property
    def agreements(self) -> AgreementRepository:
        return AgreementRepository(self)

    @cached_property
    def held_facts(self) -> HeldFactRepository:
        return HeldFactRepository(self)

    @cached_property
    def payments(self) -> PaymentRepository:
        return PaymentRepository(self)

    @cached_property
    def transfers(self) -> TransferRepository:
        return TransferRepository(self)

    @cached_property
    def leases(self) -> LeaseRepository:
        return LeaseRepository(self)

    @cached_property
    def usage(self) -> UsageRepository:
        return UsageRepository(self)

    @cached_property
    def processed(self) -> ProcessedMessageRepository:
        return ProcessedMessageRepository(self)

    @cached_property
    def outbox(self) -> OutboxRepository:
        return OutboxRepository(self)

    @cached_property
    def vault(self) -> VaultRepository:
        return VaultRepository(self)

    @cached_property
    def ui_sessions(self) -> UiSessionRepository:
        return UiSessionRepository(self)


def _parse_url(url: str, schema: str | None) -> tuple[sa.URL, Dialect, str | None]:
    if "://" not in url:
        if url in ("", ":memory:"):
            raise ValueError("the store needs a database file (an in-memory SQLite is one per connection)")
        parsed = sa.URL.create("sqlite+pysqlite", database=str(Path(url).expanduser()))
    else:
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ValueError("not a database URL (sqlite:///PATH or postgresql://USER@HOST/DB)") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("the store needs a database file (an in-memory SQLite is one per connection)")
        if schema is not None:
            raise ValueError("schemas are a PostgreSQL feature")
        return parsed.set(drivername="sqlite+pysqlite"), "sqlite", None
    if backend in ("postgresql", "postgres"):
        query = dict(parsed.query)
        url_schema = query.pop("schema", None)
        if isinstance(url_schema, tuple):
            raise ValueError("schema= given more than once")
        if url_schema is not None and schema is not None and url_schema != schema:
            raise ValueError(f"conflicting schemas: {url_schema!r} in the URL, {schema!r} as argument")
        schema = schema or url_schema
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(f"not a plain schema name: {schema!r}")
        return parsed.set(drivername="postgresql+asyncpg", query=query), "postgresql", schema
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r} (sqlite:// or postgresql://)")


class Store:
    """The connector's database. Open with `await Store.open(url)`, then `await store.migrate()`."""

    def __init__(self, engine: Any, dialect: Dialect, schema: str | None) -> None:
        self.engine = engine
        self.dialect: Dialect = dialect
        self.schema = schema
        self._write_lock = asyncio.Lock()  # SQLite only: one writer per process at a time
        self._busy_timeout = 30.0
        self._tasks_in_transaction: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int | None = None,
        max_overflow: int = 10,
        busy_timeout_seconds: float = 30.0,
        sqlite_synchronous: str = "FULL",
        echo: bool = False,
    ) -> Store:
        """Connect (and check the connection works).

        `url`: `sqlite:///path/file.db`, a plain file path, or `postgresql://user@host/db`
        (optionally `?schema=NAME`, or `schema=`: every connection's search_path). SQLite's
        `sqlite_synchronous` defaults to FULL: a commit survives a power cut, not only a crash.
        `pool_size` (connections kept open) defaults to 5 on SQLite (one writer at a time) and
        20 on PostgreSQL, where every concurrent transaction holds one: a connection opened
        beyond the pool is closed again after its transaction, and a fresh one costs a login
        and the re-preparing of its statements (~10% of a busy connector's time at 5).
        """
        sa_url, dialect, schema = _parse_url(url, schema)
        if pool_size is None:
            pool_size = 5 if dialect == "sqlite" else 20
        if dialect == "sqlite":
            synchronous = sqlite_synchronous.upper()
            if synchronous not in _SYNCHRONOUS:
                raise ValueError(f"sqlite_synchronous must be one of {sorted(_SYNCHRONOUS)}")
            assert sa_url.database is not None
            directory = Path(sa_url.database).parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                fault = from_os_error(error, "the store's directory", directory) or StoreUnreachable(
                    f"the store's directory cannot be made ({errno.errorcode.get(error.errno or 0, error)})",
                    check=f"the path {directory}",
                )
                raise fault from error
            engine: Any = sa.create_engine(
                sa_url.set(drivername="sqlite+pysqlite"),
                pool_size=pool_size,
                max_overflow=max_overflow,
                echo=echo,
                json_serializer=_dumps,
                connect_args={"timeout": busy_timeout_seconds},
            )
            # the driver waits at most a few ms on a lock; _begin_inline waits the rest, async
            _configure_sqlite(engine, INLINE_BUSY_MS, synchronous)
        else:
            connect_args: dict[str, Any] = {}
            if schema is not None:
                connect_args["server_settings"] = {"search_path": f'"{schema}"'}
            engine = create_async_engine(
                sa_url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                echo=echo,
                json_serializer=_dumps,
                connect_args=connect_args,
            )
        _drop_stale_connections(engine.sync_engine if isinstance(engine, AsyncEngine) else engine)
        store = cls(engine, dialect, schema)
        store._busy_timeout = busy_timeout_seconds
        try:
            async with store.transaction(readonly=True) as tx:
                await tx.execute(sa.text("SELECT 1"))
        except _DRIVER_ERRORS as error:  # not a storage fault (those are StoreUnavailable)
            await store.close()
            raise StoreError(f"the database cannot be used: {_unwrap(error)}") from error
        except BaseException:
            await store.close()
            raise
        return store

    @property
    def url(self) -> str:
        """The database URL without its password, for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    @staticmethod
    def shown_url(url: str) -> str:
        """`url` as an operator may see it in a log: no password, no driver name."""
        try:
            return _shown(_parse_url(url, None)[0])
        except ValueError:
            pass
        try:  # a URL, but not one of a database the store supports
            return sa.make_url(url).render_as_string(hide_password=True)
        except (sa.exc.ArgumentError, ValueError):
            return "(an unusable URL)"

    async def close(self) -> None:
        if isinstance(self.engine, AsyncEngine):
            await self.engine.dispose()
        else:
            self.engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def ping(self) -> None:
        """One query; raises `StoreUnavailable` (or the driver's error) if the store cannot
        answer it (connector.http.observe's readiness)."""
        async with self.transaction(readonly=True) as tx:
            await tx.execute(sa.text("SELECT 1"))

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[Transaction]:
        """`async with store.transaction() as tx:` commits on normal exit, rolls back on an exception.

        `readonly=True` for reads only: no writer lock on SQLite (WAL readers run alongside the
        writer), a READ ONLY transaction on PostgreSQL; writes are refused on both. A task must
        not open a transaction on the same store while it holds one (`NestedTransaction`: on
        SQLite it would wait forever for its own writer lock): pass `tx` down instead.
        """
        task = asyncio.current_task()
        if task is not None:
            if task in self._tasks_in_transaction:
                raise NestedTransaction("this task already holds a transaction on this store")
            self._tasks_in_transaction.add(task)
        started = time.perf_counter()
        try:
            if self.dialect == "sqlite" and not readonly:
                async with self._write_lock, self._begin(readonly) as tx:
                    yield tx
            else:
                async with self._begin(readonly) as tx:
                    yield tx
        except _DRIVER_ERRORS as error:
            # rolled back already (the context managers above); say why in the store's terms
            fault = classify(error, url=self.engine.url, readonly=readonly)
            if fault is None:
                raise
            raise fault from error
        finally:
            (STORE_READ if readonly else STORE_WRITE).observe(time.perf_counter() - started)
            if task is not None:
                self._tasks_in_transaction.discard(task)

    @asynccontextmanager
    async def _begin(self, readonly: bool) -> AsyncIterator[Transaction]:
        if not isinstance(self.engine, AsyncEngine):  # SQLite, inline (see InlineConnection)
            with self.engine.connect() as sync_connection:
                if readonly:
                    sync_connection = sync_connection.execution_options(**{_READONLY: True})
                transaction = await self._begin_inline(sync_connection)
                with transaction:
                    yield Transaction(InlineConnection(sync_connection), self.dialect, readonly=readonly)
            return
        connected = False
        try:
            async with self.engine.connect() as connection:
                connected = True
                if readonly:
                    option = _READONLY if self.dialect == "sqlite" else "postgresql_readonly"
                    await connection.execution_options(**{option: True})
                async with connection.begin():
                    yield Transaction(connection, self.dialect, readonly=readonly)
        except OSError as error:
            if connected:  # not ours to classify: the caller's own I/O inside the transaction
                raise
            raise _unreachable(error, self.engine.url) from error

    async def _begin_inline(self, connection: Connection) -> Any:
        """BEGIN (IMMEDIATE for writers) without blocking the event loop while another process
        holds SQLite's write lock: the driver's own busy wait is kept to a few milliseconds,
        and this waits asynchronously, up to the store's busy timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                return connection.begin()
            except sa.exc.OperationalError as error:
                if _sqlite_code(_unwrap(error)) not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                connection.rollback()
                if loop.time() >= deadline:
                    raise StoreBusy(
                        f"the database stayed locked for {self._busy_timeout:.0f} s "
                        "(another process holds its write lock)",
                        check=f"which other process holds the write lock of {self.engine.url.database}",
                    ) from error
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

    # ---------------------------------------------------------------- migrations

    async def ensure_schema(self, tx: Transaction) -> None:
        """PostgreSQL: create the store's schema (``?schema=``) if it does not exist yet (the
        caller holds its advisory lock); nothing on SQLite or without a schema."""
        if self.dialect != "postgresql" or self.schema is None:
            return
        exists = await tx.execute(
            sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :name").bindparams(name=self.schema)
        )
        if exists.first() is None:  # CREATE needs a privilege a pre-made schema spares us
            await tx.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))

    async def migrate(self) -> int:
        """Create or upgrade the schema; returns the version. Idempotent, and safe when several
        processes start at once: PostgreSQL serialises on an advisory lock, SQLite on its
        writer lock. DDL is transactional on both, so a failed migration leaves nothing behind.
        An up-to-date schema writes nothing, so a write that touches no row then proves the
        database takes writes: a read-only one fails here (`StoreReadOnly`), at start-up."""
        async with self.transaction() as tx:
            if self.dialect == "postgresql":
                await tx.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=_advisory_key(self.schema))
                )
                await self.ensure_schema(tx)
            now = datetime.now(UTC)

            def apply(connection: Connection) -> int:
                return migrations.apply(connection, now)

            try:
                version = int(await tx.connection.run_sync(apply))
                await tx.execute(
                    sa.update(schema_version).where(sa.false()).values(version=schema_version.c.version)
                )
                return version
            except _DRIVER_ERRORS as error:
                fault = classify(error, url=self.engine.url)
                if fault is not None:
                    raise fault from error
                raise StoreError(f"migrating the schema failed: {_unwrap(error)}") from error

    async def schema_version(self) -> int:
        """The applied schema version; 0 for an empty database."""
        async with self.transaction(readonly=True) as tx:
            return await tx.connection.run_sync(migrations.current_version)

    # ---------------------------------------------------------------- one-statement conveniences
    # Each runs in a transaction of its own; inside a unit of work use the `tx.` repositories.

    async def claim_due(
        self, worker_id: str, now: datetime, limit: int, lease_seconds: float
    ) -> list[OutboxMessage]:
        async with self.transaction() as tx:
            return await tx.outbox.claim_due(worker_id, now, limit, lease_seconds)

    async def mark_sent(self, message_id: str, worker_id: str, now: datetime) -> bool:
        async with self.transaction() as tx:
            return await tx.outbox.mark_sent(message_id, worker_id, now)

    async def mark_failed(
        self, message_id: str, worker_id: str, error: str, next_attempt_at: datetime | None
    ) -> bool:
        async with self.transaction() as tx:
            return await tx.outbox.mark_failed(message_id, worker_id, error, next_attempt_at)

    async def consume_use(
        self, agreement_id: str, consumer_id: str, target: str, limit: int | None
    ) -> UseResult:
        async with self.transaction() as tx:
            return await tx.usage.consume(agreement_id, consumer_id, target, limit)

    async def reserve_uses(
        self,
        agreement_id: str,
        consumer_id: str,
        target: str,
        limit: int,
        want: int,
        *,
        divisor: int = 1,
    ) -> UseReservation:
        """Reserve up to `want` uses (at most `1/divisor` of those left, at least one) for a data
        plane replica to hand out; see `UsageRepository.reserve`."""
        async with self.transaction() as tx:
            return await tx.usage.reserve(agreement_id, consumer_id, target, limit, want, divisor=divisor)

    async def release_uses(self, agreement_id: str, consumer_id: str, target: str, n: int) -> int:
        """Give back `n` reserved uses that were never handed out; returns the counter after."""
        async with self.transaction() as tx:
            return await tx.usage.release(agreement_id, consumer_id, target, n)

    async def add_receipt(
        self, transfer_id: str, chain: str, seq_from: int, seq_to: int, token: str, now: datetime
    ) -> bool:
        async with self.transaction() as tx:
            return await tx.receipts.add(transfer_id, chain, seq_from, seq_to, token, now)

    async def list_receipts(self, transfer_id: str) -> list[str]:
        async with self.transaction(readonly=True) as tx:
            return await tx.receipts.list(transfer_id)

    async def get_use_count(self, agreement_id: str, consumer_id: str, target: str) -> int:
        async with self.transaction(readonly=True) as tx:
            return await tx.usage.get(agreement_id, consumer_id, target)

    async def acquire_lease(
        self, kind: ProcessKind, process_id: str, owner: str, now: datetime, seconds: float
    ) -> bool:
        async with self.transaction() as tx:
            return await tx.leases.acquire(kind, process_id, owner, now, seconds)

    async def release_lease(self, kind: ProcessKind, process_id: str, owner: str) -> bool:
        async with self.transaction() as tx:
            return await tx.leases.release(kind, process_id, owner)

    async def get_asset(self, asset_id: str) -> AssetRow | None:
        """The asset with its data address's secrets masked."""
        async with self.transaction(readonly=True) as tx:
            return await tx.assets.get(asset_id)

    async def get_asset_secret_address(self, asset_id: str) -> dict[str, Any] | None:
        """The full data address, secrets included: for the data plane only."""
        async with self.transaction(readonly=True) as tx:
            return await tx.assets.get_secret_address(asset_id)

    async def load_catalog_offers(self) -> list[CatalogOffer]:
        async with self.transaction(readonly=True) as tx:
            return await tx.offers.load_catalog_offers()

    async def load_catalog(self) -> tuple[list[CatalogOffer], list[AssetRow]]:
        """Everything a catalog build reads, in two queries on one snapshot."""
        async with self.transaction(readonly=True) as tx:
            offers = await tx.offers.load_catalog_offers()
            assets = await tx.assets.list(limit=None)
            return offers, assets


def _advisory_key(schema: str | None) -> int:
    digest = hashlib.sha256(f"connector.store.migrate:{schema or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _drop_stale_connections(engine: sa.Engine) -> None:
    """A fault that may live in the connection (read-only, cannot open, lost, I/O error) counts
    as a disconnect: SQLAlchemy then drops that connection and every pooled one opened before
    it, so the pool reconnects once the cause is fixed instead of keeping a broken session."""

    @event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> None:
        if context.is_disconnect:
            return
        fault = classify(context.original_exception, url=engine.url)
        if isinstance(fault, _STALE_CONNECTION):
            context.is_disconnect = True


def _configure_sqlite(engine: Any, busy_timeout_ms: int, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver: the "begin" hook below issues it, so every
        # transaction (reads and DDL included) really is one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in (
                f"PRAGMA busy_timeout = {busy_timeout_ms}",
                "PRAGMA journal_mode = WAL",
                "PRAGMA foreign_keys = ON",
                f"PRAGMA synchronous = {synchronous}",
            ):
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        readonly = connection.get_execution_options().get(_READONLY, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if readonly else "BEGIN IMMEDIATE")


__all__: Sequence[str] = ("Store", "Transaction")

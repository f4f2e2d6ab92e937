"""Schema migrations: an ordered list of functions, applied in one transaction, recorded in
`schema_version`.

To change the schema, append a migration (never edit an applied one) and change `schema.py` to
match. Migration 1 creates the tables from `schema.metadata`; the first migration that alters a
table must therefore also freeze version 1's definitions here (a fresh database would otherwise
get the new shape from migration 1 and then fail in the new migration; the tests catch that).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store import schema
from connector.store.errors import SchemaTooNew

Migration = tuple[str, Callable[[Connection], None]]


# Columns added to a version 1 table by a later migration: migration 1 creates the table without
# them (frozen version 1), the later migration adds them.
_LATER_COLUMNS: dict[str, tuple[str, ...]] = {"agreements": ("retired_at", "retired_reason")}


def _v1_tables() -> list[sa.Table]:
    """The version 1 tables as migration 1 created them: today's definitions less the columns
    later migrations add (no index or constraint of version 1 names one of those)."""
    frozen = sa.MetaData(naming_convention=schema.metadata.naming_convention)
    tables = []
    for table in schema.V1_TABLES:
        copy = table.to_metadata(frozen)
        for name in _LATER_COLUMNS.get(table.name, ()):
            copy._columns.remove(copy.c[name])
        tables.append(copy)
    return tables


def _create_tables(connection: Connection) -> None:
    tables = _v1_tables()
    tables[0].metadata.create_all(connection, tables=tables, checkfirst=False)


def _create_receipts(connection: Connection) -> None:
    schema.metadata.create_all(connection, tables=[schema.receipts], checkfirst=False)


def _usage_control(connection: Connection) -> None:
    schema.metadata.create_all(connection, tables=[schema.held_facts, schema.payments], checkfirst=False)
    agreements = schema.agreements
    for name in _LATER_COLUMNS["agreements"]:
        column = agreements.c[name]
        kind = column.type.compile(dialect=connection.dialect)
        connection.execute(sa.text(f"ALTER TABLE agreements ADD COLUMN {name} {kind}"))


def _create_vault_items(connection: Connection) -> None:
    schema.metadata.create_all(connection, tables=[schema.vault_items], checkfirst=False)


def _create_ui_sessions(connection: Connection) -> None:
    schema.metadata.create_all(connection, tables=[schema.ui_sessions], checkfirst=False)


MIGRATIONS: tuple[Migration, ...] = (
    ("create the tables", _create_tables),
    ("usage receipts, shared by the data plane's replicas", _create_receipts),
    ("provider-held facts, payments, retired agreements", _usage_control),
    ("the consumer's vault index", _create_vault_items),
    ("the dashboard's sessions, shared by the replicas", _create_ui_sessions),
)
LATEST = len(MIGRATIONS)


def current_version(connection: Connection) -> int:
    if not sa.inspect(connection).has_table(schema.schema_version.name):
        return 0
    version = connection.execute(sa.select(sa.func.max(schema.schema_version.c.version))).scalar()
    return int(version or 0)


def apply(connection: Connection, now: datetime) -> int:
    """Bring the schema to `LATEST` (the caller holds the migration lock and the transaction)."""
    schema.schema_version.create(connection, checkfirst=True)
    current = current_version(connection)
    if current > LATEST:
        raise SchemaTooNew(f"database schema version {current} is newer than this connector's ({LATEST})")
    for number, (description, migrate) in enumerate(MIGRATIONS, start=1):
        if number <= current:
            continue
        migrate(connection)
        connection.execute(
            sa.insert(schema.schema_version).values(version=number, description=description, applied_at=now)
        )
    return LATEST

"""The tables, in SQLAlchemy Core, one definition for SQLite and PostgreSQL.

Column types that mean the same on both: ids are TEXT; JSON is JSONB on PostgreSQL and JSON text
on SQLite; times are `timestamptz` on PostgreSQL and fixed-width UTC text on SQLite (so text
order is time order); counters are INTEGER. This module describes the *current* schema; the
migrations in `migrations.py` produce it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both databases; naive datetimes are refused."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps timezone-aware UTC times")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store UTC wall time in a fixed-width text form.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


JSON_TYPE = _json()
ID = sa.Text
ROLE_CHECK = "role IN ('provider', 'consumer')"

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

participants_seen = sa.Table(
    "participants_seen",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("address", sa.Text),
    sa.Column("attributes", JSON_TYPE, nullable=False),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
)

assets = sa.Table(
    "assets",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("title", sa.Text),
    sa.Column("description", sa.Text),
    sa.Column("keywords", JSON_TYPE, nullable=False),
    sa.Column("content_type", sa.Text),
    # The address with secret values masked: what every default read returns.
    sa.Column("data_address", JSON_TYPE, nullable=False),
    # The full address: selected only by `get_secret_address`, for the data plane.
    sa.Column("data_address_secret", JSON_TYPE, nullable=False),
    sa.Column("properties", JSON_TYPE, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "created_at", "id"),
)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "created_at", "id"),
)

offers = sa.Table(
    "offers",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("asset_selector", JSON_TYPE, nullable=False),
    sa.Column("access_policy_id", ID, sa.ForeignKey("policies.id", ondelete="RESTRICT"), nullable=False),
    sa.Column("contract_policy_id", ID, sa.ForeignKey("policies.id", ondelete="RESTRICT"), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "created_at", "id"),
    sa.Index(None, "access_policy_id"),
    sa.Index(None, "contract_policy_id"),
)

negotiations = sa.Table(
    "negotiations",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("provider_pid", sa.Text),
    sa.Column("consumer_pid", sa.Text),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("counter_party_id", sa.Text),
    sa.Column("counter_party_address", sa.Text),
    sa.Column("offer", JSON_TYPE),
    # No foreign key: agreements.negotiation_id points the other way (no cycle).
    sa.Column("agreement_id", ID),
    sa.Column("data", JSON_TYPE, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # NULLs are distinct on both databases: the pair is unique where the pid is set.
    sa.UniqueConstraint("role", "provider_pid"),
    sa.UniqueConstraint("role", "consumer_pid"),
    sa.CheckConstraint(ROLE_CHECK, name="role"),
    sa.Index(None, "state", "created_at"),
    sa.Index(None, "created_at", "id"),
)

agreements = sa.Table(
    "agreements",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("negotiation_id", ID, sa.ForeignKey("negotiations.id", ondelete="SET NULL")),
    sa.Column("provider_id", sa.Text, nullable=False),
    sa.Column("consumer_id", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("policy", JSON_TYPE, nullable=False),
    sa.Column("signed_at", UTCDateTime, nullable=False),
    # set once by the provider that retires the agreement (migration 3); NULL: not retired
    sa.Column("retired_at", UTCDateTime),
    sa.Column("retired_reason", sa.Text),
    sa.Index(None, "signed_at", "id"),
    sa.Index(None, "consumer_id"),
    sa.Index(None, "provider_id"),
    sa.Index(None, "negotiation_id"),
)

transfers = sa.Table(
    "transfers",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("provider_pid", sa.Text),
    sa.Column("consumer_pid", sa.Text),
    sa.Column("agreement_id", ID, sa.ForeignKey("agreements.id", ondelete="RESTRICT"), nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("format", sa.Text),
    sa.Column("counter_party_id", sa.Text),
    sa.Column("counter_party_address", sa.Text),
    sa.Column("data", JSON_TYPE, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("role", "provider_pid"),
    sa.UniqueConstraint("role", "consumer_pid"),
    sa.CheckConstraint(ROLE_CHECK, name="role"),
    sa.Index(None, "state", "created_at"),
    sa.Index(None, "created_at", "id"),
    sa.Index(None, "agreement_id"),
)

usage_counters = sa.Table(
    "usage_counters",
    metadata,
    sa.Column("agreement_id", ID, primary_key=True),
    sa.Column("consumer_id", sa.Text, primary_key=True),
    sa.Column("target", sa.Text, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

processed_messages = sa.Table(
    "processed_messages",
    metadata,
    sa.Column("message_key", sa.Text, primary_key=True),
    sa.Column("response", JSON_TYPE),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "created_at"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("message_key", sa.Text, nullable=False, unique=True),
    sa.Column("process_kind", sa.Text),
    sa.Column("process_id", sa.Text),
    # Delivery order within one process, assigned by the store on insert.
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("destination", sa.Text, nullable=False),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("payload", JSON_TYPE),
    sa.Column("headers", JSON_TYPE, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("claimed_by", sa.Text),
    sa.Column("claimed_until", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime),
    sa.CheckConstraint("status IN ('pending', 'in_flight', 'sent', 'dead')", name="status"),
    sa.Index(None, "status", "next_attempt_at"),
    # Also the index of the "an earlier message of this process is unfinished" check.
    sa.UniqueConstraint("process_kind", "process_id", "seq"),
)

# Signed usage receipts of the data plane (connector.dataplane.receipts): every provider process
# keeps its chains' receipts here, so any replica can hand a consumer all of a transfer's.
receipts = sa.Table(
    "receipts",
    metadata,
    sa.Column("transfer_id", ID, primary_key=True),
    sa.Column("chain", sa.Text, primary_key=True),
    sa.Column("seq_from", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq_to", sa.Integer, nullable=False),
    sa.Column("token", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Facts the provider holds and states itself (connector.usage.held): provider-side state, active
# events. One row per operand (its full IRI); a fact whose `until` has passed is absent.
held_facts = sa.Table(
    "held_facts",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("fact_values", JSON_TYPE, nullable=False),
    sa.Column("until", UTCDateTime),
    sa.Column("set_at", UTCDateTime, nullable=False),
)

# Payments received under an agreement (connector.usage.payments). `amount` is the exact decimal
# as text (never a float); `currency` an IRI; `receipt` an optional signed receipt (a JWS).
payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("agreement_id", ID, sa.ForeignKey("agreements.id", ondelete="RESTRICT"), nullable=False),
    sa.Column("amount", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("paid_at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("reference", sa.Text),
    sa.Column("receipt", sa.Text),
    sa.Index(None, "agreement_id", "paid_at"),
)

# The consumer's vault index (connector.consumer.vault): one row per local copy held under an
# agreement; the copies themselves stay files on disk. `delete_at` is when the agreement's delete
# duty falls due; the duty scheduler asks for the rows due and not yet reported (indexed).
vault_items = sa.Table(
    "vault_items",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("agreement_id", ID, nullable=False),
    sa.Column("transfer_id", ID, nullable=False),
    sa.Column("provider_id", sa.Text, nullable=False),
    sa.Column("provider_address", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("delete_at", UTCDateTime),
    sa.Column("registered_at", UTCDateTime, nullable=False),
    sa.Column("deleted_at", UTCDateTime),
    sa.Column("notice_sent", sa.Boolean, nullable=False),
    sa.Column("uses", sa.Integer, nullable=False),
    sa.Index(None, "notice_sent", "delete_at"),
    sa.Index(None, "agreement_id"),
)

# The dashboard's sessions (connector.ui.session), shared by a connector's replicas: a login on
# one is known on the next, and a restart keeps it. `id_hash` is the SHA-256 of the cookie's
# random id (the id itself is never stored); `flash`: the messages its next page shows.
ui_sessions = sa.Table(
    "ui_sessions",
    metadata,
    sa.Column("id_hash", sa.Text, primary_key=True),
    sa.Column("csrf", sa.Text, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("flash", JSON_TYPE, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "expires_at"),
)

# The tables migration 1 creates (frozen: later tables come with their own migration).
V1_TABLES: tuple[sa.Table, ...] = (
    participants_seen,
    assets,
    policies,
    offers,
    negotiations,
    agreements,
    transfers,
    usage_counters,
    processed_messages,
    outbox,
)

APPLICATION_TABLES: tuple[sa.Table, ...] = (
    *V1_TABLES,
    receipts,
    held_facts,
    payments,
    vault_items,
    ui_sessions,
)

"""Typed store errors, so the runtime and the HTTP edge never parse driver messages.

`StoreError` and its subclasses: something about this request or this database (a duplicate key,
a stale version, a schema from a newer connector). `StoreUnavailable` and its subclasses
(defined in `connector.faults`, shared with the audit log and the vault, re-exported here): the
storage cannot take this now (full, read-only, unreachable, busy, I/O error); nothing was
changed and the same request succeeds once the cause is fixed.
"""

from __future__ import annotations

from connector.faults import (
    StoreBusy,
    StoreFull,
    StoreIOError,
    StoreReadOnly,
    StoreUnavailable,
    StoreUnreachable,
)


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class NotFound(StoreError, LookupError):
    """The row to change does not exist."""


class DuplicateKey(StoreError):
    """An insert collided with an existing id or unique key (HTTP edge: 409)."""


class ReferenceViolation(StoreError):
    """A foreign key failed: the row refers to a missing row, or is still referred to (409)."""


class StillReferenced(ReferenceViolation):
    """A row cannot be deleted while other rows refer to it: an asset listed by an offer or
    targeted by an agreement, a policy used by an offer. ``referrers`` maps the kind of each
    referring row ("offer", "agreement") to (some of) their ids; ``more`` is True when there
    are more than listed."""

    def __init__(
        self, kind: str, row_id: str, referrers: dict[str, tuple[str, ...]], more: bool = False
    ) -> None:
        named = "; ".join(f"{k}s {', '.join(ids)}" for k, ids in referrers.items() if ids)
        super().__init__(f"{kind} {row_id!r} is still referred to by {named}{' and more' if more else ''}")
        self.kind = kind
        self.row_id = row_id
        self.referrers = referrers
        self.more = more


class ConcurrentUpdate(StoreError):
    """Optimistic concurrency: the row changed since it was read (expected version is stale).

    The caller reloads the row and re-applies its event, or gives up; nothing was written.
    """

    def __init__(self, kind: str, row_id: str, expected_version: int | None, detail: str = "") -> None:
        message = detail or f"{kind} {row_id!r} is not at version {expected_version} (changed or missing)"
        super().__init__(message)
        self.kind = kind
        self.row_id = row_id
        self.expected_version = expected_version


class NestedTransaction(StoreError):
    """A transaction was opened while this task already holds one on the same store.

    On SQLite that would wait forever for the write lock the outer transaction holds; on
    PostgreSQL it would escape the outer transaction's atomicity. Pass the outer `tx` down.
    """


class SchemaTooNew(StoreError):
    """The database was migrated by a newer connector than this one."""


__all__ = [
    "ConcurrentUpdate",
    "DuplicateKey",
    "NestedTransaction",
    "NotFound",
    "ReferenceViolation",
    "SchemaTooNew",
    "StoreBusy",
    "StoreError",
    "StoreFull",
    "StoreIOError",
    "StoreReadOnly",
    "StoreUnavailable",
    "StoreUnreachable",
]

"""Storage faults: the storage cannot take this now, through no fault of the request.

A full disk or quota, a read-only file system or database, a database that cannot be opened or
reached, a lock held past the busy timeout, an I/O error. Whatever raised one changed nothing (the
store's transaction rolled back, the audit log's partial line was cut off, a partial file was
removed) and the same request succeeds once the operator has fixed the cause: no restart.

Every HTTP edge answers `StoreUnavailable` with 503, its `reason` and a ``Retry-After`` of
`retry_after` seconds (`connector.http.errors`); background loops log it and back off; at start-up
it ends the process with one line: the reason and what to `check`. `reason` goes to remote peers,
so it names no path; `check` (paths, hosts, what to look at) goes only to the operator's log.

Classified from error codes only, never from message text: ``errno`` here (`from_os_error`, for
the files the connector writes itself), SQLite result codes and PostgreSQL SQLSTATEs in
`connector.store.database`. This module imports nothing, so the audit log, the vault and the
authority share the types without loading the database layer.
"""

from __future__ import annotations

import errno
from pathlib import Path


class StoreUnavailable(Exception):
    """The storage cannot take this now; nothing was changed. Retry after `retry_after` s."""

    retry_after: int = 5

    def __init__(self, reason: str, *, check: str = "", retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.check = check
        if retry_after is not None:
            self.retry_after = retry_after


class StoreFull(StoreUnavailable):
    """No space: the disk, a quota, or the database's own size limit. The operator frees space."""

    retry_after = 30


class StoreReadOnly(StoreUnavailable):
    """Writes are refused: a read-only file system, file or database, or no write privilege."""

    retry_after = 30


class StoreUnreachable(StoreUnavailable):
    """The database cannot be opened or reached: no file or directory, server down or shutting
    down, connection refused or lost, authentication refused, no such database."""

    retry_after = 5


class StoreBusy(StoreUnavailable):
    """Overloaded: a lock held past the busy timeout, every connection in use, out of memory."""

    retry_after = 1


class StoreIOError(StoreUnavailable):
    """The disk or file system failed a read or write (EIO, SQLITE_IOERR)."""

    retry_after = 30


# errno -> (fault type, what happened)
_OS_FAULTS: dict[int, tuple[type[StoreUnavailable], str]] = {
    errno.ENOSPC: (StoreFull, "no space left on the device"),
    errno.EDQUOT: (StoreFull, "the disk quota is exceeded"),
    errno.EFBIG: (StoreFull, "the file is too large for the file system"),
    errno.EROFS: (StoreReadOnly, "the file system is read-only"),
    errno.EACCES: (StoreReadOnly, "permission denied"),
    errno.EPERM: (StoreReadOnly, "operation not permitted"),
    errno.EIO: (StoreIOError, "an I/O error"),
}


def from_os_error(exc: OSError, what: str, path: Path | str | None = None) -> StoreUnavailable | None:
    """The fault an OS error writing `what` (e.g. "the audit log") at `path` means, or None when
    it is not a storage fault (a bug, a missing file the caller handles)."""
    found = _OS_FAULTS.get(exc.errno or 0)
    if found is None:
        return None
    kind, happened = found
    target = str(path) if path is not None else what
    if kind is StoreFull:
        check = f"free space (or quota) on the file system of {target}"
    elif kind is StoreReadOnly:
        check = (
            f"that {target} and its directory are writable by this user and the file "
            "system is mounted read-write"
        )
    else:
        check = f"the disk and file system of {target} (kernel log)"
    return kind(f"{what}: {happened}", check=check)


__all__ = [
    "StoreBusy",
    "StoreFull",
    "StoreIOError",
    "StoreReadOnly",
    "StoreUnavailable",
    "StoreUnreachable",
    "from_os_error",
]

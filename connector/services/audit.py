"""The audit trail as a timeline: entries oldest first, by kind prefix and time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import islice

from connector.audit.log import AuditLog, Entry
from connector.audit.timeline import select
from connector.services.errors import NotFound
from connector.services.records import Page


class Timeline:
    def __init__(self, audit: AuditLog | None) -> None:
        self._audit = audit

    def _log(self) -> AuditLog:
        if self._audit is None:
            raise NotFound("this connector keeps no audit log")
        return self._audit

    def check(self) -> None:
        """`NotFound` if this connector keeps no audit log (asked before a request is read)."""
        self._log()

    def entries(self, kinds: Sequence[str], since: datetime | None, page: Page) -> list[Entry]:
        """A page of the entries of these kinds (prefixes) at or after `since`, oldest first."""
        chosen = select(self._log().entries(), kinds=kinds, since=since)
        return list(islice(chosen, page.offset, page.offset + page.limit))

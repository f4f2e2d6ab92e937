"""Stored records read, paged and deleted; listings filtered and ordered in SQL before the page
is cut.

A process's DSP state is not a column: while a message of ours is in flight the process reports
the state the counter-party last acknowledged (or, before any acknowledgement, the one its
sending state leads to). `wire_state_query` derives that rule from the protocol's own tables, so
the store can select by it in SQL (`connector.store.rows.WireStateQuery`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Generic, Protocol, TypeVar

from connector.ids import IdKind, InvalidId, new_id, resolve_id
from connector.services.errors import Conflict, InvalidInput, NotFound
from connector.store import (
    ReferenceViolation,
    StillReferenced,
    Store,
    Transaction,
    WireStateQuery,
)

R = TypeVar("R")
S = TypeVar("S", bound=Enum)


@dataclass(frozen=True, slots=True)
class Page:
    """At most `limit` items after skipping `offset`; `newest_first` reverses the default
    oldest-first order (ties broken by id, so pages are stable)."""

    limit: int = 50
    offset: int = 0
    newest_first: bool = False


def iso_time(t: datetime | None) -> str | None:
    """A stored time as the API shows it: RFC 3339, UTC as ``Z``."""
    return t.isoformat().replace("+00:00", "Z") if t else None


def fresh_id(given: str | None, kind: IdKind) -> str:
    """A new record's id: the one given (checked by `connector.ids`' rule) or a new URN."""
    try:
        return new_id(given, kind)
    except InvalidId as exc:
        raise InvalidInput(str(exc)) from exc


def reference(given: str, kind: IdKind) -> str:
    """A reference to an asset or policy, by the same rule as its id (``weather`` ->
    ``urn:asset:weather``)."""
    try:
        return resolve_id(given, kind)
    except InvalidId as exc:
        raise InvalidInput(str(exc)) from exc


def wire_state_query(state: str, sending: Mapping[S, S]) -> WireStateQuery:
    """The rows whose DSP state is named `state`, given a protocol's sending state -> state
    table; `InvalidInput` unless `state` is a DSP state (an internal sending state is not)."""
    shown = {str(to.value) for to in sending.values()}
    if state not in shown:
        raise InvalidInput(f"no DSP state {state!r}; one of {', '.join(sorted(shown))}")
    return WireStateQuery(
        state=state,
        sending=frozenset(str(s.value) for s in sending),
        reported_by=frozenset(str(s.value) for s, to in sending.items() if to.value == state),
    )


class Readable(Protocol[R]):
    """The part of a repository a listing reads."""

    async def get(self, key: str, /) -> R | None: ...

    async def list(self, *, limit: int | None = ..., offset: int = ...) -> list[R]: ...


class Records(Generic[R]):
    """Read one kind of stored record: one by id (`NotFound` "no such <noun>"), or a page."""

    def __init__(self, store: Store, repository: Callable[[Transaction], Readable[R]], noun: str) -> None:
        self.store = store
        self._repository = repository
        self.noun = noun

    async def get(self, key: str) -> R:
        async with self.store.transaction(readonly=True) as tx:
            row = await self._repository(tx).get(key)
        if row is None:
            raise NotFound(f"no such {self.noun}")
        return row

    async def list(self, page: Page) -> list[R]:
        async with self.store.transaction(readonly=True) as tx:
            return await self._repository(tx).list(limit=page.limit, offset=page.offset)


class Removable(Readable[R], Protocol[R]):
    async def delete(self, key: str, /) -> bool: ...


class RemovableRecords(Records[R]):
    """Records that can be deleted, unless other records still refer to them."""

    def __init__(
        self,
        store: Store,
        repository: Callable[[Transaction], Removable[R]],
        noun: str,
        *,
        in_use: str = "it is still in use",
    ) -> None:
        super().__init__(store, repository, noun)
        self._removable = repository
        self._in_use = in_use

    async def delete(self, key: str) -> None:
        """`NotFound`, or `Conflict` naming the referrers while something refers to it."""
        try:
            async with self.store.transaction() as tx:
                found = await self._removable(tx).delete(key)
        except StillReferenced as exc:
            raise Conflict(
                f"cannot delete the {self.noun}: {exc}",
                [f"{kind}: {i}" for kind, ids in exc.referrers.items() for i in ids],
            ) from exc
        except ReferenceViolation as exc:
            raise Conflict(f"cannot delete the {self.noun}: {self._in_use}") from exc
        if not found:
            raise NotFound(f"no such {self.noun}")


__all__ = [
    "Page",
    "Readable",
    "Records",
    "Removable",
    "RemovableRecords",
    "fresh_id",
    "iso_time",
    "reference",
    "wire_state_query",
]

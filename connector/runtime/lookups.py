"""A process as a counter-party names it (by its own or our process id): the one lookup of the
DSP paths, the token refresh and the GETs, which answers 404 unless the caller is the process's
counter-party."""

from __future__ import annotations

from typing import Protocol, TypeVar

from connector.runtime.errors import NotFound
from connector.store import Transaction
from connector.store.rows import NegotiationRow, TransferRow


class _Named(Protocol):
    @property
    def counter_party_id(self) -> str | None: ...


N = TypeVar("N", bound=_Named)
N_co = TypeVar("N_co", bound=_Named, covariant=True)


class _ByPid(Protocol[N_co]):
    async def get_by_pid(self, pid: str) -> N_co | None: ...


async def _named(rows: _ByPid[N], pid: str, sender: str, what: str) -> N:
    # our provider process is named by our providerPid; our consumer process by our consumerPid
    row = await rows.get_by_pid(pid)
    if row is None or row.counter_party_id != sender:
        raise NotFound(f"no {what} {pid}")
    return row


async def find_negotiation(tx: Transaction, pid: str, sender: str) -> NegotiationRow:
    return await _named(tx.negotiations, pid, sender, "negotiation")


async def find_transfer(tx: Transaction, pid: str, sender: str) -> TransferRow:
    return await _named(tx.transfers, pid, sender, "transfer process")

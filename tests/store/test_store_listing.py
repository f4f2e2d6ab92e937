"""Process listings filtered by DSP (wire) state in SQL before paging, newest first if asked.

A process's wire state is not a column: while a message of ours is in flight it is the state
the counter-party last acknowledged (`acked_state` in the row's JSON) or, before any
acknowledgement, the one its sending state leads to. The rows here are written by the
runtime's own mapping, and the expected answer is what the protocol's `wire_state` says of
each row read back.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import timedelta

from store_testlib import NOW

from connector.protocol import negotiation as neg
from connector.protocol import transfer as xfer
from connector.protocol.common import Role
from connector.runtime import negotiation_to_row, row_to_negotiation, row_to_transfer, transfer_to_row
from connector.services.records import wire_state_query
from connector.store import AgreementRow, Store, TransferRow

T = xfer.TransferState
N = neg.NegotiationState
TRANSFERS = 250
PAGE = 7


def transfer_states() -> list[tuple[T, T | None]]:
    """Every internal state; sending ones with and without an acknowledged state."""
    combos: list[tuple[T, T | None]] = []
    for s in T:
        if s.is_sending:
            combos += [(s, None)] + [(s, acked) for acked in xfer.WIRE_STATES if acked != xfer.SENDING[s]]
        else:
            combos.append((s, None))
    return combos


def a_transfer(i: int, state: T, acked: T | None) -> TransferRow:
    # created in a shuffled order (i * 37 mod 250), with ties every 50: the id breaks them
    created = NOW + timedelta(seconds=(i * 37) % TRANSFERS // 5)
    return transfer_to_row(
        xfer.Transfer(
            id=f"urn:uuid:t-{i:03d}",
            role=Role.PROVIDER,
            provider_pid=f"urn:uuid:t-{i:03d}",
            consumer_pid=f"urn:uuid:c-{i:03d}",
            state=state,
            counter_party_id="consumer-1",
            counter_party_address="https://consumer/dsp",
            agreement_id="urn:agreement:1",
            format="HttpData-PULL",
            created_at=created,
            updated_at=created,
            acked_state=acked,
        )
    )


async def pages(store: Store, state: T, newest_first: bool) -> list[list[TransferRow]]:
    out: list[list[TransferRow]] = []
    for offset in itertools.count(0, PAGE):
        async with store.transaction(readonly=True) as tx:
            page = await tx.transfers.list(
                wire_state=wire_state_query(state.value, xfer.SENDING),
                newest_first=newest_first,
                limit=PAGE,
                offset=offset,
            )
        if not page:
            return out
        out.append(page)
    raise AssertionError("unreachable")


def newest_first(rows: Sequence[TransferRow]) -> list[str]:
    return [r.id for r in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)]


async def test_transfers_by_wire_state_across_pages_newest_first(store: Store) -> None:
    combos = transfer_states()
    async with store.transaction() as tx:
        await tx.agreements.add(
            AgreementRow(
                id="urn:agreement:1",
                negotiation_id=None,
                provider_id="provider-1",
                consumer_id="consumer-1",
                target="asset-1",
                policy={"@type": "Agreement"},
                signed_at=NOW,
            )
        )
        for i in range(TRANSFERS):
            await tx.transfers.add(a_transfer(i, *combos[i % len(combos)]))
        stored = await tx.transfers.list(limit=None)
    assert len(stored) == TRANSFERS
    by_wire = {s: [r for r in stored if row_to_transfer(r).wire_state is s] for s in xfer.WIRE_STATES}
    # the mix is real: every wire state has rows, several reported by a sending state
    assert all(len(rows) > PAGE for rows in by_wire.values())
    assert any(T(r.state).is_sending for r in by_wire[T.STARTED])
    for state, expected in by_wire.items():
        got = await pages(store, state, newest_first=True)
        flat = [r.id for page in got for r in page]
        assert flat == newest_first(expected), state
        assert all(len(page) == PAGE for page in got[:-1])
        oldest = [r.id for page in await pages(store, state, newest_first=False) for r in page]
        assert oldest == list(reversed(flat))
    assert sum(len(rows) for rows in by_wire.values()) == TRANSFERS


async def test_filters_apply_before_the_page(store: Store) -> None:
    """A page of STARTED transfers is full although most transfers are in other states."""
    async with store.transaction() as tx:
        await tx.agreements.add(
            AgreementRow(
                id="urn:agreement:1",
                negotiation_id=None,
                provider_id="provider-1",
                consumer_id="consumer-1",
                target="asset-1",
                policy={"@type": "Agreement"},
                signed_at=NOW,
            )
        )
        for i in range(60):
            await tx.transfers.add(a_transfer(i, T.STARTED if i % 10 == 0 else T.REQUESTED, None))
        started = await tx.transfers.list(
            wire_state=wire_state_query("STARTED", xfer.SENDING), newest_first=True, limit=5
        )
        oldest = await tx.transfers.list(limit=5)
    assert len(started) == 5 and {r.state for r in started} == {"STARTED"}
    assert [r.created_at for r in started] == sorted((r.created_at for r in started), reverse=True)
    assert [r.created_at for r in oldest] == sorted(r.created_at for r in oldest)


async def test_negotiations_by_wire_state(store: Store) -> None:
    """An AGREEING negotiation whose agreement is not yet acknowledged reports REQUESTED (the
    state acknowledged last), or AGREED before anything was acknowledged."""
    rows = [
        (N.REQUESTED, None),
        (N.AGREEING, N.REQUESTED),
        (N.AGREEING, None),
        (N.AGREED, None),
        (N.TERMINATING, N.OFFERED),
        (N.FINALIZED, None),
    ]
    async with store.transaction() as tx:
        for i, (state, acked) in enumerate(rows):
            created = NOW + timedelta(minutes=i)
            await tx.negotiations.add(
                negotiation_to_row(
                    neg.Negotiation(
                        id=f"urn:uuid:n-{i}",
                        role=Role.PROVIDER,
                        provider_pid=f"urn:uuid:n-{i}",
                        consumer_pid=f"urn:uuid:c-{i}",
                        state=state,
                        counter_party_id="consumer-1",
                        counter_party_address="https://consumer/dsp",
                        offer={"@id": "o"},
                        created_at=created,
                        updated_at=created,
                        acked_state=acked,
                    )
                )
            )
    found: dict[str, list[str]] = {}
    async with store.transaction(readonly=True) as tx:
        for s in neg.WIRE_STATES:
            listed = await tx.negotiations.list(
                wire_state=wire_state_query(s.value, neg.SENDING), newest_first=True, limit=None
            )
            assert all(row_to_negotiation(r).wire_state is s for r in listed)
            found[s.value] = [r.id for r in listed]
    assert found["REQUESTED"] == ["urn:uuid:n-1", "urn:uuid:n-0"]
    assert found["AGREED"] == ["urn:uuid:n-3", "urn:uuid:n-2"]
    assert found["OFFERED"] == ["urn:uuid:n-4"]
    assert found["FINALIZED"] == ["urn:uuid:n-5"]
    assert found["TERMINATED"] == []

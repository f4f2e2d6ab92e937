"""The unit of work: atomic commit of state and outbox, optimistic concurrency, leases."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from store_testlib import NOW, OpenStore

from connector.store import (
    AgreementRow,
    ConcurrentUpdate,
    DuplicateKey,
    NegotiationRow,
    NestedTransaction,
    OutboxMessage,
    Store,
    StoreError,
)


def negotiation(negotiation_id: str = "n1", **changes: object) -> NegotiationRow:
    row = NegotiationRow(
        id=negotiation_id,
        role="consumer",
        state="INITIAL",
        created_at=NOW,
        updated_at=NOW,
        consumer_pid=f"urn:uuid:{negotiation_id}",
        data={"step": 0},
    )
    return replace(row, **changes)  # type: ignore[arg-type]


def message(key: str, process_id: str = "n1", **changes: object) -> OutboxMessage:
    row = OutboxMessage.new(
        message_key=key,
        destination="https://provider/negotiations/request",
        payload={"@type": "ContractRequestMessage", "key": key},
        now=NOW,
        process_kind="negotiation",
        process_id=process_id,
        id=f"id-{key}",
    )
    return replace(row, **changes)  # type: ignore[arg-type]


class Boom(Exception):
    pass


async def test_an_exception_leaves_neither_state_nor_outbox(store: Store) -> None:
    with pytest.raises(Boom):
        async with store.transaction() as tx:
            await tx.negotiations.add(negotiation())
            assert await tx.outbox.add(message("k1"))
            raise Boom
    async with store.transaction(readonly=True) as tx:
        assert await tx.negotiations.get("n1") is None
        assert await tx.outbox.get_by_key("k1") is None

    async with store.transaction() as tx:
        await tx.negotiations.add(negotiation())
    with pytest.raises(Boom):
        async with store.transaction() as tx:
            current = await tx.negotiations.get("n1")
            assert current is not None
            await tx.negotiations.save(replace(current, state="REQUESTING"))
            await tx.outbox.add(message("k2"))
            raise Boom
    async with store.transaction(readonly=True) as tx:
        current = await tx.negotiations.get("n1")
        assert current is not None and (current.state, current.version) == ("INITIAL", 1)
        assert await tx.outbox.list() == []


async def test_a_database_error_rolls_back_the_whole_unit(store: Store) -> None:
    agreement = AgreementRow(
        id="ag", provider_id="p", consumer_id="c", target="t", policy={}, signed_at=NOW, negotiation_id=None
    )
    async with store.transaction() as tx:
        await tx.agreements.add(agreement)
    with pytest.raises(DuplicateKey):
        async with store.transaction() as tx:
            await tx.negotiations.add(negotiation())
            await tx.outbox.add(message("k1"))
            await tx.agreements.add(agreement)
    async with store.transaction(readonly=True) as tx:
        assert await tx.negotiations.get("n1") is None
        assert await tx.outbox.list() == []


async def test_state_and_outbox_commit_together(store: Store) -> None:
    async with store.transaction() as tx:
        created = await tx.negotiations.add(negotiation())
        await tx.negotiations.save(
            replace(created, state="REQUESTING", updated_at=NOW + timedelta(seconds=1))
        )
        await tx.outbox.add(message("k1"))
    async with store.transaction(readonly=True) as tx:
        current = await tx.negotiations.get("n1")
        assert current is not None and (current.state, current.version) == ("REQUESTING", 2)
        queued = await tx.outbox.list(process_kind="negotiation", process_id="n1")
        assert [m.message_key for m in queued] == ["k1"]


async def test_stale_version_is_refused(store: Store) -> None:
    async with store.transaction() as tx:
        v1 = await tx.negotiations.add(negotiation())
        v2 = await tx.negotiations.save(replace(v1, state="REQUESTING"))
        assert v2.version == 2
    async with store.transaction() as tx:
        with pytest.raises(ConcurrentUpdate) as caught:
            await tx.negotiations.save(replace(v1, state="TERMINATED"))
        assert caught.value.expected_version == 1
        with pytest.raises(ConcurrentUpdate):
            await tx.negotiations.save(replace(v2, state="TERMINATED"), expected_version=7)
        with pytest.raises(ConcurrentUpdate):
            await tx.negotiations.save(negotiation("ghost", version=1))
        v3 = await tx.negotiations.save(replace(v1, state="REQUESTED"), expected_version=2)
        assert v3.version == 3
    async with store.transaction(readonly=True) as tx:
        current = await tx.negotiations.get("n1")
        assert current is not None and (current.state, current.version) == ("REQUESTED", 3)


async def test_concurrent_writers_from_two_pools_one_wins(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    await first.migrate()
    async with first.transaction() as tx:
        await tx.negotiations.add(negotiation())
    for round_number in range(5):
        barrier = asyncio.Barrier(2)

        async def update(store: Store, state: str, barrier: asyncio.Barrier, round_number: int) -> str:
            async with store.transaction(readonly=True) as tx:
                current = await tx.negotiations.get("n1")
            assert current is not None
            await barrier.wait()  # both have read the same version
            try:
                async with store.transaction() as tx:
                    await tx.negotiations.save(replace(current, state=state))
                    await tx.outbox.add(message(f"{state}-{round_number}"))
            except ConcurrentUpdate:
                return "lost"
            return "won"

        results = await asyncio.gather(
            update(first, "A", barrier, round_number), update(second, "B", barrier, round_number)
        )
        assert sorted(results) == ["lost", "won"]
        async with first.transaction(readonly=True) as tx:
            current = await tx.negotiations.get("n1")
            assert current is not None and current.version == round_number + 2
            winner = "A" if results[0] == "won" else "B"
            assert current.state == winner
            keys = {m.message_key for m in await tx.outbox.list(limit=None)}
            assert f"{winner}-{round_number}" in keys
            assert f"{'B' if winner == 'A' else 'A'}-{round_number}" not in keys


async def test_nested_transaction_is_refused(store: Store, open_store: OpenStore) -> None:
    other = await open_store()
    async with store.transaction() as tx:
        await tx.negotiations.add(negotiation())
        with pytest.raises(NestedTransaction):
            async with store.transaction(readonly=True):
                pass
        # Another store (another pool) is a different database client: allowed, and it does not
        # see the uncommitted row.
        async with other.transaction(readonly=True) as outside:
            assert await outside.negotiations.get("n1") is None
    async with store.transaction(readonly=True) as tx:
        assert await tx.negotiations.get("n1") is not None


async def test_other_tasks_may_read_while_a_transaction_is_open(store: Store) -> None:
    async def read() -> NegotiationRow | None:
        async with store.transaction(readonly=True) as tx:
            return await tx.negotiations.get("n1")

    async with store.transaction() as tx:
        await tx.negotiations.add(negotiation())
        # A task started here is not nested (its own transaction, its own connection).
        assert await asyncio.create_task(read()) is None
    assert await asyncio.create_task(read()) is not None


async def test_readonly_transactions_refuse_writes(store: Store) -> None:
    with pytest.raises(StoreError, match="read-only"):
        async with store.transaction(readonly=True) as tx:
            await tx.negotiations.add(negotiation())
    async with store.transaction(readonly=True) as tx:
        assert await tx.negotiations.get("n1") is None


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="naive"):
        async with store.transaction() as tx:
            await tx.negotiations.add(negotiation(created_at=datetime(2026, 1, 1)))


async def test_leases(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.negotiations.add(negotiation())
        await tx.negotiations.add(negotiation("n2"))
    assert await store.acquire_lease("negotiation", "n1", "replica-a", NOW, 30)
    assert not await store.acquire_lease("negotiation", "n1", "replica-b", NOW + timedelta(seconds=29), 30)
    # The holder renews.
    assert await store.acquire_lease("negotiation", "n1", "replica-a", NOW + timedelta(seconds=20), 30)
    assert not await store.acquire_lease("negotiation", "n1", "replica-b", NOW + timedelta(seconds=49), 30)
    async with store.transaction(readonly=True) as tx:
        free = await tx.negotiations.list(lease_free_at=NOW + timedelta(seconds=49))
        assert [n.id for n in free] == ["n2"]
        held = await tx.negotiations.get("n1")
        assert held is not None and held.lease_owner == "replica-a"
        assert held.lease_until == NOW + timedelta(seconds=50)
    # Expired: another replica takes over, and the former holder can no longer release it.
    assert await store.acquire_lease("negotiation", "n1", "replica-b", NOW + timedelta(seconds=50), 30)
    assert not await store.release_lease("negotiation", "n1", "replica-a")
    # Saving the process leaves the lease alone.
    async with store.transaction() as tx:
        current = await tx.negotiations.get("n1")
        assert current is not None
        await tx.negotiations.save(replace(current, state="REQUESTED", lease_owner=None, lease_until=None))
        after = await tx.negotiations.get("n1")
        assert after is not None and after.lease_owner == "replica-b"
    assert await store.release_lease("negotiation", "n1", "replica-b")
    assert await store.acquire_lease("negotiation", "n1", "replica-a", NOW + timedelta(seconds=51), 30)
    assert not await store.acquire_lease("negotiation", "missing", "replica-a", NOW, 30)
    with pytest.raises(ValueError):
        await store.acquire_lease("contract", "n1", "replica-a", NOW, 30)  # type: ignore[arg-type]


async def test_lease_is_exclusive_under_contention(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(2)]
    await stores[0].migrate()
    async with stores[0].transaction() as tx:
        for index in range(10):
            await tx.negotiations.add(negotiation(f"n{index}"))
    owners = [f"replica-{index}" for index in range(6)]
    results = await asyncio.gather(
        *(
            stores[index % 2].acquire_lease("negotiation", f"n{process}", owner, NOW, 60)
            for process in range(10)
            for index, owner in enumerate(owners)
        )
    )
    for process in range(10):
        assert sum(results[process * len(owners) : (process + 1) * len(owners)]) == 1

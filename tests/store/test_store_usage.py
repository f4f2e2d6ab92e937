"""Exact use counting under concurrency (one process and two), reservations of blocks of uses,
and the receiver's de-duplication of processed messages."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from store_testlib import NOW, OpenStore

from connector.store import ProcessedMessage, Store, UseReservation, UseResult


async def test_consume_use_counts_and_stops_at_the_limit(store: Store) -> None:
    assert await store.get_use_count("ag", "consumer", "asset") == 0
    assert await store.consume_use("ag", "consumer", "asset", 2) == UseResult(True, 1)
    assert await store.consume_use("ag", "consumer", "asset", 2) == UseResult(True, 2)
    assert await store.consume_use("ag", "consumer", "asset", 2) == UseResult(False, 2)
    # A larger limit (a new agreement version) allows more; None is unlimited.
    assert await store.consume_use("ag", "consumer", "asset", 3) == UseResult(True, 3)
    assert await store.consume_use("ag", "consumer", "asset", None) == UseResult(True, 4)
    # Counters are per (agreement, consumer, target).
    assert await store.consume_use("ag", "other", "asset", 1) == UseResult(True, 1)
    assert await store.consume_use("ag", "consumer", "other", None) == UseResult(True, 1)
    assert await store.consume_use("ag", "nobody", "asset", 0) == UseResult(False, 0)
    assert await store.consume_use("ag", "consumer", "asset", 0) == UseResult(False, 4)
    assert await store.get_use_count("ag", "consumer", "asset") == 4


async def test_100_concurrent_uses_against_limit_10(store: Store) -> None:
    results = await asyncio.gather(*(store.consume_use("ag", "c", "t", 10) for _ in range(100)))
    assert sum(result.allowed for result in results) == 10
    assert sorted(result.count_after for result in results if result.allowed) == list(range(1, 11))
    assert all(result.count_after == 10 for result in results if not result.allowed)
    assert await store.get_use_count("ag", "c", "t") == 10


async def test_concurrent_uses_across_two_stores_are_exact(open_store: OpenStore) -> None:
    stores = [await open_store(), await open_store()]
    await stores[0].migrate()
    results = await asyncio.gather(
        *(stores[index % 2].consume_use("ag", "c", "t", 10) for index in range(100))
    )
    assert sum(result.allowed for result in results) == 10
    unlimited = await asyncio.gather(
        *(stores[index % 2].consume_use("ag", "c", "u", None) for index in range(60))
    )
    assert sorted(result.count_after for result in unlimited) == list(range(1, 61))
    assert await stores[1].get_use_count("ag", "c", "t") == 10
    assert await stores[0].get_use_count("ag", "c", "u") == 60


async def test_reserve_uses_grants_blocks_within_the_limit(store: Store) -> None:
    assert await store.reserve_uses("ag", "c", "t", 100, 10) == UseReservation(10, 10)
    assert await store.reserve_uses("ag", "c", "t", 100, 1000) == UseReservation(90, 100)
    assert await store.reserve_uses("ag", "c", "t", 100, 5) == UseReservation(0, 100)
    assert await store.release_uses("ag", "c", "t", 30) == 70
    # with a divisor: at most 1/divisor of what is left, at least one
    assert await store.reserve_uses("ag", "c", "t", 100, 1000, divisor=16) == UseReservation(1, 71)
    assert await store.reserve_uses("ag", "c", "t", 200, 1000, divisor=16) == UseReservation(8, 79)
    assert await store.reserve_uses("ag", "c", "t", 200, 3, divisor=16) == UseReservation(3, 82)
    # a first reservation creates the counter
    assert await store.reserve_uses("ag", "c", "new", 1600, 1000, divisor=16) == UseReservation(100, 100)
    assert await store.reserve_uses("ag", "c", "none", 0, 5) == UseReservation(0, 0)
    assert await store.reserve_uses("ag", "c", "t", 50, 5) == UseReservation(0, 82)  # lower limit
    assert await store.get_use_count("ag", "c", "t") == 82
    # releases never take the counter below zero, nor create one
    assert await store.release_uses("ag", "c", "t", 1000) == 0
    assert await store.release_uses("ag", "c", "absent", 3) == 0
    assert await store.get_use_count("ag", "c", "absent") == 0
    # plain consumption and reservations share the counter
    assert await store.consume_use("ag", "c", "new", 101) == UseResult(True, 101)
    assert await store.consume_use("ag", "c", "new", 101) == UseResult(False, 101)


async def test_concurrent_reservations_across_two_stores_are_exact(open_store: OpenStore) -> None:
    """Two replicas (separate pools) reserving at once: the grants add up to the limit exactly."""
    stores = [await open_store(), await open_store()]
    await stores[0].migrate()
    results = await asyncio.gather(
        *(stores[i % 2].reserve_uses("ag", "c", "t", 500, 1 + i % 7, divisor=1 + i % 3) for i in range(300))
    )
    assert sum(r.granted for r in results) == 500
    assert all(0 <= r.count_after <= 500 for r in results)
    # each grant is a distinct range of use numbers: together exactly 1..500
    numbers = sorted(n for r in results for n in range(r.count_after - r.granted + 1, r.count_after + 1))
    assert numbers == list(range(1, 501))
    assert await stores[1].get_use_count("ag", "c", "t") == 500


async def test_processed_messages_deduplicate(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.processed.reserve("msg-1", NOW) is None
        await tx.processed.complete("msg-1", {"status": 201, "body": {"@type": "ContractNegotiation"}})
    async with store.transaction() as tx:
        earlier = await tx.processed.reserve("msg-1", NOW + timedelta(seconds=1))
        assert earlier == ProcessedMessage(
            message_key="msg-1",
            created_at=NOW,
            response={"status": 201, "body": {"@type": "ContractNegotiation"}},
        )
        assert await tx.processed.record("msg-2", ["ok"], NOW + timedelta(hours=1))
        assert not await tx.processed.record("msg-2", ["again"], NOW + timedelta(hours=2))
        got = await tx.processed.get("msg-2")
        assert got is not None and got.response == ["ok"]
        assert await tx.processed.get("msg-3") is None
    # A failed handling leaves no record: the retry is handled afresh.
    try:
        async with store.transaction() as tx:
            assert await tx.processed.reserve("msg-4", NOW) is None
            raise RuntimeError("handler failed")
    except RuntimeError:
        pass
    async with store.transaction() as tx:
        assert await tx.processed.reserve("msg-4", NOW) is None
        await tx.processed.complete("msg-4", None)
        assert await tx.processed.purge(NOW + timedelta(minutes=30)) == 2
        assert await tx.processed.get("msg-2") is not None


async def test_concurrent_duplicates_are_handled_once(open_store: OpenStore) -> None:
    """The same message arriving at two replicas at once: one handles it, the other replays."""
    stores = [await open_store(), await open_store()]
    await stores[0].migrate()
    handled: list[int] = []

    async def receive(index: int) -> object:
        async with stores[index % 2].transaction() as tx:
            earlier = await tx.processed.reserve("msg", NOW)
            if earlier is not None:
                return earlier.response
            await asyncio.sleep(0.02)  # handling takes a while; the duplicate waits for the outcome
            handled.append(index)
            await tx.processed.complete("msg", {"handled_by": index})
            return {"handled_by": index}

    responses = await asyncio.gather(*(receive(index) for index in range(6)))
    assert len(handled) == 1
    assert all(response == {"handled_by": handled[0]} for response in responses)

"""Blocks of reserved uses (`UseReservations`): exact alone, never over the limit together
(two replicas in one process, and in two processes), idle blocks go back, blocks shrink near
the limit and grow with demand."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest
from dataplane_testlib import CONSUMER, T0, FakeClock, Provider, agreement_doc, count_lteq, transfer
from db_testlib import OpenStore

from connector.dataplane.pep import decide
from connector.dataplane.uses import UseReservations
from connector.store import Store, UseReservation, UseResult


async def migrated(open_store: OpenStore, n: int = 2) -> list[Store]:
    """`n` replicas (stores with their own pools) on the test's database, migrated."""
    stores = [await open_store() for _ in range(n)]
    for s in stores:
        await s.migrate()
    return stores


KEY = ("urn:agreement:1", CONSUMER, "urn:asset:weather")
NOW = datetime.fromtimestamp(T0, UTC)


async def test_one_replica_gets_exactly_n_of_100_concurrent_requests(store: Store) -> None:
    uses = UseReservations(store)
    results = await asyncio.gather(*(uses(*KEY, 10) for _ in range(100)))
    permits = sorted(n for ok, n in results if ok)
    assert permits == list(range(1, 11))
    assert all(n == 10 for ok, n in results if not ok)
    assert await store.get_use_count(*KEY) == 10
    assert uses.held() == 0
    # near the limit every block was a single use: 10 grants and one "none left"
    assert uses.reservations == 11


async def test_pep_counts_exactly_through_reservations(store: Store) -> None:
    p = Provider()
    claims = await p.cache.cached_verify(p.token())
    view = transfer(agreement_doc([count_lteq(10)]))
    uses = UseReservations(store)
    results = await asyncio.gather(*(decide(claims, view, now=NOW, consume=uses) for _ in range(100)))
    permits = [r for r in results if r.permit]
    assert sorted(r.count_after for r in permits) == list(range(1, 11))  # type: ignore[type-var]
    denies = [r for r in results if not r.permit]
    assert len(denies) == 90 and all("use number 11 (10 completed)" in r.reason for r in denies)
    assert await store.get_use_count(*KEY) == 10


async def test_exact_with_large_blocks(store: Store) -> None:
    """Far from the limit blocks are large; the last uses still all go out, and no more."""
    uses = UseReservations(store, min_block=64, max_block=256)
    results = await asyncio.gather(*(uses(*KEY, 1000) for _ in range(1300)))
    assert sorted(n for ok, n in results if ok) == list(range(1, 1001))
    assert sum(not ok for ok, _ in results) == 300
    assert uses.reservations < 200  # not one write per use
    assert await store.get_use_count(*KEY) == 1000


async def test_two_replicas_never_over_grant(open_store: OpenStore) -> None:
    """Two replicas (two stores, two reservation pools) racing for the same counter."""
    stores = await migrated(open_store)
    replicas = [UseReservations(s, min_block=8, max_block=64) for s in stores]
    for limit, requests, target in ((10, 100, "small"), (500, 1500, "large")):
        key = (KEY[0], KEY[1], target)
        results = await asyncio.gather(*(replicas[i % 2](*key, limit) for i in range(requests)))
        permitted = sum(ok for ok, _ in results)
        # each replica had more requests than the limit, so both drained their blocks: exact
        assert permitted == limit
        assert sum(r.held() for r in replicas) == 0
        assert await stores[0].get_use_count(*key) == limit


async def test_two_replicas_with_idle_uses_never_over_grant(open_store: OpenStore) -> None:
    """A replica holding reserved uses makes the other deny (the documented window), never
    permit one too many; once it gives them back, the other replica can have them."""
    stores = await migrated(open_store)
    clock = FakeClock(0)
    a, b = (UseReservations(s, min_block=16, clock=clock) for s in stores)
    assert await a(*KEY, 1000) == (True, 1)  # a holds 15 more (1000 // 16 = 62 >= 16)
    assert a.held() == 15
    results = [await b(*KEY, 1000) for _ in range(1000)]
    assert sum(ok for ok, _ in results) == 1000 - 16
    assert not results[-1][0] and results[-1][1] == 1000
    clock.advance(1.5)
    assert await a.release_idle() == 15
    assert [await b(*KEY, 1000) for _ in range(16)] == [(True, 986 + i) for i in range(15)] + [(False, 1000)]
    assert await stores[0].get_use_count(*KEY) == 1000


async def test_idle_blocks_go_back_and_numbers_stay_dense(store: Store) -> None:
    clock = FakeClock(0)
    uses = UseReservations(store, min_block=16, idle=1.0, clock=clock)
    assert await uses(*KEY, 1000) == (True, 1)
    assert await store.get_use_count(*KEY) == 16 and uses.held() == 15
    clock.advance(0.5)
    assert await uses.release_idle() == 0  # not idle yet
    assert await uses(*KEY, 1000) == (True, 2)
    clock.advance(0.9)
    assert await uses.release_idle() == 0  # the last request was 0.9 s ago
    clock.advance(0.2)
    assert await uses.release_idle() == 14
    assert await store.get_use_count(*KEY) == 2 and uses.held() == 0
    assert await uses(*KEY, 1000) == (True, 3)


async def test_run_gives_idle_blocks_back(store: Store) -> None:
    uses = UseReservations(store, idle=0.05)
    assert (await uses(*KEY, 1000))[0]
    assert await store.get_use_count(*KEY) > 1
    task = asyncio.create_task(uses.run())
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if await store.get_use_count(*KEY) == 1:
                break
        assert await store.get_use_count(*KEY) == 1 and uses.held() == 0
    finally:
        task.cancel()


async def test_close_gives_everything_back_and_later_uses_count_one_by_one(store: Store) -> None:
    uses = UseReservations(store)
    assert [ok for ok, _ in await asyncio.gather(*(uses(*KEY, 100) for _ in range(5)))] == [True] * 5
    assert await store.get_use_count(*KEY) > 5
    assert await uses.close() > 0
    assert await store.get_use_count(*KEY) == 5
    assert await uses(*KEY, 100) == (True, 6)
    assert await store.get_use_count(*KEY) == 6


async def test_uncounted_and_zero_limits_go_to_the_store(store: Store) -> None:
    uses = UseReservations(store)
    assert await uses(*KEY, None) == (True, 1)
    assert await uses(*KEY, None) == (True, 2)
    assert await uses(*KEY, 0) == (False, 2)
    assert uses.reservations == 0


class SpyStore:
    """A store in memory that records every reservation, and can be slowed or made to fail."""

    def __init__(self) -> None:
        self.count = 0
        self.grants: list[tuple[int, int]] = []  # (left before, granted)
        self.gate: asyncio.Event | None = None
        self.fail = 0
        self.asked = 0  # reservations started (a gated one counts before it is granted)

    async def consume_use(
        self, agreement_id: str, consumer_id: str, target: str, limit: int | None
    ) -> UseResult:
        if limit is not None and self.count >= limit:
            return UseResult(False, self.count)
        self.count += 1
        return UseResult(True, self.count)

    async def reserve_uses(
        self, agreement_id: str, consumer_id: str, target: str, limit: int, want: int, *, divisor: int = 1
    ) -> UseReservation:
        self.asked += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the database is down")
        left = limit - self.count
        granted = 0 if left <= 0 else min(want, max(1, left // divisor))
        self.grants.append((left, granted))
        self.count += granted
        return UseReservation(granted, self.count)

    async def release_uses(self, agreement_id: str, consumer_id: str, target: str, n: int) -> int:
        self.count -= n
        return self.count


async def test_blocks_shrink_to_single_uses_near_the_limit() -> None:
    spy = SpyStore()
    uses = UseReservations(spy, min_block=64, max_block=1024)
    results = [await uses(*KEY, 2000) for _ in range(2001)]
    assert [n for _, n in results] == [*range(1, 2001), 2000] and not results[-1][0]
    assert all(granted <= max(1, left // 16) for left, granted in spy.grants)
    assert all(g == 1 for left, g in spy.grants if 0 < left < 32)
    assert spy.grants[-2:] == [(1, 1), (0, 0)]


async def test_blocks_grow_with_demand_up_to_max_block() -> None:
    spy = SpyStore()
    clock = FakeClock(0)  # time stands still: every block lasted less than `fast`
    uses = UseReservations(spy, min_block=16, max_block=256, clock=clock)
    for _ in range(3000):
        assert (await uses(*KEY, 10**9))[0]
    wants = [g for _, g in spy.grants]
    assert wants[:5] == [16, 16, 32, 64, 128] and set(wants[5:]) == {256}
    # a slow counter asks for smaller blocks again
    for _ in range(1500):
        clock.advance(2.0)
        assert (await uses(*KEY, 10**9))[0]
    assert spy.grants[-1][1] == 16


async def test_next_block_is_fetched_before_the_pool_runs_dry() -> None:
    spy = SpyStore()
    clock = FakeClock(0)
    uses = UseReservations(spy, min_block=64, max_block=64, clock=clock)
    assert await uses(*KEY, 10**6) == (True, 1)
    spy.gate = asyncio.Event()  # reservations now wait until released
    for n in range(2, 32):
        assert await uses(*KEY, 10**6) == (True, n)
    await asyncio.sleep(0)
    assert spy.asked == 1 and uses.held() == 33  # not yet down to half: no refill
    assert await uses(*KEY, 10**6) == (True, 32)
    await asyncio.sleep(0)
    assert spy.asked == 2 and uses.held() == 32  # down to half: a refill is under way
    for n in range(33, 65):  # the rest of the block goes out while the reservation waits
        assert await uses(*KEY, 10**6) == (True, n)
    assert uses.held() == 0
    spy.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(spy.grants) == 2 and uses.held() == 64
    assert [await uses(*KEY, 10**6) for _ in range(3)] == [(True, 65), (True, 66), (True, 67)]


async def test_a_cancelled_request_does_not_lose_a_reservation() -> None:
    spy = SpyStore()
    spy.gate = asyncio.Event()
    uses = UseReservations(spy)
    first = asyncio.create_task(uses(*KEY, 100))
    await asyncio.sleep(0)
    first.cancel()
    spy.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    for _ in range(5):
        await asyncio.sleep(0)
    assert uses.held() == 6  # the reservation (100 // 16 = 6) landed in the pool all the same
    assert await uses(*KEY, 100) == (True, 1)
    assert len(spy.grants) == 1


async def test_a_failed_reservation_fails_its_requests_and_the_next_one_retries() -> None:
    spy = SpyStore()
    spy.fail = 1
    uses = UseReservations(spy)
    results = await asyncio.gather(*(uses(*KEY, 100) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await uses(*KEY, 100) == (True, 1)


async def test_a_failed_release_drops_the_uses_and_never_hands_them_out(store: Store) -> None:
    """Whether a failed release committed is unknown: the block is dropped (fail closed), so
    the consumer may lose those uses but never gets one too many."""
    clock = FakeClock(0)
    uses = UseReservations(store, clock=clock)
    assert await uses(*KEY, 1000) == (True, 1)
    assert uses.held() == 15

    async def down(*args: object) -> int:
        raise ConnectionError("the database is down")

    release = store.release_uses
    store.release_uses = down  # type: ignore[method-assign,assignment]
    clock.advance(2)
    assert await uses.release_idle() == 0
    assert uses.held() == 0 and await store.get_use_count(*KEY) == 16
    store.release_uses = release  # type: ignore[method-assign]
    assert await uses(*KEY, 1000) == (True, 17)
    assert await uses.close() == 15
    assert await store.get_use_count(*KEY) == 17


REPLICA = textwrap.dedent("""
    import asyncio, json, sys
    from connector.dataplane.uses import UseReservations
    from connector.store import Store

    async def main(url, limit, requests):
        store = await Store.open(url)
        try:
            uses = UseReservations(store, min_block=4, max_block=32)
            print("ready", flush=True)
            sys.stdin.readline()  # start together
            results = await asyncio.gather(*(uses("ag", "c", "t", limit) for _ in range(requests)))
            await uses.close()
            print(json.dumps([n for ok, n in results if ok]), flush=True)
        finally:
            await store.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
""")


async def test_two_processes_never_over_grant(db_url: str, store: Store) -> None:
    """Replicas in separate processes on the same database: permits add up to the limit."""
    limit, requests = 300, 400
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REPLICA, db_url, str(limit), str(requests)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outs = [await asyncio.to_thread(proc.communicate, timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    permits = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert all(proc.returncode == 0 for proc in procs)
    # each process wanted more than the limit, so both drained their blocks: exactly the limit
    assert sum(len(p) for p in permits) == limit
    assert await store.get_use_count("ag", "c", "t") == limit

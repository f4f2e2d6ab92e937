"""The transactional outbox: claims, leases, retries with backoff, dead letters, per-process order,
and concurrent claimers in separate connection pools."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from store_testlib import NOW, OpenStore

from connector.store import OutboxMessage, Store, backoff_ceiling, next_backoff


def message(
    key: str, *, process_id: str | None = None, seconds: float = 0, **changes: object
) -> OutboxMessage:
    row = OutboxMessage.new(
        message_key=key,
        destination=f"https://peer/{key}",
        payload={"@type": "dspace:ContractRequestMessage", "key": key, "n": [1, 2.5, None, "ü"]},
        now=NOW + timedelta(seconds=seconds),
        process_kind=None if process_id is None else "negotiation",
        process_id=process_id,
        headers={"Content-Type": "application/json"},
        id=f"id-{key}",
    )
    return replace(row, **changes)  # type: ignore[arg-type]


async def add(store: Store, *messages: OutboxMessage) -> None:
    async with store.transaction() as tx:
        for item in messages:
            await tx.outbox.add(item)


async def test_add_is_idempotent_by_message_key(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.outbox.add(message("k1"))
        assert not await tx.outbox.add(replace(message("k1"), id="another-id", payload={"changed": True}))
        stored = await tx.outbox.get("id-k1")
    assert stored == replace(message("k1"), seq=0)
    async with store.transaction(readonly=True) as tx:
        assert await tx.outbox.get("another-id") is None
        assert (await tx.outbox.count_by_status()) == {"pending": 1, "in_flight": 0, "sent": 0, "dead": 0}


async def test_claim_lease_expiry_and_stale_worker(store: Store) -> None:
    await add(store, message("late", seconds=10), message("k1"), message("k2", seconds=1))
    claimed = await store.claim_due("worker-a", NOW + timedelta(seconds=1), limit=10, lease_seconds=30)
    assert [m.message_key for m in claimed] == ["k1", "k2"]
    first = claimed[0]
    assert (first.status, first.attempts, first.claimed_by) == ("in_flight", 1, "worker-a")
    assert first.claimed_until == NOW + timedelta(seconds=31)
    assert first.payload == message("k1").payload and first.headers == {"Content-Type": "application/json"}
    # Claimed rows are not due for anyone else while the claim lasts.
    assert [
        m.message_key for m in await store.claim_due("worker-b", NOW + timedelta(seconds=20), 10, 30)
    ] == ["late"]
    # worker-a stalls; its claim on k1 and k2 expires and worker-b takes them over.
    retaken = await store.claim_due("worker-b", NOW + timedelta(seconds=31), limit=10, lease_seconds=30)
    assert [m.message_key for m in retaken] == ["k1", "k2"]
    assert retaken[0].attempts == 2
    # The stale worker can no longer mark them; the current claimant can.
    assert not await store.mark_sent(first.id, "worker-a", NOW + timedelta(seconds=32))
    assert not await store.mark_failed(first.id, "worker-a", "timeout", None)
    assert await store.mark_sent(first.id, "worker-b", NOW + timedelta(seconds=32))
    assert not await store.mark_sent(first.id, "worker-b", NOW + timedelta(seconds=33))  # already sent
    async with store.transaction(readonly=True) as tx:
        sent = await tx.outbox.get(first.id)
        assert sent is not None and sent.status == "sent" and sent.sent_at == NOW + timedelta(seconds=32)
        assert sent.claimed_until is None
        assert await tx.outbox.count_by_status() == {"pending": 0, "in_flight": 2, "sent": 1, "dead": 0}


async def test_retry_backoff_and_dead_letter(store: Store) -> None:
    await add(store, message("k1"))
    rng = random.Random(7)
    for attempt in range(1, 4):
        now = NOW + timedelta(hours=attempt)
        (claimed,) = await store.claim_due("w", now, 5, 30)
        assert claimed.attempts == attempt
        delay = next_backoff(claimed.attempts, base=1.0, cap=60.0, rng=rng)
        assert 0 <= delay < backoff_ceiling(claimed.attempts, 1.0, 60.0)
        retry_at = now + timedelta(seconds=delay + 1)
        assert await store.mark_failed(claimed.id, "w", f"HTTP 503 attempt {attempt}", retry_at)
        assert await store.claim_due("w", retry_at - timedelta(microseconds=1), 5, 30) == []
        async with store.transaction(readonly=True) as tx:
            assert await tx.outbox.next_due_at() == retry_at
            pending = await tx.outbox.get(claimed.id)
            assert pending is not None and pending.status == "pending" and pending.claimed_by is None
            assert pending.last_error == f"HTTP 503 attempt {attempt}"
    (claimed,) = await store.claim_due("w", NOW + timedelta(days=1), 5, 30)
    assert await store.mark_failed(claimed.id, "w", "x" * 10_000, None)
    assert await store.claim_due("w", NOW + timedelta(days=365), 5, 30) == []
    async with store.transaction() as tx:
        dead = await tx.outbox.list(status="dead")
        assert [m.id for m in dead] == [claimed.id] and dead[0].attempts == 4
        assert dead[0].last_error is not None and len(dead[0].last_error) == 4000
        assert await tx.outbox.next_due_at() is None
        assert await tx.outbox.requeue(claimed.id, NOW + timedelta(days=2))
        assert not await tx.outbox.requeue(claimed.id, NOW + timedelta(days=2))  # no longer dead
    (again,) = await store.claim_due("w", NOW + timedelta(days=2), 5, 30)
    assert again.attempts == 1


async def test_messages_of_one_process_go_out_in_order(store: Store) -> None:
    await add(
        store,
        message("p1-a", process_id="p1"),
        message("p1-b", process_id="p1"),
        message("p1-c", process_id="p1"),
        message("p2-a", process_id="p2", seconds=1),
        message("loose", seconds=2),
    )
    async with store.transaction(readonly=True) as tx:
        assert [m.seq for m in await tx.outbox.list(process_id="p1")] == [1, 2, 3]
    now = NOW + timedelta(seconds=5)
    claimed = await store.claim_due("w", now, 10, 3600)
    assert [m.message_key for m in claimed] == ["p1-a", "p2-a", "loose"]
    assert await store.claim_due("w", now, 10, 30) == []
    assert await store.mark_sent(claimed[0].id, "w", now)
    (second,) = await store.claim_due("w", now, 10, 30)
    assert second.message_key == "p1-b"
    # A retry waiting for its time still holds back the later message.
    assert await store.mark_failed(second.id, "w", "503", now + timedelta(seconds=60))
    assert await store.claim_due("w", now + timedelta(seconds=59), 10, 30) == []
    (retried,) = await store.claim_due("w", now + timedelta(seconds=60), 10, 30)
    assert retried.message_key == "p1-b"
    # A dead letter does not block the process forever.
    assert await store.mark_failed(retried.id, "w", "gone", None)
    (third,) = await store.claim_due("w", now + timedelta(seconds=60), 10, 30)
    assert third.message_key == "p1-c"


async def test_list_filters_give_each_call_its_own_values(store: Store) -> None:
    """The runtime's probe (unfinished messages of one process, one row) and the other filter
    shapes: statements are built once per shape and reused, so every call must see only its
    own values."""
    await add(store, *(message(f"{p}-{i}", process_id=p, seconds=i) for p in ("p1", "p2") for i in range(3)))
    claimed = await store.claim_due("w", NOW + timedelta(seconds=10), 10, 30)
    assert [m.message_key for m in claimed] == ["p1-0", "p2-0"]
    assert await store.mark_sent(claimed[0].id, "w", NOW)

    async def keys(**filters: object) -> list[str]:
        async with store.transaction(readonly=True) as tx:
            return [m.message_key for m in await tx.outbox.list(**filters)]  # type: ignore[arg-type]

    unfinished = ("pending", "in_flight")
    for process, first in (("p1", "p1-1"), ("p2", "p2-0"), ("p3", None)):
        got = await keys(status=unfinished, process_kind="negotiation", process_id=process, limit=1)
        assert got == ([first] if first else [])
    assert await keys(status="sent") == ["p1-0"]
    assert await keys(status=["in_flight"]) == ["p2-0"]
    assert await keys(status=[]) == []
    assert await keys(process_id="p2", limit=None, offset=1) == ["p2-1", "p2-2"]
    assert await keys(process_id="p1", limit=1, offset=2) == ["p1-2"]
    assert await keys(process_kind="transfer") == []
    with pytest.raises(ValueError):
        await keys(limit=-1)


async def test_housekeeping(store: Store) -> None:
    await add(store, *(message(f"k{index}", seconds=index) for index in range(4)))
    claimed = await store.claim_due("w", NOW + timedelta(seconds=10), 3, 30)
    assert len(claimed) == 3
    for index, item in enumerate(claimed):
        assert await store.mark_sent(item.id, "w", NOW + timedelta(minutes=index))
    async with store.transaction() as tx:
        assert await tx.outbox.purge_sent(NOW + timedelta(minutes=2)) == 2
        assert [m.message_key for m in await tx.outbox.list()] == ["k2", "k3"]
        assert [m.message_key for m in await tx.outbox.list(status=["pending"])] == ["k3"]
        assert await tx.outbox.get_by_key("k3") is not None
        assert await tx.outbox.claim_due("w", NOW, 0, 30) == []


async def test_two_stores_never_claim_the_same_message(open_store: OpenStore) -> None:
    """Two connection pools (as two replicas would have), two workers each, many rounds."""
    stores = [await open_store(), await open_store()]
    await stores[0].migrate()
    for round_number in range(4):
        processes = [f"r{round_number}-p{index}" for index in range(6)]
        batch = [
            message(f"{process}-{seq}", process_id=process, seconds=seq)
            for process in processes
            for seq in range(4)
        ] + [message(f"r{round_number}-loose-{index}", seconds=index % 7) for index in range(30)]
        await add(stores[0], *batch)
        claims: defaultdict[str, list[str]] = defaultdict(list)
        sent_per_process: defaultdict[str, list[int]] = defaultdict(list)
        workers = [
            _claim_until_idle(stores[index % 2], f"worker-{index}", claims, sent_per_process)
            for index in range(4)
        ]
        await asyncio.gather(*workers)
        duplicates = {key: workers for key, workers in claims.items() if len(workers) > 1}
        assert duplicates == {}
        assert set(claims) == {item.id for item in batch}
        assert all(seqs == [1, 2, 3, 4] for seqs in sent_per_process.values())
        async with stores[1].transaction(readonly=True) as tx:
            counts = await tx.outbox.count_by_status()
        assert counts["pending"] == counts["in_flight"] == 0


async def _claim_until_idle(
    store: Store, worker: str, claims: dict[str, list[str]], sent_per_process: dict[str, list[int]]
) -> None:
    now = NOW + timedelta(seconds=10)
    idle = 0
    while idle < 3:
        claimed = await store.claim_due(worker, now, limit=4, lease_seconds=300)
        if not claimed:
            idle += 1
            await asyncio.sleep(0.005)
            continue
        idle = 0
        for item in claimed:
            claims[item.id].append(worker)
            if item.process_id is not None:
                # Order within a process: every earlier message was sent before this claim.
                assert sent_per_process[item.process_id] == list(range(1, item.seq))
        await asyncio.sleep(0)
        for item in claimed:
            if item.process_id is not None:
                sent_per_process[item.process_id].append(item.seq)
            assert await store.mark_sent(item.id, worker, now)


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    assert [backoff_ceiling(n, 0.5, 30.0) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_ceiling(10_000, 1.0, 300.0) == 300.0
    with pytest.raises(ValueError):
        backoff_ceiling(0, 1.0, 10.0)
    with pytest.raises(ValueError):
        backoff_ceiling(1, 0.0, 10.0)
    first = [next_backoff(3, 1.0, 60.0, random.Random(42)) for _ in range(3)]
    assert first[0] == first[1] == first[2]  # deterministic for a seeded source

    class Fixed:
        def __init__(self, value: float) -> None:
            self.value = value

        def random(self) -> float:
            return self.value

    assert next_backoff(4, 1.0, 60.0, Fixed(0.0)) == 0.0
    assert next_backoff(4, 1.0, 60.0, Fixed(0.5)) == 4.0


@given(
    attempts=st.integers(min_value=1, max_value=2000),
    base=st.floats(min_value=0.001, max_value=100),
    cap=st.floats(min_value=0.001, max_value=1e6),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_full_jitter_within_bounds(attempts: int, base: float, cap: float, seed: int) -> None:
    delay = next_backoff(attempts, base, cap, random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2 ** min(attempts - 1, 63))


async def test_a_claim_in_progress_elsewhere_is_skipped_not_waited_for(open_store: OpenStore) -> None:
    first_store, second_store = await open_store(), await open_store()
    await first_store.migrate()
    await add(first_store, *(message(f"k{index}", seconds=index) for index in range(4)))
    async with first_store.transaction() as tx:
        first = await tx.outbox.claim_due("a", NOW + timedelta(seconds=5), 2, 60)
        second_task = asyncio.create_task(second_store.claim_due("b", NOW + timedelta(seconds=5), 10, 60))
        await asyncio.sleep(0.3)
        if first_store.dialect == "postgresql":
            # SKIP LOCKED: the other replica takes the rest at once, not waiting for this commit.
            assert second_task.done()
        else:
            # SQLite has one writer at a time: the other process waits for this commit.
            assert not second_task.done()
    second = await second_task
    assert [m.message_key for m in first] == ["k0", "k1"]
    assert [m.message_key for m in second] == ["k2", "k3"]

"""Use counting for the data plane in blocks: one database write per block of uses, not per use.

Counting every use with its own write transaction costs about a millisecond and serialises the
data plane on the store (SQLite has one writer). Instead each replica reserves a block of uses
in one transaction (`Store.reserve_uses`: the shared counter goes up by the block, never above
the limit) and hands the block's use numbers out in memory. A block left unused for `idle`
seconds, and every block on shutdown, goes back to the store (`Store.release_uses`).

Why this is exact:

* The shared counter always equals (uses handed out) + (uses reserved by some replica and not
  handed out yet): a reservation adds what it grants, a hand-out changes nothing, a release
  subtracts exactly what was reserved and never handed out. A reservation never takes the
  counter above the limit (its row is locked, and the update re-checks), so the uses handed out
  across all replicas sharing the store never exceed the limit.
* A replica denies only when its own pool is empty and a reservation (made after the request
  arrived, or in flight when it did) found the counter at the limit. Alone, a replica's
  reservations are the whole counter, so it denies only after it handed out all N uses: an
  N-use agreement gets exactly N permits, however many requests race.
* Near the limit blocks shrink: a reservation grants at most `max(1, left // divisor)` of the
  `left` free uses (divisor 16 by default), and at most what the replica asks for (see below).
  A replica holds at most two blocks (the current one and one fetched ahead). With several
  replicas, uses one holds but has not handed out can deny a request at another: at most two
  blocks per replica, each at most 1/16 of the uses left when it was reserved, so a single use
  once fewer than 32 are left, and they go back to the store `idle` seconds after their
  replica's last request for that counter (and on shutdown). That is the window in which a
  multi-replica deployment may deny a request that one shared counter would have permitted;
  it never permits one too many.
* A replica that dies without shutting down loses the blocks it held (the counter keeps them):
  the consumer gets at most two blocks (<= 2 * `max_block`, and <= 1/8 of what was left) fewer
  uses than the agreement grants, never more.

Use numbers (`count_after`) are the reserved counter positions, so one replica alone numbers its
permits 1..N; with several replicas a number may repeat after a release (counting stays exact).
A limit of `None` (uncounted) and limits <= 0 go straight to `Store.consume_use`.

Block sizes follow demand: a counter's first block asks for `min_block` uses; the next asks for
twice as many when the previous one lasted less than `fast` seconds, half as many when it lasted
more than `4 * fast`, within [min_block, max_block]. A busy counter so costs one store write per
`max_block` uses, a quiet one holds few uses (and loses few in a crash). A refill starts in the
background when a block of 16 or more is down to half, so a request waits for a reservation only
for a counter's first block, near the limit (single-use blocks), or when half a block went out
faster than one reservation transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from connector.store.rows import UseReservation, UseResult

log = logging.getLogger(__name__)

Key = tuple[str, str, str, int]  # agreement, consumer, target, limit
DIVISOR = 16  # a reservation grants at most max(1, left // DIVISOR) of the `left` free uses
HELD_BLOCKS = 2  # blocks a replica holds at most (the current one and one fetched ahead)


class ReservingStore(Protocol):
    async def consume_use(
        self, agreement_id: str, consumer_id: str, target: str, limit: int | None
    ) -> UseResult: ...

    async def reserve_uses(
        self,
        agreement_id: str,
        consumer_id: str,
        target: str,
        limit: int,
        want: int,
        *,
        divisor: int = 1,
    ) -> UseReservation: ...

    async def release_uses(self, agreement_id: str, consumer_id: str, target: str, n: int) -> int: ...


@dataclass(slots=True)
class _Pool:
    """The uses this replica reserved for one counter and has not handed out yet."""

    ranges: deque[list[int]] = field(default_factory=deque)  # [next, last] use numbers
    available: int = 0
    want: int = 1  # what the next reservation asks for
    last_grant: int = 0
    refilled_at: float = float("-inf")  # when the last reservation returned
    last_used: float = 0.0
    refill: asyncio.Task[UseReservation] | None = None

    def take(self) -> int:
        first = self.ranges[0]
        n = first[0]
        if n == first[1]:
            self.ranges.popleft()
        else:
            first[0] = n + 1
        self.available -= 1
        return n

    def detach(self) -> tuple[deque[list[int]], int]:
        ranges, n = self.ranges, self.available
        self.ranges, self.available = deque(), 0
        return ranges, n


class UseReservations:
    """`await uses(agreement_id, consumer_id, target, limit) -> (allowed, count_after)`: a
    `ConsumeUse` for `pep.decide`, backed by per-replica blocks of reserved uses.

    Run `run()` (the data plane app does) to give idle blocks back, and `close()` on shutdown.
    """

    def __init__(
        self,
        store: ReservingStore,
        *,
        min_block: int = 16,
        max_block: int = 1024,
        divisor: int = DIVISOR,
        idle: float = 1.0,
        fast: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < min_block <= max_block or divisor <= 0:
            raise ValueError("need 0 < min_block <= max_block and a positive divisor")
        self._store = store
        self.min_block = min_block
        self.max_block = max_block
        self.fast = fast
        self.divisor = divisor
        self.idle = idle
        self._clock = clock
        self._pools: dict[Key, _Pool] = {}
        self._closed = False  # after close(): every use is counted by the store, one by one
        self.reservations = 0  # store transactions that reserved (for tests and metrics)
        self.releases = 0

    def held(self) -> int:
        """Uses reserved by this replica and not handed out yet."""
        return sum(p.available for p in self._pools.values())

    async def consume(
        self, agreement_id: str, consumer_id: str, target: str, limit: int | None
    ) -> tuple[bool, int]:
        """Count one use if that stays within `limit`; `count_after` is this use's number (on a
        deny: the shared counter, which includes uses other replicas hold)."""
        if limit is None or limit <= 0 or self._closed:
            return await self._one_by_one(agreement_id, consumer_id, target, limit)
        key = (agreement_id, consumer_id, target, limit)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(want=self.min_block)
        pool.last_used = self._clock()
        while True:
            if pool.available:
                n = pool.take()
                # Start the next block at half of this one, while blocks are large (far from the
                # limit), so requests do not wait for the store's reservation transaction.
                if (
                    pool.refill is None
                    and pool.last_grant >= 16
                    and pool.available <= pool.last_grant // 2
                    and not self._closed
                ):
                    self._start_refill(key, pool)
                return True, n
            if self._closed:
                return await self._one_by_one(agreement_id, consumer_id, target, limit)
            task = pool.refill or self._start_refill(key, pool)
            # shielded: a request cancelled while waiting must not cancel a reservation that
            # other requests are waiting for (and whose uses would then be lost)
            result = await asyncio.shield(task)
            if result.granted == 0 and not pool.available:
                return False, result.count_after

    __call__ = consume  # a ConsumeUse, without a second coroutine per request

    async def _one_by_one(
        self, agreement_id: str, consumer_id: str, target: str, limit: int | None
    ) -> tuple[bool, int]:
        allowed, count_after = await self._store.consume_use(agreement_id, consumer_id, target, limit)
        return allowed, count_after

    def _start_refill(self, key: Key, pool: _Pool) -> asyncio.Task[UseReservation]:
        task = asyncio.get_running_loop().create_task(self._refill(key, pool))
        pool.refill = task
        task.add_done_callback(_retrieve)
        return task

    async def _refill(self, key: Key, pool: _Pool) -> UseReservation:
        agreement_id, consumer_id, target, limit = key
        try:
            result = await self._store.reserve_uses(
                agreement_id, consumer_id, target, limit, pool.want, divisor=self.divisor
            )
        finally:
            pool.refill = None
        self.reservations += 1
        now = self._clock()
        lasted, pool.refilled_at = now - pool.refilled_at, now
        if lasted < self.fast:
            pool.want = min(self.max_block, pool.want * 2)
        elif lasted > 4 * self.fast:
            pool.want = max(self.min_block, pool.want // 2)
        if result.granted:
            pool.ranges.append([result.count_after - result.granted + 1, result.count_after])
            pool.available += result.granted
            pool.last_grant = result.granted
        return result

    async def release_idle(self) -> int:
        """Give back the blocks of counters without a request for `idle` seconds; returns the
        number of uses given back (a block whose release fails is dropped: see `_release`)."""
        now = self._clock()
        returned = 0
        for key, pool in list(self._pools.items()):
            if pool.refill is not None or now - pool.last_used < self.idle:
                continue
            if pool.available:
                returned += await self._release(key, pool)
            if (
                not pool.available
                and pool.refill is None
                and self._clock() - pool.last_used >= self.idle
                and self._pools.get(key) is pool
            ):
                del self._pools[key]
        return returned

    async def _release(self, key: Key, pool: _Pool) -> int:
        _, n = pool.detach()
        try:
            await self._store.release_uses(key[0], key[1], key[2], n)
        except Exception:
            # Fail closed: whether the release committed is unknown (it may have failed at
            # COMMIT), so these uses are never handed out again; the store may keep counting them.
            log.warning(
                "giving %d reserved uses of %s back failed; they stay counted", n, key[0], exc_info=True
            )
            return 0
        self.releases += 1
        return n

    async def run(self, interval: float | None = None) -> None:
        """Give idle blocks back every `interval` (default `idle / 4`) seconds until cancelled."""
        period = interval if interval is not None else max(self.idle / 4, 0.01)
        while True:
            await asyncio.sleep(period)
            await self.release_idle()

    async def close(self) -> int:
        """Shutdown: no more reservations; wait for those in flight, then give every unused use
        back. Requests still arriving are counted by the store one by one."""
        self._closed = True
        for pool in list(self._pools.values()):
            if pool.refill is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pool.refill)
        returned = 0
        for key, pool in list(self._pools.items()):
            if pool.available:
                returned += await self._release(key, pool)
        self._pools.clear()
        return returned


def _retrieve(task: asyncio.Task[UseReservation]) -> None:
    # a prefetch nobody waits for must not end as "exception never retrieved"; waiters see it
    if not task.cancelled() and task.exception() is not None:
        log.warning("reserving uses failed: %s", task.exception())

"""The process engine: drives the pure protocol machines (``connector.protocol``), persists each
state change together with the messages it causes (one transaction: the transactional outbox),
and delivers those messages with retries and exponential backoff.

* No polling delay on the happy path: a committed state change wakes the dispatcher at once, and
  the first message of a process is claimed in the commit that creates it and sent right after.
* Safe with several replicas on one PostgreSQL: outbox rows are claimed with ``FOR UPDATE SKIP
  LOCKED``, process rows carry optimistic versions (a conflicting write is retried on fresh
  state), and a crash between commit and delivery only delays the message: another dispatcher
  (or this one after restart) claims it when its lease runs out.
* Decisions taken on one's own (``connector.protocol.followups``) are applied in the same
  transaction as the message that calls for them.

One engine serves both kinds of DSP process: a ``Kind`` names a kind's machine, its rows and its
repository. The engine depends on the store, a ``Transport`` (the DSP client), one ``Clock`` and
the after-commit hooks (audit, transfer listeners) it is given; nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from connector.identity.tokens import Claims
from connector.metrics import OUTBOX_DEAD, OUTBOX_RETRIES
from connector.protocol import negotiation as neg
from connector.protocol import transfer as xfer
from connector.protocol.common import (
    Acknowledged,
    DeliveryFailed,
    Outgoing,
    Received,
    Response,
    Role,
    StateTable,
)
from connector.protocol.decide import KnownOffer, Requester
from connector.protocol.errors import ProtocolError
from connector.protocol.followups import (
    CounterOfferRule,
    negotiation_follow_ups,
    transfer_follow_ups,
)
from connector.protocol.messages import (
    ContractNegotiation,
    DataAddress,
    DspModel,
    TransferProcess,
    parse_message,
)
from connector.runtime.errors import Busy
from connector.runtime.mapping import (
    negotiation_to_row,
    row_to_negotiation,
    row_to_transfer,
    transfer_to_row,
    with_peer_attested,
)
from connector.runtime.transport import Reply, Transport
from connector.runtime.webhooks import WEBHOOK_KIND, Webhooks
from connector.store import (
    ConcurrentUpdate,
    OutboxMessage,
    Store,
    StoreUnavailable,
    Transaction,
    next_backoff,
)
from connector.store.rows import AgreementRow, NegotiationRow, TransferRow
from connector.wireformat import Clock

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12  # deliveries of one message before it is dead-lettered
BACKOFF_BASE, BACKOFF_CAP = 0.2, 60.0
LEASE_SECONDS = 30.0
BATCH = 32
POLL = 1.0  # seconds between outbox polls when nothing wakes the dispatcher
WAIT_POLL = 0.5  # wait_for reads the process again at least this often (seconds)
TRANSITION_ATTEMPTS = 8  # writes of one transition that lost to a concurrent one before 503


def utcnow() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ what the engine is generic over


class Process(Protocol):
    """What the engine reads of a negotiation or a transfer."""

    @property
    def id(self) -> str: ...

    @property
    def state(self) -> Enum: ...

    @property
    def provider_pid(self) -> str | None: ...

    @property
    def consumer_pid(self) -> str | None: ...

    @property
    def counter_party_address(self) -> str: ...

    @property
    def peer_status_path(self) -> str | None: ...


class Step(Protocol):
    """What the engine reads of a machine's transition."""

    @property
    def outgoing(self) -> list[Outgoing]: ...

    @property
    def response(self) -> Response | None: ...

    @property
    def duplicate(self) -> bool: ...


class ProcessRowLike(Protocol):
    @property
    def state(self) -> str: ...

    @property
    def version(self) -> int: ...


P = TypeVar("P", bound=Process)  # the machine's process (Negotiation, Transfer)
R = TypeVar("R", bound=ProcessRowLike)  # its store row (NegotiationRow, TransferRow)
T = TypeVar("T", bound=Step)  # the machine's transition
C = TypeVar("C")  # the machine's commands


class ProcessRows(Protocol[R]):
    """A process repository in a transaction (``tx.negotiations``, ``tx.transfers``)."""

    async def get(self, process_id: str, *, for_update: bool = False) -> R | None: ...

    async def add(self, row: R) -> R: ...

    async def save(self, row: R, expected_version: int | None = None) -> R: ...


@dataclass(frozen=True)
class Inbound:
    """Who the event came from, when it is a message taken in: the requester the provider
    decides on, and the sender's verified DAT claims (kept with a transfer)."""

    requester: Requester | None = None
    peer: Claims | None = None


@dataclass(frozen=True)
class Decisions:
    """This side's configuration for the decisions it takes on its own."""

    participant_id: str
    counter_offers: CounterOfferRule = "stricter"
    offers: Callable[[], Sequence[KnownOffer]] = tuple  # the provider's current offers
    # mints a pull's data address for the consumer whose claims are given (None: no pulls)
    pull_address: Callable[[xfer.Transfer, Claims | None], DataAddress] | None = None
    push_enabled: bool = False  # a push runner streams STARTED push transfers
    new_id: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))


Event = Received | Acknowledged | DeliveryFailed


@dataclass(frozen=True)
class Kind(Generic[P, R, T, C]):
    """One kind of DSP process: its machine, its rows, its repository."""

    name: str
    rows: Callable[[Transaction], ProcessRows[R]]
    apply: Callable[[P | None, Event | C, datetime], T]
    to_row: Callable[[P, int], R]
    from_row: Callable[[R], P]
    process: Callable[[T], P]  # the process a transition leads to
    with_process: Callable[[T, P], T]
    table: StateTable
    message_kind: Callable[[DspModel], str]
    ack: type[ContractNegotiation] | type[TransferProcess]  # the ACK / GET body of a process
    follow_ups: Callable[[P, datetime, Inbound, Decisions], Sequence[C]]
    # the row to write, from the mapped row and the one it replaces
    finish_row: Callable[[R, R | None, Inbound], R]
    # what else the transition writes in its transaction (the agreement a negotiation reached)
    keep: Callable[[Transaction, P, R | None, datetime], Awaitable[None]] | None = None


def _negotiation_follow_ups(
    n: neg.Negotiation, now: datetime, inbound: Inbound, d: Decisions
) -> list[neg.Command]:
    return negotiation_follow_ups(
        n,
        offers=d.offers(),
        requester=inbound.requester,
        now=now,
        participant_id=d.participant_id,
        counter_offers=d.counter_offers,
        new_id=d.new_id,
    )


def _transfer_follow_ups(
    t: xfer.Transfer, now: datetime, inbound: Inbound, d: Decisions
) -> list[xfer.Command]:
    mint = d.pull_address
    return transfer_follow_ups(
        t,
        pull_address=(lambda p: mint(p, inbound.peer)) if mint is not None else None,
        push_enabled=d.push_enabled,
    )


async def _keep_agreement(
    tx: Transaction, n: neg.Negotiation, before: NegotiationRow | None, now: datetime
) -> None:
    if n.agreement is None or (before is not None and before.agreement_id):
        return
    a = n.agreement
    await tx.agreements.add(
        AgreementRow(
            id=str(a["@id"]),
            provider_id=str(a.get("assigner", "")),
            consumer_id=str(a.get("assignee", "")),
            target=str(a.get("target", "")),
            policy=dict(a),
            signed_at=now,
            negotiation_id=n.id,
        ),
        lock_target=n.role is Role.PROVIDER,
    )  # a consumer's target is the provider's asset


def _negotiations(tx: Transaction) -> ProcessRows[NegotiationRow]:
    return tx.negotiations


def _transfers(tx: Transaction) -> ProcessRows[TransferRow]:
    return tx.transfers


NegotiationKind = Kind[neg.Negotiation, NegotiationRow, neg.Transition, neg.Command]
TransferKind = Kind[xfer.Transfer, TransferRow, xfer.Transition, xfer.Command]

NEGOTIATION: NegotiationKind = Kind(
    "negotiation",
    _negotiations,
    neg.apply,
    negotiation_to_row,
    row_to_negotiation,
    lambda t: t.negotiation,
    lambda t, n: replace(t, negotiation=n),
    neg.TABLE,
    neg.message_kind,
    ContractNegotiation,
    _negotiation_follow_ups,
    lambda new, old, inbound: new,
    _keep_agreement,
)
TRANSFER: TransferKind = Kind(
    "transfer",
    _transfers,
    xfer.apply,
    transfer_to_row,
    row_to_transfer,
    lambda t: t.transfer,
    lambda t, p: replace(t, transfer=p),
    xfer.TABLE,
    xfer.message_kind,
    TransferProcess,
    _transfer_follow_ups,
    lambda new, old, inbound: with_peer_attested(new, old, inbound.peer),
)


@dataclass(frozen=True)
class Committed:
    """A transition just committed: what the after-commit hooks are told."""

    kind: str  # "negotiation" or "transfer"
    process: neg.Negotiation | xfer.Transfer
    changed: bool  # a new process, or its state changed
    queued: bool  # a message waits in the outbox for the dispatcher
    peer: Claims | None = None  # the sender's verified DAT claims, for a message taken in


AfterCommit = Callable[[Committed], None]


@dataclass(frozen=True)
class PeerProbe:
    """What the counter-party says of a process after it refused one of our messages."""

    state: str | None = None  # its DSP state of the process (None: not asked, or no answer)
    taken: bool = False  # it is in the state our message leads to: it took the message before
    retry: bool = False  # it could not be asked now: keep the message and retry it later


Find = Callable[[Transaction], Awaitable[R | None]]


# ------------------------------------------------------------------ the engine


class ProcessEngine:
    def __init__(
        self,
        store: Store,
        transport: Transport,
        decisions: Decisions,
        *,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        worker_id: str | None = None,
        after_commit: Sequence[AfterCommit] = (),
    ) -> None:
        self.store = store
        self.transport = transport
        self.decisions = decisions
        self.clock = clock
        self.rng = rng or random.Random()
        self.worker_id = worker_id or f"worker-{uuid.uuid4()}"
        # told of every committed transition, in order, right after its commit (the first is
        # the engine's own: it wakes wait_for and the dispatcher)
        self.after_commit: list[AfterCommit] = [self._wake_up, *after_commit]
        self._wake = asyncio.Event()
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._changed: dict[str, set[asyncio.Event]] = {}  # process id -> its waiters
        self._queued_behind: set[str] = set()
        # webhook events of the state changes, written with them (connector.runtime.webhooks)
        self.webhooks: Webhooks | None = None

    # -------------------------------------------------------------- lifecycle

    async def start(self, *, dispatch: bool = True) -> int:
        """Take back the messages this worker had in flight before a restart, and start the
        dispatcher (``dispatch=False``: the caller drives ``dispatch_once``)."""
        async with self.store.transaction() as tx:
            released = await tx.outbox.release_claims(self.worker_id, self.clock())
        if released:
            log.info("took back %d message(s) in flight before a restart", released)
        if dispatch:
            self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="outbox-dispatcher")
        return released

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for t in list(self._inflight):
            t.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def waiting(self) -> int:
        """The processes wait_for callers wait on now."""
        return len(self._changed)

    @property
    def deliveries(self) -> tuple[asyncio.Task[None], ...]:
        """The deliveries (and hook work) running now."""
        return tuple(self._inflight)

    async def settle(self) -> None:
        """Wait until every delivery this engine started has ended (tests, shutdown)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` beside the caller; ``stop`` cancels it."""
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    # -------------------------------------------------------------- one transition, persisted

    async def transition(
        self,
        k: Kind[P, R, T, C],
        find: Find[R],
        event: Event | C,
        inbound: Inbound = Inbound(),
        also: Callable[[Transaction], Awaitable[object]] | None = None,
    ) -> T:
        """Apply ``event`` to the process ``find`` loads, with the follow-ups this side takes on
        its own, and persist the result with the messages it causes in one transaction."""
        for attempt in range(TRANSITION_ATTEMPTS):
            now = self.clock()
            try:
                async with self.store.transaction() as tx:
                    if also is not None:  # e.g. mark the outbox row sent, in the same commit
                        await also(tx)
                    row = await find(tx)
                    current = k.from_row(row) if row is not None else None
                    t = k.apply(current, event, now)
                    if t.duplicate:
                        log.info(
                            "duplicate DSP message ignored for %s %s",
                            k.name,
                            current.id if current else "(new)",
                        )
                        return t
                    final = k.process(t)
                    outgoing = list(t.outgoing)
                    for cmd in k.follow_ups(final, now, inbound, self.decisions):
                        try:
                            nxt = k.apply(final, cmd, now)
                        except ProtocolError as exc:  # the follow-up does not fit: leave it
                            log.info("follow-up %s refused: %s", type(cmd).__name__, exc)
                            break
                        final = k.process(nxt)
                        outgoing.extend(nxt.outgoing)
                    new_row = k.finish_row(k.to_row(final, row.version if row else 0), row, inbound)
                    repo = k.rows(tx)
                    if row is None:
                        await repo.add(new_row)
                    else:
                        await repo.save(new_row, expected_version=row.version)
                    if k.keep is not None:
                        await k.keep(tx, final, row, now)
                    direct = await self._enqueue(tx, k.name, final.id, outgoing, now, fresh=row is None)
                    assert isinstance(final, neg.Negotiation | xfer.Transfer)
                    events = (
                        self.webhooks.messages(
                            k.name, current.state.value if current is not None else None, final, now
                        )
                        if self.webhooks is not None
                        else []
                    )
                    for row_of_event in events:  # committed with the change, or not at all
                        await tx.outbox.add(row_of_event)
            except ConcurrentUpdate:
                await asyncio.sleep(0.005 * (attempt + 1) * self.rng.random())
                continue
            for m in direct:
                self.spawn(self._deliver(m))
            queued = len(outgoing) > len(direct)
            if queued:
                # queued behind a message of the process still in flight: its delivery
                # outcome wakes the dispatcher (see _deliver)
                self._queued_behind.add(final.id)
            assert isinstance(final, neg.Negotiation | xfer.Transfer)
            # webhook events wait for the dispatcher too (they are their own processes in the
            # outbox, so nothing of this process waits behind them)
            done = Committed(
                k.name,
                final,
                current is None or current.state != final.state,
                queued or bool(events),
                inbound.peer,
            )
            for hook in self.after_commit:
                hook(done)
            return k.with_process(t, final)
        raise Busy(f"the {k.name} is busy; try again")

    async def _enqueue(
        self,
        tx: Transaction,
        kind: str,
        process_id: str,
        outgoing: Sequence[Outgoing],
        now: datetime,
        *,
        fresh: bool,
    ) -> list[OutboxMessage]:
        """Write the messages to the outbox; the first is claimed for direct delivery when
        nothing of the process is ahead of it. ``fresh``: the process is created in this
        transaction, under an id made for it, so no message of it can be in the outbox (of any
        replica) and the store is not asked. For an existing process the store is asked: the
        process row cannot tell (a message taken from the counter-party clears our pending
        message while its delivery may still be in flight), nor can this replica's memory
        (another replica may be delivering a message of the process)."""
        direct: list[OutboxMessage] = []
        for i, out in enumerate(outgoing):
            m = OutboxMessage.new(
                message_key=out.message_id,
                destination=out.url,
                payload=out.message.to_wire(),
                now=now,
                process_kind=kind,
                process_id=process_id,
            )
            if i == 0 and (
                fresh
                or not await tx.outbox.list(
                    status=("pending", "in_flight"), process_kind=kind, process_id=process_id, limit=1
                )
            ):
                # Nothing of this process ahead of it: claim it in this commit and deliver it
                # right after (no dispatcher round trip). A crash before delivery leaves it
                # claimed; the lease or a restart recovers it.
                m = replace(
                    m,
                    status="in_flight",
                    claimed_by=self.worker_id,
                    claimed_until=now + timedelta(seconds=LEASE_SECONDS),
                    attempts=1,
                )
                direct.append(m)
            await tx.outbox.add(m)
        return direct

    def _wake_up(self, done: Committed) -> None:
        for ev in self._changed.get(done.process.id, ()):
            ev.set()
        if done.queued:
            self._wake.set()

    async def wait_for(
        self, k: Kind[P, R, T, C], process_id: str, states: set[str], timeout: float
    ) -> R | None:
        """Wait until the process's state is one of ``states`` (or the timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # This waiter's own event, registered before its first read and cleared before each
        # read: a commit that lands while a read is still finishing (its COMMIT awaits) sets it,
        # so the wait right after returns at once instead of missing the change.
        ev = asyncio.Event()
        waiters = self._changed.setdefault(process_id, set())
        waiters.add(ev)
        try:
            while True:
                ev.clear()
                async with self.store.transaction(readonly=True) as tx:
                    row = await k.rows(tx).get(process_id)
                if row is None or row.state in states or loop.time() >= deadline:
                    return row
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), min(WAIT_POLL, max(0.01, deadline - loop.time())))
        finally:
            waiters.discard(ev)
            if not waiters and self._changed.get(process_id) is waiters:
                del self._changed[process_id]  # the last waiter leaves: nothing kept per process

    # -------------------------------------------------------------- the outbox dispatcher

    async def _dispatch_loop(self) -> None:
        """Deliver what is due: woken by this process's commits; polls every POLL seconds for
        retries that come due and for work other replicas left (a crashed one's leases). A poll
        that nothing woke first asks (read only) when the earliest message is due, and claims
        (a write transaction) only if one is due by now."""
        faults = 0  # storage faults in a row: the next round waits longer (up to Retry-After)
        woken = True  # the first round claims: work may be left from before a restart
        while not self._stopping:
            self._wake.clear()
            pause = POLL
            try:
                due_in = 0.0 if woken else await self._due_in()
                sent = await self.dispatch_once(BATCH) if due_in is not None and due_in <= 0 else 0
                if due_in is not None and due_in > 0:
                    pause = min(POLL, due_in)  # wake up when it comes due
                faults = 0
            except StoreUnavailable as exc:  # wait for the storage; commits still wake us
                faults += 1
                pause = min(float(exc.retry_after), POLL * 2 ** min(faults, 6))
                log.warning("outbox round: %s; next round in %.0f s", exc.reason, pause)
                sent = 0
            except Exception:  # a broken round must not stop delivery for good
                log.exception("outbox round failed")
                sent = 0
            if sent >= BATCH:
                woken = True
                continue
            woken = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
                woken = True

    async def _due_in(self) -> float | None:
        """Seconds until the earliest message is due (<= 0: due now; None: nothing waits)."""
        async with self.store.transaction(readonly=True) as tx:
            due = await tx.outbox.next_due_at()
        return None if due is None else (due - self.clock()).total_seconds()

    async def dispatch_once(self, limit: int = BATCH) -> int:
        """Claim the messages that are due and start delivering them."""
        batch = await self.store.claim_due(self.worker_id, self.clock(), limit, LEASE_SECONDS)
        for m in batch:
            self.spawn(self._deliver(m))
        return len(batch)

    async def _deliver(self, m: OutboxMessage) -> None:
        try:
            if m.process_kind == NEGOTIATION.name:
                await self._deliver_once(NEGOTIATION, m)
            elif m.process_kind == TRANSFER.name:
                await self._deliver_once(TRANSFER, m)
            else:
                await self._deliver_once(None, m)
        except StoreUnavailable as exc:
            # the outcome could not be kept: the message stays claimed and goes again when its
            # lease runs out (receivers de-duplicate)
            log.warning("delivery of %s: %s; it goes again after its lease", m.message_key, exc.reason)
        finally:
            if m.process_id in self._queued_behind:
                self._queued_behind.discard(m.process_id)
                self._wake.set()  # the next message of this process may go now

    async def _deliver_once(self, k: Kind[P, R, T, C] | None, m: OutboxMessage) -> None:
        if m.process_kind == WEBHOOK_KIND:
            if self.webhooks is None:  # events left from a configuration with hooks
                await self.store.mark_failed(m.id, self.worker_id, "webhooks are off", None)
                return
            d: Reply = await self.webhooks.deliver(m)
        else:
            d = await self.transport.request(m.method, m.destination, m.payload)
        now = self.clock()
        if d.ok:
            body = None
            if isinstance(d.body, dict) and k is not None:
                with contextlib.suppress(ProtocolError):
                    body = k.ack.parse(d.body)

            async def sent(tx: Transaction) -> None:
                await tx.outbox.mark_sent(m.id, self.worker_id, now)

            if k is None or not await self._outcome(k, m, Acknowledged(m.message_key, body), also=sent):
                await self.store.mark_sent(m.id, self.worker_id, now)
            return
        exhausted = m.attempts >= MAX_ATTEMPTS  # attempts counts this one (set by the claim)
        probe = await self._probe_peer(k, m) if d.permanent and k is not None else PeerProbe()
        if (d.permanent and not probe.retry) or exhausted:
            if probe.taken:  # refused as a re-delivery of what the counter-party has taken
                await self.store.mark_sent(m.id, self.worker_id, now)
            else:
                await self.store.mark_failed(m.id, self.worker_id, d.reason, None)
                OUTBOX_DEAD.inc()
            if k is not None:
                await self._outcome(k, m, DeliveryFailed(m.message_key, True, d.reason, probe.state))
            return
        delay = next_backoff(m.attempts, BACKOFF_BASE, BACKOFF_CAP, self.rng)
        await self.store.mark_failed(m.id, self.worker_id, d.reason, now + timedelta(seconds=delay))
        OUTBOX_RETRIES.inc()
        if delay < POLL:  # come back for it sooner than the next poll
            asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _probe_peer(self, k: Kind[P, R, T, C], m: OutboxMessage) -> PeerProbe:
        """After a refusal (4xx): the counter-party's own state of the process, which tells whether
        it refused a message it had taken already (a terminal process refuses re-deliveries)."""
        async with self.store.transaction(readonly=True) as tx:
            row = await k.rows(tx).get(m.process_id) if m.process_id else None
        process = k.from_row(row) if row is not None else None
        path = process.peer_status_path if process is not None else None
        if process is None or path is None or not process.counter_party_address:
            return PeerProbe()  # an initial message: the counter-party has no process we could name
        d = await self.transport.get(process.counter_party_address.rstrip("/") + path)
        if not d.ok:
            # it could not be asked now: the message is retried (4xx: it has no such process)
            return PeerProbe(retry=not d.permanent)
        try:
            body = k.ack.parse(d.body)
            sent = k.message_kind(parse_message(m.payload))
        except ProtocolError as exc:
            log.warning("%s %s: the counter-party's state is unreadable: %s", k.name, process.id, exc)
            return PeerProbe()
        if (body.provider_pid, body.consumer_pid) != (process.provider_pid, process.consumer_pid):
            return PeerProbe()
        return PeerProbe(body.state, taken=body.state == k.table.leads_to(sent))

    async def _outcome(
        self,
        k: Kind[P, R, T, C],
        m: OutboxMessage,
        event: Event,
        also: Callable[[Transaction], Awaitable[object]] | None = None,
    ) -> bool:
        """Apply a delivery outcome to its process (with ``also`` in the same transaction);
        False if it could not be applied (then ``also`` did not run either)."""
        if m.process_id is None:
            return False
        pid = m.process_id

        async def find(tx: Transaction) -> R | None:
            return await k.rows(tx).get(pid)

        try:
            await self.transition(k, find, event, also=also)
            return True
        except ProtocolError as exc:
            log.warning("outcome of %s for %s not applied: %s", m.message_key, pid, exc)
            return False

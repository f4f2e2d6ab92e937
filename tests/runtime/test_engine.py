"""The process engine in-process: two control planes (consumer and provider), each on its own
real SQLite file, wired through a fake transport that calls the other side's DSP entry points
directly, with one fake clock. No sockets; the dispatcher is driven by hand (``dispatch_once``)
so every retry time is read off the fake clock.

Covered: a negotiation to FINALIZED; a crash of either side at each of its deliveries, before
the message left and after the peer took it (its answer lost), with a new engine on the same
file taking the claims back; duplicate and out-of-order deliveries; retries with backoff; the
dead letter after MAX_ATTEMPTS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connector.dataplane.wiring import transfer_tokens
from connector.identity.keys import SigningKey
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import PULL, parse_message
from connector.runtime import BACKOFF_BASE, BACKOFF_CAP, MAX_ATTEMPTS, ControlPlane, row_to_transfer
from connector.runtime import engine as engine_module
from connector.store import OutboxMessage, Store, Transaction, next_backoff
from connector.store.rows import AssetRow, OfferRow, PolicyRow

PROVIDER, CONSUMER = "urn:test:provider", "urn:test:consumer"
P_URL, C_URL = "https://provider.test/dsp", "https://consumer.test/dsp"
START = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SEED = 7


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Reply:
    ok: bool
    permanent: bool
    body: Any
    reason: str
    status: int | None = None
    refused: bool = False


class Crash(BaseException):
    """The sending process dies here (not an Exception: nothing in the engine catches it)."""


@dataclass
class Network:
    """Routes a request to the control plane serving its base URL, as the DSP routes do."""

    parties: dict[str, tuple[str, ControlPlane]] = field(default_factory=dict)  # url -> (id, cp)
    down: dict[str, int] = field(default_factory=dict)  # url -> answers "connection refused"
    dead: set[str] = field(default_factory=set)  # urls whose process is gone
    log: list[tuple[str, str, Any]] = field(default_factory=list)  # (sender, url, payload) taken
    # (sender url, n) -> "before" / "after": that sender dies at its n-th POST (1-based)
    crash: dict[tuple[str, int], str] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    # hold the answer to a consumer's message until the provider has sent what it caused
    reorder: bool = False
    overtaken: list[str] = field(default_factory=list)  # messages taken before an earlier answer

    def client(self, url: str) -> FakeTransport:
        return FakeTransport(self, url)

    async def handle(self, sender_url: str, method: str, url: str, payload: Any) -> Reply:
        base = next((b for b in self.parties if url.startswith(b + "/")), None)
        if base is None or base in self.dead:
            return Reply(False, False, None, "ClientConnectorError: connection refused")
        if self.down.get(base, 0) > 0:
            self.down[base] -= 1
            return Reply(False, False, None, "ClientConnectorError: connection refused")
        sender = self.parties[sender_url][0]
        cp = self.parties[base][1]
        path = url[len(base) :]
        parts = path.strip("/").split("/")
        pid = parts[1] if len(parts) > 2 or method == "GET" else None
        try:
            if method == "GET":
                get = cp.get_negotiation if parts[0] == "negotiations" else cp.get_transfer
                return Reply(True, False, await get(parts[1], sender), "", 200)
            self.log.append((sender, url, payload))
            async with cp.store.transaction(readonly=True) as tx:
                if await tx.outbox.list(status=("in_flight",), limit=1):
                    # the receiver's own message is out, unanswered: this one overtook it
                    self.overtaken.append(type(parse_message(payload)).__name__)
            if parts[0] == "negotiations":
                status, body = await cp.negotiation_message(payload, sender, {}, pid)
            else:
                status, body = await cp.transfer_message(payload, sender, pid)
        except ProtocolError as err:
            return Reply(False, 400 <= err.status < 500, {"reason": err.reasons}, str(err), err.status)
        if self.reorder and sender == CONSUMER:
            await cp.engine.settle()
        return Reply(True, False, body, "", status)


class FakeTransport:
    def __init__(self, network: Network, own_url: str) -> None:
        self.network = network
        self.own_url = own_url

    async def check(self, url: str) -> None:
        return None

    async def request(self, method: str, url: str, payload: Any = None) -> Reply:
        n = self.network
        if method == "POST":
            n.sent[self.own_url] = n.sent.get(self.own_url, 0) + 1
        when = n.crash.pop((self.own_url, n.sent.get(self.own_url, 0)), None) if method == "POST" else None
        if when == "before":
            raise Crash
        reply = await n.handle(self.own_url, method, url, payload)
        if when == "after":
            raise Crash
        return reply

    async def get(self, url: str) -> Reply:
        return await self.request("GET", url)

    async def post(self, url: str, payload: Any) -> Reply:
        return await self.request("POST", url, payload)


OPEN = {
    "@context": [
        "https://w3id.org/dspace/2025/1/context.jsonld",
        "https://w3id.org/dspace/2025/1/odrl-profile.jsonld",
    ],
    "@type": "Offer",
    "@id": "urn:policy:open",
    "permission": [{"action": "use"}],
}


@dataclass
class Space:
    tmp: Path
    clock: FakeClock
    net: Network
    stores: list[Store] = field(default_factory=list)
    cps: dict[str, ControlPlane] = field(default_factory=dict)  # url -> the live control plane

    async def party(self, url: str, participant_id: str, **options: Any) -> ControlPlane:
        """A control plane on the party's store file (a new process after a crash): it takes
        back the claims of the same worker id, as a restarted replica does."""
        store = await Store.open(f"sqlite:///{self.tmp / (participant_id.rsplit(':', 1)[1] + '.db')}")
        await store.migrate()
        self.stores.append(store)
        cp = ControlPlane(
            store,
            self.net.client(url),
            participant_id=participant_id,  # type: ignore[arg-type]
            dsp_url=url,
            clock=self.clock,
            rng=random.Random(SEED),
            worker_id=f"worker:{participant_id}",
            **options,
        )
        await cp.engine.start(dispatch=False)
        self.net.parties[url] = (participant_id, cp)
        self.net.dead.discard(url)
        self.cps[url] = cp
        return cp

    async def crash(self, url: str) -> None:
        """The process dies: its engine is discarded (in-flight work cancelled), its store
        stays on disk; until a new one starts, its address refuses connections."""
        self.net.dead.add(url)
        await self.cps.pop(url).engine.stop()

    async def settle(self) -> None:
        for _ in range(100):
            busy = [cp for cp in self.cps.values() if cp.engine.deliveries]
            if not busy:
                return
            for cp in busy:
                await cp.engine.settle()
        raise AssertionError("deliveries never settled")

    async def drain(self, rounds: int = 60) -> None:
        """Deliver until no message waits: dispatch what is due, else move the clock on."""
        for _ in range(rounds):
            await self.settle()
            claimed = 0
            for cp in list(self.cps.values()):
                claimed += await cp.engine.dispatch_once()
            await self.settle()
            if claimed:
                continue
            waiting = [m for cp in self.cps.values() for m in await outbox(cp, "pending", "in_flight")]
            if not waiting:
                return
            self.clock.now = max(
                self.clock.now,
                min(
                    m.claimed_until if m.status == "in_flight" and m.claimed_until else m.next_attempt_at
                    for m in waiting
                ),
            )
        raise AssertionError("the outbox never drained")


async def outbox(cp: ControlPlane, *status: str) -> list[OutboxMessage]:
    async with cp.store.transaction(readonly=True) as tx:
        return await tx.outbox.list(status=status or None, limit=None)  # type: ignore[arg-type]


async def negotiations(cp: ControlPlane) -> list[Any]:
    async with cp.store.transaction(readonly=True) as tx:
        return await tx.negotiations.list(limit=None)


async def agreements(cp: ControlPlane) -> list[Any]:
    async with cp.store.transaction(readonly=True) as tx:
        return await tx.agreements.list(limit=None)


@pytest.fixture
async def space(tmp_path: Path) -> AsyncIterator[Space]:
    s = Space(tmp_path, FakeClock(), Network())
    provider = await s.party(P_URL, PROVIDER)
    async with provider.store.transaction() as tx:
        await tx.policies.add(PolicyRow(id="urn:policy:open", body=json.dumps(OPEN), created_at=START))
        await tx.assets.add(
            AssetRow(
                id="urn:asset:a", created_at=START, data_address={"type": "file", "path": str(tmp_path / "a")}
            )
        )
        await tx.offers.add(
            OfferRow(
                id="urn:offer:o",
                access_policy_id="urn:policy:open",
                contract_policy_id="urn:policy:open",
                created_at=START,
                asset_selector={"assetIds": ["urn:asset:a"]},
            )
        )
    await s.party(C_URL, CONSUMER)
    try:
        yield s
    finally:
        for cp in list(s.cps.values()):
            await cp.engine.stop()
        for store in s.stores:
            await store.close()


async def start_negotiation(s: Space) -> str:
    offer = dict((await s.cps[P_URL].catalog()).offers[0].offer)
    n = await s.cps[C_URL].request_offer(provider_url=P_URL, provider_id=PROVIDER, offer=offer)
    return n.id


async def assert_finalized_once(s: Space) -> None:
    for url in (P_URL, C_URL):
        cp = s.cps[url]
        rows = await negotiations(cp)
        assert [r.state for r in rows] == ["FINALIZED"], (url, [r.state for r in rows])
        assert len(await agreements(cp)) == 1
        assert await outbox(cp, "pending", "in_flight") == []
        # a dead letter only for a re-delivery the peer refused because it had taken the
        # message before (a process past it refuses it): nothing was lost
        for m in await outbox(cp, "dead"):
            assert sum(payload == m.payload for _, _, payload in s.net.log) >= 2, m
            assert "not taken any more" in (m.last_error or ""), m
    (p,), (c,) = await negotiations(s.cps[P_URL]), await negotiations(s.cps[C_URL])
    assert (p.provider_pid, p.consumer_pid) == (c.provider_pid, c.consumer_pid)
    assert p.agreement_id == c.agreement_id


def kinds(log: list[tuple[str, str, Any]]) -> list[str]:
    return [type(parse_message(payload)).__name__ for _, _, payload in log]


FLOW = [
    "ContractRequestMessage",
    "ContractAgreementMessage",
    "ContractAgreementVerificationMessage",
    "ContractNegotiationEventMessage",
]


async def test_a_negotiation_reaches_finalized_on_both_sides(space: Space) -> None:
    await start_negotiation(space)
    await space.drain()
    await assert_finalized_once(space)
    assert kinds(space.net.log) == FLOW  # each message taken in once, in protocol order
    for cp in space.cps.values():
        sent = await outbox(cp, "sent")
        assert sent and all(m.attempts == 1 for m in sent)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize(("side", "nth"), [(C_URL, 1), (C_URL, 2), (P_URL, 1), (P_URL, 2)])
async def test_a_crash_at_any_delivery_loses_and_duplicates_nothing(
    space: Space, side: str, nth: int, when: str
) -> None:
    """The sender dies at its nth delivery: before the message left (committed, claimed, not
    sent), or after the peer took it (its answer lost). A new engine on the same file takes
    its claims back and the negotiation still ends FINALIZED once on both sides."""
    space.net.crash[(side, nth)] = when
    await start_negotiation(space)
    with pytest.raises(Crash):
        for _ in range(20):
            for cp in list(space.cps.values()):
                for task in cp.engine.deliveries:
                    await task  # the crash surfaces from the dying side's delivery
                await cp.engine.dispatch_once()
            space.clock.advance(BACKOFF_CAP)
    in_flight = await outbox(space.cps[side], "in_flight")
    assert len(in_flight) == 1  # committed and claimed by the dead worker, outcome unknown
    await space.crash(side)
    await space.party(side, PROVIDER if side == P_URL else CONSUMER)
    assert [m.status for m in await outbox(space.cps[side], "in_flight")] == []  # released
    await space.drain()
    await assert_finalized_once(space)
    taken = kinds(space.net.log)
    assert [k for k in FLOW if k not in taken] == []
    # a message whose answer was lost is sent again, and the receiver takes the copy as a
    # duplicate (one agreement, one state change); nothing else is sent twice
    assert len(taken) == len(FLOW) + (1 if when == "after" else 0)


async def test_duplicate_and_out_of_order_deliveries_change_nothing(space: Space) -> None:
    await start_negotiation(space)
    await space.drain()
    await assert_finalized_once(space)
    before = {url: [(r.state, r.version) for r in await negotiations(cp)] for url, cp in space.cps.items()}
    delivered = list(space.net.log)
    outcomes = []
    for sender, url, payload in reversed(delivered):  # every message again, last first
        sender_url = P_URL if sender == PROVIDER else C_URL
        reply = await space.net.handle(sender_url, "POST", url, payload)
        outcomes.append(reply.status)
    await space.drain()
    assert all(status is not None and status < 500 for status in outcomes), outcomes
    assert {
        url: [(r.state, r.version) for r in await negotiations(cp)] for url, cp in space.cps.items()
    } == before
    await assert_finalized_once(space)


async def test_an_event_overtaking_the_answer_to_the_message_that_caused_it(space: Space) -> None:
    """The provider's agreement (and later its FINALIZED event) reaches the consumer before the
    answer to the consumer's own message that caused it: the consumer takes it in while its
    message is still unacknowledged, and ends FINALIZED all the same."""
    space.net.reorder = True
    await start_negotiation(space)
    await space.drain()
    await assert_finalized_once(space)
    assert space.net.overtaken == ["ContractAgreementMessage", "ContractNegotiationEventMessage"]


async def test_retries_back_off_on_the_fake_clock(space: Space) -> None:
    failures = 3
    space.net.down[P_URL] = failures
    nid = await start_negotiation(space)
    consumer = space.cps[C_URL]
    expected = random.Random(SEED)  # the engine's own random source, replayed
    for attempt in range(1, failures + 1):
        await space.settle()
        (m,) = await outbox(consumer, "pending")
        delay = next_backoff(attempt, BACKOFF_BASE, BACKOFF_CAP, expected)
        assert m.attempts == attempt
        assert m.next_attempt_at == space.clock.now + timedelta(seconds=delay)
        assert m.last_error and "connection refused" in m.last_error
        # not due before its time ...
        space.clock.now = m.next_attempt_at - timedelta(microseconds=1)
        assert await consumer.engine.dispatch_once() == 0
        # ... and claimed once it is
        space.clock.now = m.next_attempt_at
        assert await consumer.engine.dispatch_once() == 1
    await space.drain()
    await assert_finalized_once(space)
    (first, *_) = sorted(await outbox(consumer, "sent"), key=lambda m: m.created_at)
    assert first.attempts == failures + 1
    row = await consumer.wait_for(nid, {"FINALIZED"}, 0)
    assert row is not None and row.state == "FINALIZED"


async def test_a_message_is_dead_lettered_after_max_attempts(space: Space) -> None:
    space.net.down[P_URL] = MAX_ATTEMPTS + 5
    nid = await start_negotiation(space)
    consumer = space.cps[C_URL]
    for _ in range(MAX_ATTEMPTS * 2):
        await space.settle()
        pending = await outbox(consumer, "pending")
        if not pending:
            break
        space.clock.now = pending[0].next_attempt_at
        await consumer.engine.dispatch_once()
    await space.settle()
    (dead,) = await outbox(consumer, "dead")
    assert dead.attempts == MAX_ATTEMPTS
    assert space.net.down[P_URL] == 5  # it tried exactly MAX_ATTEMPTS times, then stopped
    assert await outbox(consumer, "pending", "in_flight") == []
    # the process learns its message failed for good: it does not wait forever
    async with consumer.store.transaction(readonly=True) as tx:
        row = await tx.negotiations.get(nid)
    assert row is not None and row.state == "TERMINATED"
    assert space.net.log == []  # the provider never took anything


async def test_a_pull_starts_with_a_data_address_minted_by_the_provider(space: Space) -> None:
    """The transfer kind through the same engine: the provider's follow-up starts the pull with
    a data address (its data plane URL and a transfer token); the transfer listeners hear of
    every state change on both sides."""
    await space.crash(P_URL)  # the provider, now with a data plane
    provider = await space.party(
        P_URL,
        PROVIDER,
        dataplane_url="https://provider.test/public",
        transfer_tokens=transfer_tokens(SigningKey.generate("EdDSA"), PROVIDER),
    )
    heard: dict[str, list[str]] = {P_URL: [], C_URL: []}
    for url, cp in space.cps.items():
        cp.transfer_listeners.append(heard[url].append)
    await start_negotiation(space)
    await space.drain()
    (agreement,) = await agreements(space.cps[C_URL])
    t = await space.cps[C_URL].request_transfer(agreement.id, PULL)
    await space.drain()
    async with space.cps[C_URL].store.transaction(readonly=True) as tx:
        row = await tx.transfers.get(t.id)
    assert row is not None and row.state == "STARTED"
    address = row_to_transfer(row).data_address
    assert address is not None and address.endpoint.startswith("https://provider.test/public/data/")
    assert address.property("authorization") and address.property("refreshToken")
    async with provider.store.transaction(readonly=True) as tx:
        (p_row,) = await tx.transfers.list(limit=None)
    assert p_row.state == "STARTED" and p_row.consumer_pid == row.consumer_pid
    assert set(heard[C_URL]) == {t.id} and set(heard[P_URL]) == {p_row.id}


async def test_wait_for_wakes_on_a_commit_between_its_read_and_its_wait(
    space: Space, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state change committed while the waiter's read is still finishing (its COMMIT awaits)
    wakes the waiter: it does not sleep out its poll interval (made an hour here, so a missed
    wake-up shows as the waiter hanging), and it leaves no wake-up event behind."""
    space.net.down[P_URL] = 1  # the consumer's request waits for a retry: it stays REQUESTED
    nid = await start_negotiation(space)
    await space.settle()
    consumer = space.cps[C_URL]
    monkeypatch.setattr(engine_module, "WAIT_POLL", 3600.0)
    real = consumer.store.transaction
    changed: list[bool] = []

    @contextlib.asynccontextmanager
    async def transaction(*, readonly: bool = False) -> AsyncIterator[Transaction]:
        async with real(readonly=readonly) as tx:
            yield tx
        if readonly and not changed:  # the waiter's first read has ended, it is not waiting yet
            changed.append(True)
            space.clock.advance(BACKOFF_CAP)  # the retry goes, the provider agrees
            assert await consumer.engine.dispatch_once() == 1
            await space.settle()

    monkeypatch.setattr(consumer.store, "transaction", transaction)
    agreed = {"AGREED", "VERIFIED", "FINALIZED"}
    row = await asyncio.wait_for(consumer.wait_for(nid, agreed, 3600), 20)
    assert changed
    assert row is not None and row.state in agreed
    assert consumer.engine.waiting == 0  # the last waiter took its wake-up event with it


async def test_an_idle_dispatcher_polls_read_only_and_claims_what_comes_due(
    space: Space, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between commits the dispatcher asks (in a read-only transaction) when the earliest
    message is due, and runs its claiming write transaction only once one is due."""
    monkeypatch.setattr(engine_module, "POLL", 0.01)
    space.net.down[P_URL] = 1
    nid = await start_negotiation(space)
    await space.settle()
    consumer = space.cps[C_URL]
    (waiting,) = await outbox(consumer, "pending")  # its retry comes due on the fake clock
    claims: list[int] = []
    reads = asyncio.Event()
    counted = 0
    real_claim, real_transaction = consumer.store.claim_due, consumer.store.transaction

    async def claim_due(*args: Any) -> list[OutboxMessage]:
        got = await real_claim(*args)
        claims.append(len(got))
        return got

    @contextlib.asynccontextmanager
    async def transaction(*, readonly: bool = False) -> AsyncIterator[Transaction]:
        nonlocal counted
        async with real_transaction(readonly=readonly) as tx:
            yield tx
        counted += readonly
        if counted >= 10:
            reads.set()

    monkeypatch.setattr(consumer.store, "claim_due", claim_due)
    monkeypatch.setattr(consumer.store, "transaction", transaction)
    await consumer.engine.start()  # now with its dispatcher
    await asyncio.wait_for(reads.wait(), 20)
    assert claims == [0]  # the first round (work left from before a start), then reads only
    space.clock.now = waiting.next_attempt_at
    row = await asyncio.wait_for(consumer.wait_for(nid, {"AGREED", "VERIFIED", "FINALIZED"}, 3600), 20)
    assert row is not None and claims[:2] == [0, 1]  # claimed once due, without a wake-up

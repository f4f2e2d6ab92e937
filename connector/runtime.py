"""The runtime: drives the pure protocol machines, persists each state change together with the
messages it causes (one transaction: the transactional outbox), and delivers those messages
with retries and exponential backoff.

* No polling delay on the happy path: a committed state change wakes the dispatcher at once.
* Safe with several replicas on one PostgreSQL: outbox rows are claimed with ``FOR UPDATE SKIP
  LOCKED``, process rows carry optimistic versions (a conflicting write is retried on fresh
  state), and a crash between commit and delivery only delays the message: another dispatcher
  (or this one after restart) claims it when its lease runs out.
* Provider decisions (agree / terminate), the consumer's check of the agreement it gets, and the
  provider's finalization are taken in the same transaction as the message that calls for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connector.audit.crossborder import transfer_jurisdictions
from connector.dataplane.pep import ConsumeUse
from connector.http.client import DspClient
from connector.http.outbound import OutboundRefused
from connector.identity.tokens import Claims, attested_snapshot
from connector.odrl.compile import DecisionRequest, compile_policy
from connector.odrl.parse import PolicyError, load_policy
from connector.odrl.wire import wire_rules
from connector.protocol import negotiation as neg
from connector.protocol import transfer as xfer
from connector.protocol.catalog import CatalogBuilder, CatalogDataset, CatalogDistribution
from connector.protocol.common import Acknowledged, DeliveryFailed, Received, Role, StateTable
from connector.protocol.decide import (
    KnownOffer,
    Requester,
    access_decision,
    check_offer,
    decide_request,
    same_terms,
    verify_agreement,
)
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import (
    PULL,
    PUSH,
    ContractNegotiation,
    ContractOfferMessage,
    ContractRequestMessage,
    DataAddress,
    DataService,
    DspModel,
    TransferProcess,
    TransferRequestMessage,
    parse_message,
)
from connector.store import ConcurrentUpdate, OutboxMessage, Store, StoreUnavailable
from connector.store.rows import AgreementRow, NegotiationRow, TransferRow
from connector.usage.held import HeldFacts
from connector.usage.lifecycle import AGREEMENT_RETIRED, retirement_reason
from connector.usage.pipeline import (
    DATA_ACTION,
    both,
    catalog_decider,
    compiled_agreement,
    request_facts,
)
from connector.wireformat import Clock

log = logging.getLogger(__name__)
# the transfers a retired agreement ends: every one not ended yet
RUNNING_TRANSFER_STATES = tuple(s.value for s in xfer.TransferState if not s.is_ended)

MAX_ATTEMPTS = 12  # deliveries of one message before it is dead-lettered
BACKOFF_BASE, BACKOFF_CAP = 0.2, 60.0
LEASE_SECONDS = 30.0
CATALOG_TTL = 10.0
DUTY_INTERVAL = 1.0  # seconds between checks of the delete duties on local copies
BATCH = 32
POLL = 1.0  # seconds between outbox polls when nothing wakes the dispatcher


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PeerProbe:
    """What the counter-party says of a process after it refused one of our messages."""

    state: str | None = None  # its DSP state of the process (None: not asked, or no answer)
    taken: bool = False  # it is in the state our message leads to: it took the message before
    retry: bool = False  # it could not be asked now: keep the message and retry it later


# ------------------------------------------------------------------ rows <-> machine state


def negotiation_to_row(n: neg.Negotiation, version: int = 0) -> NegotiationRow:
    agreement_id = n.agreement.get("@id") if n.agreement else None
    return NegotiationRow(
        id=n.id, role="provider" if n.role is Role.PROVIDER else "consumer",
        state=n.state.value, created_at=n.created_at, updated_at=n.updated_at,
        provider_pid=n.provider_pid, consumer_pid=n.consumer_pid,
        counter_party_id=n.counter_party_id, counter_party_address=n.counter_party_address,
        offer=dict(n.offer), agreement_id=str(agreement_id) if agreement_id else None,
        data={
            "agreement": dict(n.agreement) if n.agreement else None,
            "termination_reason": list(n.termination_reason),
            "termination_code": n.termination_code,
            "processed": list(n.processed),
            "origin": n.origin,
            "pending_message_id": n.pending_message_id,
            "acked_state": n.acked_state.value if n.acked_state else None,
            "in_doubt": n.in_doubt,
            "delivery_error": n.delivery_error,
        },
        version=version,
    )


def row_to_negotiation(row: NegotiationRow) -> neg.Negotiation:
    d = row.data
    return neg.Negotiation(
        id=row.id, role=Role.PROVIDER if row.role == "provider" else Role.CONSUMER,
        provider_pid=row.provider_pid, consumer_pid=row.consumer_pid,
        state=neg.NegotiationState(row.state), counter_party_id=row.counter_party_id or "",
        counter_party_address=row.counter_party_address or "", offer=row.offer or {},
        created_at=row.created_at, updated_at=row.updated_at,
        agreement=d.get("agreement"),
        termination_reason=tuple(d.get("termination_reason") or ()),
        termination_code=d.get("termination_code"),
        processed=tuple(d.get("processed") or ()),
        origin=d.get("origin"),
        pending_message_id=d.get("pending_message_id"),
        acked_state=neg.NegotiationState(d["acked_state"]) if d.get("acked_state") else None,
        in_doubt=bool(d.get("in_doubt")),
        delivery_error=d.get("delivery_error"),
    )


def transfer_to_row(t: xfer.Transfer, version: int = 0) -> TransferRow:
    return TransferRow(
        id=t.id, role="provider" if t.role is Role.PROVIDER else "consumer", state=t.state.value,
        created_at=t.created_at, updated_at=t.updated_at, agreement_id=t.agreement_id,
        provider_pid=t.provider_pid, consumer_pid=t.consumer_pid, format=t.format,
        counter_party_id=t.counter_party_id, counter_party_address=t.counter_party_address,
        data={
            "data_address": t.data_address.to_json() if t.data_address else None,
            "suspended_by": sorted(r.value for r in t.suspended_by),
            "suspension_reason": list(t.suspension_reason),
            "suspension_code": t.suspension_code,
            "termination_reason": list(t.termination_reason),
            "termination_code": t.termination_code,
            "processed": list(t.processed),
            "origin": t.origin,
            "pending_message_id": t.pending_message_id,
            "acked_state": t.acked_state.value if t.acked_state else None,
            "in_doubt": t.in_doubt,
            "delivery_error": t.delivery_error,
        },
        version=version,
    )


def with_peer_attested(new: TransferRow, old: TransferRow | None,
                       peer: Claims | None) -> TransferRow:
    """Keep with the transfer what the peer's latest DAT attested (``peer_attested``: the
    ``attested`` and ``attestedAt`` of transfer tokens), so decisions without a transfer token
    (the provider's pushes) read the same facts."""
    if peer is not None:
        snap: Any = {"attested": attested_snapshot(peer), "attestedAt": int(peer.issued_at)}
    else:
        snap = old.data.get("peer_attested") if old is not None else None
    return replace(new, data={**new.data, "peer_attested": snap}) if snap else new


def row_to_transfer(row: TransferRow) -> xfer.Transfer:
    d = row.data
    return xfer.Transfer(
        id=row.id, role=Role.PROVIDER if row.role == "provider" else Role.CONSUMER,
        provider_pid=row.provider_pid, consumer_pid=row.consumer_pid,
        state=xfer.TransferState(row.state), counter_party_id=row.counter_party_id or "",
        counter_party_address=row.counter_party_address or "", agreement_id=row.agreement_id,
        format=row.format or "", created_at=row.created_at, updated_at=row.updated_at,
        data_address=DataAddress.parse(d["data_address"]) if d.get("data_address") else None,
        suspended_by=frozenset(Role(r) for r in d.get("suspended_by") or ()),
        suspension_reason=tuple(d.get("suspension_reason") or ()),
        suspension_code=d.get("suspension_code"),
        termination_reason=tuple(d.get("termination_reason") or ()),
        termination_code=d.get("termination_code"),
        processed=tuple(d.get("processed") or ()),
        origin=d.get("origin"),
        pending_message_id=d.get("pending_message_id"),
        acked_state=xfer.TransferState(d["acked_state"]) if d.get("acked_state") else None,
        in_doubt=bool(d.get("in_doubt")),
        delivery_error=d.get("delivery_error"),
    )


@dataclass(frozen=True)
class Kind:
    """One kind of DSP process: its machine, its rows, its repository."""

    name: str
    repo: str
    apply: Callable[..., Any]
    to_row: Callable[[Any, int], Any]
    from_row: Callable[[Any], Any]
    attribute: str  # the process's attribute on the machine's Transition
    table: StateTable
    message_kind: Callable[[DspModel], str]
    ack: type[ContractNegotiation] | type[TransferProcess]  # the ACK / GET body of a process

    def process(self, t: Any) -> Any:
        return getattr(t, self.attribute)

    def with_process(self, t: Any, process: Any) -> Any:
        return replace(t, **{self.attribute: process})


NEGOTIATION = Kind("negotiation", "negotiations", neg.apply, negotiation_to_row,
                   row_to_negotiation, "negotiation", neg.TABLE, neg.message_kind, ContractNegotiation)
TRANSFER = Kind("transfer", "transfers", xfer.apply, transfer_to_row, row_to_transfer, "transfer",
                xfer.TABLE, xfer.message_kind, TransferProcess)
KINDS = {k.name: k for k in (NEGOTIATION, TRANSFER)}


# ------------------------------------------------------------------ the catalog


@dataclass(frozen=True)
class CatalogSnapshot:
    builder: CatalogBuilder
    offers: tuple[KnownOffer, ...]


def offer_for_catalog(offer_id: str, contract_policy: Mapping[str, Any], target: str) -> dict[str, Any]:
    """The DSP-form ODRL Offer a consumer sees: the contract policy's rules under the offer id."""
    return {"@id": offer_id, "@type": "Offer", "target": target, **wire_rules(contract_policy)}


async def build_catalog(store: Store, *, participant_id: str, dsp_url: str) -> CatalogSnapshot:
    """Every dataset with its offers and compiled access policies: two queries, compiled once."""
    offers, assets = await store.load_catalog()
    by_asset: dict[str, list[KnownOffer]] = {}
    compiled: dict[str, Any] = {}
    for co in offers:
        access_id = co.access_policy.id
        if access_id not in compiled:
            compiled[access_id] = compile_policy(load_policy(co.access_policy.document()))
        contract = co.contract_policy.document()
        # who may see and negotiate the offer: its access policy, and its contract policy as
        # far as the requester's attested attributes decide it (connector.odrl.stage)
        access = both(compiled[access_id], catalog_decider(contract))
        for asset_id in _selected(co.offer.asset_selector, assets):
            known = KnownOffer(offer_for_catalog(f"{co.offer.id}:{asset_id}", contract, asset_id),
                               asset_id, access)
            by_asset.setdefault(asset_id, []).append(known)
    datasets = []
    for asset in assets:
        if asset.id not in by_asset:
            continue
        fmt = [PUSH] if asset.properties.get("push_only") else [PULL, PUSH]
        datasets.append(CatalogDataset(
            id=asset.id, offers=tuple(by_asset[asset.id]),
            distributions=tuple(CatalogDistribution(f) for f in fmt),
            title=asset.title, description=asset.description, keywords=tuple(asset.keywords)))
    service = DataService.model_validate({"@id": f"{dsp_url}#dsp", "endpointURL": dsp_url})
    builder = CatalogBuilder(catalog_id=f"{dsp_url}#catalog", participant_id=participant_id,
                             service=service, datasets=datasets)
    return CatalogSnapshot(builder, tuple(o for d in datasets for o in d.offers))


def _selected(selector: Any, assets: Any) -> list[str]:
    ids = {a.id for a in assets}
    if isinstance(selector, dict) and isinstance(selector.get("assetIds"), list):
        return [a for a in selector["assetIds"] if a in ids]
    if isinstance(selector, dict) and selector.get("all") is True:
        return sorted(ids)
    return []


# ------------------------------------------------------------------ the control plane


class ControlPlane:
    def __init__(self, store: Store, client: DspClient, *, participant_id: str, dsp_url: str,
                 clock: Clock = utcnow, rng: random.Random | None = None,
                 worker_id: str | None = None, counter_offers: str = "stricter",
                 transfer_tokens: Any = None, dataplane_url: str | None = None,
                 audit: Any = None, duties: Any = None, push_url: str | None = None,
                 push_enabled: bool = False,
                 own_claims: Callable[[], Awaitable[Claims]] | None = None) -> None:
        self.store = store
        self.client = client
        self.participant_id = participant_id
        self.dsp_url = dsp_url.rstrip("/")
        self.clock = clock
        self.rng = rng or random.Random()
        self.worker_id = worker_id or f"worker-{uuid.uuid4()}"
        # the provider's rule for a request that differs from its offers: "stricter" agrees if
        # provably at least as strict as an offer, else terminates; "offer" answers a looser
        # one with a counter-offer of the offer instead; "reject" agrees to exact offers only
        if counter_offers not in ("stricter", "offer", "reject"):
            raise ValueError(f"unknown counter-offer rule {counter_offers!r}")
        self.counter_offers = counter_offers
        # provider side of transfers: who signs the transfer tokens handed out in a pull's
        # dataAddress, and where the data plane serves them (None: no pull transfers)
        self.transfer_tokens = transfer_tokens
        self.dataplane_url = dataplane_url.rstrip("/") if dataplane_url else None
        # consumer side of push transfers: where providers push to (connector.dataplane.receiver)
        self.push_url = push_url.rstrip("/") if push_url else None
        # provider side: a PushRunner listens for STARTED push transfers and streams them
        self.push_enabled = push_enabled
        # the hash-chained, signed audit log (connector.audit): every state a process reaches
        self.audit = audit
        # this participant's own verified DAT claims (its attested jurisdiction, for the audit)
        self.own_claims = own_claims
        self._own: tuple[float, dict[str, Any]] | None = None
        # consumer duties on local copies (connector.duties): (vault, key, certificate, ca)
        self.duties = duties
        self._duty_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._catalog: CatalogSnapshot | None = None
        self._catalog_at = 0.0
        self._catalog_lock = asyncio.Lock()
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._changed: dict[str, asyncio.Event] = {}
        self._queued_behind: set[str] = set()
        # told the id of every transfer whose state changed here (the data plane's cache)
        self.transfer_listeners: list[Callable[[str], None]] = []
        # the counter the data plane draws on (its use reservations), so a consumer's local
        # uses and the pulls and pushes share one limit; the store's own when no data plane runs
        self.consume_use: ConsumeUse | None = None
        # the facts this connector holds (state, events, payments), for its local uses too
        self.held: HeldFacts | None = None

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        async with self.store.transaction() as tx:
            released = await tx.outbox.release_claims(self.worker_id, self.clock())
        if released:
            log.info("took back %d message(s) in flight before a restart", released)
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="outbox-dispatcher")
        if self.duties is not None:
            self._duty_task = asyncio.create_task(self._duty_loop(), name="duties")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in (self._dispatcher, self._duty_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for t in list(self._inflight):
            t.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)

    # -------------------------------------------------------------- catalog

    async def catalog(self) -> CatalogSnapshot:
        """The compiled catalog; rebuilt after a local change, and at least every
        ``CATALOG_TTL`` seconds so changes made through another replica show up."""
        snap = self._catalog
        loop = asyncio.get_running_loop()
        if snap is not None and loop.time() - self._catalog_at < CATALOG_TTL:
            return snap
        async with self._catalog_lock:
            if self._catalog is None or loop.time() - self._catalog_at >= CATALOG_TTL:
                self._catalog = await build_catalog(self.store, participant_id=self.participant_id,
                                                    dsp_url=self.dsp_url)
                self._catalog_at = loop.time()
            return self._catalog

    def catalog_changed(self) -> None:
        self._catalog = None

    # -------------------------------------------------------------- inbound negotiation messages

    async def _check_callback(self, msg: DspModel) -> None:
        """An initial message's callbackAddress must be one this connector may call (the DSP
        outbound policy: scheme and addresses); else 400 with the reason, before any process
        exists. Deliveries check it again when they are sent."""
        if not isinstance(msg, ContractRequestMessage | ContractOfferMessage | TransferRequestMessage):
            return
        if msg.callback_address is None:
            return
        try:
            await self.client.check(msg.callback_address)
        except OutboundRefused as exc:
            raise ProtocolError(400, "400", [f"callbackAddress refused: {exc.reason}"]) from None

    async def negotiation_message(self, body: Any, sender: str, attributes: Mapping[str, Any],
                                  pid: str | None,
                                  expected: tuple[type, ...] | None = None) -> tuple[int, dict[str, Any]]:
        """Take in a DSP negotiation message; return (status, response body)."""
        msg = parse_message(body, expected)
        await self._check_callback(msg)
        requester = Requester.of(sender, await self.requester_facts(attributes))
        snap = await self.catalog()  # the provider decides from its current offers
        offer = (check_offer(snap.offers, msg.offer)
                 if isinstance(msg, ContractRequestMessage) and msg.is_initial else None)

        async def find(tx: Any) -> NegotiationRow | None:
            if pid is not None:
                row = await tx.negotiations.get_by_provider_pid(pid, role="provider")
                if row is None:
                    row = await tx.negotiations.get_by_consumer_pid(pid, role="consumer")
                if row is None or row.counter_party_id != sender:
                    raise ProtocolError(404, "404", [f"no negotiation {pid}"])
                return row
            # an initial message: a retry is recognised by the sender's own process id
            if isinstance(msg, ContractRequestMessage):
                row = await tx.negotiations.get_by_consumer_pid(msg.consumer_pid, role="provider")
            else:
                row = await tx.negotiations.get_by_provider_pid(
                    getattr(msg, "provider_pid", None) or "", role="consumer")
            if row is not None and row.counter_party_id != sender:
                raise ProtocolError(400, "400", ["that process id is already in use"])
            return row

        t = await self._transition(find, Received(msg, sender, offer=offer), follow=requester)
        assert t.response is not None
        return t.response.status, t.response.body.to_wire()

    async def get_negotiation(self, pid: str, sender: str) -> dict[str, Any]:
        async with self.store.transaction(readonly=True) as tx:
            row = await tx.negotiations.get_by_provider_pid(pid, role="provider")
            if row is None:
                row = await tx.negotiations.get_by_consumer_pid(pid, role="consumer")
        if row is None or row.counter_party_id != sender:
            raise ProtocolError(404, "404", [f"no negotiation {pid}"])
        return row_to_negotiation(row).to_dsp().to_wire()

    # -------------------------------------------------------------- local commands

    async def request_offer(self, *, provider_url: str, provider_id: str,
                            offer: Mapping[str, Any]) -> neg.Negotiation:
        """Consumer: open a negotiation for ``offer`` (as the provider's catalog shows it)."""
        cmd = neg.Request(offer=offer, provider_address=provider_url,
                          callback_address=self.dsp_url, provider_id=provider_id)

        async def find(tx: Any) -> None:
            return None

        t = await self._transition(find, cmd)
        return t.negotiation

    async def command(self, negotiation_id: str, command: Any) -> neg.Negotiation:
        """A local command on one negotiation (Terminate, Accept, CounterOffer, ...)."""
        async def find(tx: Any) -> NegotiationRow | None:
            row = await tx.negotiations.get(negotiation_id)
            if row is None:
                raise ProtocolError(404, "404", [f"no negotiation {negotiation_id}"])
            return row

        t = await self._transition(find, command)
        return t.negotiation

    async def terminate(self, negotiation_id: str, reason: str) -> neg.Negotiation:
        return await self.command(negotiation_id, neg.Terminate(reason))

    async def wait_for(self, negotiation_id: str, states: set[str], timeout: float) -> NegotiationRow | None:
        """Wait until the negotiation's state is one of ``states`` (or the timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            async with self.store.transaction(readonly=True) as tx:
                row = await tx.negotiations.get(negotiation_id)
            if row is None or row.state in states or loop.time() >= deadline:
                return row
            ev = self._changed.setdefault(negotiation_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ev.wait(), min(0.5, max(0.01, deadline - loop.time())))
            ev.clear()

    # -------------------------------------------------------------- transfers

    async def _find_transfer(self, tx: Any, pid: str, sender: str) -> TransferRow:
        row = await tx.transfers.get_by_provider_pid(pid, role="provider")
        if row is None:
            row = await tx.transfers.get_by_consumer_pid(pid, role="consumer")
        if row is None or row.counter_party_id != sender:
            raise ProtocolError(404, "404", [f"no transfer process {pid}"])
        return row

    async def transfer_message(self, body: Any, sender: str, pid: str | None,
                               expected: tuple[type, ...] | None = None,
                               attested: Claims | None = None) -> tuple[int, dict[str, Any]]:
        """Take in a DSP transfer message; return (status, response body). ``attested``: the
        sender's verified DAT claims (snapshot into transfer tokens, and audited)."""
        msg = parse_message(body, expected)
        await self._check_callback(msg)
        check = None
        if isinstance(msg, TransferRequestMessage):
            # The agreement and its FINALIZED negotiation never change again: check them first.
            negotiation = await self._negotiation_of(msg.agreement_id)
            if negotiation is not None and _finalized_unacknowledged(negotiation, sender):
                negotiation = await self._taken_as_finalized(negotiation, msg.agreement_id)
            check = xfer.check_agreement(negotiation, agreement_id=msg.agreement_id, caller=sender)
            if check.ok:
                retired = await self._retirement(msg.agreement_id)
                if retired is not None:
                    raise ProtocolError(403, "403", [retired])

        async def find(tx: Any) -> TransferRow | None:
            if pid is not None:
                return await self._find_transfer(tx, pid, sender)
            if isinstance(msg, TransferRequestMessage):
                row = await tx.transfers.get_by_consumer_pid(msg.consumer_pid, role="provider")
                if row is not None and row.counter_party_id != sender:
                    raise ProtocolError(400, "400", ["that process id is already in use"])
                return row
            raise ProtocolError(404, "404", ["no transfer process named"])

        t = await self._transition(find, Received(msg, sender, agreement=check), kind=TRANSFER,
                                   peer=attested)
        assert t.response is not None
        return t.response.status, t.response.body.to_wire()

    async def _retirement(self, agreement_id: str) -> str | None:
        """Why no transfer may start under the agreement any more (None: it is not retired)."""
        async with self.store.transaction(readonly=True) as tx:
            agreement = await tx.agreements.get(agreement_id)
        if agreement is None or agreement.retired_at is None:
            return None
        return retirement_reason(agreement_id, agreement.retired_reason or "")

    async def retire_agreement(self, agreement_id: str, reason: str) -> AgreementRow:
        """Provider: retire an agreement. Every transfer under it that has not ended is
        terminated (the consumer is told why), later transfer requests are refused, and the
        audit log records it. Retiring a retired agreement keeps the first retirement and ends
        what still runs."""
        now = self.clock()
        async with self.store.transaction() as tx:
            row = await tx.agreements.get(agreement_id)
            negotiation = (await tx.negotiations.get(row.negotiation_id)
                           if row is not None and row.negotiation_id else None)
            if row is None or negotiation is None or negotiation.role != "provider":
                raise ProtocolError(404, "404", [f"no agreement {agreement_id} of this provider"])
            retired = await tx.agreements.retire(agreement_id, reason, now)
            running = await tx.transfers.list(agreement_id=agreement_id, role="provider",
                                              state=RUNNING_TRANSFER_STATES, limit=None)
        assert retired is not None and retired.retired_at is not None
        why = retirement_reason(agreement_id, retired.retired_reason or "")
        for t in running:
            try:
                await self.transfer_command(t.id, xfer.Terminate(why, code=AGREEMENT_RETIRED))
            except ProtocolError as exc:  # it ended meanwhile
                log.info("transfer %s under retired %s not terminated: %s", t.id, agreement_id, exc)
        if self.audit is not None and retired.retired_at == now:
            await self._audit_events([(
                "agreement.retired",
                {"reason": retired.retired_reason, "role": "provider",
                 "terminated": [t.id for t in running]},
                {"agreement_id": agreement_id, "participant_id": retired.consumer_id})])
        return retired

    async def _negotiation_of(self, agreement_id: str) -> neg.Negotiation | None:
        async with self.store.transaction(readonly=True) as tx:
            agreement = await tx.agreements.get(agreement_id)
            row = (await tx.negotiations.get(agreement.negotiation_id)
                   if agreement is not None and agreement.negotiation_id else None)
        return row_to_negotiation(row) if row is not None else None

    async def _taken_as_finalized(self, n: neg.Negotiation, agreement_id: str) -> neg.Negotiation | None:
        """Provider: our FINALIZED event is out and unacknowledged, and the consumer already
        asks for a transfer under the agreement, which it does only once it is FINALIZED: its
        request acknowledges the event (the answer to the event was lost, e.g. the consumer
        crashed after taking it in, and our retry is still waiting for its backoff). Refusing
        the request instead would be final for the consumer (a 4xx): its transfer would die
        although both sides hold the agreement as finalized."""
        pending = n.pending_message_id
        assert pending is not None

        async def find(tx: Any) -> NegotiationRow | None:
            return await tx.negotiations.get(n.id)

        await self._transition(find, Acknowledged(pending))
        log.info("transfer request under %s taken as the acknowledgement of FINALIZED for %s",
                 agreement_id, n.id)
        return await self._negotiation_of(agreement_id)

    async def get_transfer(self, pid: str, sender: str) -> dict[str, Any]:
        async with self.store.transaction(readonly=True) as tx:
            row = await self._find_transfer(tx, pid, sender)
        return row_to_transfer(row).to_dsp().to_wire()

    async def request_transfer(self, agreement_id: str, fmt: str,
                               data_address: DataAddress | None = None,
                               purpose: str | None = None,
                               stated: Mapping[str, str] | None = None) -> xfer.Transfer:
        """Consumer: ask the provider of ``agreement_id`` for a transfer. A push without a
        ``data_address`` goes to this connector's own push endpoint, under a secret made for
        this transfer, with the facts the use states (``purpose``; ``stated``: application,
        event, location) for the provider's decision."""
        async with self.store.transaction(readonly=True) as tx:
            agreement = await tx.agreements.get(agreement_id)
            negotiation = (await tx.negotiations.get(agreement.negotiation_id)
                           if agreement is not None and agreement.negotiation_id else None)
        if (agreement is None or negotiation is None or negotiation.role != "consumer"
                or agreement.consumer_id != self.participant_id):
            raise ProtocolError(404, "404", [f"no agreement {agreement_id} of this consumer"])
        if negotiation.state != neg.NegotiationState.FINALIZED.value:
            raise ProtocolError(409, "409", [f"agreement {agreement_id} is not finalized"])
        process_id = None
        if fmt == PUSH and data_address is None:
            if self.push_url is None:
                raise ProtocolError(409, "409", ["this connector takes no push transfers"])
            from connector.dataplane.receiver import new_push_secret

            process_id = f"urn:uuid:{uuid.uuid4()}"
            secret, _ = new_push_secret()
            props = [{"@type": "EndpointProperty", "name": "authorization", "value": secret},
                     {"@type": "EndpointProperty", "name": "authType", "value": "bearer"}]
            facts = {**(stated or {}), **({"purpose": purpose} if purpose else {})}
            props.extend({"@type": "EndpointProperty", "name": name, "value": value}
                         for name, value in sorted(facts.items()) if value)
            data_address = DataAddress.model_validate({
                "@type": "DataAddress", "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
                "endpoint": f"{self.push_url}/{process_id}", "endpointProperties": props})
        cmd = xfer.Request(agreement_id=agreement_id, format=fmt,
                           provider_address=negotiation.counter_party_address or "",
                           callback_address=self.dsp_url,
                           provider_id=negotiation.counter_party_id or "",
                           data_address=data_address, process_id=process_id)

        async def find(tx: Any) -> None:
            return None

        t = await self._transition(find, cmd, kind=TRANSFER)
        return t.transfer

    async def transfer_command(self, transfer_id: str, command: Any) -> xfer.Transfer:
        async def find(tx: Any) -> TransferRow:
            row = await tx.transfers.get(transfer_id)
            if row is None:
                raise ProtocolError(404, "404", [f"no transfer {transfer_id}"])
            return row

        t = await self._transition(find, command, kind=TRANSFER)
        return t.transfer

    async def refresh_transfer_token(self, pid: str, refresh_token: str, sender: str,
                                     attested: Claims | None = None) -> dict[str, Any]:
        """Provider: a new access token (and a new one-time refresh token) for a pull."""
        if self.transfer_tokens is None:
            raise ProtocolError(404, "404", ["this connector runs no data plane"])
        async with self.store.transaction(readonly=True) as tx:
            row = await self._find_transfer(tx, pid, sender)
        if row.role != "provider" or not xfer.TransferState(row.state).is_running:
            raise ProtocolError(400, "400", [f"transfer {pid} is not running"])
        from connector.identity.errors import IdentityError

        try:
            tokens = self.transfer_tokens.refresh(refresh_token, consumer_id=sender,
                                                  attested=attested)
        except IdentityError as exc:
            raise ProtocolError(400, "400", [str(exc)]) from exc
        return {"authorization": tokens.access_token, "refreshToken": tokens.refresh_token,
                "expiresIn": tokens.expires_in}

    async def refresh_pull_token(self, transfer_id: str) -> xfer.Transfer:
        """Consumer: exchange the pull's refresh token at the provider; keep the new tokens."""
        async with self.store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(transfer_id)
        if row is None or row.role != "consumer":
            raise ProtocolError(404, "404", [f"no transfer {transfer_id} of this consumer"])
        t = row_to_transfer(row)
        if t.state.is_ended:  # the provider would refuse it: say so here, without asking
            raise ProtocolError(409, "409", [f"transfer {transfer_id} is {t.state.value}: its token is "
                                             "no longer refreshed"])
        refresh = t.data_address.property("refreshToken") if t.data_address else None
        if not refresh or not t.provider_pid:
            raise ProtocolError(409, "409", ["this transfer has no refresh token"])
        d = await self.client.post(f"{t.counter_party_address.rstrip('/')}/transfers/"
                                   f"{t.provider_pid}/token", {"refreshToken": refresh})
        if not d.ok or not isinstance(d.body, dict):
            raise ProtocolError(502, "502", [f"the provider refused the refresh: {d.reason}"])
        props = {p.name: p.value for p in t.data_address.endpoint_properties or ()}  # type: ignore[union-attr]
        props.update(authorization=str(d.body.get("authorization", "")),
                     refreshToken=str(d.body.get("refreshToken", "")),
                     expiresIn=str(d.body.get("expiresIn", "")))
        address = DataAddress.model_validate({
            **t.data_address.to_json(),  # type: ignore[union-attr]
            "endpointProperties": [{"@type": "EndpointProperty", "name": k, "value": v}
                                   for k, v in props.items()]})
        async with self.store.transaction() as tx:
            fresh = await tx.transfers.get(transfer_id)
            assert fresh is not None
            data = {**fresh.data, "data_address": address.to_json()}
            await tx.transfers.save(replace(fresh, data=data), expected_version=fresh.version)
        return replace(t, data_address=address)

    # -------------------------------------------------------------- duties on local copies

    async def _duty_loop(self) -> None:
        while not self._stopping:
            pause = DUTY_INTERVAL
            try:
                await self.run_duties()
            except StoreUnavailable as exc:  # a storage fault: wait for the operator, go on
                pause = max(DUTY_INTERVAL, float(exc.retry_after))
                log.warning("duty round: %s; next round in %.0f s", exc.reason, pause)
            except Exception:
                log.exception("duty round failed")
            await asyncio.sleep(pause)

    async def run_duties(self) -> int:
        """Delete the local copies whose delete duty fell due, and tell their providers."""
        from connector.duties import sign_notice

        vault, key, certificate, _ = self.duties
        done = 0
        for item in vault.due(self.clock()):
            path = Path(item.path)
            if item.deleted_at is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                item.deleted_at = self.clock().isoformat()
                vault.save(item)
                if self.audit is not None:
                    await self.audit.aappend("duty.deleted", {"path": item.path, "sha256": item.sha256},
                                             agreement_id=item.agreement_id,
                                             transfer_id=item.transfer_id)
            notice = sign_notice(key, certificate, item, self.clock())
            d = await self.client.post(f"{item.provider_address.rstrip('/')}/notices",
                                       {"notice": notice})
            if d.ok:
                item.notice_sent = True
                vault.save(item)
                done += 1
                if self.audit is not None:
                    await self.audit.aappend("deletion-notice.sent", {"notice": notice},
                                             agreement_id=item.agreement_id,
                                             transfer_id=item.transfer_id,
                                             participant_id=item.provider_id)
            else:
                log.warning("deletion notice for %s not delivered: %s", item.path, d.reason)
        return done

    async def register_local_copy(self, path: Path, transfer_id: str) -> Any:
        """Consumer: a pulled file now held locally under the transfer's agreement."""
        if self.duties is None:
            raise ProtocolError(404, "404", ["this connector keeps no vault"])
        async with self.store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(transfer_id)
            agreement = await tx.agreements.get(row.agreement_id) if row is not None else None
        if row is None or agreement is None or row.role != "consumer":
            raise ProtocolError(404, "404", [f"no transfer {transfer_id} of this consumer"])
        vault = self.duties[0]
        # hashing a large copy takes a while: off the event loop
        return await asyncio.to_thread(
            vault.register, path, agreement=agreement.policy, agreement_id=agreement.id,
            signed_at=agreement.signed_at, transfer_id=transfer_id,
            provider_id=row.counter_party_id or "", provider_address=row.counter_party_address or "",
            now=self.clock())

    async def deletion_notice(self, body: Any, sender: str) -> dict[str, Any]:
        """Provider: a consumer reports it deleted its copy; verify and keep the notice."""
        from connector.duties import NOTICE_TYP, NoticeError, verify_notice

        if self.duties is None:
            raise ProtocolError(404, "404", ["this connector takes no notices"])
        token = body.get("notice") if isinstance(body, dict) else None
        try:
            claims = verify_notice(token, ca=self.duties[3], sender=sender,  # type: ignore[arg-type]
                                   audience=self.participant_id, now=self.clock())
        except NoticeError as exc:
            raise ProtocolError(400, "400", [str(exc)]) from exc
        async with self.store.transaction(readonly=True) as tx:
            agreement = await tx.agreements.get(claims["agreementId"])
        if agreement is None or agreement.consumer_id != sender:
            raise ProtocolError(404, "404", [f"no agreement {claims['agreementId']}"])
        if self.audit is not None and claims["typ"] == NOTICE_TYP:
            await self.audit.aappend("deletion-notice", {
                "notice": token, "sha256": claims["sha256"], "deletedAt": claims["deletedAt"]},
                agreement_id=claims["agreementId"], transfer_id=claims["transferId"],
                participant_id=sender)
        counted: int | None = None
        if claims["typ"] != NOTICE_TYP:
            counted = await self._count_local_use(agreement)
        if self.audit is not None and claims["typ"] != NOTICE_TYP:
            await self.audit.aappend("use-notice", {
                "notice": token, "sha256": claims["sha256"], "usedAt": claims["usedAt"],
                "useNumber": claims["useNumber"], "purpose": claims.get("purpose"),
                "agreementUse": counted},
                agreement_id=claims["agreementId"], transfer_id=claims["transferId"],
                participant_id=sender)
        return {"received": True, "agreementId": claims["agreementId"], "agreementUse": counted}

    async def _count_local_use(self, agreement: AgreementRow) -> int | None:
        """A consumer's local use of its copy, counted against the agreement's one limit (the
        same counter its pulls and pushes draw on): the use number, or None when the agreement
        counts no uses; a 403 with the reason when its uses are used up."""
        policy = compiled_agreement(agreement.id, agreement.target, agreement.policy)
        if policy.uses is None:
            raise ProtocolError(403, "403", [f"the agreement cannot be enforced: {policy.unenforceable}"])
        if not policy.uses.counted:
            return None
        consume = self.consume_use or self.store.consume_use
        allowed, count = await consume(agreement.id, agreement.consumer_id,
                                                      agreement.target, policy.uses.limit)
        if not allowed:  # the engine's own words for the count that is exhausted
            said = policy.decider(DecisionRequest(
                action=DATA_ACTION, now=self.clock(), assignee=agreement.consumer_id,
                target=agreement.target, count=count, started_at=agreement.signed_at))
            raise ProtocolError(403, "403", [said.reason if not said.permit else
                                             f"the agreement's {policy.uses.limit} uses are used up"])
        return count

    def _transfer_follow_ups(self, t: xfer.Transfer, now: datetime,
                             peer: Claims | None = None) -> list[Any]:
        s = xfer.TransferState
        if t.role is Role.PROVIDER and t.state is s.REQUESTED:
            if t.format == PULL:
                if self.transfer_tokens is None or self.dataplane_url is None:
                    return [xfer.Terminate("this connector runs no data plane for pull transfers")]
                return [xfer.Start(self._pull_address(t, peer))]
            if not self.push_enabled:
                return [xfer.Terminate("this connector runs no data plane for push transfers")]
            return [xfer.Start()]  # the PushRunner streams once the consumer has the start
        return []

    def _pull_address(self, t: xfer.Transfer, peer: Claims | None = None) -> DataAddress:
        """The endpoint data reference: the data plane URL and a transfer token bound to the
        agreement, the transfer and the consumer, with a refresh token."""
        assert self.dataplane_url is not None
        tokens = self.transfer_tokens.issue(agreement_id=t.agreement_id, transfer_id=t.id,
                                            consumer_id=t.counter_party_id,
                                            audience=self.dataplane_url, attested=peer)
        return DataAddress.model_validate({
            "@type": "DataAddress", "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
            "endpoint": f"{self.dataplane_url}/data/{t.id}",
            "endpointProperties": [
                {"@type": "EndpointProperty", "name": "authorization",
                 "value": tokens.access_token},
                {"@type": "EndpointProperty", "name": "authType", "value": "bearer"},
                {"@type": "EndpointProperty", "name": "expiresIn", "value": str(tokens.expires_in)},
                {"@type": "EndpointProperty", "name": "refreshToken", "value": tokens.refresh_token},
            ]})

    # -------------------------------------------------------------- one transition, persisted

    async def _transition(self, find: Callable[[Any], Awaitable[Any]], event: Any,
                          follow: Requester | None = None,
                          also: Callable[[Any], Awaitable[Any]] | None = None,
                          kind: Kind | None = None, peer: Claims | None = None) -> Any:
        """Apply ``event`` to the process ``find`` loads, with the follow-ups this side takes on
        its own, and persist the result with the messages it causes in one transaction."""
        k = kind or NEGOTIATION
        for attempt in range(8):
            now = self.clock()
            try:
                async with self.store.transaction() as tx:
                    if also is not None:  # e.g. mark the outbox row sent, in the same commit
                        await also(tx)
                    row = await find(tx)
                    current = k.from_row(row) if row is not None else None
                    t = k.apply(current, event, now)
                    if t.duplicate:
                        log.info("duplicate DSP message ignored for %s %s", k.name,
                                 current.id if current else "(new)")
                        return t
                    final = k.process(t)
                    outgoing = list(t.outgoing)
                    for cmd in await self._follow_ups(k, tx, final, follow, now, peer):
                        try:
                            nxt = k.apply(final, cmd, now)
                        except ProtocolError as exc:  # the follow-up does not fit: leave it
                            log.info("follow-up %s refused: %s", type(cmd).__name__, exc)
                            break
                        final = k.process(nxt)
                        outgoing.extend(nxt.outgoing)
                    new_row = k.to_row(final, row.version if row else 0)
                    if k is TRANSFER:
                        new_row = with_peer_attested(new_row, row, peer)
                    repo = getattr(tx, k.repo)
                    if row is None:
                        await repo.add(new_row)
                    else:
                        await repo.save(new_row, expected_version=row.version)
                    if k is NEGOTIATION:
                        await self._keep_agreement(tx, final, row)
                    direct: list[OutboxMessage] = []
                    for i, out in enumerate(outgoing):
                        m = OutboxMessage.new(
                            message_key=out.message_id, destination=out.url,
                            payload=out.message.to_wire(), now=now,
                            process_kind=k.name, process_id=final.id)
                        if i == 0 and not await tx.outbox.list(
                                status=("pending", "in_flight"), process_kind=k.name,
                                process_id=final.id, limit=1):
                            # Nothing of this process ahead of it: claim it in this commit and
                            # deliver it right after (no dispatcher round trip). A crash before
                            # delivery leaves it claimed; the lease or a restart recovers it.
                            m = replace(m, status="in_flight", claimed_by=self.worker_id,
                                        claimed_until=now + timedelta(seconds=LEASE_SECONDS),
                                        attempts=1)
                            direct.append(m)
                        await tx.outbox.add(m)
                for m in direct:
                    self._spawn(self._deliver(m))
                if len(outgoing) > len(direct):
                    # queued behind a message of the process still in flight: its delivery
                    # outcome wakes the dispatcher (see _deliver)
                    self._queued_behind.add(final.id)
                self._after_commit(final.id, len(outgoing) > len(direct))
                if k is TRANSFER:
                    for listener in self.transfer_listeners:
                        listener(final.id)
                if self.audit is not None and (current is None or current.state != final.state):
                    self._spawn(self._audit(k, final, peer))
                return k.with_process(t, final)
            except ConcurrentUpdate:
                await asyncio.sleep(0.005 * (attempt + 1) * self.rng.random())
        raise ProtocolError(503, "503", [f"the {k.name} is busy; try again"])

    async def _follow_ups(self, k: Kind, tx: Any, process: Any, requester: Requester | None,
                          now: datetime, peer: Claims | None = None) -> list[Any]:
        """What this side does next on its own, decided from the state just reached."""
        if k is TRANSFER:
            return self._transfer_follow_ups(process, now, peer)
        n: neg.Negotiation = process
        s = neg.NegotiationState
        if n.role is Role.PROVIDER and n.state in (s.REQUESTED, s.ACCEPTED) and requester is not None:
            snap = self._catalog
            offers = snap.offers if snap is not None else ()
            d = decide_request(offers, n.offer, requester, now, provider_id=self.participant_id)
            exact = next((o for o in offers if o.id == d.offer_id), None)
            if d.agree and d.agreement:
                if (self.counter_offers == "reject" and n.state is s.REQUESTED
                        and not (exact is not None and same_terms(n.offer, exact.offer))):
                    return [neg.Terminate("this provider agrees to its offers as they are; "
                                          "counter-offers are not accepted")]
                return [neg.Agree(d.agreement)]
            if (self.counter_offers == "offer" and n.state is s.REQUESTED and exact is not None
                    and access_decision(exact, requester, now).permit):
                # eligible, but the terms asked for are looser: offer ours instead
                return [neg.Offer({**exact.offer, "@id": f"{exact.id}#counter-{uuid.uuid4()}"})]
            return [neg.Terminate(d.reason)]
        if n.role is Role.CONSUMER and n.state is s.AGREED and n.agreement is not None:
            problems = verify_agreement(n.offer, n.agreement, consumer_id=self.participant_id,
                                        provider_id=n.counter_party_id)
            return [neg.Terminate("; ".join(problems))] if problems else [neg.Verify()]
        if n.role is Role.PROVIDER and n.state is s.VERIFIED:
            return [neg.Finalize()]
        return []

    async def _keep_agreement(self, tx: Any, n: neg.Negotiation, before: NegotiationRow | None) -> None:
        if n.agreement is None or (before is not None and before.agreement_id):
            return
        a = n.agreement
        await tx.agreements.add(AgreementRow(
            id=str(a["@id"]), provider_id=str(a.get("assigner", "")),
            consumer_id=str(a.get("assignee", "")), target=str(a.get("target", "")),
            policy=dict(a), signed_at=self.clock(), negotiation_id=n.id))

    async def _audit(self, k: Kind, p: Any, peer: Claims | None = None) -> None:
        """One audit entry per state a process reaches (after its commit: a crash in between
        loses the entry, never the state). Transfer entries name both parties' attested
        jurisdictions where known (this side's from its own DAT, the peer's from the DAT its
        message came with)."""
        reasons = list(getattr(p, "termination_reason", ()) or ())
        data: dict[str, Any] = {"role": p.role.value, "state": p.wire_state.value,
                                "internalState": p.state.value}
        if reasons:
            data["reason"] = reasons
        ids: dict[str, Any] = {"process_id": p.id, "participant_id": p.counter_party_id}
        if k is TRANSFER:
            ids["transfer_id"] = p.id
            ids["agreement_id"] = p.agreement_id
            own = await self._own_claims()
            data.update(transfer_jurisdictions(p.role.value, own, peer))
        elif p.agreement is not None:
            ids["agreement_id"] = str(p.agreement.get("@id"))
        events: list[Any] = [(f"{k.name}.{p.state.value.lower()}", data, ids)]
        if (k is TRANSFER and p.role is Role.CONSUMER and p.state is xfer.TransferState.TERMINATED
                and p.termination_code == AGREEMENT_RETIRED):
            # the provider retired the agreement: the consumer's log records that too
            events.append(("agreement.retired", {"reason": reasons, "role": "consumer"},
                           {"agreement_id": p.agreement_id, "participant_id": p.counter_party_id}))
        await self._audit_events(events)

    async def _audit_events(self, events: list[Any]) -> None:
        try:
            await self.audit.aappend_many(events)
        except StoreUnavailable as exc:  # written once the storage takes it (data waits till then)
            log.warning("audit entries %s deferred: %s", [e[0] for e in events], exc.reason)
            self.audit.defer(events)
        except Exception:  # the audit trail must not take the protocol down with it
            log.exception("audit append failed for %s", [e[0] for e in events])

    async def requester_facts(self, attributes: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
        """The facts a requester is decided on at the catalog and in negotiation: its attested
        attributes, with what this connector holds and attests of itself (cross-border rules:
        its jurisdiction, the assessments it registered)."""
        held = await self.held.facts(self.clock()) if self.held is not None else {}
        return request_facts(attributes, held=held, own=await self.own_attributes())

    async def own_attributes(self) -> Mapping[str, Any]:
        """This connector's own attested attributes (its DAT's), kept for 30 s."""
        now = time.monotonic()
        if self._own is None or self._own[0] < now:
            claims = await self._own_claims()
            self._own = (now + 30.0, dict(claims.attributes) if claims is not None else {})
        return self._own[1]

    async def _own_claims(self) -> Claims | None:
        if self.own_claims is None:
            return None
        try:
            return await self.own_claims()
        except Exception as exc:  # the audit entry goes without it rather than not at all
            log.warning("own DAT claims unavailable for the audit: %s", exc)
            return None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _after_commit(self, negotiation_id: str, wake: bool) -> None:
        ev = self._changed.get(negotiation_id)
        if ev is not None:
            ev.set()
        if wake:
            self._wake.set()

    # -------------------------------------------------------------- the outbox dispatcher

    async def _dispatch_loop(self) -> None:
        """Deliver what is due: woken by this process's commits; polls every POLL seconds for
        retries that come due and for work other replicas left (a crashed one's leases)."""
        faults = 0  # storage faults in a row: the next round waits longer (up to Retry-After)
        while not self._stopping:
            self._wake.clear()
            pause = POLL
            try:
                sent = await self.dispatch_once(BATCH)
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
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def dispatch_once(self, limit: int = BATCH) -> int:
        batch = await self.store.claim_due(self.worker_id, self.clock(), limit, LEASE_SECONDS)
        for m in batch:
            self._spawn(self._deliver(m))
        return len(batch)

    async def _deliver(self, m: OutboxMessage) -> None:
        try:
            await self._deliver_once(m)
        except StoreUnavailable as exc:
            # the outcome could not be kept: the message stays claimed and goes again when its
            # lease runs out (receivers de-duplicate)
            log.warning("delivery of %s: %s; it goes again after its lease", m.message_key,
                        exc.reason)
        finally:
            if m.process_id in self._queued_behind:
                self._queued_behind.discard(m.process_id)
                self._wake.set()  # the next message of this process may go now

    async def _deliver_once(self, m: OutboxMessage) -> None:
        d = await self.client.request(m.method, m.destination, m.payload)
        now = self.clock()
        k = KINDS.get(m.process_kind or "")
        if d.ok:
            body = None
            if isinstance(d.body, dict) and k is not None:
                with contextlib.suppress(ProtocolError):
                    body = k.ack.parse(d.body)

            async def sent(tx: Any) -> None:
                await tx.outbox.mark_sent(m.id, self.worker_id, now)

            if not await self._outcome(m, Acknowledged(m.message_key, body), also=sent):
                await self.store.mark_sent(m.id, self.worker_id, now)
            return
        exhausted = m.attempts >= MAX_ATTEMPTS  # attempts counts this one (set by the claim)
        probe = await self._probe_peer(m, k) if d.permanent and k is not None else PeerProbe()
        if (d.permanent and not probe.retry) or exhausted:
            if probe.taken:  # refused as a re-delivery of what the counter-party has taken
                await self.store.mark_sent(m.id, self.worker_id, now)
            else:
                await self.store.mark_failed(m.id, self.worker_id, d.reason, None)
            await self._outcome(m, DeliveryFailed(m.message_key, True, d.reason, probe.state))
            return
        from connector.store import next_backoff

        delay = next_backoff(m.attempts, BACKOFF_BASE, BACKOFF_CAP, self.rng)
        await self.store.mark_failed(m.id, self.worker_id, d.reason, now + timedelta(seconds=delay))
        if delay < POLL:  # come back for it sooner than the next poll
            asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _probe_peer(self, m: OutboxMessage, k: Kind) -> PeerProbe:
        """After a refusal (4xx): the counter-party's own state of the process, which tells whether
        it refused a message it had taken already (a terminal process refuses re-deliveries)."""
        async with self.store.transaction(readonly=True) as tx:
            row = await getattr(tx, k.repo).get(m.process_id) if m.process_id else None
        process = k.from_row(row) if row is not None else None
        path = process.peer_status_path if process is not None else None
        if process is None or path is None or not process.counter_party_address:
            return PeerProbe()  # an initial message: the counter-party has no process we could name
        d = await self.client.get(process.counter_party_address.rstrip("/") + path)
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

    async def _outcome(self, m: OutboxMessage, event: Any,
                       also: Callable[[Any], Awaitable[Any]] | None = None) -> bool:
        """Apply a delivery outcome to its process (with ``also`` in the same transaction);
        False if it could not be applied (then ``also`` did not run either)."""
        k = KINDS.get(m.process_kind or "")
        if k is None or m.process_id is None:
            return False
        pid = m.process_id

        async def find(tx: Any) -> Any:
            return await getattr(tx, k.repo).get(pid)

        try:
            await self._transition(find, event, also=also, kind=k)
            return True
        except ProtocolError as exc:
            log.warning("outcome of %s for %s not applied: %s", m.message_key, pid, exc)
            return False


def _finalized_unacknowledged(n: neg.Negotiation, sender: str) -> bool:
    """A provider's negotiation whose FINALIZED event awaits the consumer ``sender``'s answer."""
    return (n.role is Role.PROVIDER and n.state is neg.NegotiationState.FINALIZING
            and n.pending_message_id is not None and n.counter_party_id == sender)


def policy_problems(document: Any) -> list[str]:
    """Every problem of a policy document (strict: unknown terms included); empty if valid."""
    try:
        load_policy(document, strict=True)
    except PolicyError as exc:
        return [str(p) for p in exc.problems]
    return []

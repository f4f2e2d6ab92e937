"""The control plane: the one object the edges (DSP routes, management API, consumer side, data
plane wiring) call. A thin facade: each call finds the process it is about and hands the event
to the ``ProcessEngine``; the catalog, the data references and the duties on local copies live
in their own modules (``catalog``, ``edr``, ``notices``)."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from connector.audit.log import AuditLog
from connector.consumer.vault import VaultItem
from connector.dataplane.pep import ConsumeUse
from connector.http.outbound import OutboundRefused
from connector.identity.tokens import Claims, TransferTokenIssuer
from connector.metrics import TRANSITIONS
from connector.protocol import negotiation as neg
from connector.protocol import transfer as xfer
from connector.protocol.common import Acknowledged, Received
from connector.protocol.decide import KnownOffer, Requester, check_offer
from connector.protocol.errors import ProtocolError
from connector.protocol.followups import COUNTER_OFFER_RULES, CounterOfferRule, finalized_unacknowledged
from connector.protocol.messages import (
    PUSH,
    ContractOfferMessage,
    ContractRequestMessage,
    DataAddress,
    DspModel,
    TransferRequestMessage,
    parse_message,
)
from connector.runtime.auditing import ProcessAudit
from connector.runtime.catalog import CatalogCache, CatalogSnapshot
from connector.runtime.edr import DataReferences
from connector.runtime.engine import (
    BATCH,
    NEGOTIATION,
    TRANSFER,
    C,
    Committed,
    Decisions,
    Find,
    Inbound,
    Kind,
    P,
    ProcessEngine,
    R,
    T,
    utcnow,
)
from connector.runtime.errors import Conflict, Forbidden, Invalid, NotFound
from connector.runtime.lookups import find_negotiation, find_transfer
from connector.runtime.mapping import row_to_negotiation, row_to_transfer
from connector.runtime.notices import Notices
from connector.runtime.transport import PeerClient
from connector.store import Store, Transaction
from connector.store.rows import AgreementRow, NegotiationRow, TransferRow
from connector.usage.held import HeldFacts
from connector.usage.lifecycle import AGREEMENT_RETIRED, retirement_reason
from connector.usage.pipeline import request_facts
from connector.wireformat import Clock

log = logging.getLogger(__name__)
# the transfers a retired agreement ends: every one not ended yet
RUNNING_TRANSFER_STATES = tuple(s.value for s in xfer.TransferState if not s.is_ended)
OWN_CLAIMS_TTL = 30.0  # seconds this connector's own attested attributes are kept


class LocalCopyRegistry(Protocol):
    """The consumer side's vault as the control plane sees it (connector.consumer.DutyRunner)."""

    async def register_local_copy(self, path: Path, transfer_id: str) -> VaultItem: ...


def count_transition(done: Committed) -> None:
    """The metrics' count of the states processes reach (an after-commit hook)."""
    if done.changed:
        TRANSITIONS.labels(done.kind, done.process.state.value).inc()


class ControlPlane:
    def __init__(
        self,
        store: Store,
        client: PeerClient,
        *,
        participant_id: str,
        dsp_url: str,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        worker_id: str | None = None,
        counter_offers: str = "stricter",
        transfer_tokens: TransferTokenIssuer | None = None,
        dataplane_url: str | None = None,
        audit: AuditLog | None = None,
        notice_ca: x509.Certificate | None = None,
        push_url: str | None = None,
        push_enabled: bool = False,
        own_claims: Callable[[], Awaitable[Claims]] | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.participant_id = participant_id
        self.dsp_url = dsp_url.rstrip("/")
        self.clock = clock
        if counter_offers not in COUNTER_OFFER_RULES:
            raise ValueError(f"unknown counter-offer rule {counter_offers!r}")
        rule: CounterOfferRule = counter_offers  # narrowed by the check just above
        # the hash-chained, signed audit log (connector.audit): every state a process reaches
        self.audit = audit
        # this participant's own verified DAT claims (its attested jurisdiction, for the audit)
        self.own_claims = own_claims
        self._own: tuple[float, dict[str, Any]] | None = None
        self._catalog = CatalogCache(store, participant_id=participant_id, dsp_url=self.dsp_url)
        # provider side of pulls (transfer tokens, the data plane's URL); consumer side of
        # pushes (where providers push to: connector.dataplane.receiver)
        self.references = DataReferences(
            store, client, transfer_tokens=transfer_tokens, dataplane_url=dataplane_url, push_url=push_url
        )
        # the provider's side of consumers' deletion and use notices (checked against the CA)
        self.notices = Notices(store, notice_ca, participant_id=participant_id, clock=clock, audit=audit)
        # the consumer's vault (connector.consumer), where a file held locally is registered
        self.local_copies: LocalCopyRegistry | None = None
        # told the id of every transfer whose state changed here (the data plane's cache)
        self.transfer_listeners: list[Callable[[str], None]] = []
        # the facts this connector holds (state, events, payments), for its local uses too
        self.held: HeldFacts | None = None
        decisions = Decisions(
            participant_id=participant_id,
            counter_offers=rule,
            offers=self._offers,
            pull_address=self.references.pull_address if self.references.serves_pulls else None,
            push_enabled=push_enabled,
        )
        self.engine = ProcessEngine(
            store,
            client,
            decisions,
            clock=clock,
            rng=rng,
            worker_id=worker_id,
            after_commit=[self._tell_listeners, count_transition],
        )
        if audit is not None:
            self._audit: ProcessAudit | None = ProcessAudit(audit, self._own_claims)
            self.engine.after_commit.append(self._audit)
        else:
            self._audit = None

    @property
    def worker_id(self) -> str:
        return self.engine.worker_id

    @property
    def consume_use(self) -> ConsumeUse | None:
        """The counter the data plane draws on (its use reservations), so a consumer's local
        uses and the pulls and pushes share one limit; the store's own when None."""
        return self.notices.consume_use

    @consume_use.setter
    def consume_use(self, consume: ConsumeUse | None) -> None:
        self.notices.consume_use = consume

    def _offers(self) -> tuple[KnownOffer, ...]:
        snap = self._catalog.current
        return snap.offers if snap is not None else ()

    def _tell_listeners(self, done: Committed) -> None:
        if done.kind == TRANSFER.name:
            for listener in self.transfer_listeners:
                listener(done.process.id)

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()
        if self._audit is not None:  # the entries of what committed until now are written
            await self._audit.stop()

    async def dispatch_once(self, limit: int = BATCH) -> int:
        return await self.engine.dispatch_once(limit)

    # -------------------------------------------------------------- catalog

    async def catalog(self) -> CatalogSnapshot:
        """The compiled catalog (rebuilt after a local change, and every ``CATALOG_TTL`` s)."""
        return await self._catalog.get()

    def catalog_changed(self) -> None:
        self._catalog.changed()

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
            raise Invalid(f"callbackAddress refused: {exc.reason}") from None

    async def negotiation_message(
        self,
        body: Any,
        sender: str,
        attributes: Mapping[str, Any],
        pid: str | None,
        expected: tuple[type, ...] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Take in a DSP negotiation message; return (status, response body)."""
        msg = parse_message(body, expected)
        await self._check_callback(msg)
        requester = Requester.of(sender, await self.requester_facts(attributes))
        snap = await self.catalog()  # the provider decides from its current offers
        offer = (
            check_offer(snap.offers, msg.offer)
            if isinstance(msg, ContractRequestMessage) and msg.is_initial
            else None
        )

        async def find(tx: Transaction) -> NegotiationRow | None:
            if pid is not None:
                return await find_negotiation(tx, pid, sender)
            # an initial message: a retry is recognised by the sender's own process id
            if isinstance(msg, ContractRequestMessage):
                row = await tx.negotiations.get_by_consumer_pid(msg.consumer_pid, role="provider")
            else:
                row = await tx.negotiations.get_by_provider_pid(
                    getattr(msg, "provider_pid", None) or "", role="consumer"
                )
            if row is not None and row.counter_party_id != sender:
                raise Invalid("that process id is already in use")
            return row

        t = await self.engine.transition(
            NEGOTIATION, find, Received(msg, sender, offer=offer), Inbound(requester=requester)
        )
        assert t.response is not None
        return t.response.status, t.response.body.to_wire()

    async def get_negotiation(self, pid: str, sender: str) -> dict[str, Any]:
        async with self.store.transaction(readonly=True) as tx:
            row = await find_negotiation(tx, pid, sender)
        return row_to_negotiation(row).to_dsp().to_wire()

    # -------------------------------------------------------------- local commands

    async def request_offer(
        self, *, provider_url: str, provider_id: str, offer: Mapping[str, Any]
    ) -> neg.Negotiation:
        """Consumer: open a negotiation for ``offer`` (as the provider's catalog shows it)."""
        cmd = neg.Request(
            offer=offer, provider_address=provider_url, callback_address=self.dsp_url, provider_id=provider_id
        )
        t = await self.engine.transition(NEGOTIATION, _new_process, cmd)
        return t.negotiation

    async def command(self, negotiation_id: str, command: neg.Command) -> neg.Negotiation:
        """A local command on one negotiation (Terminate, Accept, CounterOffer, ...)."""
        t = await self.engine.transition(NEGOTIATION, _existing(NEGOTIATION, negotiation_id), command)
        return t.negotiation

    async def terminate(self, negotiation_id: str, reason: str) -> neg.Negotiation:
        return await self.command(negotiation_id, neg.Terminate(reason))

    async def wait_for(self, negotiation_id: str, states: set[str], timeout: float) -> NegotiationRow | None:
        """Wait until the negotiation's state is one of ``states`` (or the timeout)."""
        return await self.engine.wait_for(NEGOTIATION, negotiation_id, states, timeout)

    # -------------------------------------------------------------- transfers

    async def transfer_message(
        self,
        body: Any,
        sender: str,
        pid: str | None,
        expected: tuple[type, ...] | None = None,
        attested: Claims | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Take in a DSP transfer message; return (status, response body). ``attested``: the
        sender's verified DAT claims (snapshot into transfer tokens, and audited)."""
        msg = parse_message(body, expected)
        await self._check_callback(msg)
        check = None
        if isinstance(msg, TransferRequestMessage):
            # The agreement and its FINALIZED negotiation never change again: check them first.
            negotiation = await self._negotiation_of(msg.agreement_id)
            if negotiation is not None and finalized_unacknowledged(negotiation, sender):
                negotiation = await self._taken_as_finalized(negotiation, msg.agreement_id)
            check = xfer.check_agreement(negotiation, agreement_id=msg.agreement_id, caller=sender)
            if check.ok:
                retired = await self._retirement(msg.agreement_id)
                if retired is not None:
                    raise Forbidden(retired)

        async def find(tx: Transaction) -> TransferRow | None:
            if pid is not None:
                return await find_transfer(tx, pid, sender)
            if isinstance(msg, TransferRequestMessage):
                row = await tx.transfers.get_by_consumer_pid(msg.consumer_pid, role="provider")
                if row is not None and row.counter_party_id != sender:
                    raise Invalid("that process id is already in use")
                return row
            raise NotFound("no transfer process named")

        t = await self.engine.transition(
            TRANSFER, find, Received(msg, sender, agreement=check), Inbound(peer=attested)
        )
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
            negotiation = (
                await tx.negotiations.get(row.negotiation_id)
                if row is not None and row.negotiation_id
                else None
            )
            if row is None or negotiation is None or negotiation.role != "provider":
                raise NotFound(f"no agreement {agreement_id} of this provider")
            retired = await tx.agreements.retire(agreement_id, reason, now)
            running = await tx.transfers.list(
                agreement_id=agreement_id, role="provider", state=RUNNING_TRANSFER_STATES, limit=None
            )
        assert retired is not None and retired.retired_at is not None
        why = retirement_reason(agreement_id, retired.retired_reason or "")
        for t in running:
            try:
                await self.transfer_command(t.id, xfer.Terminate(why, code=AGREEMENT_RETIRED))
            except ProtocolError as exc:  # it ended meanwhile
                log.info("transfer %s under retired %s not terminated: %s", t.id, agreement_id, exc)
        if self._audit is not None and retired.retired_at == now:
            await self._audit.drain()  # after the entries of the transfers it ended
            await self._audit.append(
                [
                    (
                        "agreement.retired",
                        {
                            "reason": retired.retired_reason,
                            "role": "provider",
                            "terminated": [t.id for t in running],
                        },
                        {"agreement_id": agreement_id, "participant_id": retired.consumer_id},
                    )
                ]
            )
        return retired

    async def _negotiation_of(self, agreement_id: str) -> neg.Negotiation | None:
        async with self.store.transaction(readonly=True) as tx:
            agreement = await tx.agreements.get(agreement_id)
            row = (
                await tx.negotiations.get(agreement.negotiation_id)
                if agreement is not None and agreement.negotiation_id
                else None
            )
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

        async def find(tx: Transaction) -> NegotiationRow | None:
            return await tx.negotiations.get(n.id)

        await self.engine.transition(NEGOTIATION, find, Acknowledged(pending))
        log.info(
            "transfer request under %s taken as the acknowledgement of FINALIZED for %s", agreement_id, n.id
        )
        return await self._negotiation_of(agreement_id)

    async def get_transfer(self, pid: str, sender: str) -> dict[str, Any]:
        async with self.store.transaction(readonly=True) as tx:
            row = await find_transfer(tx, pid, sender)
        return row_to_transfer(row).to_dsp().to_wire()

    async def request_transfer(
        self,
        agreement_id: str,
        fmt: str,
        data_address: DataAddress | None = None,
        purpose: str | None = None,
        stated: Mapping[str, str] | None = None,
    ) -> xfer.Transfer:
        """Consumer: ask the provider of ``agreement_id`` for a transfer. A push without a
        ``data_address`` goes to this connector's own push endpoint, under a secret made for
        this transfer, with the facts the use states (``purpose``; ``stated``: application,
        event, location) for the provider's decision."""
        async with self.store.transaction(readonly=True) as tx:
            agreement = await tx.agreements.get(agreement_id)
            negotiation = (
                await tx.negotiations.get(agreement.negotiation_id)
                if agreement is not None and agreement.negotiation_id
                else None
            )
        if (
            agreement is None
            or negotiation is None
            or negotiation.role != "consumer"
            or agreement.consumer_id != self.participant_id
        ):
            raise NotFound(f"no agreement {agreement_id} of this consumer")
        if negotiation.state != neg.NegotiationState.FINALIZED.value:
            raise Conflict(f"agreement {agreement_id} is not finalized")
        process_id = None
        if fmt == PUSH and data_address is None:
            process_id = f"urn:uuid:{uuid.uuid4()}"
            facts = {**(stated or {}), **({"purpose": purpose} if purpose else {})}
            data_address = self.references.push_address(process_id, facts)
        cmd = xfer.Request(
            agreement_id=agreement_id,
            format=fmt,
            provider_address=negotiation.counter_party_address or "",
            callback_address=self.dsp_url,
            provider_id=negotiation.counter_party_id or "",
            data_address=data_address,
            process_id=process_id,
        )
        t = await self.engine.transition(TRANSFER, _new_process, cmd)
        return t.transfer

    async def transfer_command(self, transfer_id: str, command: xfer.Command) -> xfer.Transfer:
        t = await self.engine.transition(TRANSFER, _existing(TRANSFER, transfer_id), command)
        return t.transfer

    async def refresh_transfer_token(
        self, pid: str, refresh_token: str, sender: str, attested: Claims | None = None
    ) -> dict[str, Any]:
        """Provider: a new access token (and a new one-time refresh token) for a pull."""
        return await self.references.refresh_transfer_token(pid, refresh_token, sender, attested)

    async def refresh_pull_token(self, transfer_id: str) -> xfer.Transfer:
        """Consumer: exchange the pull's refresh token at the provider; keep the new tokens."""
        return await self.references.refresh_pull_token(transfer_id)

    # -------------------------------------------------------------- local copies and notices

    async def register_local_copy(self, path: Path, transfer_id: str) -> VaultItem:
        """Consumer: a pulled file now held locally under the transfer's agreement (in the
        consumer side's vault, under its duties)."""
        if self.local_copies is None:
            raise NotFound("this connector keeps no vault")
        return await self.local_copies.register_local_copy(path, transfer_id)

    async def deletion_notice(self, body: Any, sender: str) -> dict[str, Any]:
        """Provider: a consumer reports it deleted (or used) its copy; verify and keep it."""
        return await self.notices.deletion_notice(body, sender)

    # -------------------------------------------------------------- the requester's facts

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
            self._own = (now + OWN_CLAIMS_TTL, dict(claims.attributes) if claims is not None else {})
        return self._own[1]

    async def _own_claims(self) -> Claims | None:
        if self.own_claims is None:
            return None
        try:
            return await self.own_claims()
        except Exception as exc:  # the audit entry goes without it rather than not at all
            log.warning("own DAT claims unavailable for the audit: %s", exc)
            return None


async def _new_process(tx: Transaction) -> None:
    """A local command that opens a process: there is none to load."""
    return None


def _existing(k: Kind[P, R, T, C], process_id: str) -> Find[R]:
    """A local command's process, by this side's id: 404 if there is none."""

    async def find(tx: Transaction) -> R:
        row = await k.rows(tx).get(process_id)
        if row is None:
            raise NotFound(f"no {k.name} {process_id}")
        return row

    return find

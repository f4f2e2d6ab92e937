"""Helpers of the protocol tests: deterministic ids and time, sample offers, schema checks."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dsp_schema import assert_valid

from connector.protocol import messages as m
from connector.protocol.common import Acknowledged, DeliveryFailed, Outgoing, Received, Role
from connector.protocol.errors import ProtocolError

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PROVIDER, CONSUMER = "did:web:provider.example", "did:web:consumer.example"
PROVIDER_URL, CALLBACK_URL = "https://provider.example/dsp", "https://consumer.example/callback"
DATASET = "urn:uuid:3dd1add8-4d2d-569e-d634-8394a8836a88"

SCHEMA_OF: dict[type, str] = {
    m.CatalogRequestMessage: "catalog-request-message",
    m.DatasetRequestMessage: "dataset-request-message",
    m.Catalog: "catalog/catalog-schema",
    m.Dataset: "catalog/dataset-schema",
    m.CatalogError: "catalog-error",
    m.ContractRequestMessage: "contract-request-message",
    m.ContractOfferMessage: "contract-offer-message",
    m.ContractAgreementMessage: "contract-agreement-message",
    m.ContractAgreementVerificationMessage: "contract-agreement-verification-message",
    m.ContractNegotiationEventMessage: "contract-negotiation-event-message",
    m.ContractNegotiationTerminationMessage: "contract-negotiation-termination-message",
    m.ContractNegotiation: "negotiation/contract-negotiation-schema",
    m.ContractNegotiationError: "contract-negotiation-error",
    m.TransferRequestMessage: "transfer-request-message",
    m.TransferStartMessage: "transfer-start-message",
    m.TransferSuspensionMessage: "transfer-suspension-message",
    m.TransferCompletionMessage: "transfer-completion-message",
    m.TransferTerminationMessage: "transfer-termination-message",
    m.TransferProcess: "transfer-process",
    m.TransferError: "transfer-error",
    m.VersionResponse: "protocol-version",
}

_validated: set[str] = set()


def assert_wire_valid(model: m.DspModel) -> dict[str, Any]:
    """``model.to_wire()``, asserted valid against its official schema (memoized per content)."""
    wire = model.to_wire()
    key = f"{type(model).__name__}:{model.fingerprint()}"
    if key not in _validated:
        assert_valid(wire, SCHEMA_OF[type(model)])
        assert type(model).parse(wire) == model  # and it reads back as the same model
        _validated.add(key)
    return wire


def ids(prefix: str = "id") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"urn:uuid:{prefix}-{next(counter):04d}"


def offer(
    offer_id: str = "urn:uuid:offer-1",
    *,
    target: str | None = DATASET,
    constraints: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": "use"}
    if constraints:
        rule["constraint"] = constraints
    o: dict[str, Any] = {"@id": offer_id, "@type": "Offer", "permission": [rule], **extra}
    if target is not None:
        o["target"] = target
    return o


def agreement_for(
    o: dict[str, Any],
    *,
    assignee: str = CONSUMER,
    assigner: str = PROVIDER,
    agreement_id: str = "urn:uuid:agreement-1",
) -> dict[str, Any]:
    rules: dict[str, Any] = {k: o[k] for k in ("permission", "prohibition", "obligation") if k in o}
    return {
        "@id": agreement_id,
        "@type": "Agreement",
        "target": o["target"],
        "assigner": assigner,
        "assignee": assignee,
        "timestamp": "2025-03-01T12:00:00Z",
        **rules,
    }


# ----------------------------------------------------------------------------- an in-memory network


@dataclass
class Flight:
    out: Outgoing
    sender: Role
    ok_bodies: list[Any] = field(default_factory=list)  # responses of deliveries answered 2xx
    resolved: bool = False
    refused: bool = False  # its latest delivery was refused (4xx): the sender asks for the state


@dataclass(frozen=True)
class Machine:
    """What the network needs to know of a state machine module."""

    apply: Callable[..., Any]  # negotiation.apply / transfer.apply
    kind_of: Callable[[Any], str]
    spec: dict[Any, Any]  # (from DSP state, kind) -> to
    target: dict[Any, Any]  # sending state -> DSP state
    terminal: tuple[Any, ...]
    commands: Callable[[Network, Role, int], list[Any]]
    agreement: Any = None  # passed with every Received (the transfer's agreement check)
    offer: Any = None  # passed with every Received (the negotiation's check of the offer id)
    guard: Callable[[Any, str, Role], bool] = lambda before, kind, sender: True


class Network:
    """A provider and a consumer process over an adversarial network: any message may be delivered
    any number of times in any order (also long after it was answered), an answer may be lost, and
    the sender's outbox reports each message once: acknowledged (only if some delivery was answered
    2xx) or failed for good (refused, or retries exhausted after a lost answer)."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.sides: dict[Role, Any] = {Role.PROVIDER: None, Role.CONSUMER: None}
        self.flights: list[Flight] = []
        self.new_id = {Role.PROVIDER: ids("p"), Role.CONSUMER: ids("c")}
        self.trace: list[str] = []

    @staticmethod
    def _process(t: Any) -> Any:
        return getattr(t, "negotiation", None) or t.transfer

    def apply(self, role: Role, event: Any) -> Any:
        t = self.m.apply(self.sides[role], event, NOW, new_id=self.new_id[role])
        for out in t.outgoing:
            assert_wire_valid(out.message)
            self.flights.append(Flight(out, role))
        if t.response is not None:
            assert_wire_valid(t.response.body)
        self.sides[role] = self._process(t)
        return t

    def command(self, role: Role, pick: int) -> None:
        before = self.sides[role]
        options = self.m.commands(self, role, pick)
        if not options:
            return
        cmd = options[pick % len(options)]
        try:
            self.apply(role, cmd)
            self.trace.append(f"{role.value} {type(cmd).__name__} -> {self.sides[role].state}")
        except ProtocolError as e:
            assert e.status in (404, 409), e
            assert self.sides[role] is before  # a refused command changes nothing

    def deliver(self, pick: int) -> None:
        if not self.flights:
            return
        f = self.flights[pick % len(self.flights)]
        receiver = f.sender.other
        before = self.sides[receiver]
        msg = f.out.message
        own_pid = getattr(msg, "provider_pid" if receiver is Role.PROVIDER else "consumer_pid", None)
        kind = self.m.kind_of(msg)
        # the edge finds the process by the pid in the URL (by the sender's pid for an initial one)
        found = before if before is not None and (kind.endswith("initial") or own_pid == before.id) else None
        sender_id = PROVIDER if f.sender is Role.PROVIDER else CONSUMER
        try:
            t = self.m.apply(
                found,
                Received(msg, sender_id, self.m.agreement, self.m.offer),
                NOW,
                new_id=self.new_id[receiver],
            )
        except ProtocolError as e:
            assert e.status in (400, 404)
            self.trace.append(f"{receiver.value} refuses {kind}: {e.reasons[0]}")
            f.refused = True
            return
        f.refused = False
        assert t.response is not None and t.response.status in (200, 201) and not t.outgoing
        assert_wire_valid(t.response.body)
        f.ok_bodies.append(t.response.body)
        after = self._process(t)
        self.sides[receiver] = after
        self.trace.append(f"{receiver.value} takes {kind}{' (dup)' if t.duplicate else ''} -> {after.state}")
        if t.duplicate or found is None:
            assert found is None or after == found
            return
        # a message taken in is a DSP transition from the receiver's state (or the one its own
        # unacknowledged message leads to)
        sources = (
            {found.state}
            if found.state not in self.m.target
            else {self.m.target[found.state], found.acked_state}
        )
        assert any(self.m.spec.get((s, kind)) is after.state for s in sources if s is not None), (
            f"{receiver.value} took {kind} in {found.state} -> {after.state}"
        )
        assert self.m.guard(found, kind, f.sender), f"{receiver.value} took {kind} against its guard"

    def resolve(self, pick: int, ack: bool) -> None:
        open_flights = [f for f in self.flights if not f.resolved]
        if not open_flights:
            return
        f = open_flights[pick % len(open_flights)]
        if ack and not f.ok_bodies:
            return  # an acknowledgement needs a delivery the receiver answered 2xx
        f.resolved = True
        # after a refusal the runtime asks the counter-party for its state of the process (GET)
        peer = self.sides[f.sender.other]
        mine = self.sides[f.sender]
        named = f.refused and peer is not None and mine is not None and mine.peer_pid == peer.id
        ev = (
            Acknowledged(f.out.message_id, f.ok_bodies[0])
            if ack
            else DeliveryFailed(
                f.out.message_id,
                True,
                "refused or undeliverable",
                peer_state=peer.wire_state.value if named else None,
            )
        )
        self.apply(f.sender, ev)
        self.trace.append(f"{f.sender.value} {'ack' if ack else 'failed'} -> {self.sides[f.sender].state}")

    def check(self) -> None:
        p, c = self.sides[Role.PROVIDER], self.sides[Role.CONSUMER]
        for n in (p, c):
            if n is not None:
                assert (n.pending_message_id is not None) <= (n.state in self.m.target)
                assert n.wire_state not in self.m.target
        if p is not None and c is not None and p.state in self.m.terminal and c.state in self.m.terminal:
            assert p.state is c.state, "\n".join(self.trace)

    def run(self, actions: list[tuple[str, int]]) -> None:
        for op, arg in actions:
            if op == "p":
                self.command(Role.PROVIDER, arg)
            elif op == "c":
                self.command(Role.CONSUMER, arg)
            elif op == "d":
                self.deliver(arg)
            else:
                self.resolve(arg, ack=op == "a")
            self.check()

    def drain(self) -> None:
        """A reliable network from now on: deliver and acknowledge every open message in order."""
        while any(not f.resolved for f in self.flights):
            i = next(i for i, f in enumerate(self.flights) if not f.resolved)
            self.deliver(i)
            self.resolve(0, ack=bool(self.flights[i].ok_bodies))
            self.check()

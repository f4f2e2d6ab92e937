"""The DSP 2025-1 contract negotiation state machine, for both roles, as a pure function:
``apply(negotiation | None, event, now) -> Transition``.

DSP transitions (C = consumer sends, P = provider sends)::

    (new)     --ContractRequestMessage C-->           REQUESTED
    (new)     --ContractOfferMessage P-->             OFFERED
    REQUESTED --ContractOfferMessage P-->             OFFERED
    REQUESTED --ContractAgreementMessage P-->         AGREED
    OFFERED   --ContractRequestMessage C-->           REQUESTED
    OFFERED   --EventMessage ACCEPTED C-->            ACCEPTED
    ACCEPTED  --ContractAgreementMessage P-->         AGREED
    AGREED    --AgreementVerificationMessage C-->     VERIFIED
    VERIFIED  --EventMessage FINALIZED P-->           FINALIZED
    any non-terminal --TerminationMessage C/P-->      TERMINATED

The sender keeps an internal sending state (REQUESTING, AGREEING, ...) until the counter-party
acknowledges; ``Negotiation.wire_state`` is what DSP sees. See ``connector.protocol.common`` for
how crossing messages, lost acknowledgements and refused messages are resolved.

The provider's decision to agree or terminate is not made here (``connector.protocol.decide``);
the runtime turns it into an ``Agree`` or ``Terminate`` command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, cast

from connector.protocol.common import (
    Acknowledged,
    DeliveryFailed,
    OfferCheck,
    Outgoing,
    Received,
    Response,
    Role,
    StateTable,
    new_uuid,
    reasons_text,
    remember,
)
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import (
    ContractAgreementMessage,
    ContractAgreementVerificationMessage,
    ContractNegotiation,
    ContractNegotiationError,
    ContractNegotiationEventMessage,
    ContractNegotiationTerminationMessage,
    ContractOfferMessage,
    ContractRequestMessage,
    DspModel,
    NegotiationStateName,
    check_policy,
)


class NegotiationState(StrEnum):
    # DSP states
    REQUESTED = "REQUESTED"
    OFFERED = "OFFERED"
    ACCEPTED = "ACCEPTED"
    AGREED = "AGREED"
    VERIFIED = "VERIFIED"
    FINALIZED = "FINALIZED"
    TERMINATED = "TERMINATED"
    # internal: our message is out, not yet acknowledged
    REQUESTING = "REQUESTING"
    OFFERING = "OFFERING"
    ACCEPTING = "ACCEPTING"
    AGREEING = "AGREEING"
    VERIFYING = "VERIFYING"
    FINALIZING = "FINALIZING"
    TERMINATING = "TERMINATING"

    @property
    def is_sending(self) -> bool:
        return self in SENDING

    @property
    def is_terminal(self) -> bool:
        return self in (S.FINALIZED, S.TERMINATED)


S = NegotiationState
SENDING: dict[NegotiationState, NegotiationState] = {
    S.REQUESTING: S.REQUESTED,
    S.OFFERING: S.OFFERED,
    S.ACCEPTING: S.ACCEPTED,
    S.AGREEING: S.AGREED,
    S.VERIFYING: S.VERIFIED,
    S.FINALIZING: S.FINALIZED,
    S.TERMINATING: S.TERMINATED,
}
WIRE_STATES = (S.REQUESTED, S.OFFERED, S.ACCEPTED, S.AGREED, S.VERIFIED, S.FINALIZED, S.TERMINATED)
NON_TERMINAL = (S.REQUESTED, S.OFFERED, S.ACCEPTED, S.AGREED, S.VERIFIED)

# message kinds
REQUEST_INITIAL, REQUEST = "request-initial", "request"
OFFER_INITIAL, OFFER = "offer-initial", "offer"
ACCEPTED_EVENT, AGREEMENT, VERIFICATION = "accepted", "agreement", "verification"
FINALIZED_EVENT, TERMINATION = "finalized", "termination"
KINDS = (
    REQUEST_INITIAL,
    REQUEST,
    OFFER_INITIAL,
    OFFER,
    ACCEPTED_EVENT,
    AGREEMENT,
    VERIFICATION,
    FINALIZED_EVENT,
    TERMINATION,
)

_C, _P, _BOTH = frozenset({Role.CONSUMER}), frozenset({Role.PROVIDER}), frozenset(Role)
TRANSITIONS: dict[tuple[NegotiationState | None, str], tuple[NegotiationState, frozenset[Role]]] = {
    (None, REQUEST_INITIAL): (S.REQUESTED, _C),
    (None, OFFER_INITIAL): (S.OFFERED, _P),
    (S.REQUESTED, OFFER): (S.OFFERED, _P),
    (S.REQUESTED, AGREEMENT): (S.AGREED, _P),
    (S.OFFERED, REQUEST): (S.REQUESTED, _C),
    (S.OFFERED, ACCEPTED_EVENT): (S.ACCEPTED, _C),
    (S.ACCEPTED, AGREEMENT): (S.AGREED, _P),
    (S.AGREED, VERIFICATION): (S.VERIFIED, _C),
    (S.VERIFIED, FINALIZED_EVENT): (S.FINALIZED, _P),
    # The protocol text lets either side terminate "at any state"; its figure is narrower.
    **{(s, TERMINATION): (S.TERMINATED, _BOTH) for s in NON_TERMINAL},
}
TABLE = StateTable(TRANSITIONS, SENDING, S.TERMINATED, frozenset({S.FINALIZED}))
SENDER_OF: dict[str, frozenset[Role]] = {k: senders for (_, k), (_, senders) in TRANSITIONS.items()}

_PATHS = {  # DSP HTTPS binding: where each kind is POSTed under the recipient's base URL
    REQUEST_INITIAL: "/negotiations/request",
    REQUEST: "/negotiations/{pid}/request",
    ACCEPTED_EVENT: "/negotiations/{pid}/events",
    VERIFICATION: "/negotiations/{pid}/agreement/verification",
    OFFER_INITIAL: "/negotiations/offers",
    OFFER: "/negotiations/{pid}/offers",
    AGREEMENT: "/negotiations/{pid}/agreement",
    FINALIZED_EVENT: "/negotiations/{pid}/events",
}


def message_kind(msg: DspModel) -> str:
    """The protocol meaning of a negotiation message."""
    if isinstance(msg, ContractRequestMessage):
        return REQUEST_INITIAL if msg.is_initial else REQUEST
    if isinstance(msg, ContractOfferMessage):
        return OFFER_INITIAL if msg.is_initial else OFFER
    if isinstance(msg, ContractAgreementMessage):
        return AGREEMENT
    if isinstance(msg, ContractAgreementVerificationMessage):
        return VERIFICATION
    if isinstance(msg, ContractNegotiationEventMessage):
        return ACCEPTED_EVENT if msg.event_type == "ACCEPTED" else FINALIZED_EVENT
    if isinstance(msg, ContractNegotiationTerminationMessage):
        return TERMINATION
    raise ProtocolError(400, "400", [f"{type(msg).__name__} is not a contract negotiation message"])


# ----------------------------------------------------------------------------- the process


@dataclass(frozen=True)
class Negotiation:
    """One contract negotiation as this connector keeps it (either role)."""

    id: str  # this side's process id (providerPid for the provider, consumerPid for the consumer)
    role: Role
    provider_pid: str | None
    consumer_pid: str | None
    state: NegotiationState
    counter_party_id: str
    counter_party_address: str  # where messages to the counter-party go (its base / callback URL)
    offer: Mapping[str, Any]  # the latest offer (DSP form)
    created_at: datetime
    updated_at: datetime
    agreement: Mapping[str, Any] | None = None
    termination_reason: tuple[str, ...] = ()
    termination_code: str | None = None
    processed: tuple[str, ...] = ()  # fingerprints of inbound messages taken in (idempotency)
    origin: str | None = None  # fingerprint of the inbound message that created it (201 on retry)
    pending_message_id: str | None = None  # our unacknowledged message
    acked_state: NegotiationState | None = None  # the last DSP state both sides have seen
    in_doubt: bool = False  # terminating after a finalization that may have been taken
    delivery_error: str | None = field(default=None, compare=False)

    @property
    def wire_state(self) -> NegotiationState:
        """The DSP state: the last acknowledged one while a message of ours is in flight."""
        if not self.state.is_sending:
            return self.state
        return self.acked_state if self.acked_state is not None else SENDING[self.state]

    @property
    def peer_pid(self) -> str | None:
        return self.consumer_pid if self.role is Role.PROVIDER else self.provider_pid

    @property
    def peer_status_path(self) -> str | None:
        """Where the counter-party tells its state of this negotiation (GET, under its address)."""
        return f"/negotiations/{self.peer_pid}" if self.peer_pid is not None else None

    @property
    def dataset_id(self) -> str | None:
        target = (self.agreement or self.offer).get("target")
        return target if isinstance(target, str) else None

    def to_dsp(self) -> ContractNegotiation:
        """The ACK / GET body (the DSP state)."""
        return ContractNegotiation(
            provider_pid=self.provider_pid or "",
            consumer_pid=self.consumer_pid or "",
            state=cast(NegotiationStateName, self.wire_state.value),
        )

    def error_body(self, err: ProtocolError) -> ContractNegotiationError:
        return negotiation_error(err, self.provider_pid, self.consumer_pid)


def negotiation_error(
    err: ProtocolError, provider_pid: str | None, consumer_pid: str | None
) -> ContractNegotiationError:
    """The ContractNegotiationError body for ``err`` (pids from the process or the message)."""
    return ContractNegotiationError(
        provider_pid=provider_pid or "",
        consumer_pid=consumer_pid or "",
        code=err.code,
        reason=list(err.reasons),
    )


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Request:
    """Consumer: open a negotiation with a ContractRequestMessage for ``offer``."""

    offer: Mapping[str, Any]
    provider_address: str  # the provider's DSP base URL
    callback_address: str  # ours, for the provider's messages
    provider_id: str  # the provider's participant id


@dataclass(frozen=True)
class CounterOffer:
    """Consumer: answer the provider's offer with a ContractRequestMessage for ``offer``."""

    offer: Mapping[str, Any]


@dataclass(frozen=True)
class Accept:
    """Consumer: accept the provider's latest offer (event ACCEPTED)."""


@dataclass(frozen=True)
class Verify:
    """Consumer: verify the agreement (ContractAgreementVerificationMessage)."""


@dataclass(frozen=True)
class Offer:
    """Provider: a counter-offer (in REQUESTED), or open a negotiation (``negotiation=None``; then
    ``consumer_address``, ``callback_address`` and ``consumer_id`` are required)."""

    offer: Mapping[str, Any]
    consumer_address: str | None = None
    callback_address: str | None = None
    consumer_id: str | None = None


@dataclass(frozen=True)
class Agree:
    """Provider: send the agreement (from REQUESTED or ACCEPTED)."""

    agreement: Mapping[str, Any]


@dataclass(frozen=True)
class Finalize:
    """Provider: finalize a verified agreement (event FINALIZED)."""


@dataclass(frozen=True)
class Terminate:
    """Either side: terminate (from any non-terminal state)."""

    reason: str
    code: str | None = None


Command = Request | CounterOffer | Accept | Verify | Offer | Agree | Finalize | Terminate
Event = Received | Acknowledged | DeliveryFailed | Command


@dataclass(frozen=True)
class Transition:
    negotiation: Negotiation
    outgoing: list[Outgoing] = field(default_factory=list)
    response: Response | None = None  # for Received: what the edge returns
    duplicate: bool = False  # a message already taken in: nothing to persist


# ----------------------------------------------------------------------------- apply


def apply(
    n: Negotiation | None, event: Event, now: datetime, *, new_id: Callable[[], str] = new_uuid
) -> Transition:
    """The next state of ``n`` after ``event``; raises ``ProtocolError`` for what DSP forbids."""
    if isinstance(event, Received):
        return _receive(n, event, now, new_id)
    if isinstance(event, Acknowledged):
        return _acknowledged(_need(n), event, now)
    if isinstance(event, DeliveryFailed):
        return _failed(_need(n), event, now, new_id)
    if isinstance(event, Request):
        return _request(n, event, now, new_id)
    if isinstance(event, Offer) and n is None:
        return _initial_offer(event, now, new_id)
    return _command(_need(n), event, now, new_id)


def _need(n: Negotiation | None) -> Negotiation:
    if n is None:
        raise ProtocolError(404, "404", ["no such contract negotiation"])
    return n


def _message(n: Negotiation, kind: str, **fields: Any) -> DspModel:
    pids: dict[str, Any] = {"provider_pid": n.provider_pid, "consumer_pid": n.consumer_pid}
    if kind == REQUEST:
        return ContractRequestMessage(**pids, **fields)
    if kind == OFFER:
        return ContractOfferMessage(**pids, **fields)
    if kind == AGREEMENT:
        return ContractAgreementMessage(**pids, **fields)
    if kind == VERIFICATION:
        return ContractAgreementVerificationMessage(**pids)
    if kind in (ACCEPTED_EVENT, FINALIZED_EVENT):
        return ContractNegotiationEventMessage(
            **pids, event_type="ACCEPTED" if kind == ACCEPTED_EVENT else "FINALIZED"
        )
    return ContractNegotiationTerminationMessage(**pids, **fields)


def _send(n: Negotiation, kind: str, msg: DspModel, new_id: Callable[[], str]) -> Outgoing:
    recipient = n.role.other
    path = "/negotiations/{pid}/termination" if kind == TERMINATION else _PATHS[kind]
    pid = n.provider_pid if recipient is Role.PROVIDER else n.consumer_pid
    return Outgoing(msg, n.counter_party_address, path.format(pid=pid), new_id())


def _policy(offer: Mapping[str, Any], kind: Literal["Offer", "Agreement"]) -> dict[str, Any]:
    try:
        return check_policy(dict(offer), kind, target=True, where=kind.lower())
    except ValueError as exc:
        raise ProtocolError(400, "400", [str(exc)]) from exc


# --- inbound ----------------------------------------------------------------------------------


def _receive(n: Negotiation | None, ev: Received, now: datetime, new_id: Callable[[], str]) -> Transition:
    msg = ev.message
    kind = message_kind(msg)
    fp = msg.fingerprint()
    if n is None:
        return _create(msg, kind, fp, ev.sender, ev.offer, now, new_id)
    if ev.sender != n.counter_party_id:
        # DSP: a client that is not authorized gets 404, as for an unknown process
        raise ProtocolError(404, "404", [f"no contract negotiation {n.id} for {ev.sender}"])
    sender = n.role.other
    if sender not in SENDER_OF[kind]:
        raise ProtocolError(
            400,
            "400",
            [
                f"a {n.role.value.lower()} does not receive {_describe(kind)} (it is sent by the "
                f"{n.role.value.lower()})"
            ],
            n,
        )
    if n.state.is_terminal:
        # DSP: "Terminal states are final". A re-delivery too: its sender resolves that from our
        # state (common.StateTable.settled), never from a 2xx that would hide the refusal.
        raise ProtocolError(
            400,
            "400",
            [
                f"negotiation {n.id} is {n.state.value}, a terminal state: {_describe(kind)} is not "
                "taken any more"
            ],
            n,
        )
    if kind in (REQUEST_INITIAL, OFFER_INITIAL):
        if fp in n.processed:
            return _duplicate(n, fp)
        raise ProtocolError(
            400,
            "400",
            [
                f"a negotiation with {'consumerPid' if kind == REQUEST_INITIAL else 'providerPid'} "
                f"{n.peer_pid} already exists; a new negotiation needs a new process id"
            ],
            n,
        )
    checked = _check_pids(n, msg)
    resolved = TABLE.resolve(n.state, n.acked_state, kind, sender)
    if resolved is None:
        if fp in n.processed:
            return _duplicate(n, fp)
        state = n.wire_state.value + (f" (our {n.state.value} is in flight)" if n.state.is_sending else "")
        raise ProtocolError(400, "400", [f"{_describe(kind)} is not allowed in state {state}"], n)
    _, to = resolved
    changes: dict[str, Any] = {
        "state": to,
        "acked_state": to,
        "pending_message_id": None,
        "in_doubt": False,
        "processed": remember(n.processed, fp),
        "updated_at": now,
    }
    if isinstance(msg, (ContractRequestMessage, ContractOfferMessage)):
        if msg.offer.get("target") != n.offer.get("target"):
            raise ProtocolError(
                400,
                "400",
                [
                    f"the offer is for dataset {msg.offer.get('target')}; negotiation {n.id} is for "
                    f"{n.offer.get('target')}"
                ],
                n,
            )
        changes["offer"] = msg.offer
    elif isinstance(msg, ContractAgreementMessage):
        changes["agreement"] = msg.agreement
    elif isinstance(msg, ContractNegotiationTerminationMessage):
        changes["termination_reason"] = reasons_text(msg.reason)
        changes["termination_code"] = msg.code
    n = replace(checked, **changes)
    return Transition(n, [], Response(200, n.to_dsp()))


def _create(
    msg: DspModel,
    kind: str,
    fp: str,
    sender: str,
    offer: OfferCheck | None,
    now: datetime,
    new_id: Callable[[], str],
) -> Transition:
    if kind == REQUEST_INITIAL:
        assert isinstance(msg, ContractRequestMessage) and msg.callback_address is not None
        # DSP: "If the Provider is not aware of the offer.@id value, it must respond with an
        # error message" (and so create nothing); no check made is no offer known (fail closed)
        if offer is None or not offer.ok:
            raise ProtocolError(
                400,
                "400",
                [offer.reason if offer is not None else f"offer {msg.offer.get('@id')} was not checked"],
            )
        pid = new_id()
        n = Negotiation(
            id=pid,
            role=Role.PROVIDER,
            provider_pid=pid,
            consumer_pid=msg.consumer_pid,
            state=S.REQUESTED,
            counter_party_id=sender,
            counter_party_address=msg.callback_address,
            offer=msg.offer,
            created_at=now,
            updated_at=now,
            processed=(fp,),
            origin=fp,
            acked_state=S.REQUESTED,
        )
    elif kind == OFFER_INITIAL:
        assert isinstance(msg, ContractOfferMessage) and msg.callback_address is not None
        pid = new_id()
        n = Negotiation(
            id=pid,
            role=Role.CONSUMER,
            provider_pid=msg.provider_pid,
            consumer_pid=pid,
            state=S.OFFERED,
            counter_party_id=sender,
            counter_party_address=msg.callback_address,
            offer=msg.offer,
            created_at=now,
            updated_at=now,
            processed=(fp,),
            origin=fp,
            acked_state=S.OFFERED,
        )
    else:
        pid_name = "providerPid" if kind in (REQUEST, ACCEPTED_EVENT, VERIFICATION) else "consumerPid"
        raise ProtocolError(404, "404", [f"no contract negotiation with that {pid_name}"])
    return Transition(n, [], Response(201, n.to_dsp()))


def _check_pids(n: Negotiation, msg: Any) -> Negotiation:
    learned: dict[str, Any] = {}
    for attr, name in (("provider_pid", "providerPid"), ("consumer_pid", "consumerPid")):
        given, known = getattr(msg, attr), getattr(n, attr)
        if known is None:
            learned[attr] = given
        elif given != known:
            raise ProtocolError(400, "400", [f"{name} {given} does not match this negotiation's {known}"], n)
    return replace(n, **learned) if learned else n


def _duplicate(n: Negotiation, fp: str) -> Transition:
    return Transition(n, [], Response(201 if fp == n.origin else 200, n.to_dsp()), duplicate=True)


def _describe(kind: str) -> str:
    return {
        REQUEST_INITIAL: "an initial ContractRequestMessage",
        REQUEST: "a ContractRequestMessage",
        OFFER_INITIAL: "an initial ContractOfferMessage",
        OFFER: "a ContractOfferMessage",
        ACCEPTED_EVENT: "a ContractNegotiationEventMessage ACCEPTED",
        FINALIZED_EVENT: "a ContractNegotiationEventMessage FINALIZED",
        AGREEMENT: "a ContractAgreementMessage",
        VERIFICATION: "a ContractAgreementVerificationMessage",
        TERMINATION: "a ContractNegotiationTerminationMessage",
    }[kind]


# --- outbox outcomes --------------------------------------------------------------------------


def _acknowledged(n: Negotiation, ev: Acknowledged, now: datetime) -> Transition:
    if ev.message_id != n.pending_message_id or not n.state.is_sending:
        return Transition(n)  # superseded by a later message or an implicit acknowledgement
    to = SENDING[n.state]
    changes: dict[str, Any] = {
        "state": to,
        "acked_state": to,
        "pending_message_id": None,
        "updated_at": now,
        "delivery_error": None,
    }
    body = ev.body
    if isinstance(body, ContractNegotiation):  # the 201 of an initial message names the peer's pid
        if n.provider_pid is None:
            changes["provider_pid"] = body.provider_pid
        if n.consumer_pid is None:
            changes["consumer_pid"] = body.consumer_pid
    return Transition(replace(n, **changes))


def _failed(n: Negotiation, ev: DeliveryFailed, now: datetime, new_id: Callable[[], str]) -> Transition:
    if ev.message_id != n.pending_message_id or not ev.permanent:
        return Transition(n)
    settled = TABLE.settled(n.state, ev.peer_state, in_doubt=n.in_doubt)
    if settled is SENDING[n.state]:  # the counter-party is there already: it took ours before
        return _acknowledged(n, Acknowledged(ev.message_id), now)
    if settled is not None:  # our in-doubt finalization was taken after all
        return Transition(
            replace(
                n,
                state=settled,
                acked_state=settled,
                pending_message_id=None,
                updated_at=now,
                delivery_error=None,
                in_doubt=False,
                termination_reason=(),
                termination_code=None,
            )
        )
    why = ev.reason or "the counter-party did not accept it"
    if n.state is S.TERMINATING:
        if n.in_doubt:  # the counter-party may have finalized: never claim TERMINATED alone
            return Transition(replace(n, pending_message_id=None, updated_at=now, delivery_error=why))
        return Transition(
            replace(
                n,
                state=S.TERMINATED,
                acked_state=S.TERMINATED,
                pending_message_id=None,
                updated_at=now,
                delivery_error=why,
            )
        )
    if n.peer_pid is None:  # the initial message: the counter-party has no process we could name
        return Transition(
            replace(
                n,
                state=S.TERMINATED,
                acked_state=S.TERMINATED,
                pending_message_id=None,
                updated_at=now,
                termination_reason=(f"delivery of the initial message failed: {why}",),
                delivery_error=why,
            )
        )
    reason = f"delivery of our {SENDING[n.state].value} message failed: {why}"
    return _terminate(
        n, Terminate(reason, "DELIVERY_FAILED"), now, new_id, in_doubt=n.state is S.FINALIZING, error=why
    )


# --- local commands ---------------------------------------------------------------------------


def _request(n: Negotiation | None, cmd: Request, now: datetime, new_id: Callable[[], str]) -> Transition:
    if n is not None:
        raise ProtocolError(409, "409", ["a negotiation is opened once; use CounterOffer within it"], n)
    offer = _policy(cmd.offer, "Offer")
    pid = new_id()
    msg = ContractRequestMessage(consumer_pid=pid, offer=offer, callback_address=cmd.callback_address)
    out = Outgoing(msg, cmd.provider_address, _PATHS[REQUEST_INITIAL], new_id())
    neg = Negotiation(
        id=pid,
        role=Role.CONSUMER,
        provider_pid=None,
        consumer_pid=pid,
        state=S.REQUESTING,
        counter_party_id=cmd.provider_id,
        counter_party_address=cmd.provider_address,
        offer=offer,
        created_at=now,
        updated_at=now,
        pending_message_id=out.message_id,
    )
    return Transition(neg, [out])


def _initial_offer(cmd: Offer, now: datetime, new_id: Callable[[], str]) -> Transition:
    if not (cmd.consumer_address and cmd.callback_address and cmd.consumer_id):
        raise ProtocolError(
            409, "409", ["an initial offer needs consumer_address, callback_address and consumer_id"]
        )
    offer = _policy(cmd.offer, "Offer")
    pid = new_id()
    msg = ContractOfferMessage(provider_pid=pid, offer=offer, callback_address=cmd.callback_address)
    out = Outgoing(msg, cmd.consumer_address, _PATHS[OFFER_INITIAL], new_id())
    neg = Negotiation(
        id=pid,
        role=Role.PROVIDER,
        provider_pid=pid,
        consumer_pid=None,
        state=S.OFFERING,
        counter_party_id=cmd.consumer_id,
        counter_party_address=cmd.consumer_address,
        offer=offer,
        created_at=now,
        updated_at=now,
        pending_message_id=out.message_id,
    )
    return Transition(neg, [out])


# command -> (role that may issue it, DSP states it is issued from, sending state, message kind)
_COMMANDS: dict[type, tuple[Role, tuple[NegotiationState, ...], NegotiationState, str]] = {
    CounterOffer: (Role.CONSUMER, (S.OFFERED,), S.REQUESTING, REQUEST),
    Accept: (Role.CONSUMER, (S.OFFERED,), S.ACCEPTING, ACCEPTED_EVENT),
    Verify: (Role.CONSUMER, (S.AGREED,), S.VERIFYING, VERIFICATION),
    Offer: (Role.PROVIDER, (S.REQUESTED,), S.OFFERING, OFFER),
    Agree: (Role.PROVIDER, (S.REQUESTED, S.ACCEPTED), S.AGREEING, AGREEMENT),
    Finalize: (Role.PROVIDER, (S.VERIFIED,), S.FINALIZING, FINALIZED_EVENT),
}


def _command(n: Negotiation, cmd: Command, now: datetime, new_id: Callable[[], str]) -> Transition:
    if isinstance(cmd, Terminate):
        return _terminate(n, cmd, now, new_id)
    role, sources, sending, kind = _COMMANDS[type(cmd)]
    name = type(cmd).__name__
    if n.role is not role:
        raise ProtocolError(
            409,
            "409",
            [f"{name} is a {role.value.lower()} command; this side is the {n.role.value.lower()}"],
            n,
        )
    if n.state not in sources:
        raise ProtocolError(
            409,
            "409",
            [
                f"{name} is not possible in state {n.state.value} (only from "
                f"{', '.join(s.value for s in sources)})"
            ],
            n,
        )
    fields: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    if isinstance(cmd, (CounterOffer, Offer)):
        fields["offer"] = changes["offer"] = _policy(cmd.offer, "Offer")
    elif isinstance(cmd, Agree):
        agreement = _policy(cmd.agreement, "Agreement")
        if agreement["assignee"] != n.counter_party_id:
            raise ProtocolError(
                409,
                "409",
                [
                    f"the agreement's assignee {agreement['assignee']} is not the consumer "
                    f"{n.counter_party_id}"
                ],
                n,
            )
        fields["agreement"] = changes["agreement"] = agreement
    msg = _message(n, kind, **fields)
    out = _send(n, kind, msg, new_id)
    n = replace(n, **changes, state=sending, pending_message_id=out.message_id, updated_at=now)
    return Transition(n, [out])


def _terminate(
    n: Negotiation,
    cmd: Terminate,
    now: datetime,
    new_id: Callable[[], str],
    *,
    in_doubt: bool = False,
    error: str | None = None,
) -> Transition:
    if n.state.is_terminal or (n.state in (S.TERMINATING, S.FINALIZING) and error is None):
        why = (
            "it is already terminal"
            if n.state.is_terminal
            else "a termination is already under way"
            if n.state is S.TERMINATING
            else "its finalization is in flight and may already be taken"
        )
        raise ProtocolError(
            409, "409", [f"cannot terminate negotiation {n.id} in state {n.state.value}: {why}"], n
        )
    if n.peer_pid is None:
        raise ProtocolError(
            409,
            "409",
            [
                f"negotiation {n.id} is not yet acknowledged by the counter-party; it cannot be named in a "
                "termination until it is (a failed delivery terminates it)"
            ],
            n,
        )
    msg = _message(n, TERMINATION, code=cmd.code, reason=[cmd.reason])
    out = _send(n, TERMINATION, msg, new_id)
    n = replace(
        n,
        state=S.TERMINATING,
        pending_message_id=out.message_id,
        updated_at=now,
        termination_reason=(cmd.reason,),
        termination_code=cmd.code,
        in_doubt=in_doubt,
        delivery_error=error,
    )
    return Transition(n, [out])

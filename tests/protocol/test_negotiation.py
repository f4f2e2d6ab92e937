"""The contract negotiation machine: the full transition table for both roles, the flows of DSP
2025-1, idempotency, races between the two sides, and delivery failures."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from protocol_testlib import (
    CALLBACK_URL,
    CONSUMER,
    DATASET,
    NOW,
    PROVIDER,
    PROVIDER_URL,
    agreement_for,
    assert_wire_valid,
    ids,
    offer,
)

from connector.protocol import messages as m
from connector.protocol import negotiation as N
from connector.protocol.common import Acknowledged, DeliveryFailed, OfferCheck, Received, Role
from connector.protocol.errors import ProtocolError
from connector.protocol.negotiation import NegotiationState as S

P, C = Role.PROVIDER, Role.CONSUMER
KNOWN = OfferCheck(True, "a catalog offer")  # the edge's check of an initial request's offer.@id

# The DSP 2025-1 table, written out independently of the module: (from, kind) -> to.
SPEC: dict[tuple[S | None, str], S] = {
    (None, "request-initial"): S.REQUESTED,
    (None, "offer-initial"): S.OFFERED,
    (S.REQUESTED, "offer"): S.OFFERED,
    (S.REQUESTED, "agreement"): S.AGREED,
    (S.OFFERED, "request"): S.REQUESTED,
    (S.OFFERED, "accepted"): S.ACCEPTED,
    (S.ACCEPTED, "agreement"): S.AGREED,
    (S.AGREED, "verification"): S.VERIFIED,
    (S.VERIFIED, "finalized"): S.FINALIZED,
    **{(s, "termination"): S.TERMINATED for s in (S.REQUESTED, S.OFFERED, S.ACCEPTED, S.AGREED, S.VERIFIED)},
}
SENT_BY = {
    "request-initial": {C},
    "request": {C},
    "offer-initial": {P},
    "offer": {P},
    "accepted": {C},
    "agreement": {P},
    "verification": {C},
    "finalized": {P},
    "termination": {C, P},
}
TARGET = {
    S.REQUESTING: S.REQUESTED,
    S.OFFERING: S.OFFERED,
    S.ACCEPTING: S.ACCEPTED,
    S.AGREEING: S.AGREED,
    S.VERIFYING: S.VERIFIED,
    S.FINALIZING: S.FINALIZED,
    S.TERMINATING: S.TERMINATED,
}
MESSAGE_OF = {
    "request": m.ContractRequestMessage,
    "offer": m.ContractOfferMessage,
    "accepted": m.ContractNegotiationEventMessage,
    "agreement": m.ContractAgreementMessage,
    "verification": m.ContractAgreementVerificationMessage,
    "finalized": m.ContractNegotiationEventMessage,
    "termination": m.ContractNegotiationTerminationMessage,
}
NON_TERMINAL = [S.REQUESTED, S.OFFERED, S.ACCEPTED, S.AGREED, S.VERIFIED]
WIRE = [*NON_TERMINAL, S.FINALIZED, S.TERMINATED]

# every (state, last acknowledged state, in doubt) a process of each role can be in
REACHABLE: dict[Role, list[tuple[S, S | None, bool]]] = {
    P: [(s, s, False) for s in WIRE]
    + [
        (S.OFFERING, None, False),
        (S.OFFERING, S.REQUESTED, False),
        (S.AGREEING, S.REQUESTED, False),
        (S.AGREEING, S.ACCEPTED, False),
        (S.FINALIZING, S.VERIFIED, False),
        (S.TERMINATING, S.VERIFIED, True),
    ]
    + [(S.TERMINATING, s, False) for s in NON_TERMINAL],
    C: [(s, s, False) for s in WIRE]
    + [
        (S.REQUESTING, None, False),
        (S.REQUESTING, S.OFFERED, False),
        (S.ACCEPTING, S.OFFERED, False),
        (S.VERIFYING, S.AGREED, False),
    ]
    + [(S.TERMINATING, s, False) for s in NON_TERMINAL],
}


def rank(s: S) -> int:
    return 3 if s is S.TERMINATED else 2 if s is S.FINALIZED else 1


def step(n: N.Negotiation | None, event: Any, new_id: Any = None) -> N.Transition:
    """``apply``, with every outgoing message and response body checked against its schema."""
    t = N.apply(n, event, NOW, new_id=new_id or ids())
    for out in t.outgoing:
        assert_wire_valid(out.message)
        assert out.url.startswith(
            ("https://provider.example/dsp/negotiations/", "https://consumer.example/callback/negotiations/")
        )
    if t.response is not None:
        assert_wire_valid(t.response.body)
    return t


def make(role: Role, state: S, acked: S | None, in_doubt: bool = False) -> N.Negotiation:
    initial = acked is None
    o = offer()
    return N.Negotiation(
        id="urn:uuid:pp" if role is P else "urn:uuid:cp",
        role=role,
        provider_pid=None if initial and role is C else "urn:uuid:pp",
        consumer_pid=None if initial and role is P else "urn:uuid:cp",
        state=state,
        counter_party_id=CONSUMER if role is P else PROVIDER,
        counter_party_address=CALLBACK_URL if role is P else PROVIDER_URL,
        offer=o,
        agreement=agreement_for(o)
        if state in (S.AGREED, S.VERIFYING, S.VERIFIED, S.FINALIZING, S.FINALIZED)
        else None,
        created_at=NOW,
        updated_at=NOW,
        acked_state=acked,
        in_doubt=in_doubt,
        pending_message_id="urn:uuid:pending" if state in TARGET and not in_doubt else None,
    )


def inbound(kind: str, pp: str = "urn:uuid:pp", cp: str = "urn:uuid:cp") -> m.DspModel:
    o = offer("urn:uuid:counter-offer")
    if kind == "request-initial":
        return m.ContractRequestMessage(consumer_pid=cp, offer=o, callback_address=CALLBACK_URL)
    if kind == "offer-initial":
        return m.ContractOfferMessage(provider_pid=pp, offer=o, callback_address=PROVIDER_URL)
    pids: dict[str, Any] = {"provider_pid": pp, "consumer_pid": cp}
    if kind == "request":
        return m.ContractRequestMessage(**pids, offer=o)
    if kind == "offer":
        return m.ContractOfferMessage(**pids, offer=o)
    if kind == "agreement":
        return m.ContractAgreementMessage(**pids, agreement=agreement_for(offer()))
    if kind == "verification":
        return m.ContractAgreementVerificationMessage(**pids)
    if kind in ("accepted", "finalized"):
        return m.ContractNegotiationEventMessage(
            **pids, event_type="ACCEPTED" if kind == "accepted" else "FINALIZED"
        )
    return m.ContractNegotiationTerminationMessage(**pids, code="X", reason=["no longer needed"])


def expected_inbound(role: Role, state: S, acked: S | None, kind: str) -> S | int:
    """The state an inbound message leads to, or the error status (the rules of common.py)."""
    if role.other not in SENT_BY[kind] or kind.endswith("initial"):
        return 400
    if state in (S.FINALIZED, S.TERMINATED):
        return 400  # terminal: every message refused, a re-delivery of one taken before too
    if state not in TARGET:
        return SPEC.get((state, kind), 400)
    target = TARGET[state]
    if target not in (S.FINALIZED, S.TERMINATED) and (target, kind) in SPEC:
        return SPEC[(target, kind)]  # implicit acknowledgement of ours
    to = SPEC.get((acked, kind)) if acked is not None else None
    if to is not None and rank(to) >= rank(target):
        return to  # crossed ours and wins
    return 400


COMMANDS: dict[str, tuple[set[Role], set[S], S, type]] = {
    "CounterOffer": ({C}, {S.OFFERED}, S.REQUESTING, m.ContractRequestMessage),
    "Accept": ({C}, {S.OFFERED}, S.ACCEPTING, m.ContractNegotiationEventMessage),
    "Verify": ({C}, {S.AGREED}, S.VERIFYING, m.ContractAgreementVerificationMessage),
    "Offer": ({P}, {S.REQUESTED}, S.OFFERING, m.ContractOfferMessage),
    "Agree": ({P}, {S.REQUESTED, S.ACCEPTED}, S.AGREEING, m.ContractAgreementMessage),
    "Finalize": ({P}, {S.VERIFIED}, S.FINALIZING, m.ContractNegotiationEventMessage),
}


def command(name: str) -> Any:
    return {
        "CounterOffer": N.CounterOffer(offer("urn:uuid:c2")),
        "Accept": N.Accept(),
        "Verify": N.Verify(),
        "Offer": N.Offer(offer("urn:uuid:o2")),
        "Agree": N.Agree(agreement_for(offer())),
        "Finalize": N.Finalize(),
        "Terminate": N.Terminate("changed my mind", "USER"),
        "Request": N.Request(offer(), PROVIDER_URL, CALLBACK_URL, PROVIDER),
    }[name]


# ----------------------------------------------------------------------------- the full table


@pytest.mark.parametrize(
    ("role", "state", "acked", "in_doubt"),
    [(r, *c) for r in (P, C) for c in REACHABLE[r]],
    ids=lambda x: getattr(x, "value", str(x)),
)
def test_every_event_in_every_state(role: Role, state: S, acked: S | None, in_doubt: bool) -> None:
    n = make(role, state, acked, in_doubt)
    problems: list[str] = []

    def check(label: str, ok: bool) -> None:
        if not ok:
            problems.append(label)

    # inbound messages from the counter-party
    for kind in SENT_BY:
        want = expected_inbound(role, state, acked, kind)
        try:
            t = step(n, Received(inbound(kind), n.counter_party_id))
        except ProtocolError as e:
            check(f"{kind}: got {e.status}, want {want}", e.status == want)
            continue
        if isinstance(want, int):
            problems.append(f"{kind}: accepted into {t.negotiation.state}, want {want}")
            continue
        assert t.response is not None
        check(f"{kind}: -> {t.negotiation.state}, want {want}", t.negotiation.state is want)
        check(f"{kind}: sends {t.outgoing}", not t.outgoing)
        check(f"{kind}: status {t.response.status}", t.response.status == 200)
        check(f"{kind}: body {t.response.body}", t.response.body.state == want.value)  # type: ignore[attr-defined]

    # local commands
    for name, (roles, sources, sending, msg_type) in COMMANDS.items():
        ok = role in roles and state in sources
        try:
            t = step(n, command(name))
        except ProtocolError as e:
            check(f"{name}: refused with {e.status} but allowed", not ok and e.status == 409)
            continue
        check(f"{name}: allowed in {state}", ok)
        check(f"{name}: -> {t.negotiation.state}", t.negotiation.state is sending)
        check(f"{name}: sends {t.outgoing}", [type(o.message) for o in t.outgoing] == [msg_type])
        check(f"{name}: wire state", t.negotiation.wire_state is state)
    can_terminate = acked is not None and state not in (
        S.FINALIZED,
        S.TERMINATED,
        S.TERMINATING,
        S.FINALIZING,
    )
    try:
        t = step(n, command("Terminate"))
        check("Terminate: allowed", can_terminate)
        check("Terminate: -> TERMINATING", t.negotiation.state is S.TERMINATING)
        check(
            "Terminate: sends",
            [type(o.message) for o in t.outgoing] == [m.ContractNegotiationTerminationMessage],
        )
    except ProtocolError as e:
        check(f"Terminate: refused ({e.status})", not can_terminate and e.status == 409)
    with pytest.raises(ProtocolError) as exc:
        step(n, command("Request"))
    check("Request on an existing negotiation", exc.value.status == 409)

    # outbox outcomes
    pending = n.pending_message_id
    for ev in (
        Acknowledged("urn:uuid:other"),
        DeliveryFailed("urn:uuid:other", True),
        DeliveryFailed(pending or "x", False),
    ):
        check(f"{ev}: changes nothing", step(n, ev).negotiation == n)
    if pending is None:
        check("ack without pending", step(n, Acknowledged("urn:uuid:pending")).negotiation == n)
    else:
        t = step(n, Acknowledged(pending))
        check(
            "ack enters the DSP state",
            t.negotiation.state is TARGET[state]
            and t.negotiation.wire_state is TARGET[state]
            and t.negotiation.pending_message_id is None,
        )
        t = step(n, DeliveryFailed(pending, True))
        if state is S.TERMINATING or acked is None:
            check(f"failed -> {t.negotiation.state}", t.negotiation.state is S.TERMINATED and not t.outgoing)
        else:
            check(f"failed -> {t.negotiation.state}", t.negotiation.state is S.TERMINATING)
            check(
                "failed: terminates",
                [type(o.message) for o in t.outgoing] == [m.ContractNegotiationTerminationMessage],
            )
            check("failed: in doubt after a finalization", t.negotiation.in_doubt is (state is S.FINALIZING))
    assert not problems, f"{role.value} in {state.value} (acked {acked}): " + "; ".join(problems)


def test_the_table_covers_dsp() -> None:
    # every DSP transition is taken by the receiving role in the plain state
    for (frm, kind), to in SPEC.items():
        if frm is None:
            continue
        for sender in SENT_BY[kind]:
            receiver = sender.other
            assert expected_inbound(receiver, frm, frm, kind) is to
            sender_id = CONSUMER if receiver is P else PROVIDER
            t = step(make(receiver, frm, frm), Received(inbound(kind), sender_id))
            assert t.negotiation.state is to


# ----------------------------------------------------------------------------- flows


class Pair:
    """A provider and a consumer wired together in memory with reliable delivery."""

    def __init__(self) -> None:
        self.new_id = ids()
        self.p: N.Negotiation | None = None
        self.c: N.Negotiation | None = None

    def side(self, role: Role) -> N.Negotiation | None:
        return self.p if role is P else self.c

    def set(self, role: Role, n: N.Negotiation) -> None:
        if role is P:
            self.p = n
        else:
            self.c = n

    def do(self, role: Role, cmd: Any) -> None:
        t = step(self.side(role), cmd, self.new_id)
        self.set(role, t.negotiation)
        for out in t.outgoing:
            r = step(
                self.side(role.other),
                Received(out.message, PROVIDER if role is P else CONSUMER, offer=KNOWN),
                self.new_id,
            )
            self.set(role.other, r.negotiation)
            assert r.response is not None
            current = self.side(role)
            assert current is not None
            self.set(role, step(current, Acknowledged(out.message_id, r.response.body)).negotiation)


def test_consumer_initiated_happy_path() -> None:
    pair = Pair()
    pair.do(C, N.Request(offer(), PROVIDER_URL, CALLBACK_URL, PROVIDER))
    assert pair.p is not None and pair.c is not None
    assert (pair.p.state, pair.c.state) == (S.REQUESTED, S.REQUESTED)
    assert pair.c.provider_pid == pair.p.id and pair.p.consumer_pid == pair.c.id
    pair.do(P, N.Agree(agreement_for(offer())))
    assert (pair.p.state, pair.c.state) == (S.AGREED, S.AGREED)
    assert pair.c.agreement is not None and pair.c.agreement["@id"] == "urn:uuid:agreement-1"
    pair.do(C, N.Verify())
    pair.do(P, N.Finalize())
    assert (pair.p.state, pair.c.state) == (S.FINALIZED, S.FINALIZED)
    assert pair.p.to_dsp().state == "FINALIZED"


def test_provider_initiated_with_counter_offers() -> None:
    pair = Pair()
    pair.do(
        P,
        N.Offer(offer(), consumer_address=CALLBACK_URL, callback_address=PROVIDER_URL, consumer_id=CONSUMER),
    )
    assert pair.p is not None and pair.c is not None
    assert (pair.p.state, pair.c.state) == (S.OFFERED, S.OFFERED)
    assert pair.p.consumer_pid == pair.c.id  # learned from the 201
    pair.do(
        C,
        N.CounterOffer(
            offer(
                "urn:uuid:c1", constraints=[{"leftOperand": "count", "operator": "lteq", "rightOperand": "3"}]
            )
        ),
    )
    assert (pair.p.state, pair.c.state) == (S.REQUESTED, S.REQUESTED)
    assert pair.p.offer["@id"] == "urn:uuid:c1"
    pair.do(P, N.Offer(offer("urn:uuid:o2")))
    pair.do(C, N.Accept())
    assert (pair.p.state, pair.c.state) == (S.ACCEPTED, S.ACCEPTED)
    pair.do(P, N.Agree(agreement_for(offer("urn:uuid:o2"))))
    pair.do(C, N.Verify())
    pair.do(P, N.Finalize())
    assert (pair.p.state, pair.c.state) == (S.FINALIZED, S.FINALIZED)


def test_either_side_terminates_with_a_reason() -> None:
    pair = Pair()
    pair.do(C, N.Request(offer(), PROVIDER_URL, CALLBACK_URL, PROVIDER))
    pair.do(P, N.Terminate("the offer is not available to you", "NOT_ELIGIBLE"))
    assert pair.p is not None and pair.c is not None
    assert (pair.p.state, pair.c.state) == (S.TERMINATED, S.TERMINATED)
    assert pair.c.termination_reason == ("the offer is not available to you",)
    assert pair.c.termination_code == "NOT_ELIGIBLE"


def test_wire_state_stays_until_acknowledged() -> None:
    n = make(P, S.REQUESTED, S.REQUESTED)
    t = step(n, N.Agree(agreement_for(offer())))
    assert t.negotiation.state is S.AGREEING and t.negotiation.wire_state is S.REQUESTED
    assert t.negotiation.to_dsp().state == "REQUESTED"
    (out,) = t.outgoing
    assert out.url == f"{CALLBACK_URL}/negotiations/urn:uuid:cp/agreement"
    done = step(t.negotiation, Acknowledged(out.message_id))
    assert done.negotiation.to_dsp().state == "AGREED"
    assert step(done.negotiation, Acknowledged(out.message_id)).negotiation == done.negotiation


# ----------------------------------------------------------------------------- idempotency


def test_retried_initial_request_returns_the_same_201_and_creates_nothing() -> None:
    msg = inbound("request-initial")
    first = step(None, Received(msg, CONSUMER, offer=KNOWN), ids("p"))
    assert first.response is not None and first.response.status == 201
    again = step(first.negotiation, Received(m.ContractRequestMessage.parse(msg.to_wire()), CONSUMER))
    assert again.duplicate and again.negotiation == first.negotiation and not again.outgoing
    assert again.response == first.response
    other = m.ContractRequestMessage(
        consumer_pid="urn:uuid:cp", offer=offer("urn:uuid:x"), callback_address=CALLBACK_URL
    )
    with pytest.raises(ProtocolError) as exc:
        step(first.negotiation, Received(other, CONSUMER))
    assert exc.value.status == 400 and "already exists" in exc.value.reasons[0]


def test_retried_message_has_no_new_effect_even_after_moving_on() -> None:
    n = make(C, S.REQUESTED, S.REQUESTED)
    msg = inbound("agreement")
    agreed = step(n, Received(msg, PROVIDER)).negotiation
    assert agreed.state is S.AGREED
    dup = step(agreed, Received(msg, PROVIDER))
    assert dup.duplicate and dup.negotiation == agreed and dup.response is not None
    assert dup.response.status == 200
    verifying = step(agreed, N.Verify()).negotiation
    late = step(verifying, Received(msg, PROVIDER))
    assert late.duplicate and late.negotiation == verifying and not late.outgoing
    # the same content is still refused where it was never taken
    with pytest.raises(ProtocolError):
        step(make(C, S.VERIFIED, S.VERIFIED), Received(msg, PROVIDER))


def test_a_terminal_negotiation_refuses_every_message_even_one_it_took_before() -> None:
    # issue 9: a verification repeated after FINALIZED was acknowledged with 200
    verification = inbound("verification")
    verified = step(make(P, S.AGREED, S.AGREED), Received(verification, CONSUMER)).negotiation
    assert step(verified, Received(verification, CONSUMER)).duplicate  # not terminal: 200 again
    finalized = replace(verified, state=S.FINALIZED, acked_state=S.FINALIZED)
    for n in (
        finalized,
        make(P, S.TERMINATED, S.TERMINATED),
        make(C, S.TERMINATED, S.TERMINATED),
        make(C, S.FINALIZED, S.FINALIZED),
    ):
        sender = CONSUMER if n.role is P else PROVIDER
        for kind in SENT_BY:
            if n.role.other not in SENT_BY[kind]:
                continue
            with pytest.raises(ProtocolError) as exc:
                step(n, Received(inbound(kind), sender, offer=KNOWN))
            assert exc.value.status == 400, (n.role, n.state, kind)
            assert "a terminal state" in exc.value.reasons[0], exc.value.reasons
            assert exc.value.negotiation == n  # unchanged
            assert_wire_valid(n.error_body(exc.value))


# ----------------------------------------------------------------------------- errors


def test_unknown_negotiation_and_foreign_caller_are_404() -> None:
    with pytest.raises(ProtocolError) as exc:
        step(None, Received(inbound("agreement"), PROVIDER))
    assert exc.value.status == 404
    with pytest.raises(ProtocolError) as exc:
        step(make(P, S.OFFERED, S.OFFERED), Received(inbound("accepted"), "did:web:intruder.example"))
    assert exc.value.status == 404
    for ev in (Acknowledged("x"), N.Accept()):
        with pytest.raises(ProtocolError) as exc:
            step(None, ev)
        assert exc.value.status == 404


def test_pid_mismatch_is_refused() -> None:
    n = make(P, S.OFFERED, S.OFFERED)
    with pytest.raises(ProtocolError) as exc:
        step(n, Received(inbound("accepted", cp="urn:uuid:someone-else"), CONSUMER))
    assert exc.value.status == 400 and "consumerPid" in exc.value.reasons[0]
    body = n.error_body(exc.value)
    assert_wire_valid(body)
    assert body.reason and "does not match" in body.reason[0]


def test_wrong_direction_messages_are_400() -> None:
    # DSP: it is an error for a consumer to send FINALIZED, for a provider to send ACCEPTED
    with pytest.raises(ProtocolError, match="does not receive") as exc:
        step(make(P, S.VERIFIED, S.VERIFIED), Received(inbound("finalized"), CONSUMER))
    assert exc.value.status == 400
    with pytest.raises(ProtocolError, match="does not receive"):
        step(make(C, S.OFFERED, S.OFFERED), Received(inbound("accepted"), PROVIDER))


def test_invalid_transition_names_the_state() -> None:
    with pytest.raises(ProtocolError) as exc:
        step(make(P, S.REQUESTED, S.REQUESTED), Received(inbound("verification"), CONSUMER))
    assert exc.value.status == 400
    assert exc.value.reasons == ["a ContractAgreementVerificationMessage is not allowed in state REQUESTED"]
    assert exc.value.negotiation is not None


def test_agreement_must_name_the_consumer() -> None:
    with pytest.raises(ProtocolError, match="assignee"):
        step(make(P, S.REQUESTED, S.REQUESTED), N.Agree(agreement_for(offer(), assignee="did:web:other")))
    with pytest.raises(ProtocolError) as exc:
        step(make(P, S.REQUESTED, S.REQUESTED), N.Agree({"@id": "urn:a", "@type": "Agreement"}))
    assert exc.value.status == 400 and "agreement" in exc.value.reasons[0]


# ----------------------------------------------------------------------------- races


def test_agreement_before_the_201_acknowledges_the_request() -> None:
    c = step(None, N.Request(offer(), PROVIDER_URL, CALLBACK_URL, PROVIDER), ids("c"))
    req = c.outgoing[0]
    p = step(None, Received(req.message, CONSUMER, offer=KNOWN), ids("p")).negotiation
    agreeing = step(p, N.Agree(agreement_for(offer())), ids("p2"))
    got = step(c.negotiation, Received(agreeing.outgoing[0].message, PROVIDER))
    assert got.negotiation.state is S.AGREED and got.negotiation.provider_pid == p.id
    late_ack = step(got.negotiation, Acknowledged(req.message_id))
    assert late_ack.negotiation == got.negotiation


def test_termination_crossing_finalization_ends_terminated_on_both_sides() -> None:
    prov = step(make(P, S.VERIFIED, S.VERIFIED), N.Finalize(), ids("p"))
    cons = step(make(C, S.VERIFIED, S.VERIFIED), N.Terminate("no longer needed"), ids("c"))
    with pytest.raises(ProtocolError) as exc:  # the consumer's termination wins
        step(cons.negotiation, Received(prov.outgoing[0].message, PROVIDER))
    assert exc.value.status == 400
    p2 = step(prov.negotiation, Received(cons.outgoing[0].message, CONSUMER)).negotiation
    assert p2.state is S.TERMINATED
    c2 = step(cons.negotiation, Acknowledged(cons.outgoing[0].message_id)).negotiation
    assert c2.state is S.TERMINATED
    assert step(p2, DeliveryFailed(prov.outgoing[0].message_id, True)).negotiation == p2


def test_crossing_terminations_both_end_terminated() -> None:
    prov = step(make(P, S.REQUESTED, S.REQUESTED), N.Terminate("a"), ids("p"))
    cons = step(make(C, S.REQUESTED, S.REQUESTED), N.Terminate("b"), ids("c"))
    p2 = step(prov.negotiation, Received(cons.outgoing[0].message, CONSUMER)).negotiation
    c2 = step(cons.negotiation, Received(prov.outgoing[0].message, PROVIDER)).negotiation
    assert p2.state is S.TERMINATED and c2.state is S.TERMINATED


def test_undeliverable_finalization_never_claims_terminated_alone() -> None:
    prov = step(make(P, S.VERIFIED, S.VERIFIED), N.Finalize(), ids("p"))
    fin = prov.outgoing[0]
    doubt = step(prov.negotiation, DeliveryFailed(fin.message_id, True, "timeout"), ids("q"))
    n = doubt.negotiation
    assert n.state is S.TERMINATING and n.in_doubt and n.wire_state is S.VERIFIED
    (term,) = doubt.outgoing
    # the consumer had taken the finalization: it refuses the termination, and we stay in doubt
    cons = step(make(C, S.VERIFIED, S.VERIFIED), Received(fin.message, PROVIDER)).negotiation
    assert cons.state is S.FINALIZED
    with pytest.raises(ProtocolError):
        step(cons, Received(term.message, PROVIDER))
    stuck = step(n, DeliveryFailed(term.message_id, True)).negotiation
    assert stuck.state is S.TERMINATING and stuck.pending_message_id is None
    with pytest.raises(ProtocolError):
        step(stuck, N.Terminate("again"))
    # had the consumer not taken it, the termination is acknowledged and both are TERMINATED
    assert step(n, Acknowledged(term.message_id)).negotiation.state is S.TERMINATED


def test_undeliverable_initial_request_terminates_locally() -> None:
    c = step(None, N.Request(offer(), PROVIDER_URL, CALLBACK_URL, PROVIDER))
    with pytest.raises(ProtocolError) as exc:
        step(c.negotiation, N.Terminate("wait"))
    assert exc.value.status == 409
    t = step(c.negotiation, DeliveryFailed(c.outgoing[0].message_id, True, "connection refused"))
    assert t.negotiation.state is S.TERMINATED and not t.outgoing
    assert "connection refused" in t.negotiation.termination_reason[0]


def test_refused_message_terminates_the_negotiation() -> None:
    c = step(make(C, S.OFFERED, S.OFFERED), N.Accept(), ids())
    t = step(c.negotiation, DeliveryFailed(c.outgoing[0].message_id, True, "400 invalid transition"))
    assert t.negotiation.state is S.TERMINATING and not t.negotiation.in_doubt
    (term,) = t.outgoing
    assert isinstance(term.message, m.ContractNegotiationTerminationMessage)
    assert term.message.code == "DELIVERY_FAILED"
    assert "400 invalid transition" in (term.message.reason or [""])[0]
    assert step(t.negotiation, DeliveryFailed(term.message_id, True)).negotiation.state is S.TERMINATED


def test_dataset_id_and_offer_are_kept() -> None:
    n = replace(make(P, S.REQUESTED, S.REQUESTED), agreement=None)
    assert n.dataset_id == DATASET


# ----------------------------------------------------------------------------- issue 9


def test_an_initial_request_for_an_offer_the_provider_does_not_know_creates_nothing() -> None:
    # DSP: "If the Provider is not aware of the offer.@id value, it must respond with an error"
    msg = inbound("request-initial")
    for check in (None, OfferCheck(False, "offer urn:uuid:counter-offer is not an offer of this provider")):
        with pytest.raises(ProtocolError) as exc:
            step(None, Received(msg, CONSUMER, offer=check))
        assert exc.value.status == 400 and exc.value.negotiation is None
        assert "offer" in exc.value.reasons[0]
        assert_wire_valid(N.negotiation_error(exc.value, None, "urn:uuid:cp"))
    created = step(None, Received(msg, CONSUMER, offer=KNOWN)).response
    assert created is not None and created.status == 201


def test_an_offer_in_a_negotiation_is_for_its_dataset() -> None:
    other = offer("urn:uuid:c9", target="urn:uuid:another-dataset")
    with pytest.raises(ProtocolError) as exc:
        step(
            make(P, S.OFFERED, S.OFFERED),
            Received(
                m.ContractRequestMessage(provider_pid="urn:uuid:pp", consumer_pid="urn:uuid:cp", offer=other),
                CONSUMER,
            ),
        )
    assert exc.value.status == 400 and "is for" in exc.value.reasons[0]
    with pytest.raises(ProtocolError):
        step(
            make(C, S.REQUESTED, S.REQUESTED),
            Received(
                m.ContractOfferMessage(provider_pid="urn:uuid:pp", consumer_pid="urn:uuid:cp", offer=other),
                PROVIDER,
            ),
        )
    # a counter-request with a new offer id of the consumer's (a Consumer Offer) is taken
    mine = offer(
        "urn:uuid:consumer-offer-1",
        constraints=[{"leftOperand": "count", "operator": "lteq", "rightOperand": "3"}],
    )
    counter = m.ContractRequestMessage(provider_pid="urn:uuid:pp", consumer_pid="urn:uuid:cp", offer=mine)
    t = step(make(P, S.OFFERED, S.OFFERED), Received(counter, CONSUMER))
    assert t.negotiation.state is S.REQUESTED and t.negotiation.offer["@id"] == "urn:uuid:consumer-offer-1"


@pytest.mark.parametrize(
    ("role", "state", "acked"),
    [
        (C, S.VERIFYING, S.AGREED),
        (P, S.FINALIZING, S.VERIFIED),
        (C, S.TERMINATING, S.AGREED),
        (P, S.AGREEING, S.REQUESTED),
        (C, S.ACCEPTING, S.OFFERED),
    ],
)
def test_a_refusal_from_a_counter_party_already_there_is_the_acknowledgement(
    role: Role, state: S, acked: S
) -> None:
    n = make(role, state, acked)
    refused = DeliveryFailed("urn:uuid:pending", True, "400 terminal", peer_state=TARGET[state].value)
    t = step(n, refused)
    assert t.negotiation.state is TARGET[state] and t.negotiation.wire_state is TARGET[state]
    assert t.negotiation.pending_message_id is None and not t.outgoing
    # a counter-party elsewhere: the refusal stands (terminate, as before)
    other = DeliveryFailed("urn:uuid:pending", True, "400", peer_state=acked.value)
    assert step(n, other).negotiation.state is (S.TERMINATED if state is S.TERMINATING else S.TERMINATING)


def test_a_termination_in_doubt_refused_by_a_finalized_consumer_ends_finalized() -> None:
    prov = step(make(P, S.VERIFIED, S.VERIFIED), N.Finalize(), ids("p"))
    doubt = step(prov.negotiation, DeliveryFailed(prov.outgoing[0].message_id, True, "timeout"), ids("q"))
    (term,) = doubt.outgoing
    done = step(doubt.negotiation, DeliveryFailed(term.message_id, True, "400", peer_state="FINALIZED"))
    n = done.negotiation
    assert (n.state, n.wire_state, n.in_doubt) == (S.FINALIZED, S.FINALIZED, False)
    assert n.pending_message_id is None
    assert n.termination_reason == () and n.agreement is not None
    # not in doubt: a FINALIZED counter-party does not make a termination a finalization
    plain = step(make(P, S.VERIFIED, S.VERIFIED), N.Terminate("stop"), ids("r"))
    after = step(
        plain.negotiation, DeliveryFailed(plain.outgoing[0].message_id, True, "400", peer_state="FINALIZED")
    ).negotiation
    assert after.state is S.TERMINATED


def test_status_path_names_the_counter_partys_process() -> None:
    assert make(C, S.REQUESTED, S.REQUESTED).peer_status_path == "/negotiations/urn:uuid:pp"
    assert make(P, S.REQUESTED, S.REQUESTED).peer_status_path == "/negotiations/urn:uuid:cp"
    assert make(C, S.REQUESTING, None).peer_status_path is None

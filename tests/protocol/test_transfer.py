"""The transfer process machine: the full transition table for both roles, pull and push flows,
suspend and resume from both sides, idempotency, the agreement check and delivery failures."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from protocol_testlib import (
    CALLBACK_URL,
    CONSUMER,
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
from connector.protocol import transfer as X
from connector.protocol.common import Acknowledged, AgreementCheck, DeliveryFailed, Received, Role
from connector.protocol.errors import ProtocolError
from connector.protocol.transfer import TransferState as S

P, C = Role.PROVIDER, Role.CONSUMER
AGREEMENT_ID = "urn:uuid:agreement-1"
OK = AgreementCheck(True, "finalized")
EDR = m.DataAddress(
    endpoint_type="https://w3id.org/idsa/v4.1/HTTP",
    endpoint="https://provider.example/data",
    endpoint_properties=[
        m.EndpointProperty(name="authorization", value="token-1"),
        m.EndpointProperty(name="authType", value="bearer"),
    ],
)
SINK = m.DataAddress(endpoint_type="https://w3id.org/idsa/v4.1/HTTP", endpoint="https://consumer.example/in")

SPEC: dict[tuple[S, str], S] = {
    (S.REQUESTED, "start"): S.STARTED,
    (S.STARTED, "suspension"): S.SUSPENDED,
    (S.STARTED, "completion"): S.COMPLETED,
    (S.SUSPENDED, "start"): S.STARTED,
    **{(s, "termination"): S.TERMINATED for s in (S.REQUESTED, S.STARTED, S.SUSPENDED)},
}
SENT_BY = {
    "request-initial": {C},
    "start": {P, C},
    "suspension": {P, C},
    "completion": {P, C},
    "termination": {P, C},
}
TARGET = {
    S.REQUESTING: S.REQUESTED,
    S.STARTING: S.STARTED,
    S.SUSPENDING: S.SUSPENDED,
    S.COMPLETING: S.COMPLETED,
    S.TERMINATING: S.TERMINATED,
}
NON_TERMINAL = [S.REQUESTED, S.STARTED, S.SUSPENDED]
WIRE = [*NON_TERMINAL, S.COMPLETED, S.TERMINATED]
REACHABLE: dict[Role, list[tuple[S, S | None, bool]]] = {
    r: [(s, s, False) for s in WIRE]
    + [  # type: ignore[misc]
        (S.STARTING, S.SUSPENDED, False),
        (S.SUSPENDING, S.STARTED, False),
        (S.COMPLETING, S.STARTED, False),
        (S.TERMINATING, S.STARTED, True),
    ]
    + [(S.TERMINATING, s, False) for s in NON_TERMINAL]
    for r in (P, C)
}
REACHABLE[P].append((S.STARTING, S.REQUESTED, False))
REACHABLE[C].append((S.REQUESTING, None, False))


def rank(s: S) -> int:
    return 3 if s is S.TERMINATED else 2 if s is S.COMPLETED else 1


def step(t: X.Transfer | None, event: Any, new_id: Any = None) -> X.Transition:
    tr = X.apply(t, event, NOW, new_id=new_id or ids())
    for out in tr.outgoing:
        assert_wire_valid(out.message)
        assert out.url.startswith((f"{PROVIDER_URL}/transfers/", f"{CALLBACK_URL}/transfers/"))
    if tr.response is not None:
        assert_wire_valid(tr.response.body)
    return tr


def make(
    role: Role,
    state: S,
    acked: S | None,
    in_doubt: bool = False,
    fmt: str = m.PULL,
    suspended_by: frozenset[Role] | None = None,
) -> X.Transfer:
    initial = acked is None
    if suspended_by is None:  # suspended by the consumer: either side may resume
        suspended_by = frozenset({C}) if S.SUSPENDED in (state, acked) else frozenset()
    return X.Transfer(
        id="urn:uuid:pp" if role is P else "urn:uuid:cp",
        role=role,
        provider_pid=None if initial else "urn:uuid:pp",
        consumer_pid="urn:uuid:cp",
        state=state,
        counter_party_id=CONSUMER if role is P else PROVIDER,
        counter_party_address=CALLBACK_URL if role is P else PROVIDER_URL,
        agreement_id=AGREEMENT_ID,
        format=fmt,
        created_at=NOW,
        updated_at=NOW,
        acked_state=acked,
        in_doubt=in_doubt,
        suspended_by=suspended_by,
        pending_message_id="urn:uuid:pending" if state in TARGET and not in_doubt else None,
    )


def inbound(kind: str, receiver: Role, pp: str = "urn:uuid:pp", cp: str = "urn:uuid:cp") -> m.DspModel:
    pids: dict[str, Any] = {"provider_pid": pp, "consumer_pid": cp}
    if kind == "request-initial":
        return m.TransferRequestMessage(
            consumer_pid=cp, agreement_id=AGREEMENT_ID, format=m.PULL, callback_address=CALLBACK_URL
        )
    if kind == "start":
        return m.TransferStartMessage(**pids, data_address=EDR if receiver is C else None)
    if kind == "suspension":
        return m.TransferSuspensionMessage(**pids, code="PAUSE", reason=["maintenance"])
    if kind == "completion":
        return m.TransferCompletionMessage(**pids)
    return m.TransferTerminationMessage(**pids, code="STOP", reason=["policy violation"])


def expected_inbound(role: Role, state: S, acked: S | None, kind: str) -> S | int:
    if role.other not in SENT_BY[kind] or kind == "request-initial":
        return 400
    if state in (S.COMPLETED, S.TERMINATED):
        return 400  # terminal: every message refused, a re-delivery of one taken before too
    if role is P and kind == "start" and state is S.REQUESTED:
        return 400  # only the provider starts a requested transfer
    if state not in TARGET:
        return SPEC.get((state, kind), 400)
    target = TARGET[state]
    if target not in (S.COMPLETED, S.TERMINATED) and (target, kind) in SPEC:
        return SPEC[(target, kind)]
    to = SPEC.get((acked, kind)) if acked is not None else None
    if (
        to is not None
        and rank(to) >= rank(target)
        and not (role is P and kind == "start" and acked is S.REQUESTED)
    ):
        return to
    return 400


def command(name: str, role: Role) -> Any:
    return {
        "Start": X.Start(EDR),
        "Resume": X.Resume(),
        "Suspend": X.Suspend("pause", "P1"),
        "Complete": X.Complete(),
        "Terminate": X.Terminate("stop", "T1"),
        "Request": X.Request(AGREEMENT_ID, m.PULL, PROVIDER_URL, CALLBACK_URL, PROVIDER),
    }[name]


COMMANDS: dict[str, tuple[set[Role], set[S], S, type]] = {
    "Start": ({P}, {S.REQUESTED}, S.STARTING, m.TransferStartMessage),
    "Resume": ({P, C}, {S.SUSPENDED}, S.STARTING, m.TransferStartMessage),
    "Suspend": ({P, C}, {S.STARTED}, S.SUSPENDING, m.TransferSuspensionMessage),
    "Complete": ({P, C}, {S.STARTED}, S.COMPLETING, m.TransferCompletionMessage),
}


@pytest.mark.parametrize(
    ("role", "state", "acked", "in_doubt"),
    [(r, *c) for r in (P, C) for c in REACHABLE[r]],
    ids=lambda x: getattr(x, "value", str(x)),
)
def test_every_event_in_every_state(role: Role, state: S, acked: S | None, in_doubt: bool) -> None:
    t = make(role, state, acked, in_doubt)
    problems: list[str] = []

    def check(label: str, ok: bool) -> None:
        if not ok:
            problems.append(label)

    for kind in SENT_BY:
        want = expected_inbound(role, state, acked, kind)
        try:
            tr = step(t, Received(inbound(kind, role), t.counter_party_id, OK))
        except ProtocolError as e:
            check(f"{kind}: got {e.status}, want {want}", e.status == want)
            continue
        if isinstance(want, int):
            problems.append(f"{kind}: accepted into {tr.transfer.state}, want {want}")
            continue
        assert tr.response is not None
        check(f"{kind}: -> {tr.transfer.state}, want {want}", tr.transfer.state is want)
        check(f"{kind}: sends", not tr.outgoing)
        check(f"{kind}: response", tr.response.status == 200 and tr.response.body.state == want.value)  # type: ignore[attr-defined]

    for name, (roles, sources, sending, msg_type) in COMMANDS.items():
        ok = role in roles and state in sources
        try:
            tr = step(t, command(name, role))
        except ProtocolError as e:
            check(f"{name}: refused with {e.status} but allowed", not ok and e.status == 409)
            continue
        check(f"{name}: allowed in {state}", ok)
        check(f"{name}: -> {tr.transfer.state}", tr.transfer.state is sending)
        check(f"{name}: sends", [type(o.message) for o in tr.outgoing] == [msg_type])
        check(f"{name}: wire state", tr.transfer.wire_state is state)
    can_terminate = acked is not None and state not in (
        S.COMPLETED,
        S.TERMINATED,
        S.TERMINATING,
        S.COMPLETING,
    )
    try:
        tr = step(t, command("Terminate", role))
        check("Terminate: allowed", can_terminate)
        check("Terminate: -> TERMINATING", tr.transfer.state is S.TERMINATING)
    except ProtocolError as e:
        check(f"Terminate: refused ({e.status})", not can_terminate and e.status == 409)
    with pytest.raises(ProtocolError) as exc:
        step(t, command("Request", role))
    check("Request on an existing transfer", exc.value.status == 409)

    pending = t.pending_message_id
    for ev in (
        Acknowledged("urn:uuid:other"),
        DeliveryFailed("urn:uuid:other", True),
        DeliveryFailed(pending or "x", False),
    ):
        check(f"{ev}: changes nothing", step(t, ev).transfer == t)
    if pending is not None:
        tr = step(t, Acknowledged(pending))
        check(
            "ack enters the DSP state",
            tr.transfer.state is TARGET[state] and tr.transfer.pending_message_id is None,
        )
        tr = step(t, DeliveryFailed(pending, True))
        got = tr.transfer.state
        if state is S.TERMINATING or acked is None:
            check(f"failed -> {got}", got is S.TERMINATED and not tr.outgoing)
        elif state is S.STARTING and acked is S.SUSPENDED and role is C:
            check(f"refused resume -> {got}", got is S.SUSPENDED and not tr.outgoing)
        else:
            check(f"failed -> {got}", got is S.TERMINATING)
            check("failed: in doubt after a completion", tr.transfer.in_doubt is (state is S.COMPLETING))
            check(
                "failed: terminates", [type(o.message) for o in tr.outgoing] == [m.TransferTerminationMessage]
            )
    assert not problems, f"{role.value} in {state.value} (acked {acked}): " + "; ".join(problems)


# ----------------------------------------------------------------------------- flows


class Pair:
    def __init__(self, check: AgreementCheck = OK) -> None:
        self.new_id = ids()
        self.sides: dict[Role, X.Transfer | None] = {P: None, C: None}
        self.check = check

    def do(self, role: Role, cmd: Any) -> None:
        tr = step(self.sides[role], cmd, self.new_id)
        self.sides[role] = tr.transfer
        for out in tr.outgoing:
            r = step(
                self.sides[role.other],
                Received(out.message, PROVIDER if role is P else CONSUMER, self.check),
                self.new_id,
            )
            self.sides[role.other] = r.transfer
            assert r.response is not None
            self.sides[role] = step(self.sides[role], Acknowledged(out.message_id, r.response.body)).transfer

    def states(self) -> tuple[S, S]:
        p, c = self.sides[P], self.sides[C]
        assert p is not None and c is not None
        return p.state, c.state


def test_pull_transfer_with_suspend_and_resume_from_both_sides() -> None:
    pair = Pair()
    pair.do(C, X.Request(AGREEMENT_ID, m.PULL, PROVIDER_URL, CALLBACK_URL, PROVIDER))
    assert pair.states() == (S.REQUESTED, S.REQUESTED)
    pair.do(P, X.Start(EDR))
    assert pair.states() == (S.STARTED, S.STARTED)
    consumer = pair.sides[C]
    assert consumer is not None and consumer.data_address == EDR
    assert EDR.property("authorization") == "token-1"
    pair.do(C, X.Suspend("not now"))
    assert pair.states() == (S.SUSPENDED, S.SUSPENDED)
    pair.do(C, X.Resume())
    assert pair.states() == (S.STARTED, S.STARTED)
    pair.do(P, X.Suspend("quota exceeded", "QUOTA"))
    assert pair.sides[C].suspension_reason == ("quota exceeded",)  # type: ignore[union-attr]
    with pytest.raises(ProtocolError) as exc:  # the consumer may not lift the provider's suspension
        step(pair.sides[C], X.Resume())
    assert exc.value.status == 409
    token = m.EndpointProperty(name="authorization", value="token-2")
    new_edr = EDR.model_copy(update={"endpoint_properties": [token]})
    pair.do(P, X.Resume(new_edr))
    assert pair.states() == (S.STARTED, S.STARTED)
    assert pair.sides[C].data_address == new_edr  # type: ignore[union-attr]
    pair.do(C, X.Complete())
    assert pair.states() == (S.COMPLETED, S.COMPLETED)


def test_push_transfer_carries_the_consumer_address() -> None:
    pair = Pair()
    pair.do(C, X.Request(AGREEMENT_ID, m.PUSH, PROVIDER_URL, CALLBACK_URL, PROVIDER, data_address=SINK))
    provider = pair.sides[P]
    assert provider is not None and provider.data_address == SINK
    with pytest.raises(ProtocolError, match="carries no dataAddress"):
        step(pair.sides[P], X.Start(EDR))
    pair.do(P, X.Start())
    pair.do(P, X.Terminate("source gone", "GONE"))
    assert pair.states() == (S.TERMINATED, S.TERMINATED)
    assert pair.sides[C].termination_code == "GONE"  # type: ignore[union-attr]


def test_request_checks() -> None:
    with pytest.raises(ProtocolError, match="needs a dataAddress") as exc:
        step(None, X.Request(AGREEMENT_ID, m.PUSH, PROVIDER_URL, CALLBACK_URL, PROVIDER))
    assert exc.value.status == 409
    with pytest.raises(ProtocolError, match="not supported"):
        step(None, X.Request(AGREEMENT_ID, "S3-PUSH", PROVIDER_URL, CALLBACK_URL, PROVIDER))
    req = inbound("request-initial", P)
    for check, text in ((None, "not checked"), (AgreementCheck(False, "no agreement x"), "no agreement x")):
        with pytest.raises(ProtocolError, match=text) as exc:
            step(None, Received(req, CONSUMER, check))
        assert exc.value.status == 400
    pushy = m.TransferRequestMessage(
        consumer_pid="urn:uuid:cp", agreement_id=AGREEMENT_ID, format=m.PUSH, callback_address=CALLBACK_URL
    )
    with pytest.raises(ProtocolError, match="needs a dataAddress"):
        step(None, Received(pushy, CONSUMER, OK))
    odd = pushy.model_copy(update={"format": "example:HTTP_PUSH"})
    with pytest.raises(ProtocolError, match="not supported"):
        step(None, Received(odd, CONSUMER, OK))


def test_pull_start_without_address_is_refused_by_the_consumer() -> None:
    c = make(C, S.REQUESTED, S.REQUESTED)
    bare = m.TransferStartMessage(provider_pid="urn:uuid:pp", consumer_pid="urn:uuid:cp")
    with pytest.raises(ProtocolError, match="needs a dataAddress"):
        step(c, Received(bare, PROVIDER))
    with pytest.raises(ProtocolError, match="needs a dataAddress"):
        step(make(P, S.REQUESTED, S.REQUESTED), X.Start())


def test_provider_refuses_a_resume_of_its_own_suspension() -> None:
    p = make(P, S.SUSPENDED, S.SUSPENDED, suspended_by=frozenset({P}))
    with pytest.raises(ProtocolError, match="only the provider resumes") as exc:
        step(p, Received(inbound("start", P), CONSUMER))
    assert exc.value.status == 400
    # the consumer that tried goes back to SUSPENDED, it does not terminate
    c = make(C, S.SUSPENDED, S.SUSPENDED, suspended_by=frozenset({C}))
    trying = step(c, X.Resume())
    back = step(trying.transfer, DeliveryFailed(trying.outgoing[0].message_id, True, "400"))
    assert back.transfer.state is S.SUSPENDED and P in back.transfer.suspended_by and not back.outgoing


def test_crossing_completion_and_termination_end_terminated() -> None:
    p = step(make(P, S.STARTED, S.STARTED), X.Complete(), ids("p"))
    c = step(make(C, S.STARTED, S.STARTED), X.Terminate("abort"), ids("c"))
    with pytest.raises(ProtocolError):
        step(c.transfer, Received(p.outgoing[0].message, PROVIDER))
    p2 = step(p.transfer, Received(c.outgoing[0].message, CONSUMER)).transfer
    c2 = step(c.transfer, Acknowledged(c.outgoing[0].message_id)).transfer
    assert p2.state is S.TERMINATED and c2.state is S.TERMINATED


def test_crossing_completions_and_suspensions_agree() -> None:
    p = step(make(P, S.STARTED, S.STARTED), X.Complete(), ids("p"))
    c = step(make(C, S.STARTED, S.STARTED), X.Complete(), ids("c"))
    assert step(p.transfer, Received(c.outgoing[0].message, CONSUMER)).transfer.state is S.COMPLETED
    assert step(c.transfer, Received(p.outgoing[0].message, PROVIDER)).transfer.state is S.COMPLETED
    p = step(make(P, S.STARTED, S.STARTED), X.Suspend("a"), ids("p"))
    c = step(make(C, S.STARTED, S.STARTED), X.Suspend("b"), ids("c"))
    p2 = step(p.transfer, Received(c.outgoing[0].message, CONSUMER)).transfer
    c2 = step(c.transfer, Received(p.outgoing[0].message, PROVIDER)).transfer
    assert p2.state is c2.state is S.SUSPENDED
    assert p2.suspended_by == c2.suspended_by == {P, C}


def test_undeliverable_completion_never_claims_terminated_alone() -> None:
    p = step(make(P, S.STARTED, S.STARTED), X.Complete(), ids("p"))
    doubt = step(p.transfer, DeliveryFailed(p.outgoing[0].message_id, True), ids("q"))
    assert doubt.transfer.state is S.TERMINATING and doubt.transfer.in_doubt
    stuck = step(doubt.transfer, DeliveryFailed(doubt.outgoing[0].message_id, True)).transfer
    assert stuck.state is S.TERMINATING and stuck.wire_state is S.STARTED


def test_retried_request_is_idempotent_on_consumer_pid() -> None:
    req = inbound("request-initial", P)
    first = step(None, Received(req, CONSUMER, OK), ids("p"))
    assert first.response is not None and first.response.status == 201
    again = step(first.transfer, Received(req, CONSUMER, OK))
    assert again.duplicate and again.response == first.response and again.transfer == first.transfer
    other = req.model_copy(update={"agreement_id": "urn:uuid:other"})
    with pytest.raises(ProtocolError, match="already exists"):
        step(first.transfer, Received(other, CONSUMER, OK))
    with pytest.raises(ProtocolError) as exc:
        step(first.transfer, Received(req, "did:web:intruder.example", OK))
    assert exc.value.status == 404


def test_retried_start_and_suspension_are_not_applied_twice() -> None:
    c = make(C, S.REQUESTED, S.REQUESTED)
    start = inbound("start", C)
    started = step(c, Received(start, PROVIDER)).transfer
    dup = step(started, Received(start, PROVIDER))
    assert dup.duplicate and dup.transfer == started
    susp = inbound("suspension", C)
    suspended = step(started, Received(susp, PROVIDER)).transfer
    assert step(suspended, Received(susp, PROVIDER)).duplicate


def test_unknown_transfer_is_404_and_errors_validate() -> None:
    with pytest.raises(ProtocolError) as exc:
        step(None, Received(inbound("completion", P), CONSUMER))
    assert exc.value.status == 404
    t = make(P, S.REQUESTED, S.REQUESTED)
    with pytest.raises(ProtocolError) as exc:
        step(t, Received(inbound("completion", P), CONSUMER))
    body = t.error_body(exc.value)
    assert_wire_valid(body)
    assert body.reason == ["a TransferCompletionMessage is not allowed in state REQUESTED"]
    assert_wire_valid(X.transfer_error(exc.value, None, "urn:uuid:cp"))


# ----------------------------------------------------------------------------- agreement check


def finalized(
    state: N.NegotiationState = N.NegotiationState.FINALIZED, assignee: str = CONSUMER
) -> N.Negotiation:
    o = offer()
    return N.Negotiation(
        id="urn:uuid:np",
        role=P,
        provider_pid="urn:uuid:np",
        consumer_pid="urn:uuid:nc",
        state=state,
        counter_party_id=CONSUMER,
        counter_party_address=CALLBACK_URL,
        offer=o,
        agreement=agreement_for(o, assignee=assignee, agreement_id=AGREEMENT_ID),
        created_at=NOW,
        updated_at=NOW,
    )


def test_check_agreement() -> None:
    assert X.check_agreement(finalized(), agreement_id=AGREEMENT_ID, caller=CONSUMER).ok
    cases = [
        (None, CONSUMER, "no agreement"),
        (finalized(), "did:web:other.example", "no agreement"),
        (finalized(assignee="did:web:other.example"), CONSUMER, "no agreement"),
        (finalized(N.NegotiationState.VERIFIED), CONSUMER, "not finalized"),
        (finalized(N.NegotiationState.TERMINATED), CONSUMER, "not finalized"),
        (replace(finalized(), role=C), CONSUMER, "no agreement"),
    ]
    for neg, caller, text in cases:
        check = X.check_agreement(neg, agreement_id=AGREEMENT_ID, caller=caller)
        assert not check.ok and text in check.reason
    assert not X.check_agreement(finalized(), agreement_id="urn:uuid:x", caller=CONSUMER).ok


# ----------------------------------------------------------------------------- issue 9


def test_a_terminal_transfer_refuses_every_message_even_one_it_took_before() -> None:
    completion = inbound("completion", P)
    completed = step(make(P, S.STARTED, S.STARTED), Received(completion, CONSUMER)).transfer
    assert completed.state is S.COMPLETED
    for t in (
        completed,
        make(P, S.TERMINATED, S.TERMINATED),
        make(C, S.COMPLETED, S.COMPLETED),
        make(C, S.TERMINATED, S.TERMINATED),
    ):
        sender = CONSUMER if t.role is P else PROVIDER
        for kind in ("start", "suspension", "completion", "termination"):
            with pytest.raises(ProtocolError) as exc:
                step(t, Received(inbound(kind, t.role), sender))
            assert exc.value.status == 400 and "a terminal state" in exc.value.reasons[0], (t.state, kind)
            assert exc.value.transfer == t
            assert_wire_valid(t.error_body(exc.value))


@pytest.mark.parametrize(
    ("role", "state", "acked"),
    [
        (C, S.COMPLETING, S.STARTED),
        (P, S.COMPLETING, S.STARTED),
        (C, S.TERMINATING, S.STARTED),
        (P, S.STARTING, S.REQUESTED),
        (C, S.SUSPENDING, S.STARTED),
        (C, S.STARTING, S.SUSPENDED),
    ],
)
def test_a_refusal_from_a_counter_party_already_there_is_the_acknowledgement(
    role: Role, state: S, acked: S
) -> None:
    t = make(role, state, acked)
    done = step(t, DeliveryFailed("urn:uuid:pending", True, "400 terminal", peer_state=TARGET[state].value))
    assert done.transfer.state is TARGET[state] and done.transfer.pending_message_id is None
    assert not done.outgoing
    # not there: the refusal stands
    stands = step(t, DeliveryFailed("urn:uuid:pending", True, "400", peer_state=acked.value)).transfer
    assert stands.state is not TARGET[state] or state is S.TERMINATING


def test_a_termination_in_doubt_refused_by_a_completed_counter_party_ends_completed() -> None:
    p = step(make(P, S.STARTED, S.STARTED), X.Complete(), ids("p"))
    doubt = step(p.transfer, DeliveryFailed(p.outgoing[0].message_id, True), ids("q"))
    done = step(
        doubt.transfer, DeliveryFailed(doubt.outgoing[0].message_id, True, "400", peer_state="COMPLETED")
    ).transfer
    assert (done.state, done.wire_state, done.in_doubt, done.termination_reason) == (
        S.COMPLETED,
        S.COMPLETED,
        False,
        (),
    )


def test_ended_transfers() -> None:
    assert {s for s in S if s.is_ended} == {S.COMPLETED, S.TERMINATED, S.COMPLETING, S.TERMINATING}
    assert make(C, S.STARTED, S.STARTED).peer_status_path == "/transfers/urn:uuid:pp"
    assert make(P, S.STARTED, S.STARTED).peer_status_path == "/transfers/urn:uuid:cp"
    assert make(C, S.REQUESTING, None).peer_status_path is None

"""A provider and a consumer transfer process over an adversarial in-memory network: nothing the
DSP table forbids is taken in, a consumer never lifts the provider's suspension, and the two sides
never end in different terminal states (never one COMPLETED and the other TERMINATED)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_testlib import CALLBACK_URL, PROVIDER, PROVIDER_URL, Machine, Network

from connector.protocol import messages as m
from connector.protocol import transfer as X
from connector.protocol.common import AgreementCheck, Role
from connector.protocol.transfer import TransferState as S

P, C = Role.PROVIDER, Role.CONSUMER
SPEC: dict[tuple[S, str], S] = {
    (S.REQUESTED, "start"): S.STARTED,
    (S.STARTED, "suspension"): S.SUSPENDED,
    (S.STARTED, "completion"): S.COMPLETED,
    (S.SUSPENDED, "start"): S.STARTED,
    **{(s, "termination"): S.TERMINATED for s in (S.REQUESTED, S.STARTED, S.SUSPENDED)},
}
TARGET = {
    S.REQUESTING: S.REQUESTED,
    S.STARTING: S.STARTED,
    S.SUSPENDING: S.SUSPENDED,
    S.COMPLETING: S.COMPLETED,
    S.TERMINATING: S.TERMINATED,
}
TERMINAL = (S.COMPLETED, S.TERMINATED)
EDR = m.DataAddress(
    endpoint_type="https://w3id.org/idsa/v4.1/HTTP",
    endpoint="https://provider.example/data",
    endpoint_properties=[m.EndpointProperty(name="authorization", value="token")],
)


def commands(net: Network, role: Role, pick: int) -> list[Any]:
    t = net.sides[role]
    if t is None:
        if role is C and net.sides[P] is None and not net.flights:
            return [X.Request("urn:uuid:agreement-1", m.PULL, PROVIDER_URL, CALLBACK_URL, PROVIDER)]
        return []
    if pick % 16 == 0:
        return [X.Terminate(f"{role.value.lower()} stops")]
    natural: dict[S, list[Any]] = {S.SUSPENDED: [X.Resume()], S.STARTED: [X.Suspend("pause"), X.Complete()]}
    if role is P:
        natural[S.REQUESTED] = [X.Start(EDR)]
    if pick % 4 and t.state in natural:
        return natural[t.state]
    return [X.Start(EDR), X.Resume(), X.Suspend("pause"), X.Complete()]


def guard(before: X.Transfer, kind: str, sender: Role) -> bool:
    # the provider never takes a consumer's resume of its own suspension
    return not (kind == "start" and sender is C and P in before.suspended_by)


MACHINE = Machine(
    apply=X.apply,
    kind_of=X.message_kind,
    spec=SPEC,
    target=TARGET,
    terminal=TERMINAL,
    commands=commands,
    agreement=AgreementCheck(True, "finalized"),
    guard=guard,
)
ACTIONS = st.lists(st.tuples(st.sampled_from("ppccddddddaaaf"), st.integers(0, 255)), max_size=60)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS)
def test_random_schedules_never_disagree(actions: list[tuple[str, int]]) -> None:
    net = Network(MACHINE)
    net.command(C, 1)
    net.run(actions)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from("pc"), st.integers(0, 255)), max_size=30))
def test_reliable_network_keeps_both_sides_in_step(actions: list[tuple[str, int]]) -> None:
    net = Network(MACHINE)
    net.command(C, 1)
    net.drain()
    for op, arg in actions:
        net.command(P if op == "p" else C, arg)
        net.drain()
    p, c = net.sides[P], net.sides[C]
    assert p is not None and c is not None
    assert p.wire_state is c.wire_state, "\n".join(net.trace)

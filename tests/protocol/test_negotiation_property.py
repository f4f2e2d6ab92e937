"""A provider and a consumer negotiation wired together over an adversarial in-memory network
(duplicates, reordering, lost acknowledgements, refused and undeliverable messages, stale
retries): nothing the DSP table forbids is ever taken in, and the two sides never end in
different terminal states (never one FINALIZED and the other TERMINATED)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_testlib import (
    CALLBACK_URL,
    CONSUMER,
    PROVIDER,
    PROVIDER_URL,
    Machine,
    Network,
    agreement_for,
    offer,
)

from connector.protocol import negotiation as N
from connector.protocol.common import OfferCheck, Role
from connector.protocol.negotiation import NegotiationState as S

P, C = Role.PROVIDER, Role.CONSUMER
SPEC: dict[tuple[S, str], S] = {
    (S.REQUESTED, "offer"): S.OFFERED,
    (S.REQUESTED, "agreement"): S.AGREED,
    (S.OFFERED, "request"): S.REQUESTED,
    (S.OFFERED, "accepted"): S.ACCEPTED,
    (S.ACCEPTED, "agreement"): S.AGREED,
    (S.AGREED, "verification"): S.VERIFIED,
    (S.VERIFIED, "finalized"): S.FINALIZED,
    **{(s, "termination"): S.TERMINATED for s in (S.REQUESTED, S.OFFERED, S.ACCEPTED, S.AGREED, S.VERIFIED)},
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
TERMINAL = (S.FINALIZED, S.TERMINATED)


def commands(net: Network, role: Role, pick: int) -> list[Any]:
    """Mostly what the protocol expects next, sometimes anything, rarely a termination."""
    n = net.sides[role]
    o = offer(f"urn:uuid:offer-{pick % 3}")
    opening = n is None and net.sides[role.other] is None and not net.flights
    if role is P:
        natural: dict[S, Any] = {S.VERIFIED: N.Finalize()}
        if n is not None:
            natural[S.REQUESTED] = natural[S.ACCEPTED] = N.Agree(agreement_for(dict(n.offer)))
        options: list[Any] = [N.Offer(o), N.Agree(agreement_for(dict(n.offer) if n else o)), N.Finalize()]
        if opening:
            return [
                N.Offer(o, consumer_address=CALLBACK_URL, callback_address=PROVIDER_URL, consumer_id=CONSUMER)
            ]
    else:
        natural = {S.OFFERED: N.Accept(), S.AGREED: N.Verify()}
        options = [N.CounterOffer(o), N.Accept(), N.Verify()]
        if opening:
            return [N.Request(o, PROVIDER_URL, CALLBACK_URL, PROVIDER)]
    if pick % 16 == 0:
        return [N.Terminate(f"{role.value.lower()} stops")]
    if n is not None and pick % 4 and n.state in natural:
        return [natural[n.state]]
    return options


MACHINE = Machine(
    apply=N.apply,
    kind_of=N.message_kind,
    spec=SPEC,
    target=TARGET,
    terminal=TERMINAL,
    commands=commands,
    offer=OfferCheck(True, "a catalog offer"),
)
ACTIONS = st.lists(st.tuples(st.sampled_from("ppccddddddaaaf"), st.integers(0, 255)), max_size=60)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), ACTIONS)
def test_random_schedules_never_disagree(consumer_opens: bool, actions: list[tuple[str, int]]) -> None:
    net = Network(MACHINE)
    net.command(C if consumer_opens else P, 1)  # someone opens the negotiation
    net.run(actions)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(st.tuples(st.sampled_from("pc"), st.integers(0, 255)), max_size=30))
def test_reliable_network_keeps_both_sides_in_step(
    consumer_opens: bool, actions: list[tuple[str, int]]
) -> None:
    net = Network(MACHINE)
    net.command(C if consumer_opens else P, 1)
    net.drain()
    for op, arg in actions:
        net.command(P if op == "p" else C, arg)
        net.drain()
    p, c = net.sides[P], net.sides[C]
    assert p is not None and c is not None
    assert p.wire_state is c.wire_state, "\n".join(net.trace)


def test_the_happy_path_is_reachable_over_a_lossy_network() -> None:
    net = Network(MACHINE)
    net.command(C, 1)
    # deliveries duplicated, the first answers lost, then acknowledged
    for _ in range(12):
        net.run([("d", 0), ("d", 0), ("d", -1), ("a", 0), ("p", 1), ("c", 1), ("d", -1), ("a", 0)])
    assert net.sides[P].state is S.FINALIZED and net.sides[C].state is S.FINALIZED, "\n".join(net.trace)

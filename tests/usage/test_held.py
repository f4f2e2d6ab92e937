"""Provider-held facts and payments through `HeldFacts` (cache, expiry, names), and the agreement
status (active, retired, expired)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from connector.odrl import terms as T
from connector.odrl.compile import DecisionRequest, compile_policy
from connector.odrl.evaluate import FULFILLED
from connector.odrl.model import XSD_NS, Policy
from connector.odrl.parse import PolicyError, load_policy
from connector.odrl.plain import policy_document
from connector.odrl.templates import fill
from connector.store import AgreementRow, Payment, Store
from connector.usage.held import HeldFacts, UnknownOperand, fact_name
from connector.usage.lifecycle import agreement_status, retirement_reason

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
STATE = T.IDSC_NS + "STATE"
EVENT = T.O + "event"


class Ticks:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    s = await Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    await s.migrate()
    return s


@pytest.mark.parametrize(
    ("name", "iri"),
    [
        ("idsc:STATE", STATE),
        (STATE, STATE),
        ("odrl:event", EVENT),
        ("event", EVENT),
        ("idsc:EVENT", EVENT),
        ("idsc:ARTIFACT_STATE", T.IDSC_NS + "ARTIFACT_STATE"),
    ],
)
def test_fact_names_are_the_engines_operand_iris(name: str, iri: str) -> None:
    assert fact_name(name) == iri


async def test_set_list_unset_with_curies_expanded(store: Store) -> None:
    ticks = Ticks()
    held = HeldFacts(store, ttl=1.0, clock=ticks)
    assert await held.facts(NOW) == {}
    await held.set("idsc:STATE", ["idsc:ACTIVE"], until=None, now=NOW)
    await held.set("event", ["urn:event:fair", "urn:event:sale"], until=None, now=NOW)
    assert await held.facts(NOW) == {
        STATE: (T.IDSC_NS + "ACTIVE",),
        EVENT: ("urn:event:fair", "urn:event:sale"),
    }
    assert await held.unset("odrl:event") is True
    assert await held.unset("odrl:event") is False
    assert await held.facts(NOW) == {STATE: (T.IDSC_NS + "ACTIVE",)}


async def test_set_replaces(store: Store) -> None:
    held = HeldFacts(store)
    await held.set("idsc:STATE", ["urn:state:a"], until=None, now=NOW)
    await held.set("idsc:STATE", ["urn:state:b"], until=None, now=NOW)
    assert await held.facts(NOW) == {STATE: ("urn:state:b",)}


async def test_an_expired_fact_is_absent_even_from_the_cache(store: Store) -> None:
    held = HeldFacts(store, ttl=3600, clock=Ticks())
    until = NOW + timedelta(hours=1)
    await held.set("event", ["urn:event:fair"], until=until, now=NOW)
    assert await held.facts(NOW) == {EVENT: ("urn:event:fair",)}
    assert await held.facts(until - timedelta(microseconds=1)) == {EVENT: ("urn:event:fair",)}
    assert await held.facts(until) == {}
    async with store.transaction(readonly=True) as tx:
        assert [f.name for f in await tx.held_facts.list(until)] == []
        assert [f.name for f in await tx.held_facts.list()] == [EVENT]


async def test_the_cache_lives_ttl_seconds_and_local_writes_invalidate_it(store: Store) -> None:
    ticks = Ticks()
    held = HeldFacts(store, ttl=1.0, clock=ticks)
    other = HeldFacts(store, ttl=1.0, clock=ticks)  # another replica of the same store
    await held.set("idsc:STATE", ["urn:state:a"], until=None, now=NOW)
    assert await other.facts(NOW) == {STATE: ("urn:state:a",)}
    await held.set("idsc:STATE", ["urn:state:b"], until=None, now=NOW)
    assert await held.facts(NOW) == {STATE: ("urn:state:b",)}  # its own write: at once
    assert await other.facts(NOW) == {STATE: ("urn:state:a",)}  # cached
    ticks.t += 1.0
    assert await other.facts(NOW) == {STATE: ("urn:state:b",)}  # after ttl


async def test_facts_feed_the_decider(store: Store) -> None:
    held = HeldFacts(store)
    policy = load_policy(
        policy_document(
            {
                "permission": [
                    {
                        "action": "use",
                        "constraint": [
                            {"leftOperand": "idsc:STATE", "operator": "eq", "rightOperand": "idsc:ACTIVE"}
                        ],
                    }
                ]
            },
            "urn:policy:state",
        )
    )
    decide = compile_policy(policy)

    async def permit() -> bool:
        return decide(DecisionRequest(action=T.O + "use", now=NOW, context=await held.facts(NOW))).permit

    assert await permit() is False
    await held.set("idsc:STATE", ["idsc:ACTIVE"], until=None, now=NOW)
    assert await permit() is True


async def test_bad_facts_are_refused(store: Store) -> None:
    held = HeldFacts(store)
    with pytest.raises(UnknownOperand, match=r"odrl:state is not an operand .*did you mean idsc:STATE"):
        await held.set("state", ["x"], until=None, now=NOW)
    with pytest.raises(PolicyError, match="at least one value"):
        await held.set("idsc:STATE", [], until=None, now=NOW)
    with pytest.raises(PolicyError):
        await held.set("payAmount", ["not a number"], until=None, now=NOW)
    assert await held.facts(NOW) == {}


async def test_payments_are_cached_per_agreement(store: Store) -> None:
    ticks = Ticks()
    held = HeldFacts(store, ttl=1.0, clock=ticks)
    other = HeldFacts(store, ttl=1.0, clock=ticks)
    async with store.transaction() as tx:
        await tx.agreements.add(
            AgreementRow(
                id="urn:agreement:1",
                provider_id="p",
                consumer_id="c",
                target="urn:asset:x",
                policy={},
                signed_at=NOW,
            )
        )
    assert await other.payments("urn:agreement:1") == ()
    p = Payment(
        id="urn:payment:1",
        agreement_id="urn:agreement:1",
        amount=Decimal("10.50"),
        currency="http://dbpedia.org/resource/Euro",
        paid_at=NOW,
        recorded_at=NOW,
    )
    await held.record(p)
    assert await held.payments("urn:agreement:1") == (p,)
    assert await other.payments("urn:agreement:1") == ()
    ticks.t += 1.5
    assert await other.payments("urn:agreement:1") == (p,)


async def test_payment_check_reads_the_recorded_payments(store: Store) -> None:
    held = HeldFacts(store)
    policy = load_policy(
        fill(
            "perpetual-sale",
            {"price": "10"},
            policy_id="urn:agreement:1",
            target="urn:asset:x",
            assigner="urn:participant:p",
        )
    )
    async with store.transaction() as tx:
        await tx.agreements.add(
            AgreementRow(
                id="urn:agreement:1",
                provider_id="p",
                consumer_id="c",
                target="urn:asset:x",
                policy={},
                signed_at=NOW,
            )
        )
    check = await held.payment_check("urn:agreement:1", policy, signed_at=NOW, now=NOW)
    assert check.reason == "payment of 10 EUR not yet received"
    await held.record(
        Payment(
            id="urn:payment:1",
            agreement_id="urn:agreement:1",
            amount=Decimal("10"),
            currency="http://dbpedia.org/resource/Euro",
            paid_at=NOW,
            recorded_at=NOW,
        )
    )
    check = await held.payment_check("urn:agreement:1", policy, signed_at=NOW, now=NOW)
    assert check.duties == {"urn:agreement:1#payment": FULFILLED} and check.reason is None


# ------------------------------------------------------------------ agreement status


def _rental(end: str | None) -> Policy:
    params = {"price": "200", "start": "2027-01-01T00:00:00Z"}
    if end:
        params["end"] = end
    return load_policy(
        fill(
            "rental", params, policy_id="urn:agreement:1", target="urn:asset:x", assigner="urn:participant:p"
        )
    )


def test_status_active_retired_expired() -> None:
    policy = _rental("2027-06-30T23:59:59Z")
    assert agreement_status(policy, None, NOW) == "active"
    assert agreement_status(policy, NOW, NOW) == "retired"
    end = datetime(2027, 6, 30, 23, 59, 59, tzinfo=UTC)
    assert agreement_status(policy, None, end) == "active"
    assert agreement_status(policy, None, end + timedelta(seconds=1)) == "expired"
    # retired wins over expired: the provider's act is what the user needs to know
    assert agreement_status(policy, NOW, end + timedelta(days=1)) == "retired"


def test_status_open_ended_never_expires() -> None:
    assert agreement_status(_rental(None), None, NOW + timedelta(days=3650)) == "active"


def test_status_expires_only_when_every_permission_has_ended() -> None:
    doc = {
        "permission": [
            {
                "action": "use",
                "constraint": [
                    {
                        "leftOperand": "dateTime",
                        "operator": "lt",
                        "rightOperand": {"@value": "2027-01-01T00:00:00Z", "@type": XSD_NS + "dateTime"},
                    }
                ],
            },
            {"action": "read"},
        ]
    }
    policy = load_policy(policy_document(doc, "urn:agreement:4"))
    assert agreement_status(policy, None, NOW) == "active"
    only_first = load_policy(policy_document({"permission": doc["permission"][:1]}, "urn:agreement:5"))
    assert agreement_status(only_first, None, datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == "active"
    assert agreement_status(only_first, None, datetime(2027, 1, 1, tzinfo=UTC)) == "expired"


def test_retirement_reason() -> None:
    assert retirement_reason("urn:agreement:1", "contract ended") == (
        "agreement urn:agreement:1 retired: contract ended"
    )

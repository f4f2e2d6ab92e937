"""The enforcement decision: exact use counting, state, time window, purpose, binding."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dataplane_testlib import CONSUMER, T0, Provider, agreement_doc, count_lteq, iso, transfer

from connector.dataplane.pep import AgreementPolicy, Circumstances, UnenforceableCount, decide, use_limit
from connector.odrl.parse import load_policy
from connector.store import Store
from connector.usage.pipeline import request_facts, stated

NOW = datetime.fromtimestamp(T0, UTC)


def _stating(purpose: str) -> Circumstances:
    """A request that states its purpose (as the X-Purpose header does)."""
    return Circumstances(request_facts(stated=stated(purpose=purpose)))


async def _claims(p: Provider, **kw: Any) -> Any:
    return await p.cache.cached_verify(p.token(**kw))


async def test_100_concurrent_requests_against_10_uses(store: Store) -> None:
    p = Provider()
    claims = await _claims(p)
    view = transfer(agreement_doc([count_lteq(10)]))
    results = await asyncio.gather(
        *(decide(claims, view, now=NOW, consume=store.consume_use) for _ in range(100))
    )
    permits = [r for r in results if r.permit]
    denies = [r for r in results if not r.permit]
    assert len(permits) == 10 and len(denies) == 90
    assert sorted(r.count_after for r in permits) == list(range(1, 11))  # type: ignore[type-var]
    assert all("use number 11 (10 completed)" in r.reason for r in denies), denies[0].reason
    assert await store.get_use_count("urn:agreement:1", CONSUMER, "urn:asset:weather") == 10


async def test_denied_requests_do_not_burn_uses(store: Store) -> None:
    p = Provider()
    claims = await _claims(p)
    doc = agreement_doc(
        [count_lteq(3), {"leftOperand": "purpose", "operator": "eq", "rightOperand": {"@id": "ex:research"}}]
    )
    view = transfer(doc)
    for _ in range(5):
        d = await decide(
            claims, view, now=NOW, circumstances=_stating("urn:ex:ads"), consume=store.consume_use
        )
        assert not d.permit
    suspended = transfer(doc, state="SUSPENDED")
    assert not await decide(
        claims, suspended, now=NOW, circumstances=_stating("urn:ex:research"), consume=store.consume_use
    )
    assert await store.get_use_count("urn:agreement:1", CONSUMER, "urn:asset:weather") == 0
    ok = [
        await decide(
            claims, view, now=NOW, circumstances=_stating("urn:ex:research"), consume=store.consume_use
        )
        for _ in range(4)
    ]
    assert [d.permit for d in ok] == [True, True, True, False]


@pytest.mark.parametrize("state", ["SUSPENDED", "TERMINATED", "COMPLETED", "REQUESTED", "SUSPENDING"])
async def test_transfer_not_started_denied(state: str) -> None:
    p = Provider()
    d = await decide(await _claims(p), transfer(agreement_doc([]), state=state), now=NOW, consume=_never)
    assert not d.permit and state in d.reason


async def _never(*args: Any) -> tuple[bool, int]:
    raise AssertionError("a denied request must not touch the use counter")


async def test_time_window_closed_denied() -> None:
    p = Provider()
    doc = agreement_doc(
        [
            {"leftOperand": "dateTime", "operator": "gteq", "rightOperand": iso(T0 - 86400)},
            {"leftOperand": "dateTime", "operator": "lteq", "rightOperand": iso(T0 + 3600)},
        ]
    )
    claims = await _claims(p)
    view = transfer(doc)
    assert (await decide(claims, view, now=NOW, consume=_never)).permit
    late = await decide(claims, view, now=NOW + timedelta(hours=2), consume=_never)
    assert not late.permit and "dateTime" in late.reason


async def test_purpose_mismatch_denied_with_engine_reason() -> None:
    p = Provider()
    doc = agreement_doc(
        [{"leftOperand": "purpose", "operator": "eq", "rightOperand": {"@id": "ex:research"}}]
    )
    view = transfer(doc)
    claims = await _claims(p)
    engine = view.agreement.decider
    d = await decide(claims, view, now=NOW, circumstances=_stating("urn:ex:ads"), consume=_never)
    assert not d.permit
    from connector.odrl import terms as T
    from connector.odrl.compile import DecisionRequest

    expected = engine(
        DecisionRequest(
            action=T.O + "use",
            now=NOW,
            assignee=CONSUMER,
            target="urn:asset:weather",
            context={T.PURPOSE: ("urn:ex:ads",)},
        )
    )
    assert d.reason == expected.reason and "purpose" in d.reason
    none = await decide(claims, view, now=NOW, consume=_never)
    assert not none.permit
    assert (
        await decide(claims, view, now=NOW, circumstances=_stating("urn:ex:research"), consume=_never)
    ).permit


async def test_token_must_be_bound_to_transfer_and_consumer() -> None:
    p = Provider()
    view = transfer(agreement_doc([]))
    for kw in ({"transfer_id": "t2"}, {"agreement_id": "urn:agreement:2"}, {"consumer": "urn:other"}):
        d = await decide(await _claims(p, **kw), view, now=NOW, consume=_never)
        assert not d.permit and "not bound" in d.reason


def test_use_limit_extraction() -> None:
    def lim(*cs: dict[str, Any]) -> Any:
        return use_limit(load_policy(agreement_doc(list(cs))))

    assert lim(count_lteq(10)) == (True, 10)
    assert lim({"leftOperand": "count", "operator": "lt", "rightOperand": 10}) == (True, 9)
    assert lim(count_lteq(10), count_lteq(4)) == (True, 4)
    assert lim(
        {
            "and": [
                count_lteq(7),
                {"leftOperand": "purpose", "operator": "eq", "rightOperand": {"@id": "ex:r"}},
            ]
        }
    ) == (True, 7)
    assert lim() == (False, None)
    assert use_limit(agreement_doc([count_lteq(2)])) == (True, 2)  # straight from Agreement JSON
    for bad in (
        {"leftOperand": "count", "operator": "gt", "rightOperand": 1},
        {
            "or": [
                count_lteq(2),
                {"leftOperand": "purpose", "operator": "eq", "rightOperand": {"@id": "ex:r"}},
            ]
        },
    ):
        with pytest.raises(UnenforceableCount):
            lim(bad)


async def test_unenforceable_count_fails_closed() -> None:
    p = Provider()
    doc = agreement_doc([{"leftOperand": "count", "operator": "gteq", "rightOperand": 1}])
    view = transfer(doc)
    assert isinstance(view.agreement, AgreementPolicy) and view.agreement.uses is None
    d = await decide(await _claims(p), view, now=NOW, consume=_never)
    assert not d.permit and "cannot be enforced" in d.reason

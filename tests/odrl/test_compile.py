"""The compiled decider decides exactly as the explaining evaluator does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.odrl import terms as T
from connector.odrl.compile import DecisionRequest, compile_policy
from connector.odrl.evaluate import evaluate
from connector.odrl.model import Request, Value, World
from connector.odrl.parse import load_policy

CTX = ["http://www.w3.org/ns/odrl.jsonld", {"ex": "urn:ex:"}]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PURPOSES = ["ex:research", "ex:ads", "ex:ops"]
ACTIONS = ["use", "read", "display", "distribute", "sell", "print", "modify"]


def dt(days: int) -> dict:
    return {"@value": (T0 + timedelta(days=days)).isoformat(), "@type": "xsd:dateTime"}


atomic = st.one_of(
    st.builds(
        lambda op, n: {"leftOperand": "count", "operator": op, "rightOperand": n},
        st.sampled_from(["lt", "lteq", "gt", "gteq", "eq", "neq"]),
        st.integers(0, 6),
    ),
    st.builds(
        lambda op, d: {"leftOperand": "dateTime", "operator": op, "rightOperand": dt(d)},
        st.sampled_from(["lt", "lteq", "gt", "gteq"]),
        st.integers(-5, 5),
    ),
    st.builds(
        lambda op, p: {"leftOperand": "purpose", "operator": op, "rightOperand": [{"@id": x} for x in p]},
        st.sampled_from(["eq", "neq", "isAnyOf", "isNoneOf", "isAllOf"]),
        st.lists(st.sampled_from(PURPOSES), min_size=1, max_size=2, unique=True),
    ),
    st.builds(
        lambda op, h: {
            "leftOperand": "elapsedTime",
            "operator": op,
            "rightOperand": {"@value": f"PT{h}H", "@type": "xsd:duration"},
        },
        st.sampled_from(["lt", "gteq"]),
        st.integers(0, 48),
    ),
)
constraint = st.recursive(
    atomic,
    lambda inner: st.builds(
        lambda op, xs: {op: xs},
        st.sampled_from(["and", "or", "xone", "andSequence"]),
        st.lists(inner, min_size=1, max_size=3),
    ),
    max_leaves=6,
)
rule = st.builds(
    lambda action, cs, target: {"action": action, "constraint": cs, **({"target": target} if target else {})},
    st.sampled_from(ACTIONS),
    st.lists(constraint, max_size=3),
    st.sampled_from([None, "ex:x", "ex:y"]),
)
policies = st.builds(
    lambda perms, prohs, conflict: {
        "@context": CTX,
        "@type": "Set",
        "uid": "urn:p",
        "permission": perms,
        "prohibition": prohs,
        **({"conflict": conflict} if conflict else {}),
    },
    st.lists(rule, min_size=0, max_size=3),
    st.lists(rule, max_size=2),
    st.sampled_from([None, "perm", "prohibit", "invalid"]),
)
requests = st.fixed_dictionaries(
    {
        "action": st.sampled_from(ACTIONS),
        "target": st.sampled_from(["urn:ex:x", "urn:ex:y"]),
        "count": st.integers(0, 8),
        "days": st.integers(-6, 6),
        "hours": st.one_of(st.none(), st.integers(0, 60)),
        "purpose": st.lists(st.sampled_from(PURPOSES), max_size=2, unique=True),
    }
)


@settings(max_examples=300, deadline=None)
@given(policies.filter(lambda p: p["permission"] or p["prohibition"]), requests)
def test_compiled_decider_agrees_with_evaluate(doc: dict[str, Any], r: dict[str, Any]) -> None:
    pol = load_policy(doc)
    now = T0 + timedelta(days=r["days"])
    started = now - timedelta(hours=r["hours"]) if r["hours"] is not None else None
    action = T.O + r["action"]
    purposes = tuple("urn:ex:" + p.split(":")[1] for p in r["purpose"])
    ctx = {T.PURPOSE: tuple(Value.iri(p) for p in purposes)} if purposes else {}
    report = evaluate(
        pol,
        Request(action=action, target=r["target"], context=ctx),
        World(
            now=now,
            counts={(None, None): r["count"]},
            usage_started={(None, None): started} if started else {},
        ),
    )
    decision = compile_policy(pol)(
        DecisionRequest(
            action=action,
            now=now,
            target=r["target"],
            count=r["count"],
            started_at=started,
            context={T.PURPOSE: purposes} if purposes else {},
        )
    )
    assert decision.permit == report.permit, (report.explanation, decision.reason)
    if not decision.permit:
        assert decision.reason


def test_deny_reason_names_the_failing_constraint() -> None:
    pol = load_policy(
        {
            "@context": CTX,
            "@type": "Agreement",
            "uid": "urn:p",
            "permission": [
                {
                    "action": "use",
                    "constraint": [{"leftOperand": "count", "operator": "lteq", "rightOperand": 10}],
                }
            ],
        }
    )
    decide = compile_policy(pol)
    assert decide(DecisionRequest(action=T.O + "read", now=T0, count=9)).permit
    d = decide(DecisionRequest(action=T.O + "read", now=T0, count=10))
    assert not d.permit
    assert "use number 11 (10 completed)" in d.reason


compact_rule = st.builds(
    lambda actions, cs, targets: {
        "action": actions if len(actions) > 1 else actions[0],
        "constraint": cs,
        **({"target": targets} if targets else {}),
    },
    st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=3, unique=True),
    st.lists(constraint, max_size=2),
    st.lists(st.sampled_from(["ex:x", "ex:y"]), max_size=2, unique=True),
)


def _atomic(rule: dict[str, Any]) -> list[dict[str, Any]]:
    """A compact rule written out by hand: one rule per action and target."""
    actions = rule["action"] if isinstance(rule["action"], list) else [rule["action"]]
    targets = rule.get("target") or [None]
    return [{**rule, "action": a, **({"target": t} if t else {})} for a in actions for t in targets]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(compact_rule, min_size=1, max_size=2),
    st.lists(compact_rule, max_size=2),
    st.sampled_from([None, "perm", "prohibit"]),
    requests,
)
def test_a_compact_rule_decides_as_its_atomic_rules(
    perms: list[dict[str, Any]], prohs: list[dict[str, Any]], conflict: str | None, r: dict[str, Any]
) -> None:
    """ODRL 2.2 reads a rule with several actions or targets as that many atomic rules."""

    def doc(ps: list[dict[str, Any]], qs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "@context": CTX,
            "@type": "Set",
            "uid": "urn:p",
            "permission": ps,
            "prohibition": qs,
            **({"conflict": conflict} if conflict else {}),
        }

    compact = load_policy(doc(perms, prohs))
    written = load_policy(doc([a for p in perms for a in _atomic(p)], [a for q in prohs for a in _atomic(q)]))
    assert len(compact.permissions) == len(written.permissions)
    now = T0 + timedelta(days=r["days"])
    request = DecisionRequest(action=T.O + r["action"], now=now, target=r["target"], count=r["count"])
    a, b = compile_policy(compact)(request), compile_policy(written)(request)
    assert a.permit == b.permit, (a.reason, b.reason)
    report = evaluate(
        compact,
        Request(action=T.O + r["action"], target=r["target"]),
        World(now=now, counts={(None, None): r["count"]}),
    )
    assert report.permit == a.permit, (report.explanation, a.reason)

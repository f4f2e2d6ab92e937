"""Semantics of the explaining evaluator, beyond what the conformance cases cover."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from connector.odrl import terms as T
from connector.odrl.evaluate import Report, evaluate
from connector.odrl.parse import load_policy
from connector.odrl.plain import request_from_json
from connector.odrl.report import explain_text, report_graph
from connector.vocab import REPORT

ODRL_CTX = "http://www.w3.org/ns/odrl.jsonld"
NOW = "2026-06-01T12:00:00Z"


def policy(*permissions: dict, prohibitions: tuple[dict, ...] = (), **extra: Any) -> Any:
    doc = {
        "@context": [ODRL_CTX, {"dpv": "https://w3id.org/dpv#", "ex": "http://ex.org/"}],
        "@type": "Agreement",
        "uid": "urn:policy:1",
        "target": "urn:asset:x",
        "assignee": "urn:party:bob",
        "permission": list(permissions),
        **extra,
    }
    if prohibitions:
        doc["prohibition"] = list(prohibitions)
    return load_policy(doc)


def run(pol: Any, **request: Any) -> Report:
    request.setdefault("action", "use")
    request.setdefault("assignee", "urn:party:bob")
    request.setdefault("target", "urn:asset:x")
    world = request.setdefault("world", {})
    world.setdefault("now", NOW)
    req, w = request_from_json(request)
    return evaluate(pol, req, w)


def c(left: str, op: str, right: Any, uid: str | None = None) -> dict:
    d = {"leftOperand": left, "operator": op, "rightOperand": right}
    if uid:
        d["uid"] = uid
    return d


def iri(x: str) -> dict:
    return {"@id": x}


# ---------------------------------------------------------------- count and time


@pytest.mark.parametrize(("done", "permit"), [(0, True), (4, True), (5, False), (50, False)])
def test_count_lteq_allows_exactly_n_uses(done: int, permit: bool) -> None:
    pol = policy({"action": "use", "constraint": [c("count", "lteq", 5)]})
    rep = run(pol, world={"count": done})
    assert rep.permit is permit
    if not permit:
        assert f"use number {done + 1} ({done} completed)" in rep.explanation


@pytest.mark.parametrize(
    ("started", "permit"),
    [("2026-05-31T12:00:01Z", True), ("2026-05-31T12:00:00Z", True), ("2026-05-31T11:59:59Z", False)],
)
def test_elapsed_time_since_usage_start(started: str, permit: bool) -> None:
    pol = policy(
        {
            "action": "use",
            "constraint": [c("elapsedTime", "lteq", {"@value": "P1D", "@type": "xsd:duration"})],
        }
    )
    assert run(pol, world={"startedAt": started}).permit is permit


def test_elapsed_time_without_start_denies_with_reason() -> None:
    pol = policy(
        {
            "action": "use",
            "constraint": [c("elapsedTime", "lteq", {"@value": "PT1H", "@type": "xsd:duration"})],
        }
    )
    rep = run(pol)
    assert not rep.permit and "start of the usage period is not known" in rep.explanation


def test_datetime_window() -> None:
    window = {
        "and": [
            c("dateTime", "gteq", {"@value": "2026-01-01T00:00:00Z", "@type": "xsd:dateTime"}),
            c("dateTime", "lt", {"@value": "2027-01-01T00:00:00Z", "@type": "xsd:dateTime"}),
        ]
    }
    pol = policy({"action": "use", "constraint": [window]})
    assert run(pol).permit
    assert not run(pol, world={"now": "2027-01-01T00:00:00Z"}).permit


# ---------------------------------------------------------------- purpose, spatial, sets


def test_purpose_eq_and_mismatch_reason() -> None:
    pol = policy({"action": "use", "constraint": [c("purpose", "eq", iri("dpv:ResearchAndDevelopment"))]})
    assert run(pol, purpose="dpv:ResearchAndDevelopment").permit
    rep = run(pol, purpose="dpv:Marketing")
    assert not rep.permit
    assert "dpv:Marketing" in rep.explanation and "does not hold" in rep.explanation
    missing = run(pol)
    assert not missing.permit and "states no odrl:purpose" in missing.explanation


def test_purpose_isa_uses_stated_types_only() -> None:
    pol = policy({"action": "use", "constraint": [c("purpose", "isA", iri("dpv:AcademicResearch"))]})
    world = {"types": {"urn:project:42": ["dpv:AcademicResearch"]}}
    assert run(pol, purpose="urn:project:42", world=world).permit
    assert not run(pol, purpose="urn:project:43", world=world).permit


def test_spatial_is_part_of_follows_part_of_transitively() -> None:
    pol = policy({"action": "use", "constraint": [c("spatial", "isPartOf", iri("urn:geo:EU"))]})
    world = {"partOf": {"urn:geo:Ghent": ["urn:geo:BE"], "urn:geo:BE": ["urn:geo:EU"]}}
    assert run(pol, spatial="urn:geo:Ghent", world=world).permit
    assert run(pol, spatial="urn:geo:EU", world=world).permit  # reflexive
    assert not run(pol, spatial="urn:geo:US", world=world).permit


def test_set_operators() -> None:
    def with_op(op: str) -> Any:
        return policy(
            {
                "action": "use",
                "constraint": [
                    {
                        "leftOperand": "purpose",
                        "operator": op,
                        "rightOperand": [iri("urn:p:a"), iri("urn:p:b")],
                    }
                ],
            }
        )

    assert run(with_op("isAnyOf"), purpose="urn:p:a").permit
    assert not run(with_op("isAnyOf"), purpose="urn:p:c").permit
    assert run(with_op("isNoneOf"), purpose="urn:p:c").permit
    assert not run(with_op("isNoneOf"), purpose="urn:p:b").permit
    assert run(with_op("isAllOf"), purpose=["urn:p:a", "urn:p:b"]).permit
    assert not run(with_op("isAllOf"), purpose="urn:p:a").permit


def test_xone_requires_exactly_one() -> None:
    pol = policy(
        {
            "action": "use",
            "constraint": [
                {"xone": [c("purpose", "eq", iri("urn:p:a")), c("recipient", "eq", iri("urn:party:carol"))]}
            ],
        }
    )
    assert run(pol, purpose="urn:p:a", recipient="urn:party:dave").permit
    both = run(pol, purpose="urn:p:a", recipient="urn:party:carol")
    assert not both.permit and "exactly one required" in explain_text(both)


def test_incomparable_values_deny_with_reason() -> None:
    pol = policy({"action": "use", "constraint": [c("purpose", "lt", 5)]})
    rep = run(pol, purpose="urn:p:a")
    assert not rep.permit and "cannot order" in rep.explanation


# ---------------------------------------------------------------- actions, refinements


def test_action_hierarchy_use_covers_read_not_sell() -> None:
    pol = policy({"action": "use"})
    assert run(pol, action="read").permit
    assert run(pol, action="display").permit  # display < play < use
    rep = run(pol, action="sell")
    assert not rep.permit and "not odrl:use nor included in it" in rep.explanation


def test_deprecated_action_maps_to_current_term() -> None:
    assert run(policy({"action": "modify"}), action="write").permit


def test_unknown_action_denies_even_on_exact_match() -> None:
    pol = policy({"action": "http://ex.org/frobnicate"})
    rep = run(pol, action="http://ex.org/frobnicate")
    assert not rep.permit and "unknown action" in rep.explanation


def test_action_refinement_is_nested_under_the_action_report() -> None:
    pol = policy(
        {
            "action": [
                {
                    "rdf:value": iri("odrl:use"),
                    "refinement": [c("purpose", "eq", iri("urn:p:a"), uid="urn:ref:1")],
                }
            ]
        }
    )
    ok = run(pol, purpose="urn:p:a")
    assert ok.permit
    bad = run(pol, purpose="urn:p:b")
    action_report = next(p for p in bad.rules[0].premises if p.kind == "Action")
    assert not action_report.satisfied
    assert [ch.constraint for ch in action_report.children] == ["urn:ref:1"]
    assert "refinement fails" in bad.explanation


# ---------------------------------------------------------------- rules, conflicts, duties


def test_prohibition_alone_denies() -> None:
    pol = load_policy(
        {
            "@context": ODRL_CTX,
            "@type": "Set",
            "uid": "urn:p",
            "prohibition": [{"action": "use", "target": "urn:asset:x"}],
        }
    )
    rep = run(pol)
    assert not rep.permit and rep.rules[0].active
    assert "grants no permission" in rep.explanation


@pytest.mark.parametrize(
    ("strategy", "permit"), [("perm", True), ("prohibit", False), ("invalid", False), (None, False)]
)
def test_conflict_strategies(strategy: str | None, permit: bool) -> None:
    extra = {"conflict": strategy} if strategy else {}
    pol = policy({"action": "use"}, prohibitions=({"action": "read"},), **extra)
    rep = run(pol, action="read")
    assert rep.permit is permit and rep.conflict
    assert all(r.active for r in rep.rules)  # activation is rule-local


def test_static_conflict_voids_policy_even_when_prohibition_does_not_match() -> None:
    pol = policy({"action": "use"}, prohibitions=({"action": "distribute"},))
    rep = run(pol, action="read")
    assert not rep.permit and "conflict in every state of the world" in rep.explanation
    pol_perm = policy({"action": "use"}, prohibitions=({"action": "distribute"},), conflict="perm")
    assert run(pol_perm, action="read").permit
    pol_prohibit = replace(pol_perm, conflict=T.PROHIBIT)
    assert not run(pol_prohibit, action="distribute").permit


def test_constrained_prohibition_is_not_a_static_conflict() -> None:
    pol = policy(
        {"action": "use"},
        prohibitions=({"action": "distribute", "constraint": [c("spatial", "eq", iri("urn:geo:US"))]},),
    )
    assert run(pol, action="read").permit
    assert not run(pol, action="distribute", spatial="urn:geo:US").permit


def test_violated_duty_blocks_unless_consequences_fulfilled() -> None:
    pol = policy(
        {
            "action": "use",
            "duty": [
                {
                    "uid": "urn:duty:pay",
                    "action": "compensate",
                    "consequence": [{"uid": "urn:duty:fine", "action": "compensate"}],
                }
            ],
        }
    )
    assert run(pol).permit  # pending duty does not block
    rep = run(pol, world={"duties": {"urn:duty:pay": "Violated"}})
    assert not rep.permit and "is violated" in rep.explanation
    remedied = run(pol, world={"duties": {"urn:duty:pay": "Violated", "urn:duty:fine": "Fulfilled"}})
    assert remedied.permit


def test_obligations_and_remedies_are_reported() -> None:
    doc = {
        "@context": ODRL_CTX,
        "@type": "Agreement",
        "uid": "urn:p",
        "target": "urn:asset:x",
        "assignee": "urn:party:bob",
        "permission": [{"action": "use"}],
        "prohibition": [{"action": "distribute", "remedy": [{"uid": "urn:duty:delete", "action": "delete"}]}],
        "obligation": [{"uid": "urn:duty:report", "action": "inform"}],
    }
    rep = run(load_policy(doc), world={"duties": {"urn:duty:report": "Violated"}}, action="read")
    # the prohibition is constrained-free and overlaps use: a static conflict under invalid
    assert not rep.permit
    assert rep.obligations[0].rule == "urn:duty:report"
    assert "urn:duty:report" in rep.explanation
    prohibition = next(r for r in rep.rules if r.kind == "prohibition")
    assert prohibition.remedies[0].rule == "urn:duty:delete"


def test_ids_operands_read_requester_facts() -> None:
    doc = {
        "@context": [ODRL_CTX, {"idsc": "https://w3id.org/idsa/code/"}],
        "@type": "Offer",
        "uid": "urn:p",
        "permission": [
            {
                "action": "use",
                "constraint": [c("idsc:SECURITY_LEVEL", "eq", iri("idsc:TRUST_SECURITY_PROFILE"))],
            }
        ],
    }
    pol = load_policy(doc)
    trusted = {"facts": {"idsc:SECURITY_LEVEL": "idsc:TRUST_SECURITY_PROFILE"}}
    assert run(pol, world=trusted).permit
    assert not run(pol, world={"facts": {"idsc:SECURITY_LEVEL": "idsc:BASE_SECURITY_PROFILE"}}).permit


def test_unknown_left_operand_denies() -> None:
    pol = policy({"action": "use", "constraint": [c("http://ex.org/mood", "eq", "happy")]})
    rep = run(pol, context={"http://ex.org/mood": "happy"})
    assert not rep.permit and "unknown left operand" in rep.explanation


def test_report_graph_uses_the_compliance_report_vocabulary() -> None:
    pol = policy({"uid": "urn:perm:1", "action": "use", "constraint": [c("count", "lt", 3, uid="urn:c:1")]})
    g = report_graph(run(pol, world={"count": 7}))
    (rr,) = g.subjects(REPORT.rule, None)
    assert (rr, REPORT.activationState, REPORT.Inactive) in g
    (cr,) = g.subjects(REPORT.constraint, None)
    assert (cr, REPORT.satisfactionState, REPORT.Unsatisfied) in g
    # the count left value is where readings differ, so it is not stated (CONVENTIONS.md)
    assert not list(g.objects(cr, REPORT.constraintLeftOperand))
    assert T.O.startswith("http")


def test_facts_accept_ids_and_deprecated_operand_names() -> None:
    doc = {
        "@context": ODRL_CTX,
        "@type": "Offer",
        "uid": "urn:p",
        "permission": [{"action": "use", "constraint": [c("systemDevice", "eq", iri("urn:connector:1"))]}],
    }
    pol = load_policy(doc)
    for key in ("idsc:SYSTEM", "odrl:system", "systemDevice"):
        assert run(pol, world={"facts": {key: "urn:connector:1"}}).permit, key
    assert not run(pol, world={"facts": {"idsc:SYSTEM": "urn:connector:2"}}).permit


def test_direct_turtle_writer_gives_the_same_triples_as_the_graph() -> None:
    import itertools

    from rdflib import Graph
    from rdflib.compare import isomorphic

    from connector.odrl.report import report_turtle

    pol = policy(
        {
            "uid": "urn:perm:1",
            "action": [
                {
                    "rdf:value": iri("odrl:use"),
                    "refinement": [c("purpose", "eq", iri("urn:p:a"), uid="urn:ref:1")],
                }
            ],
            "duty": [{"uid": "urn:duty:1", "action": "compensate"}],
            "constraint": [
                {
                    "or": [
                        c("count", "lt", 3, uid="urn:c:1"),
                        c("dateTime", "lt", {"@value": "2030-01-01T00:00:00Z", "@type": "xsd:dateTime"}),
                    ]
                }
            ],
        }
    )
    rep = run(pol, purpose="urn:p:a", world={"count": 7})
    ids_a, ids_b = itertools.count(), itertools.count()
    text = report_turtle(rep, lambda: f"urn:r:{next(ids_a)}")
    direct = Graph().parse(data=text, format="turtle")
    via_graph = report_graph(rep, lambda: f"urn:r:{next(ids_b)}")
    assert isomorphic(direct, via_graph)  # equal up to blank-node labels
    assert len(direct) > 20


def test_party_and_asset_collection_refinements_are_nested_and_evaluated() -> None:
    doc = {
        "@context": [ODRL_CTX],
        "@type": "Set",
        "uid": "urn:p",
        "permission": [
            {
                "action": "use",
                "assignee": {
                    "@type": "PartyCollection",
                    "source": "urn:group:partners",
                    "refinement": [c("recipient", "eq", iri("urn:party:carol"), uid="urn:r:1")],
                },
                "target": {
                    "@type": "AssetCollection",
                    "source": "urn:set:weather",
                    "refinement": [c("spatial", "isPartOf", iri("urn:geo:EU"), uid="urn:r:2")],
                },
            }
        ],
    }
    pol = load_policy(doc)
    world = {
        "partOf": {
            "urn:party:bob": ["urn:group:partners"],
            "urn:asset:x": ["urn:set:weather"],
            "urn:geo:BE": ["urn:geo:EU"],
        }
    }
    ok = run(pol, recipient="urn:party:carol", spatial="urn:geo:BE", world=world)
    assert ok.permit, ok.explanation
    party = next(p for p in ok.rules[0].premises if p.kind == "Party")
    target = next(p for p in ok.rules[0].premises if p.kind == "Target")
    assert [ch.constraint for ch in party.children] == ["urn:r:1"]
    assert [ch.constraint for ch in target.children] == ["urn:r:2"]
    assert not run(pol, recipient="urn:party:dave", spatial="urn:geo:BE", world=world).permit
    assert not run(pol, recipient="urn:party:carol", spatial="urn:geo:US", world=world).permit
    outsider = dict(world, partOf={**world["partOf"], "urn:party:bob": []})
    assert not run(pol, recipient="urn:party:carol", spatial="urn:geo:BE", world=outsider).permit

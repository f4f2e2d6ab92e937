"""One meaning for a term however it is written: CURIEs expanded once at the boundary (policies,
request facts, template parameters), the plain-JSON policy form of the management API, the fact
sources the deciders read, and reasons that name rules by position and id."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from connector.odrl import terms as T
from connector.odrl.compile import DecisionRequest, compile_policy
from connector.odrl.evaluate import evaluate
from connector.odrl.facts import context_facts, fact_values, stated_facts
from connector.odrl.parse import PolicyError, load_policy, parse_text, read_policy
from connector.odrl.plain import (
    POLICY_CONTEXT,
    PREFIXES,
    is_plain_policy,
    policy_document,
    request_from_json,
    right_operand,
)
from connector.odrl.report import explain_text
from connector.odrl.templates import fill

DSP = "https://w3id.org/dspace/2025/1/context.jsonld"
PROFILE = "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"
DPV = "https://w3id.org/dpv#"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def dsp_offer(*constraints: dict, **permission: object) -> dict:
    """An offer in the DSP form with no prefixes in its context (as peers and the data plane
    compile agreements): every CURIE in it is undefined JSON-LD."""
    return {
        "@context": [DSP, PROFILE],
        "@type": "Offer",
        "@id": "urn:offer:1",
        "permission": [{"action": "use", "constraint": list(constraints), **permission}],
    }


# ------------------------------------------------------------------ CURIEs mean the same on both sides


def test_purpose_curie_in_policy_and_request_match() -> None:
    pol = load_policy(
        dsp_offer(
            {"leftOperand": "purpose", "operator": "eq", "rightOperand": {"@id": "dpv:ScientificResearch"}}
        ),
        strict=True,
    )
    assert pol.permissions[0].constraints[0].right[0].lexical == DPV + "ScientificResearch"  # type: ignore[union-attr]
    for purpose, permit in (
        ("dpv:ScientificResearch", True),
        (DPV + "ScientificResearch", True),
        ("dpv:Marketing", False),
    ):
        request, world = request_from_json(
            {"action": "use", "purpose": purpose, "world": {"now": "2026-06-01T00:00:00Z"}}
        )
        assert evaluate(pol, request, world).permit is permit, purpose
        decided = compile_policy(pol)(
            DecisionRequest(action=T.USE, now=NOW, context=stated_facts(purpose=purpose))
        )
        assert decided.permit is permit, purpose


def test_purpose_curie_written_as_a_plain_string_is_the_iri() -> None:
    pol = load_policy(
        dsp_offer({"leftOperand": "purpose", "operator": "eq", "rightOperand": "dpv:ScientificResearch"}),
        strict=True,
    )
    decide = compile_policy(pol)
    assert decide(
        DecisionRequest(action=T.USE, now=NOW, context=stated_facts(purpose="dpv:ScientificResearch"))
    ).permit


def test_template_policy_and_stated_purpose_match() -> None:
    """The data plane's case: a template filled with a CURIE, a consumer stating the CURIE."""
    pol = load_policy(
        fill("purpose-restricted", {"purpose": "dpv:ScientificResearch"}, policy_id="urn:offer:p"),
        strict=True,
    )
    decide = compile_policy(pol)
    assert decide(
        DecisionRequest(action=T.USE, now=NOW, context=stated_facts(purpose="dpv:ScientificResearch"))
    ).permit
    denied = decide(DecisionRequest(action=T.USE, now=NOW, context=stated_facts(purpose="dpv:Marketing")))
    assert not denied.permit and "dpv:Marketing" in denied.reason


def test_ids_operand_under_a_context_without_idsc_is_known() -> None:
    """An agreement compiled with the DSP context only: idsc:SECURITY_LEVEL is still the IDS
    operand, decided against the token's attested profile."""
    pol = load_policy(
        dsp_offer(
            {
                "leftOperand": "idsc:SECURITY_LEVEL",
                "operator": "eq",
                "rightOperand": {"@id": "idsc:TRUST_SECURITY_PROFILE"},
            },
            {"leftOperand": "dsc:role", "operator": "isAllOf", "rightOperand": {"@id": "dsc:Consumer"}},
        ),
        strict=True,
    )
    c = pol.permissions[0].constraints[0]
    assert c.left_operand == T.SECURITY_LEVEL  # type: ignore[union-attr]
    decide = compile_policy(pol)
    facts = fact_values({"securityProfile": "idsc:TRUST_SECURITY_PROFILE", "roles": ["consumer"]})
    assert decide(DecisionRequest(action=T.USE, now=NOW, context=facts)).permit
    facts = fact_values({"securityProfile": "idsc:BASE_SECURITY_PROFILE", "roles": ["consumer"]})
    assert not decide(DecisionRequest(action=T.USE, now=NOW, context=facts)).permit


def test_curies_in_turtle_and_in_datatypes_are_expanded() -> None:
    ttl = """
    @prefix odrl: <http://www.w3.org/ns/odrl/2/> .
    <urn:p> a odrl:Set ; odrl:permission [ odrl:action <idsc:USE> ; odrl:constraint [
        odrl:leftOperand <idsc:COUNT> ; odrl:operator <idsc:LTEQ> ;
        odrl:rightOperand "3"^^<xsd:double> ] ] .
    """
    c = load_policy(ttl, strict=True).permissions[0].constraints[0]
    assert (c.left_operand, c.operator) == (T.COUNT, T.LTEQ)  # type: ignore[union-attr]
    assert c.right[0].py == 3 and c.right[0].datatype == PREFIXES["xsd"] + "double"  # type: ignore[union-attr]


def test_full_iris_and_unknown_schemes_are_left_alone() -> None:
    assert T.expand_curie("https://w3id.org/idsa/code/USE") == "https://w3id.org/idsa/code/USE"
    assert T.expand_curie("urn:x:y") == "urn:x:y"
    assert T.expand_curie("idsc://host/x") == "idsc://host/x"
    assert T.expand_curie("dpv:X") == DPV + "X"


def test_request_facts_in_any_spelling() -> None:
    facts = context_facts(
        {
            "idsc:PAYMENT": "10.50",
            "idsc:CONNECTOR": "https://c.example/",
            "idsc:STATE": ["idsc:ACTIVE"],
            "purpose": "dpv:Research",
            "idsc:JSON_PATH": "idsc:not-an-iri",
        }
    )
    assert facts == {
        T.O + "payAmount": (Decimal("10.50"),),
        T.O + "systemDevice": ("https://c.example/",),
        T.IDS_STATE: (T.IDSC_NS + "ACTIVE",),
        T.PURPOSE: (DPV + "Research",),
        T.JSON_PATH: ("idsc:not-an-iri",),
    }
    assert stated_facts(purpose=["dpv:A", ""], event=None) == {T.PURPOSE: (DPV + "A",)}
    with pytest.raises(PolicyError, match="odrl:payAmount"):
        context_facts({"idsc:PAY_AMOUNT": "ten euros"})


# ------------------------------------------------------------------ the plain-JSON policy form


def test_plain_rules_become_a_policy_in_the_profile_context() -> None:
    plain = {
        "permission": [
            {
                "action": "use",
                "constraint": [
                    {"leftOperand": "purpose", "operator": "eq", "rightOperand": "dpv:ScientificResearch"},
                    {"leftOperand": "count", "operator": "lteq", "rightOperand": 5},
                    {
                        "leftOperand": "idsc:SECURITY_LEVEL",
                        "operator": "eq",
                        "rightOperand": "idsc:TRUST_SECURITY_PROFILE",
                    },
                ],
            }
        ]
    }
    assert is_plain_policy(plain) and not is_plain_policy({"@context": [], "permission": []})
    doc = policy_document(plain, "urn:policy:1")
    assert doc["@context"] == POLICY_CONTEXT and doc["@type"] == "Set" and doc["@id"] == "urn:policy:1"
    assert plain["permission"][0]["constraint"][0]["rightOperand"] == "dpv:ScientificResearch"  # untouched
    pol = load_policy(doc, strict=True)
    rights = {c.left_operand: c.right[0] for c in pol.permissions[0].constraints}  # type: ignore[union-attr]
    assert rights[T.PURPOSE].is_iri and rights[T.PURPOSE].lexical == DPV + "ScientificResearch"
    assert rights[T.COUNT].py == 5
    assert rights[T.SECURITY_LEVEL].lexical == T.IDSC_NS + "TRUST_SECURITY_PROFILE"


def test_a_json_ld_policy_is_kept_as_it_is() -> None:
    doc = dsp_offer()
    assert policy_document(doc) == doc
    assert policy_document(doc, "urn:x")["@id"] == "urn:x"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, {"@value": "true", "@type": PREFIXES["xsd"] + "boolean"}),
        (3, {"@value": "3", "@type": PREFIXES["xsd"] + "integer"}),
        (2.5, {"@value": "2.5", "@type": PREFIXES["xsd"] + "decimal"}),
        ("dpv:X", {"@id": DPV + "X"}),
        ("https://x.example/a", {"@id": "https://x.example/a"}),
        ("urn:a:b", {"@id": "urn:a:b"}),
        ("plain text", "plain text"),
        ("P30D", "P30D"),
        (["dpv:A", 1], [{"@id": DPV + "A"}, {"@value": "1", "@type": PREFIXES["xsd"] + "integer"}]),
    ],
)
def test_right_operands(value: object, expected: object) -> None:
    assert right_operand(value) == expected


# ------------------------------------------------------------------ reasons name rules, not blank nodes


def test_deny_and_permit_reasons_name_policy_and_rule_by_position() -> None:
    pol = load_policy(
        {
            "@context": [DSP, PROFILE],
            "@type": "Agreement",
            "@id": "urn:agreement:7",
            "permission": [
                {
                    "action": "use",
                    "constraint": [{"leftOperand": "count", "operator": "lteq", "rightOperand": 2}],
                },
                {
                    "@id": "urn:rule:read",
                    "action": "read",
                    "constraint": [
                        {"leftOperand": "purpose", "operator": "eq", "rightOperand": {"@id": "dpv:Research"}}
                    ],
                    "duty": [{"action": "compensate"}],
                },
            ],
        }
    )
    decide = compile_policy(pol)
    denied = decide(
        DecisionRequest(
            action=T.O + "read", now=NOW, count=2, duties={pol.permissions[1].duties[0].id: T.O + "x"}
        )
    )
    assert not denied.permit
    assert denied.reason.startswith("permission 1 of agreement urn:agreement:7 does not apply: count")
    assert "permission 2 (urn:rule:read) of agreement urn:agreement:7 does not apply" in denied.reason
    assert "_:" not in denied.reason
    permitted = decide(DecisionRequest(action=T.USE, now=NOW, count=0))
    assert permitted.reason == "permission 1 of agreement urn:agreement:7 applies"
    request, world = request_from_json(
        {"action": "read", "world": {"now": "2026-06-01T00:00:00Z", "count": 2}}
    )
    report = evaluate(pol, request, world)
    text = explain_text(report) + report.explanation + "".join(r.reason for r in report.rules)
    assert "_:" not in text
    assert "Permission 2 (urn:rule:read) of agreement urn:agreement:7: inactive" in text
    assert "duty 1 to odrl:compensate is pending" in text


def test_problems_are_located_by_position_and_carry_their_kind() -> None:
    problems, _ = read_policy(
        parse_text(
            json.dumps(
                {
                    "@context": [DSP, PROFILE],
                    "@type": "Offer",
                    "permission": [
                        {"action": "use"},
                        {
                            "action": "idsc:FLY",
                            "constraint": [
                                {"leftOperand": "count", "operator": "lteq", "rightOperand": "many"}
                            ],
                        },
                    ],
                }
            )
        )
    )
    assert [(str(p), p.kind) for p in problems] == [
        ("policy / permission 2: unknown action idsc:FLY", "unknown"),
        (
            "policy / permission 2 / constraint 1: odrl:count: right operand 'many' is not a valid number",
            "ill-typed",
        ),
    ]

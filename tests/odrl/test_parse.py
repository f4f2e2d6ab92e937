"""Parsing ODRL from every form the connector meets, and refusing bad input clearly."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from connector.odrl import terms as T
from connector.odrl.model import Constraint, LogicalConstraint
from connector.odrl.parse import PolicyError, load_policy, parse_text, policy_from_graph

O = T.O
DSP = "https://w3id.org/dspace/2025/1/context.jsonld"
PROFILE = "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"


def dsp_offer(permission: dict, **extra: object) -> dict:
    # A policy outside a DSP message: the DSP context plus the ODRL profile it imports
    # inside messages.
    return {
        "@context": [DSP, PROFILE],
        "@type": "Offer",
        "@id": "urn:offer:1",
        "target": "urn:asset:x",
        "permission": [permission],
        **extra,
    }


def test_dsp_compacted_offer_bare_words_resolve_to_odrl() -> None:
    pol = load_policy(
        dsp_offer(
            {
                "action": "use",
                "constraint": [
                    {"leftOperand": "dateTime", "operator": "lteq", "rightOperand": "2023-12-31T06:00Z"},
                    {"leftOperand": "purpose", "operator": "neq", "rightOperand": {"@id": "urn:p:ads"}},
                ],
            }
        )
    )
    assert pol.type == O + "Offer"
    (perm,) = pol.permissions
    assert perm.actions[0].iri == O + "use"
    assert perm.targets[0].iri == "urn:asset:x"
    # RDF does not order a rule's constraints: look them up by operand
    by_left = {c.left_operand: c for c in perm.constraints if isinstance(c, Constraint)}
    c1, c2 = by_left[O + "dateTime"], by_left[O + "purpose"]
    assert c1.right[0].py.year == 2023  # coerced to a datetime for the dateTime operand
    assert isinstance(c2, Constraint) and c2.operator == O + "neq"  # not the erratum's neg
    assert c2.right[0].is_iri


def test_policy_inside_a_dsp_message_is_found(conformance: Path) -> None:
    from connector.odrl.parse import jsonld_to_graph

    doc = json.loads((conformance / "dsp/examples/negotiation/contract-request-message.json").read_text())
    pol = policy_from_graph(jsonld_to_graph(doc))
    assert pol.id == doc["offer"]["@id"]
    c = pol.permissions[0].constraints[0]
    assert isinstance(c, Constraint) and c.left_operand == O + "dateTime"


def test_every_official_dsp_example_policy_parses(conformance: Path) -> None:
    seen = 0
    for f in sorted((conformance / "dsp" / "examples").rglob("*.json")):
        doc = json.loads(f.read_text())
        text = json.dumps(doc)
        if '"Offer"' not in text and '"Agreement"' not in text:
            continue
        from connector.odrl.parse import find_policy_nodes, jsonld_to_graph

        g = jsonld_to_graph(doc)
        for node in find_policy_nodes(g):
            policy_from_graph(g, node)  # unknown operands ("partner") stay, and deny later
            seen += 1
    assert seen >= 5


def test_odrl_context_with_neq_erratum_is_read_as_neq() -> None:
    doc = {
        "@context": "http://www.w3.org/ns/odrl.jsonld",
        "@type": "Set",
        "uid": "urn:p",
        "permission": [
            {
                "target": "urn:x",
                "action": "use",
                "constraint": [
                    {"leftOperand": "purpose", "operator": "neq", "rightOperand": {"@id": "urn:a"}}
                ],
            }
        ],
    }
    c = load_policy(doc).permissions[0].constraints[0]
    assert isinstance(c, Constraint) and c.operator == O + "neq"


def test_turtle_and_jsonld_give_the_same_model() -> None:
    ttl = """
    @prefix odrl: <http://www.w3.org/ns/odrl/2/> .
    <urn:p> a odrl:Set ; odrl:permission <urn:r> .
    <urn:r> odrl:target <urn:x> ; odrl:action odrl:read ; odrl:constraint <urn:c> .
    <urn:c> odrl:leftOperand odrl:count ; odrl:operator odrl:lteq ; odrl:rightOperand 5 .
    """
    doc = {
        "@context": "http://www.w3.org/ns/odrl.jsonld",
        "@type": "Set",
        "uid": "urn:p",
        "permission": [
            {
                "uid": "urn:r",
                "target": "urn:x",
                "action": "read",
                "constraint": [
                    {"uid": "urn:c", "leftOperand": "count", "operator": "lteq", "rightOperand": 5}
                ],
            }
        ],
    }
    assert load_policy(ttl) == load_policy(doc)


def test_logical_constraint_operands_as_list_or_repeated() -> None:
    ttl = """
    @prefix odrl: <http://www.w3.org/ns/odrl/2/> .
    <urn:p> a odrl:Set ; odrl:permission [ odrl:action odrl:use ;
        odrl:constraint <urn:seq>, <urn:x1> ] .
    <urn:seq> odrl:andSequence ( <urn:a> <urn:b> ) .
    <urn:x1> odrl:xone <urn:a>, <urn:b> .
    <urn:a> odrl:leftOperand odrl:count ; odrl:operator odrl:lt ; odrl:rightOperand 3 .
    <urn:b> odrl:leftOperand odrl:count ; odrl:operator odrl:gt ; odrl:rightOperand 1 .
    """
    seq, xone = load_policy(ttl).permissions[0].constraints
    assert isinstance(seq, LogicalConstraint) and seq.operator == O + "andSequence"
    assert [c.id for c in seq.operands] == ["urn:a", "urn:b"]  # order kept
    assert isinstance(xone, LogicalConstraint) and len(xone.operands) == 2


def test_ids_infomodel_contract_is_understood() -> None:
    ttl = """
    @prefix ids: <https://w3id.org/idsa/core/> .
    @prefix idsc: <https://w3id.org/idsa/code/> .
    @prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
    <urn:c> a ids:ContractAgreement ; ids:permission <urn:r> .
    <urn:r> a ids:Permission ; ids:action idsc:USE ; ids:target <urn:x> ;
        ids:constraint <urn:k> .
    <urn:k> a ids:Constraint ; ids:leftOperand idsc:POLICY_EVALUATION_TIME ;
        ids:operator idsc:BEFORE ; ids:rightOperand "2030-01-01T00:00:00Z"^^xsd:dateTimeStamp .
    """
    pol = load_policy(ttl, strict=True)
    assert pol.type == O + "Agreement"
    (r,) = pol.permissions
    assert r.actions[0].iri == O + "use"
    c = r.constraints[0]
    assert isinstance(c, Constraint)
    assert (c.left_operand, c.operator) == (O + "dateTime", O + "lt")


def test_compact_policy_properties_are_inherited() -> None:
    doc = {
        "@context": "http://www.w3.org/ns/odrl.jsonld",
        "@type": "Agreement",
        "uid": "urn:p",
        "target": "urn:x",
        "assigner": "urn:prov",
        "assignee": "urn:cons",
        "permission": [{"action": "read"}, {"action": "print", "target": "urn:y"}],
        "prohibition": [{"action": "distribute"}],
    }
    pol = load_policy(doc)
    by_action = {r.actions[0].iri: r for r in pol.permissions}
    assert by_action[O + "read"].targets[0].iri == "urn:x"
    assert by_action[O + "print"].targets[0].iri == "urn:y"
    assert all(r.assignees[0].iri == "urn:cons" for r in pol.rules)
    assert pol.prohibitions[0].assigners[0].iri == "urn:prov"


def test_inherit_from_merges_parent_rules() -> None:
    ttl = """
    @prefix odrl: <http://www.w3.org/ns/odrl/2/> .
    <urn:parent> a odrl:Set ; odrl:prohibition [ odrl:action odrl:sell ] ;
        odrl:conflict odrl:perm .
    <urn:child> a odrl:Set ; odrl:inheritFrom <urn:parent> ;
        odrl:permission [ odrl:action odrl:use ] .
    """
    pol = load_policy(ttl)
    assert pol.id == "urn:child"
    assert len(pol.permissions) == 1 and len(pol.prohibitions) == 1
    assert pol.conflict == O + "perm"


# ---------------------------------------------------------------------------- bad input

PREFIX = "@prefix odrl: <http://www.w3.org/ns/odrl/2/> .\n"
BAD = [
    ("malformed JSON", '{"@type": "Set", ', "malformed JSON at line 1"),
    ("malformed Turtle", PREFIX + "<urn:p> a odrl:Set ; odrl:permission [ .", "malformed Turtle"),
    (
        "remote context",
        '{"@context": "https://attacker.example/ctx", "@type": "Set"}',
        "refusing to load remote document",
    ),
    ("invalid JSON-LD", '{"@context": {"@version": 2.5}, "@type": "x"}', "invalid JSON-LD"),
    ("no policy", PREFIX + "<urn:a> <urn:b> <urn:c> .", "no ODRL policy found"),
    (
        "two policies",
        PREFIX + "<urn:a> a odrl:Set ; odrl:permission [ odrl:action odrl:use ].\n"
        "<urn:b> a odrl:Set ; odrl:permission [ odrl:action odrl:use ].",
        "2 policies found",
    ),
    ("empty policy", PREFIX + "<urn:a> a odrl:Set .", "no permission, prohibition"),
    (
        "constraint without operator",
        PREFIX + "<urn:a> a odrl:Set ; odrl:permission [ "
        "odrl:action odrl:use ; odrl:constraint [ odrl:leftOperand odrl:count ; "
        "odrl:rightOperand 1 ] ].",
        "missing operator",
    ),
    (
        "constraint without right operand",
        PREFIX + "<urn:a> a odrl:Set ; odrl:permission [ "
        "odrl:action odrl:use ; odrl:constraint [ odrl:leftOperand odrl:count ; "
        "odrl:operator odrl:lt ] ].",
        "missing rightOperand",
    ),
    (
        "cyclic inheritFrom",
        PREFIX + "<urn:a> a odrl:Set ; odrl:inheritFrom <urn:b> ; "
        "odrl:permission [ odrl:action odrl:use ].\n<urn:b> a odrl:Set ; odrl:inheritFrom <urn:a> ;"
        " odrl:permission [ odrl:action odrl:use ].",
        "cyclic inheritFrom",
    ),
    (
        "self inheritFrom",
        PREFIX + "<urn:a> a odrl:Set ; odrl:inheritFrom <urn:a> ; odrl:permission [ odrl:action odrl:use ].",
        "cyclic inheritFrom",
    ),
    (
        "unavailable parent",
        PREFIX + "<urn:a> a odrl:Set ; odrl:inheritFrom <https://x.example/p>"
        " ; odrl:permission [ odrl:action odrl:use ].",
        "parent policy not available",
    ),
    (
        "action literal",
        PREFIX + '<urn:a> a odrl:Set ; odrl:permission [ odrl:action "use" ].',
        "is a literal",
    ),
    ("not UTF-8", b'{"@type": "\xff\xfe"}', "not UTF-8"),
    (
        "unknown conflict term",
        PREFIX + "<urn:a> a odrl:Set ; odrl:conflict odrl:maybe ; odrl:permission [ odrl:action odrl:use ].",
        "unknown conflict strategy",
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_clear_error(name: str, text: str | bytes, expected: str) -> None:
    with pytest.raises(PolicyError) as err:
        load_policy(text) if isinstance(text, str) else policy_from_graph(parse_text(text))
    assert expected in str(err.value)


def test_deep_logical_nesting_is_refused_quickly() -> None:
    depth = 200
    lines = [
        PREFIX,
        "<urn:p> a odrl:Set ; odrl:permission [ odrl:action odrl:use ; odrl:constraint <urn:c0> ] .",
    ]
    for i in range(depth):
        lines.append(f"<urn:c{i}> odrl:and <urn:c{i + 1}> .")
    lines.append(
        f"<urn:c{depth}> odrl:leftOperand odrl:count ; odrl:operator odrl:lt ; odrl:rightOperand 1 ."
    )
    with pytest.raises(PolicyError) as err:
        load_policy("\n".join(lines))
    assert "nested deeper than" in str(err.value)


def test_self_referencing_logical_constraint_terminates() -> None:
    ttl = PREFIX + (
        "<urn:p> a odrl:Set ; odrl:permission [ odrl:action odrl:use ; "
        "odrl:constraint <urn:c> ] .\n<urn:c> odrl:or <urn:c> ."
    )
    with pytest.raises(PolicyError, match="nested deeper than"):
        load_policy(ttl)


def test_ten_megabyte_policy_is_refused_fast() -> None:
    big = '{"@type": "Set", "x": "' + "a" * (10 * 1024 * 1024) + '"}'
    t = time.perf_counter()
    with pytest.raises(PolicyError, match="the limit is"):
        load_policy(big)
    assert time.perf_counter() - t < 5  # refused by size, not parsed


def test_strict_mode_reports_unknown_terms_with_locations() -> None:
    ttl = PREFIX + (
        "<urn:p> a odrl:Set ; odrl:permission <urn:r> .\n"
        "<urn:r> odrl:action <urn:act:frobnicate> ; odrl:constraint <urn:c> .\n"
        "<urn:c> odrl:leftOperand <urn:op:mood> ; odrl:operator odrl:resembles ; "
        'odrl:rightOperand "x" .'
    )
    load_policy(ttl)  # lenient: kept, and denied at evaluation
    with pytest.raises(PolicyError) as err:
        load_policy(ttl, strict=True)
    text = str(err.value)
    assert "permission 1 (urn:r): unknown action urn:act:frobnicate" in text
    assert "constraint 1 (urn:c): unknown operator odrl:resembles" in text
    assert "unknown left operand urn:op:mood" in text


def test_bad_datetime_right_operand_is_located() -> None:
    ttl = PREFIX + (
        "<urn:p> a odrl:Set ; odrl:permission <urn:r> .\n"
        "<urn:r> odrl:action odrl:use ; odrl:constraint <urn:c> .\n"
        "<urn:c> odrl:leftOperand odrl:dateTime ; odrl:operator odrl:lt ; "
        'odrl:rightOperand "next tuesday" .'
    )
    with pytest.raises(
        PolicyError, match=r"constraint 1 \(urn:c\): odrl:dateTime: right operand 'next tuesday'"
    ):
        load_policy(ttl, strict=True)


def test_dsp_context_alone_gives_a_helpful_error() -> None:
    doc = {"@context": [DSP], "@type": "Offer", "@id": "urn:o", "permission": [{"action": "use"}]}
    with pytest.raises(PolicyError, match="not defined by the document's @context"):
        load_policy(doc)


def test_a_lone_request_parses_as_a_policy() -> None:
    ttl = PREFIX + (
        "<urn:req> a odrl:Request ; odrl:permission [ odrl:assignee <urn:alice> ; "
        "odrl:action odrl:read ; odrl:target <urn:x> ] ."
    )
    pol = load_policy(ttl)
    assert pol.type == O + "Request" and pol.permissions[0].assignees[0].iri == "urn:alice"

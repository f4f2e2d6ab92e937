"""Attested participant facts (jurisdiction, certifications, groups, participant IRI) as the
policy engine reads them, the derived export status, and the cross-border and group templates
decided from real DAT attributes by both the explaining evaluator and the compiled decider."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from connector.identity.participants import participant_iri
from connector.odrl import terms as T
from connector.odrl.compile import DecisionRequest, compile_policy
from connector.odrl.evaluate import evaluate
from connector.odrl.facts import ATTESTED, DERIVED, HELD, fact_values, world_facts
from connector.odrl.model import Request, World
from connector.odrl.parse import load_policy
from connector.odrl.templates import fill
from connector.usage.crossborder import (
    ASSESSED_EXPORT,
    DOMESTIC,
    UNASSESSED_EXPORT,
    derived_facts,
    provider_facts,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
PID = "0A:1B:keyid:2C:3D"
SHANGHAI = {
    "jurisdiction": {"country": "CN", "subdivision": "CN-SH", "zone": "lingang"},
    "certifications": ("urn:assessment:2026-7",),
    "groups": ("partners", "suppliers"),
    "participantIri": participant_iri(PID),
    "securityProfile": "idsc:BASE_SECURITY_PROFILE",
}
BERLIN = {
    "jurisdiction": {"country": "DE", "subdivision": "DE-BE"},
    "certifications": (),
    "groups": (),
    "participantIri": participant_iri("11:22:keyid:33:44"),
}
NOWHERE: dict[str, Any] = {"groups": ()}


def test_operands_are_known_and_have_a_curie() -> None:
    vocab = T.vocabulary()
    for operand in T.DSF_LEFT_OPERANDS:
        assert vocab.known_left_operand(operand)
        assert T.short(operand).startswith("dsf:")
        assert T.expand_curie(T.short(operand)) == operand
    assert {T.JURISDICTION, T.CERTIFICATION, T.GROUP, T.PARTICIPANT} <= ATTESTED
    assert T.REGISTERED_ASSESSMENT in HELD and T.EXPORT_STATUS in DERIVED


def test_the_vocabulary_file_defines_every_operand() -> None:
    from rdflib import RDF, RDFS, URIRef

    from connector.vocab import ODRL, ontology_graph

    g = ontology_graph("https://w3id.org/dataspace-connector/facts#")
    for operand in T.DSF_LEFT_OPERANDS:
        assert (URIRef(operand), RDF.type, ODRL.LeftOperand) in g
        assert g.value(URIRef(operand), RDFS.label) and g.value(URIRef(operand), RDFS.comment)


def test_fact_values_of_attested_attributes() -> None:
    facts = fact_values(SHANGHAI)
    assert facts[T.JURISDICTION] == (
        "urn:jurisdiction:CN",
        "urn:jurisdiction:CN-SH",
        "urn:jurisdiction:CN-SH:lingang",
    )
    assert facts[T.CERTIFICATION] == ("urn:assessment:2026-7",)
    assert facts[T.GROUP] == ("urn:group:partners", "urn:group:suppliers")
    assert facts[T.PARTICIPANT] == (participant_iri(PID),)
    none = fact_values(NOWHERE)
    assert not {T.JURISDICTION, T.CERTIFICATION, T.GROUP, T.PARTICIPANT} & set(none)
    # malformed values (not from a verified token) are left out: an absent fact denies
    odd = fact_values(
        {"jurisdiction": {"country": "XX"}, "groups": ["Bad Name", "ok"], "certifications": "urn:x:1"}
    )
    assert T.JURISDICTION not in odd and odd[T.GROUP] == ("urn:group:ok",)
    assert T.CERTIFICATION not in odd


HELD_CN = {
    **provider_facts({"jurisdiction": {"country": "CN", "subdivision": "CN-BJ"}}),
    T.REGISTERED_ASSESSMENT: ("urn:assessment:2026-7",),
}


@pytest.mark.parametrize(
    ("attested", "held", "status"),
    [
        (SHANGHAI, HELD_CN, DOMESTIC),  # another subdivision, same country: no border
        (BERLIN, HELD_CN, UNASSESSED_EXPORT),
        ({**BERLIN, "certifications": ("urn:assessment:2026-7",)}, HELD_CN, ASSESSED_EXPORT),
        ({**BERLIN, "certifications": ("urn:assessment:other",)}, HELD_CN, UNASSESSED_EXPORT),
        (NOWHERE, HELD_CN, UNASSESSED_EXPORT),  # unknown counts as abroad
        ({"certifications": ("urn:assessment:2026-7",)}, HELD_CN, ASSESSED_EXPORT),
        (SHANGHAI, {}, UNASSESSED_EXPORT),  # the provider's country unknown: an export
        (SHANGHAI, {T.REGISTERED_ASSESSMENT: ("urn:assessment:2026-7",)}, ASSESSED_EXPORT),
        (BERLIN, {T.PROVIDER_JURISDICTION: ("urn:jurisdiction:DE",)}, DOMESTIC),
    ],
)
def test_derived_export_status(attested: Any, held: Any, status: str) -> None:
    assert derived_facts(attested, held) == {T.EXPORT_STATUS: (status,)}


def test_provider_facts() -> None:
    assert provider_facts({"jurisdiction": {"country": "DE"}}) == {
        T.PROVIDER_JURISDICTION: ("urn:jurisdiction:DE",)
    }
    assert provider_facts({}) == {}


def _decide(doc: dict[str, Any], facts: dict[str, tuple[str, ...]]) -> tuple[bool, bool]:
    """The same decision by the explaining evaluator and the compiled decider."""
    policy = load_policy(doc, strict=True)
    typed = world_facts({}) | {k: tuple(_iri(v) for v in vs) for k, vs in facts.items()}
    report = evaluate(policy, Request(action=T.USE), World(now=NOW, facts=typed))
    compiled = compile_policy(policy)(DecisionRequest(action=T.USE, now=NOW, context=facts))
    return report.permit, compiled.permit


def _iri(v: str) -> Any:
    from connector.odrl.model import Value

    return Value.iri(v)


def _facts(attested: dict[str, Any], held: dict[str, Any] | None = None) -> dict[str, Any]:
    held = held or {}
    return {**fact_values(attested), **held, **derived_facts(attested, held)}


@pytest.mark.parametrize(
    ("template", "params", "attested", "permit"),
    [
        ("jurisdiction-restricted", {"jurisdiction": "urn:jurisdiction:CN"}, SHANGHAI, True),
        ("jurisdiction-restricted", {"jurisdiction": "urn:jurisdiction:CN-SH"}, SHANGHAI, True),
        ("jurisdiction-restricted", {"jurisdiction": "urn:jurisdiction:CN"}, BERLIN, False),
        (
            "jurisdiction-restricted",
            {"jurisdiction": "urn:jurisdiction:CN", "jurisdiction2": "urn:jurisdiction:DE"},
            BERLIN,
            True,
        ),
        ("jurisdiction-restricted", {"jurisdiction": "urn:jurisdiction:CN"}, NOWHERE, False),
        ("jurisdiction-excluded", {"jurisdiction": "urn:jurisdiction:CN"}, SHANGHAI, False),
        ("jurisdiction-excluded", {"jurisdiction": "urn:jurisdiction:CN"}, BERLIN, True),
        (
            "jurisdiction-excluded",
            {"jurisdiction": "urn:jurisdiction:US", "jurisdiction2": "urn:jurisdiction:DE"},
            BERLIN,
            False,
        ),
        ("jurisdiction-excluded", {"jurisdiction": "urn:jurisdiction:CN"}, NOWHERE, False),
        ("group-restricted", {"group": "urn:group:partners"}, SHANGHAI, True),
        ("group-restricted", {"group": "urn:group:partners"}, BERLIN, False),
    ],
)
def test_templates_decide_on_attested_attributes(
    template: str, params: dict[str, str], attested: dict[str, Any], permit: bool
) -> None:
    doc = fill(template, params, policy_id="urn:uuid:p", assigner="urn:participant:provider")
    assert _decide(doc, _facts(attested)) == (permit, permit)


@pytest.mark.parametrize(
    ("attested", "permit"),
    [(SHANGHAI, True), (BERLIN, False), ({**BERLIN, "certifications": ("urn:assessment:2026-7",)}, True)],
)
def test_export_assessment_with_registered_references(attested: Any, permit: bool) -> None:
    doc = fill("export-assessment", {}, policy_id="urn:uuid:p")
    assert _decide(doc, _facts(attested, HELD_CN)) == (permit, permit)


def test_allow_usage_assignee_takes_a_participant_id() -> None:
    doc = fill("allow-usage", {"assignee": PID}, policy_id="urn:uuid:p")
    assert doc["permission"][0]["assignee"] == participant_iri(PID)
    policy = load_policy(doc, strict=True)
    assert [p.iri for p in policy.rules[0].assignees] == [participant_iri(PID)]
    iri = fill("allow-usage", {"assignee": participant_iri(PID)}, policy_id="urn:uuid:p")
    assert iri["permission"][0]["assignee"] == participant_iri(PID)
    decide = compile_policy(policy)
    assert decide(DecisionRequest(action=T.USE, now=NOW, assignee=participant_iri(PID))).permit
    assert not decide(DecisionRequest(action=T.USE, now=NOW, assignee=participant_iri("99:keyid:88"))).permit

"""Policies on the wire (connector.odrl.wire): every template's offer, placed in a DSP message
with the DSP contexts alone, reads as the same policy as the stored one: IDS and other
non-ODRL terms as full IRIs, ODRL terms in the DSP profile's short form, arrays where the DSP
schemas want arrays."""

from __future__ import annotations

import json

import pytest

from connector.odrl.model import LogicalConstraint, Policy
from connector.odrl.parse import load_policy
from connector.odrl.templates import fill, templates
from connector.odrl.wire import WIRE_CONTEXT, wire_rules
from connector.protocol.messages import check_policy

NAMES = [t.name for t in templates()]


def _filled(name: str) -> dict:
    t = next(x for x in templates() if x.name == name)
    return fill(name, {p.name: p.example for p in t.parameters if p.required}, policy_id="urn:uuid:policy-1")


def _shape(p: Policy) -> list:
    def c(x: object) -> object:
        if isinstance(x, LogicalConstraint):
            return (x.operator, [c(o) for o in x.operands])
        return (x.left_operand, x.operator, sorted(v.lexical for v in x.right))  # type: ignore[attr-defined]

    return [
        (
            r.kind,
            sorted(a.iri for a in r.actions),
            [c(x) for x in r.constraints],
            [(sorted(a.iri for a in d.actions), [c(x) for x in d.constraints]) for d in r.duties],
        )
        for r in (*p.permissions, *p.prohibitions, *p.obligations)
    ]


@pytest.mark.parametrize("name", NAMES)
def test_the_wire_form_is_the_same_policy_read_with_the_dsp_contexts_alone(name: str) -> None:
    stored = _filled(name)
    wire = {"@context": WIRE_CONTEXT, "@id": "urn:uuid:policy-1", "@type": "Offer", **wire_rules(stored)}
    assert _shape(load_policy(wire)) == _shape(load_policy(stored))


@pytest.mark.parametrize("name", NAMES)
def test_the_wire_form_passes_the_dsp_offer_checks_and_names_no_prefix_the_dsp_lacks(name: str) -> None:
    rules = wire_rules(_filled(name))
    check_policy({"@id": "urn:o", "@type": "Offer", **rules}, "Offer", target=False)
    text = json.dumps(rules)
    for prefix in ("idsc:", "dsc:", "dsf:", "dpv:", "ids:"):
        assert f'"{prefix}' not in text, text


def test_a_one_item_logical_constraint_stays_an_array() -> None:
    rules = wire_rules(_filled("jurisdiction-restricted"))
    assert isinstance(rules["permission"][0]["constraint"][0]["or"], list)

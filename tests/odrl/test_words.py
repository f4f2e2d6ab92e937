"""Terms in words (connector.odrl.words): every policy template reads as a sentence that names
each of its constraints; spellings the engine treats alike read alike."""

from __future__ import annotations

import pytest

from connector.odrl import templates as tm
from connector.odrl.wire import wire_rules
from connector.odrl.words import offer_in_words, short


@pytest.mark.parametrize("template", [t.name for t in tm.templates()])
def test_every_template_reads_in_words(template: str) -> None:
    t = tm.get_template(template)
    doc = tm.fill(template, {p.name: p.example for p in t.parameters})
    lines = offer_in_words(wire_rules(doc))
    assert lines and all(line and "cannot read" not in line for line in lines), lines
    # every parameter's value is said (in its short form for vocabulary terms)
    said = " ".join(lines)
    for p in t.parameters:
        if p.type in ("integer", "decimal", "duration", "string"):
            assert p.example.rstrip("Z").split(".")[0] in said, (p.name, said)


def test_the_usual_terms() -> None:
    def words(rules: dict) -> list[str]:
        return offer_in_words(rules)

    assert words(
        {
            "permission": [
                {
                    "action": "use",
                    "constraint": [
                        {"leftOperand": "count", "operator": "lteq", "rightOperand": 3},
                        {
                            "leftOperand": "dateTime",
                            "operator": "lt",
                            "rightOperand": {"@value": "2027-01-31T00:00:00Z", "@type": "xsd:dateTime"},
                        },
                        {
                            "leftOperand": "purpose",
                            "operator": "eq",
                            "rightOperand": {"@id": "dpv:ScientificResearch"},
                        },
                    ],
                }
            ]
        }
    ) == ["use, at most 3 times, until 2027-01-31T00:00:00+00:00, for ScientificResearch"]
    # the IDS spelling of the same count reads the same
    assert words(
        {
            "permission": [
                {
                    "action": "idsc:USE",
                    "constraint": [{"leftOperand": "idsc:COUNT", "operator": "idsc:LTEQ", "rightOperand": 3}],
                }
            ]
        }
    ) == ["use, at most 3 times"]
    assert words({"prohibition": [{"action": "distribute"}]}) == ["never distribute"]


def test_short_keeps_iris_without_a_last_segment() -> None:
    assert short("https://connector.example/") == "https://connector.example/"
    assert short("http://www.w3.org/ns/odrl/2/use") == "use"

"""The usage-policy templates in policies/: every one fills, parses strictly, decides its examples
as documented, and stays a valid DSP offer; fill refuses what does not fit."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.odrl import templates as tm
from connector.odrl.evaluate import evaluate
from connector.odrl.parse import load_policy
from connector.odrl.plain import request_from_json
from connector.odrl.templates import (
    Template,
    TemplateError,
    example_request,
    fill,
    get_template,
    policies_dir,
    rule_id,
    templates,
)

EXPECTED_NAMES = {
    "allow-usage",
    "connector-restricted",
    "application-restricted",
    "role-restricted",
    "location-restricted",
    "purpose-restricted",
    "event-restricted",
    "security-level-restricted",
    "interval-restricted",
    "duration-restricted",
    "n-times-usage",
    "use-and-delete-after",
    "modify-in-transit",
    "modify-at-rest",
    "local-logging",
    "remote-notification",
    "attach-policy-for-third-party",
    "distribute-only-if-encrypted",
    "perpetual-sale",
    "rental",
    "state-restricted",
    "prohibit-access",
}
# Templates of this connector's data spaces with no IDS usage policy class.
NO_IDS_CLASS = {
    "prohibit-access",
    "jurisdiction-restricted",
    "jurisdiction-excluded",
    "export-assessment",
    "group-restricted",
}
EXPECTED_NAMES |= NO_IDS_CLASS
POLICY_ID = "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e"
TARGET = "urn:asset:weather-2026"
ASSIGNER = "urn:participant:provider"
XSD = "http://www.w3.org/2001/XMLSchema#"
DSP_SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "dsp" / "schemas"

ALL = templates()
EXAMPLES = [(t, e) for t in ALL for e in t.examples]


def _example_id(case: tuple[Template, Any]) -> str:
    t, e = case
    return f"{t.name}:{e.name}"


# --------------------------------------------------------------------------- the catalogue


def test_every_issue_template_is_shipped_and_nothing_else() -> None:
    assert {t.name for t in ALL} == EXPECTED_NAMES
    assert [t.name for t in ALL] == sorted(EXPECTED_NAMES)
    files = {p.stem for p in policies_dir().glob("*.json")}
    assert files == EXPECTED_NAMES
    assert (policies_dir() / "README.md").is_file()
    assert not (policies_dir() / ".keep").exists()


def test_templates_are_loaded_once() -> None:
    assert templates()[0] is templates()[0]
    assert get_template("rental") is get_template("rental")


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_template_metadata(t: Template) -> None:
    assert t.title and t.description.endswith(".")
    if t.name == "prohibit-access":
        assert t.ids_class is None
        assert "denies everything" in t.description.lower()
    elif t.name in NO_IDS_CLASS:
        assert t.ids_class is None
        assert "IDS defines no usage policy class" in t.description
    else:
        assert t.ids_class is not None and re.fullmatch(r"idsc:[A-Z_]+", t.ids_class)
    for p in t.parameters:
        assert p.type in ("iri", "dateTime", "duration", "integer", "decimal", "string")
        assert p.description and p.example
        assert not (p.required and p.default is not None)


def test_ids_classes_are_those_of_the_information_model() -> None:
    from connector.vocab import vocab_dir

    ttl = (vocab_dir() / "ids" / "ids-infomodel-4.2.0.ttl").read_text(encoding="utf-8")
    classes = set(re.findall(r"^(idsc:[A-Z_]+) a ids:UsagePolicyClass", ttl, re.MULTILINE))
    used = {t.ids_class for t in ALL if t.ids_class}
    assert used == classes  # every IDS usage policy class, each once
    assert len(used) == len(ALL) - len(NO_IDS_CLASS)


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_examples_cover_both_decisions(t: Template) -> None:
    expects = {e.expect for e in t.examples}
    if t.name == "prohibit-access":
        assert expects == {"deny"}  # nothing can be permitted
        assert len(t.examples) >= 2
    else:
        assert expects == {"permit", "deny"}


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_readme_lists_the_template(t: Template) -> None:
    readme = (policies_dir() / "README.md").read_text(encoding="utf-8")
    row = next((line for line in readme.splitlines() if line.startswith(f"| `{t.name}`")), None)
    assert row is not None
    assert (t.ids_class or "none") in row
    for p in t.parameters:
        assert f"`{p.name}`" in row


# --------------------------------------------------------------------------- filled policies


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
@pytest.mark.parametrize("target", [TARGET, None])
def test_parameter_examples_fill_into_a_strictly_valid_policy(t: Template, target: str | None) -> None:
    doc = fill(
        t.name,
        {p.name: p.example for p in t.parameters},
        policy_id=POLICY_ID,
        target=target,
        assigner=ASSIGNER,
    )
    assert "{{" not in json.dumps(doc)
    policy = load_policy(doc, strict=True)
    assert policy.id == POLICY_ID
    assert policy.type == "http://www.w3.org/ns/odrl/2/Offer"
    for rule in policy.rules:
        assert [a.iri for a in rule.targets] == ([target] if target else [])
        assert [p.iri for p in rule.assigners] == [ASSIGNER]


@pytest.mark.parametrize("case", EXAMPLES, ids=_example_id)
@pytest.mark.parametrize("target", [TARGET, None])
def test_example_decision(case: tuple[Template, Any], target: str | None) -> None:
    t, example = case
    doc = fill(t.name, example.params, policy_id=POLICY_ID, target=target, assigner=ASSIGNER)
    policy = load_policy(doc, strict=True)
    request, world = request_from_json(example_request(example, doc))
    report = evaluate(policy, request, world)
    assert report.decision == example.expect.upper(), report.explanation


def test_a_request_for_another_asset_is_denied() -> None:
    t = get_template("allow-usage")
    doc = fill(t.name, {}, target=TARGET)
    request, world = request_from_json(
        {"action": "use", "target": "urn:asset:other", "world": {"now": "2026-01-01T00:00:00Z"}}
    )
    assert not evaluate(load_policy(doc, strict=True), request, world).permit


def test_without_values_the_policy_gets_a_fresh_uuid_and_no_target_or_assigner() -> None:
    a, b = fill("local-logging", {}), fill("local-logging", {})
    assert re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", a["@id"])
    assert a["@id"] != b["@id"]
    assert "target" not in a and "assigner" not in a
    duty = a["permission"][0]["duty"][0]
    assert duty["@id"] == rule_id(a["@id"], "log") == a["@id"] + "#log"


def test_rule_ids_stay_valid_when_the_policy_id_has_a_fragment() -> None:
    assert rule_id("https://p.example/policies#7", "log") == "https://p.example/policies#7-log"
    doc = fill("local-logging", {}, policy_id="https://p.example/policies#7")
    load_policy(doc, strict=True)


def test_typed_values() -> None:
    doc = fill(
        "rental",
        {
            "price": "200.50",
            "start": "2026-01-01",
            "end": "2026-12-31T23:59:59+01:00",
            "paymentInterval": "P7D",
        },
        policy_id=POLICY_ID,
    )
    perm = doc["permission"][0]
    start, end = (c["rightOperand"] for c in perm["constraint"])
    assert start == {"@value": "2026-01-01T00:00:00Z", "@type": XSD + "dateTime"}
    assert end == {"@value": "2026-12-31T23:59:59+01:00", "@type": XSD + "dateTime"}
    pay, interval = perm["duty"][0]["constraint"]
    assert pay["rightOperand"] == {"@value": "200.50", "@type": XSD + "decimal"}
    assert pay["odrl:unit"] == {"@id": "http://dbpedia.org/resource/Euro"}  # the default
    assert interval["rightOperand"] == {"@value": "P7D", "@type": XSD + "duration"}
    n = fill("n-times-usage", {"max": "007"})
    assert n["permission"][0]["constraint"][0]["rightOperand"] == {"@value": "7", "@type": XSD + "integer"}


def test_iri_values_expand_prefixes_and_are_node_references() -> None:
    doc = fill("role-restricted", {"role": "dsc:Consumer"})
    right = doc["permission"][0]["constraint"][0]["rightOperand"]
    assert right == {"@id": "https://w3id.org/dataspace-connector/ns#Consumer"}
    allow = fill("allow-usage", {"assignee": "urn:participant:a"}, target="urn:asset:1")
    assert allow["permission"][0]["assignee"] == "urn:participant:a"  # @id-typed term: string
    assert allow["target"] == "urn:asset:1"


def test_unset_optional_parameter_removes_what_it_fills() -> None:
    allow = fill("allow-usage", {})
    assert allow["permission"] == [{"action": "use"}]
    rental = fill("rental", {"price": "1", "start": "2026-01-01T00:00:00Z"})
    constraints = rental["permission"][0]["constraint"]
    assert [c["operator"] for c in constraints] == ["gteq"]  # the end constraint is gone
    load_policy(rental, strict=True)


def test_reserved_values_may_come_with_the_parameters() -> None:
    doc = fill(
        "n-times-usage", {"max": "3", "target": "urn:asset:1", "policyId": POLICY_ID, "assigner": ASSIGNER}
    )
    assert (doc["@id"], doc["target"], doc["assigner"]) == (POLICY_ID, "urn:asset:1", ASSIGNER)
    with pytest.raises(TemplateError, match="target is given twice"):
        fill("n-times-usage", {"max": "3", "target": "urn:asset:1"}, target="urn:asset:2")


def test_fill_does_not_change_the_template() -> None:
    before = json.dumps(get_template("rental").policy, sort_keys=True)
    fill("rental", {"price": "1", "start": "2026-01-01T00:00:00Z"}, target="urn:asset:1")
    assert json.dumps(get_template("rental").policy, sort_keys=True) == before


@pytest.mark.skipif(not DSP_SCHEMAS.is_dir(), reason="DSP conformance schemas not available")
@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_filled_offers_are_valid_dsp_offers(t: Template) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    resources = []
    for f in DSP_SCHEMAS.rglob("*.json"):
        # upstream quirk: some $refs lack the "/" after "#"
        schema = json.loads(f.read_text(encoding="utf-8").replace("#definitions/", "#/definitions/"))
        resources.append((schema["$id"], referencing.Resource.from_contents(schema)))
    registry = referencing.Registry().with_resources(resources)
    base = "https://w3id.org/dspace/2025/1/negotiation/contract-schema.json#/definitions/"
    values = {p.name: p.example for p in t.parameters}
    # in a negotiation message the offer names its target; in a catalog it must not
    for definition, target in (("MessageOffer", TARGET), ("Offer", None)):
        validator = jsonschema.Draft201909Validator({"$ref": base + definition}, registry=registry)
        doc = fill(t.name, values, target=target, assigner=ASSIGNER)
        errors = [e.message for e in validator.iter_errors(doc)]
        assert not errors, errors


# --------------------------------------------------------------------------- fill errors


def test_unknown_template_lists_the_known_ones() -> None:
    with pytest.raises(TemplateError, match="unknown policy template 'n-times'") as err:
        fill("n-times", {})
    assert "n-times-usage" in str(err.value) and "allow-usage" in str(err.value)
    with pytest.raises(TemplateError):
        get_template("../vocab/catalog")


def test_unknown_parameter() -> None:
    with pytest.raises(TemplateError, match=r"no parameter 'maximum'.*its parameters: max"):
        fill("n-times-usage", {"max": "3", "maximum": "4"})


def test_missing_required_parameter() -> None:
    with pytest.raises(TemplateError, match="missing required parameter 'max'"):
        fill("n-times-usage", {})
    with pytest.raises(TemplateError, match="'start'"):
        fill("interval-restricted", {"end": "2026-01-01T00:00:00Z"})


@pytest.mark.parametrize(
    ("template", "key", "value"),
    [
        ("interval-restricted", "start", "yesterday"),
        ("interval-restricted", "start", "2026-13-01T00:00:00Z"),
        ("interval-restricted", "start", ""),
        ("duration-restricted", "duration", "30 days"),
        ("duration-restricted", "duration", "P"),
        ("duration-restricted", "duration", "PT"),
        ("duration-restricted", "duration", "P2W"),  # ISO 8601 weeks are no xsd:duration
        ("duration-restricted", "duration", "-P1D"),
        ("n-times-usage", "max", "-1"),
        ("n-times-usage", "max", "2.5"),
        ("n-times-usage", "max", "ten"),
        ("n-times-usage", "max", "1e3"),
        ("perpetual-sale", "price", "-5"),
        ("perpetual-sale", "price", "NaN"),
        ("perpetual-sale", "price", "1,50"),
        ("purpose-restricted", "purpose", "research"),  # a bare word is no IRI
        ("purpose-restricted", "purpose", "https://example.com/a b"),
        ("purpose-restricted", "purpose", "dpv:"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(template: str, key: str, value: str) -> None:
    t = get_template(template)
    values = {p.name: p.example for p in t.parameters if p.required}
    values[key] = value
    with pytest.raises(TemplateError, match=f"parameter {key!r}"):
        fill(template, values)


def test_a_value_must_be_text() -> None:
    with pytest.raises(TemplateError, match="must be a string"):
        fill("n-times-usage", {"max": 3})  # type: ignore[dict-item]


@pytest.mark.parametrize("bad", ["not an iri", 'urn:x"}, "permission": [', "a"])
def test_bad_policy_id_target_and_assigner(bad: str) -> None:
    for kw in ("policy_id", "target", "assigner"):
        with pytest.raises(TemplateError):
            fill("allow-usage", {}, **{kw: bad})


INJECTION = '"}, "permission": [{"action": "use"}], "x": {"a": "'


def test_injection_into_an_iri_parameter_is_refused() -> None:
    with pytest.raises(TemplateError, match="parameter 'purpose'"):
        fill("purpose-restricted", {"purpose": INJECTION})
    with pytest.raises(TemplateError, match="parameter 'purpose'"):
        fill("purpose-restricted", {"purpose": "urn:x" + INJECTION})
    with pytest.raises(TemplateError, match="parameter 'max'"):
        fill("n-times-usage", {"max": "1" + INJECTION})


# --------------------------------------------------------------------------- string values and
# template files, with templates of the test's own


@pytest.fixture
def own_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(tm, "policies_dir", lambda: tmp_path)
    tm._templates.cache_clear()
    yield tmp_path
    tm._templates.cache_clear()


def _write(folder: Path, stem: str, changes: dict[str, Any] | None = None) -> None:
    doc: dict[str, Any] = {
        "name": stem,
        "title": "Path restricted",
        "idsClass": None,
        "description": "Permits use of one field.",
        "enforcedAt": ["dataPlane"],
        "parameters": [
            {
                "name": "path",
                "type": "string",
                "required": True,
                "description": "A JsonPath.",
                "example": "$.name",
            }
        ],
        "policy": {
            "@context": [
                "https://w3id.org/dspace/2025/1/context.jsonld",
                "https://w3id.org/dspace/2025/1/odrl-profile.jsonld",
                {"idsc": "https://w3id.org/idsa/code/"},
            ],
            "@type": "Offer",
            "@id": "{{policyId}}",
            "target": "{{target}}",
            "permission": [
                {
                    "action": "use",
                    "constraint": [
                        {"leftOperand": "idsc:PATH", "operator": "eq", "rightOperand": "{{path}}"}
                    ],
                }
            ],
        },
        "examples": [],
    }
    doc.update(changes or {})
    (folder / f"{stem}.json").write_text(json.dumps(doc), encoding="utf-8")


def test_injection_into_a_string_parameter_stays_one_string(own_templates: Path) -> None:
    _write(own_templates, "path-restricted")
    doc = fill("path-restricted", {"path": INJECTION}, policy_id=POLICY_ID)
    assert doc["permission"] == [
        {
            "action": "use",
            "constraint": [{"leftOperand": "idsc:PATH", "operator": "eq", "rightOperand": INJECTION}],
        }
    ]
    policy = load_policy(doc, strict=True)
    assert len(policy.permissions) == 1
    assert policy.permissions[0].constraints[0].right[0].lexical == INJECTION  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(value=st.text(min_size=1, max_size=40))
def test_any_text_is_one_string_or_a_refused_iri(value: str) -> None:
    try:
        doc = fill("purpose-restricted", {"purpose": value}, policy_id=POLICY_ID)
    except TemplateError:
        return
    right = doc["permission"][0]["constraint"][0]["rightOperand"]
    assert set(right) == {"@id"}
    assert not re.search(r"[\s\"<>{}|\\^`]", right["@id"])
    assert load_policy(doc, strict=True).permissions[0].constraints[0].right[0].is_iri  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "other"}, "must be the kebab-case file name"),
        (
            {
                "parameters": [
                    {"name": "path", "type": "text", "required": True, "description": "d", "example": "x"}
                ]
            },
            "type must be one of",
        ),
        (
            {
                "parameters": [
                    {
                        "name": "target",
                        "type": "iri",
                        "required": True,
                        "description": "d",
                        "example": "urn:x",
                    }
                ]
            },
            "reserved",
        ),
        (
            {
                "parameters": [
                    {"name": "path", "type": "integer", "required": True, "description": "d", "example": "x"}
                ]
            },
            "is not a whole number",
        ),
        (
            {
                "parameters": [
                    {
                        "name": "path",
                        "type": "string",
                        "required": True,
                        "description": "d",
                        "example": "x",
                        "default": "y",
                    }
                ]
            },
            "a required parameter has no default",
        ),
        ({"parameters": []}, "names no parameter"),
        (
            {
                "parameters": [
                    {"name": "path", "type": "string", "required": True, "description": "d", "example": "x"},
                    {
                        "name": "unused",
                        "type": "string",
                        "required": True,
                        "description": "d",
                        "example": "x",
                    },
                ]
            },
            "never used",
        ),
        ({"policy": {"@id": "urn:policy:{{path}}"}}, "must be the whole string"),
        ({"policy": {"@id": "{{path}}", "permission": []}}, "where an IRI is expected"),
        (
            {"examples": [{"name": "e", "expect": "allow", "params": {}, "request": {}}]},
            "expect must be permit or deny",
        ),
        (
            {"examples": [{"name": "e", "expect": "deny", "params": {"nope": "1"}, "request": {}}]},
            "unknown parameters nope",
        ),
        ({"extra": 1}, "unknown keys extra"),
    ],
)
def test_broken_template_files_are_reported(
    own_templates: Path, changes: dict[str, Any], message: str
) -> None:
    _write(own_templates, "broken", changes)
    with pytest.raises(TemplateError, match=re.escape(message)):
        templates()


def test_unreadable_template_file(own_templates: Path) -> None:
    (own_templates / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"bad\.json: cannot read"):
        get_template("bad")


def test_readme_says_where_each_template_is_enforced() -> None:
    readme = (policies_dir() / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Where each template is enforced", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    expected = {
        "catalog, negotiation, data plane": ("catalog", "negotiation", "dataPlane"),
        "data plane and consumer local use": ("dataPlane", "consumerLocalUse"),
        "data plane only": ("dataPlane",),
        "consumer local use only": ("consumerLocalUse",),
        "data plane, consumer local use and distribution": (
            "dataPlane",
            "consumerLocalUse",
            "consumerDistribution",
        ),
    }
    seen = set()
    for row in rows:
        where, names = row.split("|")[1:3]
        points = next(v for k, v in expected.items() if where.strip().startswith(k))
        for name in re.findall(r"`([a-z-]+)`", names):
            assert get_template(name).enforced_at == points, name
            seen.add(name)
    assert seen == EXPECTED_NAMES

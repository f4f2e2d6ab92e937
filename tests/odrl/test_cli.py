"""`connector policy ...` as users run it: clear output, clear errors, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.odrl.templates import templates


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_new_then_check_then_explain(runner: CliRunner, tmp_path: Path) -> None:
    pol = tmp_path / "three.json"
    res = runner.invoke(
        main,
        ["policy", "new", "n-times-usage", "--set", "max=3", "--target", "urn:asset:x", "--out", str(pol)],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["policy", "check", str(pol)])
    assert res.exit_code == 0 and res.output.startswith("OK: odrl:Offer"), res.output
    req = tmp_path / "req.json"
    req.write_text(
        json.dumps(
            {"action": "read", "target": "urn:asset:x", "world": {"now": "2026-01-01T00:00:00Z", "count": 3}}
        )
    )
    res = runner.invoke(main, ["policy", "explain", str(pol), "--request", str(req)])
    assert res.exit_code == 1, res.output  # DENY
    assert res.output.startswith("Decision: DENY")
    assert "use number 4 (3 completed)" in res.output


def test_check_lists_every_problem_with_location(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ttl"
    bad.write_text("""@prefix odrl: <http://www.w3.org/ns/odrl/2/> .
<urn:p> a odrl:Set ; odrl:permission <urn:r> .
<urn:r> odrl:action <urn:act:zap> ; odrl:constraint <urn:c1>, <urn:c2> .
<urn:c1> odrl:leftOperand odrl:dateTime ; odrl:operator odrl:lt ; odrl:rightOperand "soon" .
<urn:c2> odrl:leftOperand <urn:mood> ; odrl:operator odrl:eq ; odrl:rightOperand "x" .
""")
    res = runner.invoke(main, ["policy", "check", str(bad)])
    assert res.exit_code == 2
    lines = res.stdout.splitlines()
    assert len(lines) == 3  # one line per problem
    assert any("permission 1 (urn:r): unknown action urn:act:zap" in x for x in lines)
    assert any(
        "constraint 1 (urn:c1): odrl:dateTime: right operand 'soon' is not a valid xsd:dateTime" in x
        for x in lines
    )
    assert any("constraint 2 (urn:c2): unknown left operand urn:mood" in x for x in lines)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "malformed JSON"),
        ('{"@context": "https://evil.example/c.jsonld", "@type": "Set"}', "refusing to load"),
    ],
)
def test_evaluate_bad_policy_is_a_clear_error(
    runner: CliRunner, tmp_path: Path, content: str, expected: str, conformance: Path
) -> None:
    pol = tmp_path / "p.json"
    pol.write_text(content)
    cases = conformance / "odrl" / "cases"
    res = runner.invoke(
        main,
        [
            "policy",
            "evaluate",
            "--policy",
            str(pol),
            "--request",
            str(cases / "requests/request-1.ttl"),
            "--sotw",
            str(cases / "sotw/temporal.ttl"),
        ],
    )
    assert res.exit_code == 2
    assert expected in res.output
    assert "Traceback" not in res.output


def test_evaluate_json_format(runner: CliRunner, conformance: Path) -> None:
    cases = conformance / "odrl" / "cases"
    res = runner.invoke(
        main,
        [
            "policy",
            "evaluate",
            "--policy",
            str(cases / "policies/policy-3.ttl"),
            "--request",
            str(cases / "requests/request-1.ttl"),
            "--sotw",
            str(cases / "sotw/temporal.ttl"),
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0
    out = res.stdout
    doc = json.loads(out)
    assert "report:PolicyReport" in json.dumps(doc)
    assert "PERMIT" in res.stderr


def test_new_refuses_unknown_template_and_bad_values(runner: CliRunner) -> None:
    res = runner.invoke(main, ["policy", "new", "no-such-template"])
    assert res.exit_code == 2 and "n-times-usage" in res.output  # lists the known ones
    res = runner.invoke(main, ["policy", "new", "n-times-usage", "--set", "max=lots"])
    assert res.exit_code == 2 and "max" in res.output
    res = runner.invoke(main, ["policy", "new", "n-times-usage", "--set", "max"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output


def test_templates_lists_all(runner: CliRunner) -> None:
    res = runner.invoke(main, ["policy", "templates"])
    assert res.exit_code == 0
    assert sum(1 for line in res.output.splitlines() if line and not line.startswith(" ")) == len(templates())


# ------------------------------------------------------------------ exit codes: 0 PERMIT, 1 DENY, 2 error


@pytest.fixture
def count_policy(tmp_path: Path) -> Path:
    pol = tmp_path / "plain.json"  # the plain-JSON rules the management API accepts
    pol.write_text(
        json.dumps(
            {
                "permission": [
                    {
                        "action": "use",
                        "constraint": [
                            {"leftOperand": "count", "operator": "lteq", "rightOperand": 3},
                            {
                                "leftOperand": "purpose",
                                "operator": "eq",
                                "rightOperand": "dpv:ScientificResearch",
                            },
                        ],
                    }
                ]
            }
        )
    )
    return pol


@pytest.mark.parametrize(
    ("count", "purpose", "code", "word"),
    [
        (2, "dpv:ScientificResearch", 0, "PERMIT"),
        (3, "dpv:ScientificResearch", 1, "DENY"),
        (0, "dpv:Marketing", 1, "DENY"),
    ],
)
def test_evaluate_and_explain_exit_with_the_decision(
    runner: CliRunner, tmp_path: Path, count_policy: Path, count: int, purpose: str, code: int, word: str
) -> None:
    req = tmp_path / "req.json"
    req.write_text(
        json.dumps(
            {"action": "use", "purpose": purpose, "world": {"now": "2026-01-01T00:00:00Z", "count": count}}
        )
    )
    res = runner.invoke(main, ["policy", "evaluate", "--policy", str(count_policy), "--request", str(req)])
    assert res.exit_code == code, res.output
    assert word in res.stderr and "report:PolicyReport" in res.stdout
    res = runner.invoke(main, ["policy", "explain", str(count_policy), "--request", str(req)])
    assert res.exit_code == code, res.output
    assert res.stdout.startswith(f"Decision: {word}")


@pytest.mark.parametrize("command", ["evaluate", "explain"])
def test_evaluate_and_explain_exit_2_on_an_error(
    runner: CliRunner, tmp_path: Path, count_policy: Path, command: str
) -> None:
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"action": "use", "world": {"count": "many"}}))
    args = (
        ["evaluate", "--policy", str(count_policy), "--request", str(req)]
        if command == "evaluate"
        else ["explain", str(count_policy), "--request", str(req)]
    )
    res = runner.invoke(main, ["policy", *args])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: request.world.count") and "Traceback" not in res.output
    help_text = runner.invoke(main, ["policy", command, "--help"]).output
    assert "0 PERMIT, 1 DENY, 2 error" in help_text


def test_check_accepts_plain_json_rules(runner: CliRunner, count_policy: Path, tmp_path: Path) -> None:
    res = runner.invoke(main, ["policy", "check", str(count_policy)])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("OK: odrl:Set")
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "permission": [
                    {
                        "action": "use",
                        "constraint": [{"leftOperand": "count", "operator": "lteq", "rightOperand": "three"}],
                    }
                ]
            }
        )
    )
    res = runner.invoke(main, ["policy", "check", str(bad)])
    assert res.exit_code == 2
    assert res.stdout.splitlines() == [
        "policy / permission 1 / constraint 1: odrl:count: right operand 'three' is not a valid number"
    ]


def test_check_refuses_an_iri_with_spaces_in_one_line(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "@context": "http://www.w3.org/ns/odrl.jsonld",
                "@type": "Set",
                "uid": "urn:p",
                "permission": [{"target": "urn:asset x", "action": "use"}],
            }
        )
    )
    res = runner.invoke(main, ["policy", "check", str(bad)])
    assert res.exit_code == 2
    assert res.stdout == "policy: 'urn:asset x' is not a valid IRI\n"


def test_templates_json_lists_class_parameters_and_enforcement(runner: CliRunner) -> None:
    res = runner.invoke(main, ["policy", "templates", "--json"])
    assert res.exit_code == 0
    listed = {t["name"]: t for t in json.loads(res.stdout)}
    assert set(listed) == {t.name for t in templates()}
    assert listed["group-restricted"]["idsClass"] is None
    rental = listed["rental"]
    assert rental["idsClass"] == "idsc:DATA_RENTAL"
    assert rental["enforcedAt"] == ["dataPlane", "consumerLocalUse"]
    interval = next(p for p in rental["parameters"] if p["name"] == "paymentInterval")
    assert interval == {
        "name": "paymentInterval",
        "type": "duration",
        "required": False,
        "default": "P1M",
        "description": interval["description"],
        "example": interval["example"],
    }
    assert listed["security-level-restricted"]["enforcedAt"] == ["catalog", "negotiation", "dataPlane"]
    assert listed["prohibit-access"]["idsClass"] is None
    points = {"catalog", "negotiation", "dataPlane", "consumerLocalUse", "consumerDistribution"}
    assert all(t["enforcedAt"] and set(t["enforcedAt"]) <= points for t in listed.values())
    assert listed["distribute-only-if-encrypted"]["enforcedAt"][-1] == "consumerDistribution"


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ({"template": "n-times-usage", "params": {"max": "3"}}, True),
        ({"id": "urn:policy:7", "policy": {"permission": [{"action": "use"}]}}, True),
        ({"template": "n-times-usage", "params": {"max": "lots"}}, False),
        ({"template": "no-such-template"}, False),
        ({"policy": {"permission": [{"action": "idsc:FLY"}]}}, False),
    ],
)
def test_check_accepts_a_management_api_policy_body(
    runner: CliRunner, tmp_path: Path, body: dict, ok: bool
) -> None:
    f = tmp_path / "body.json"
    f.write_text(json.dumps(body))
    res = runner.invoke(main, ["policy", "check", str(f)])
    assert res.exit_code == (0 if ok else 2), res.output
    assert len(res.stdout.splitlines()) == 1 and "Traceback" not in res.output

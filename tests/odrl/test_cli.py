"""`connector policy ...` as users run it: clear output, clear errors, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_new_then_check_then_explain(runner: CliRunner, tmp_path: Path) -> None:
    pol = tmp_path / "three.json"
    res = runner.invoke(main, ["policy", "new", "n-times-usage", "--set", "max=3",
                               "--target", "urn:asset:x", "--out", str(pol)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["policy", "check", str(pol)])
    assert res.exit_code == 0 and res.output.startswith("OK: odrl:Offer"), res.output
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"action": "read", "target": "urn:asset:x",
                               "world": {"now": "2026-01-01T00:00:00Z", "count": 3}}))
    res = runner.invoke(main, ["policy", "explain", str(pol), "--request", str(req)])
    assert res.exit_code == 0, res.output
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
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert any("permission urn:r: unknown action urn:act:zap" in x for x in lines)
    assert any("constraint urn:c1: right operand 'soon' is not a valid xsd:dateTime" in x
               for x in lines)
    assert any("constraint urn:c2: unknown left operand urn:mood" in x for x in lines)


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json", "malformed JSON"),
    ('{"@context": "https://evil.example/c.jsonld", "@type": "Set"}', "refusing to load"),
])
def test_evaluate_bad_policy_is_a_clear_error(runner: CliRunner, tmp_path: Path, content: str,
                                              expected: str, conformance: Path) -> None:
    pol = tmp_path / "p.json"
    pol.write_text(content)
    cases = conformance / "odrl" / "cases"
    res = runner.invoke(main, ["policy", "evaluate", "--policy", str(pol), "--request",
                               str(cases / "requests/request-1.ttl"), "--sotw",
                               str(cases / "sotw/temporal.ttl")])
    assert res.exit_code == 2
    assert expected in res.output
    assert "Traceback" not in res.output


def test_evaluate_json_format(runner: CliRunner, conformance: Path) -> None:
    cases = conformance / "odrl" / "cases"
    res = runner.invoke(main, ["policy", "evaluate", "--policy",
                               str(cases / "policies/policy-3.ttl"), "--request",
                               str(cases / "requests/request-1.ttl"), "--sotw",
                               str(cases / "sotw/temporal.ttl"), "--format", "json"])
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
    assert sum(1 for line in res.output.splitlines() if line and not line.startswith(" ")) == 22

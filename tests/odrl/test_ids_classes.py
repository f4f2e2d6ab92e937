"""The IDS community's usage-policy classes, as IDS connectors send them: every class of
USAGE-POLICY-CLASSES.md in IDS form (the IM 4.2.0 Java-infomodel frame), in the IDS-G variant
where it differs, and in ODRL form (fixtures in ids-classes/). ``connector policy check``
accepts each; each decides the qualifying request PERMIT and the other DENY, the same in every
form and in both deciders; malformed variants are refused in one line (exit 2)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.odrl import terms as T
from connector.odrl.compile import DecisionRequest, compile_policy
from connector.odrl.evaluate import evaluate
from connector.odrl.model import Constraint, Request, World
from connector.odrl.parse import load_policy, parse_text, policy_from_graph
from connector.odrl.plain import request_from_json

HERE = Path(__file__).resolve().parent / "ids-classes"
VALID = sorted(HERE.glob("*.json"))
CONSUMER = "https://consumer.example/connector"
STRANGER = "https://stranger.example/connector"
ARTIFACT = "https://provider.example/artifact/weather"
APP = "https://consumer.example/app/analytics"
GROUP = "https://consumer.example/group/analysts"
DE, FR = "http://ontologi.es/place/DE", "http://ontologi.es/place/FR"
EVENT = "https://provider.example/event/trade-fair-2026"
NOW = "2026-06-01T12:00:00Z"


def _request(
    action: str = "use", assignee: str = CONSUMER, world: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "action": action,
        "assignee": assignee,
        "target": ARTIFACT,
        **extra,
        "world": {"now": NOW, **(world or {})},
    }


def _violated(n: int) -> dict[str, Any]:
    return {"duties": {f"urn:duty:pc{n:02d}": "Violated"}}


# class number -> (a request each form permits, or None; a request each form denies)
DECISIONS: dict[int, tuple[dict[str, Any] | None, dict[str, Any]]] = {
    0: (None, _request()),
    1: (_request(), _request(assignee=STRANGER)),
    2: (
        _request(world={"facts": {"idsc:CONNECTOR": CONSUMER}}),
        _request(world={"facts": {"idsc:SYSTEM": STRANGER}}),
    ),
    3: (
        _request("display", context={"idsc:APPLICATION": APP}),
        _request("display", context={"dsc:application": "https://consumer.example/app/other"}),
    ),
    4: (
        _request(
            "display",
            world={
                "facts": {"dsc:role": "dsc:Consumer", "idsc:USER": "urn:user:alice"},
                "partOf": {"urn:user:alice": [GROUP]},
            },
        ),
        _request("display", world={"facts": {"dsc:role": "dsc:Provider", "idsc:USER": "urn:user:bob"}}),
    ),
    5: (_request(spatial=DE), _request(spatial=FR)),
    6: (_request(purpose="dpv:ScientificResearch"), _request(purpose="dpv:Marketing")),
    7: (
        _request(context={"event": EVENT}),
        _request(context={"event": "https://provider.example/event/other"}),
    ),
    8: (
        _request(world={"facts": {"idsc:SECURITY_LEVEL": "idsc:TRUST_SECURITY_PROFILE"}}),
        _request(world={"facts": {"idsc:SECURITY_LEVEL": "idsc:BASE_SECURITY_PROFILE"}}),
    ),
    9: (_request(), _request(world={"now": "2027-06-01T00:00:00Z"})),
    10: (
        _request(world={"startedAt": "2026-05-20T00:00:00Z"}),
        _request(world={"startedAt": "2026-04-01T00:00:00Z"}),
    ),
    11: (_request(world={"count": 4}), _request(world={"count": 5})),
    12: (_request(), _request(world={"now": "2027-06-01T00:00:00Z"})),
    13: (_request(), _request(world=_violated(13))),
    14: (_request(), _request("sell")),
    15: (_request(), _request(world=_violated(15))),
    16: (_request(), _request(world=_violated(16))),
    17: (_request("distribute"), _request("use")),
    18: (
        _request("distribute", world={"facts": {"idsc:ARTIFACT_STATE": "idsc:ENCRYPTED"}}),
        _request("distribute", world=_violated(18)),
    ),
    19: (_request(world={"facts": {"idsc:PAY_AMOUNT": "500.00"}}), _request(world=_violated(19))),
    20: (
        _request(
            world={
                "facts": {
                    "idsc:STATE": "https://provider.example/state/contract-active",
                    "idsc:PAYMENT": "100",
                }
            }
        ),
        _request(
            world={
                "facts": {"idsc:STATE": "https://provider.example/state/contract-terminated"},
                **_violated(20),
            }
        ),
    ),
    21: (
        _request(world={"facts": {"idsc:STATE": "https://consumer.example/state/firewall-active"}}),
        _request(),
    ),
}

MALFORMED = {
    "count-not-a-number": "idsc:COUNT: right operand 'five' is not a valid xsd:double",
    "pay-amount-placeholder": "idsc:PAY_AMOUNT: right operand '?fee' is not a valid xsd:double",
    "connector-placeholder": "idsc:CONNECTOR: right operand '?connector1URI' is not a valid absolute IRI",
    "date-time-not-a-date": "idsc:DATE_TIME: right operand '2026-02-30T11:43:00Z' is not a valid "
    "xsd:dateTime",
    "elapsed-time-not-a-duration": "idsc:ELAPSED_TIME: right operand '30 days' is not a valid xsd:duration",
    "unknown-left-operand": "constraint 1: unknown left operand idsc:MOOD",
    "unknown-operator": "constraint 1: unknown operator idsc:RESEMBLES",
    "unknown-action": "permission 1 (https://w3id.org/idsa/autogen/permission/pc01): unknown "
    "action idsc:FROBNICATE",
    "constraint-without-operator": "constraint 1: missing operator",
    "no-rule": "has no permission, prohibition or obligation",
    "trailing-comma": "malformed JSON at line 27",
    "two-documents": "malformed JSON at line 6, column 1: Extra data",
}


def _class(path: Path) -> int:
    m = re.match(r"pc(\d+)-", path.name)
    assert m, path
    return int(m.group(1))


def test_every_class_comes_in_ids_and_odrl_form() -> None:
    forms: dict[int, set[str]] = {}
    for f in VALID:
        forms.setdefault(_class(f), set()).add(f.name.split("-")[1])
    assert sorted(forms) == list(range(22))  # the 21 IDS classes and prohibit-access
    for n, have in forms.items():
        assert "odrl" in have and have & {"ids", "idsg"}, (n, have)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_check_accepts(path: Path) -> None:
    res = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("OK: odrl:"), res.stdout


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_check_refuses_malformed_in_one_line(name: str) -> None:
    res = CliRunner().invoke(main, ["policy", "check", str(HERE / "malformed" / f"{name}.json")])
    assert res.exit_code == 2, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 1, lines
    assert MALFORMED[name] in lines[0], lines[0]
    assert "Traceback" not in res.output


def test_malformed_set_is_complete() -> None:
    assert {p.stem for p in (HERE / "malformed").glob("*.json")} == set(MALFORMED)


def test_a_literal_that_is_not_a_number_prints_no_traceback(tmp_path: Path) -> None:
    """rdflib logs a traceback for "five"^^xsd:double; the CLI prints one line instead."""
    text = (HERE / "malformed" / "count-not-a-number.json").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(text.replace('"xsd:double"', '"http://www.w3.org/2001/XMLSchema#double"'))
    proc = subprocess.run(
        [sys.executable, "-m", "connector", "policy", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Failed to convert" not in proc.stderr
    assert proc.stdout.count("\n") == 1 and "'five' is not a valid xsd:double" in proc.stdout


def _decision_request(request: Request, world: World) -> DecisionRequest:
    context = {
        k: tuple(v.lexical if v.is_iri else (v.py if v.py is not None else v.lexical) for v in vs)
        for k, vs in {**world.facts, **request.context}.items()
    }
    return DecisionRequest(
        action=request.action,
        now=world.now,
        assignee=request.assignee,
        target=request.target,
        count=world.counts.get((None, None), 0),
        started_at=world.usage_started.get((None, None)),
        context=context,
        duties={k: s.deontic for k, s in world.duty_states.items()},
        part_of=world.part_of,
        types=world.types,
    )


CASES = [
    (f, expect)
    for f in VALID
    for expect in ("permit", "deny")
    if not (expect == "permit" and DECISIONS[_class(f)][0] is None)
]


@pytest.mark.parametrize(("path", "expect"), CASES, ids=lambda x: x.stem if isinstance(x, Path) else x)
def test_each_form_decides_as_its_class(path: Path, expect: str) -> None:
    permit_request, deny_request = DECISIONS[_class(path)]
    data = permit_request if expect == "permit" else deny_request
    assert data is not None
    policy = load_policy(path, strict=True)
    request, world = request_from_json(data)
    report = evaluate(policy, request, world)
    decision = compile_policy(policy)(_decision_request(request, world))
    assert report.permit == (expect == "permit"), report.explanation
    assert decision.permit == report.permit, decision.reason
    assert "_:" not in report.explanation and "_:" not in decision.reason


# ------------------------------------------------------------------ what the forms are read as


def test_compact_rule_with_two_actions_becomes_two_atomic_rules() -> None:
    policy = load_policy(HERE / "pc03-odrl-application-restricted.json", strict=True)
    assert [r.position for r in policy.permissions] == ["1.1", "1.2"]
    assert {r.actions[0].iri for r in policy.permissions} == {T.O + "execute", T.O + "display"}
    for rule in policy.permissions:  # constraints, target and parties copied to each
        assert len(rule.actions) == 1 and len(rule.constraints) == 1
        assert rule.targets[0].iri == ARTIFACT and rule.assignees[0].iri == CONSUMER
    request, world = request_from_json(_request("print", context={"idsc:APPLICATION": APP}))
    report = evaluate(policy, request, world)
    assert not report.permit
    assert (
        "permission 1.1 of agreement https://provider.example/policy/pc03 does not apply"
        in report.explanation
    )
    assert "permission 1.2 of agreement" in report.explanation


def test_compact_rule_with_two_assignees_and_duties_copied() -> None:
    policy = load_policy(HERE / "pc01-odrl-allow-data-usage.json", strict=True)
    assert {r.assignees[0].iri for r in policy.permissions} == {CONSUMER, "https://partner.example/connector"}
    rental = load_policy(HERE / "pc20-odrl-rental.json", strict=True)
    assert len(rental.permissions) == 2
    assert all(r.duties[0].id == "urn:duty:pc20" and len(r.constraints) == 2 for r in rental.permissions)


def test_compact_rule_in_turtle_and_ids_form() -> None:
    ttl = """
    @prefix odrl: <http://www.w3.org/ns/odrl/2/> .
    @prefix ids: <https://w3id.org/idsa/core/> .
    @prefix idsc: <https://w3id.org/idsa/code/> .
    <urn:p> a odrl:Set ; odrl:permission <urn:r> .
    <urn:r> odrl:action odrl:read, odrl:print ; odrl:target <urn:x>, <urn:y> .
    <urn:c> a ids:ContractOffer ; ids:permission <urn:s> .
    <urn:s> ids:action idsc:READ, idsc:DISTRIBUTE ; ids:target <urn:x> .
    """
    g = parse_text(ttl, "turtle")
    odrl = policy_from_graph(g, "urn:p", strict=True)
    assert len(odrl.permissions) == 4  # 2 actions x 2 targets
    assert {(r.actions[0].iri, r.targets[0].iri) for r in odrl.permissions} == {
        (T.O + a, t) for a in ("read", "print") for t in ("urn:x", "urn:y")
    }
    assert sorted(r.label for r in odrl.permissions) == [f"permission 1.{i} (urn:r)" for i in range(1, 5)]
    ids = policy_from_graph(g, "urn:c", strict=True)
    assert {r.actions[0].iri for r in ids.permissions} == {T.O + "read", T.O + "distribute"}


def test_ids_g_operands_mean_what_the_templates_operands_mean() -> None:
    expected = {
        "idsc:CONNECTOR": T.O + "systemDevice",
        "idsc:SYSTEM_DEVICE": T.O + "systemDevice",
        "idsc:ROLE": T.ROLE,
        "idsc:APPLICATION": T.APPLICATION,
        "idsc:DATE_TIME": T.DATE_TIME,
        "idsc:PAYMENT": T.O + "payAmount",
        "idsc:RECIPIENT": T.RECIPIENT,
        "idsc:ARTIFACT_STATE": T.ARTIFACT_STATE,
        "idsc:LOG_LEVEL": T.LOG_LEVEL,
        "idsc:NOTIFICATION_LEVEL": T.NOTIFICATION_LEVEL,
        "idsc:TARGET_POLICY": T.TARGET_POLICY,
        "idsc:JSON_PATH": T.JSON_PATH,
        "idsc:REPLACE_WITH": T.REPLACE_WITH,
    }
    vocab = T.vocabulary()
    for written, canonical in expected.items():
        assert T.IDS_LEFT_OPERANDS[T.expand_curie(written)] == canonical
        assert vocab.known_left_operand(canonical)
    assert vocab.action_covers(T.O + "modify", T.REPLACE)  # replacing values modifies
    assert vocab.action_covers(T.USE, T.INCREMENT_COUNTER)


def test_duty_refinements_are_read_as_parameters() -> None:
    policy = load_policy(HERE / "pc13-idsg-modify-in-transit.json", strict=True)
    (duty,) = policy.permissions[0].duties
    (action,) = duty.actions
    assert action.iri == T.REPLACE
    params = {c.left_operand: c.right[0] for c in action.refinements if isinstance(c, Constraint)}
    assert params[T.REPLACE_WITH].lexical == "xxxx"
    assert params[T.JSON_PATH].lexical == "$.name" and not params[T.JSON_PATH].is_iri
    logging = load_policy(HERE / "pc15-idsg-local-logging.json", strict=True)
    (log,) = logging.permissions[0].duties[0].actions
    values = {c.left_operand: c.right[0] for c in log.refinements if isinstance(c, Constraint)}
    assert values[T.LOG_LEVEL].lexical == T.IDSC_NS + "ON_ALLOW"  # the CURIE string, expanded
    assert values[T.O + "systemDevice"].lexical == "https://clearinghouse.example/"


def test_ids_contract_parties_restrict_the_rules() -> None:
    policy = load_policy(HERE / "pc01-ids-allow-data-usage.json", strict=True)
    (rule,) = policy.permissions
    assert [p.iri for p in rule.assignees] == [CONSUMER]
    assert [p.iri for p in rule.assigners] == ["https://provider.example/connector"]

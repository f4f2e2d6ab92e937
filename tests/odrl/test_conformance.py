"""ODRL conformance: the shared FORCE/SolidLab cases and the project's own cases.

Every case is evaluated with ``connector.odrl.casefiles.evaluate_case_files`` and must reach
100 % on metric 1 (Rule-Activation-similarity) and metric 2 (Rule-Activation-Constraint-
satisfaction-similarity), agree on the decision and on the PolicyReport header (see
``casesuite``). Metric 3 (RDF isomorphism) is reported as information only.

The harness itself is tested too, without the engine: every expected report must agree with itself,
and deliberately broken copies must fail with a readable message.
"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from rdflib import RDF, Graph, Literal, URIRef

try:  # tests/odrl as a package, or the default rootdir-relative import
    from . import casesuite as cs
except ImportError:
    import casesuite as cs

SHARED_CASES = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "odrl" / "cases"
OWN_CASES = Path(__file__).resolve().parent / "cases"

# testcase-065: the upstream expected report links premise reports that it never describes (see
# "Known defect" in the shared cases/README.md), so no evaluator can meet metric 2 on it.
# It is scored on metric 1 only (plus the decision, which metric-1 data determines).
METRIC1_ONLY = {("shared", "testcase-065-alice")}


SUITES = {"shared": SHARED_CASES, "own": OWN_CASES}


def _load(folder: Path, suite: str) -> list[cs.Case]:
    # A missing folder yields no cases here and a failure in test_case_folder_present.
    return cs.load_manifest(folder, suite) if (folder / "manifest.tsv").is_file() else []


ALL_CASES = [case for suite, folder in SUITES.items() for case in _load(folder, suite)]


def _metric(case: cs.Case) -> int:
    return 1 if (case.suite, case.name) in METRIC1_ONLY else 2


def _case_id(case: cs.Case) -> str:
    if _metric(case) == 1:
        return f"{case.suite}/{case.name}-metric1-only-known-upstream-defect"
    return f"{case.suite}/{case.name}"


CASE_PARAMS = [pytest.param(c, id=_case_id(c)) for c in ALL_CASES]
OWN_PARAMS = [pytest.param(c, id=_case_id(c)) for c in ALL_CASES if c.suite == "own"]


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_case_folder_present(suite: str) -> None:
    """A missing case folder is a failure, never a skip (``../shared`` sits next to the repo)."""
    folder = SUITES[suite]
    assert (folder / "manifest.tsv").is_file(), f"ODRL conformance cases not found at {folder}"
    assert any(c.suite == suite for c in ALL_CASES), f"{folder}/manifest.tsv lists no cases"


# --------------------------------------------------------------------------- engine


@cache
def _evaluator() -> cs.Evaluator:
    from connector.odrl.casefiles import evaluate_case_files

    return evaluate_case_files


@cache
def _evaluated(case: cs.Case) -> tuple[Graph, bool]:
    return _evaluator()(case.policy, case.request, case.sotw)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_conformance(case: cs.Case) -> None:
    report, decision = _evaluated(case)
    cmp = cs.compare(cs.load_expected(case), report, decision, policy=cs.parse_turtle(case.policy))
    metric = _metric(case)
    assert cmp.ok(metric), (
        f"{case.suite}/{case.name}: {case.title}\n"
        f"(scored on metric {metric}; engine decision {'PERMIT' if decision else 'DENY'})\n"
        + cmp.summary(metric)
    )


def test_metric3_isomorphism_information(capsys: pytest.CaptureFixture[str], record_property) -> None:
    """Informational: how many evaluated reports are isomorphic to the expected ones. Never fails
    on the count (the expected reports carry optional triples inconsistently)."""
    try:
        _evaluator()
    except ImportError as exc:
        pytest.skip(f"engine not importable: {exc}")
    per_suite: dict[str, list[int]] = {}
    errors: list[str] = []
    for case in ALL_CASES:
        tally = per_suite.setdefault(case.suite, [0, 0])
        tally[1] += 1
        try:
            report, decision = _evaluated(case)
        except Exception as exc:  # reported by test_conformance; not this test's business
            errors.append(f"{case.name}: {type(exc).__name__}")
            continue
        cmp = cs.compare(cs.load_expected(case), report, decision, check_isomorphism=True)
        tally[0] += bool(cmp.isomorphic)
    line = "ODRL metric 3 (RDF isomorphism, informational): " + ", ".join(
        f"{suite} {ok}/{total}" for suite, (ok, total) in per_suite.items()
    )
    if errors:
        line += f"; {len(errors)} cases not evaluated"
    record_property("metric3", line)
    with capsys.disabled():
        print("\n" + line)


def test_cli_decision_line() -> None:
    """The CLI prints the report on stdout and PERMIT/DENY on stderr (one permit, one deny case)."""
    picks = {c.name: c for c in ALL_CASES if c.suite == "own"}
    for name, want in (
        ("testcase-101-count-lteq-4-done", "PERMIT"),
        ("testcase-102-count-lteq-5-done", "DENY"),
    ):
        case = picks[name]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "connector",
                "policy",
                "evaluate",
                "--policy",
                str(case.policy),
                "--request",
                str(case.request),
                "--sotw",
                str(case.sotw),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == (0 if want == "PERMIT" else 1), proc.stderr
        words = re.findall(r"\b(PERMIT|DENY)\b", proc.stderr)
        assert words and words[0] == want, f"{name}: stderr {proc.stderr!r}"
        report = Graph().parse(data=proc.stdout, format="turtle")
        assert cs.compare(cs.load_expected(case), report, want == "PERMIT").ok(), name


# --------------------------------------------------------------------------- harness self-tests


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_case_files_consistent(case: cs.Case) -> None:
    assert cs.check_case_files(case) == []


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_harness_expected_report_matches_itself(case: cs.Case) -> None:
    expected = cs.load_expected(case)
    decision, _ = cs.expected_decision(expected)
    cmp = cs.compare(
        expected, expected.graph, decision, policy=cs.parse_turtle(case.policy), check_isomorphism=True
    )
    assert cmp.ok(_metric(case)), cmp.summary(_metric(case))
    assert cmp.isomorphic


def test_harness_sees_the_known_defect_of_065() -> None:
    case = next(c for c in ALL_CASES if (c.suite, c.name) in METRIC1_ONLY)
    expected = cs.load_expected(case)
    cmp = cs.compare(expected, expected.graph, True)
    assert cmp.passes(1)
    assert not cmp.passes(2)
    assert "defective expected report" in cmp.summary()


def _copy(graph: Graph) -> Graph:
    out = Graph()
    for t in graph:
        out.add(t)
    return out


def _flip(graph: Graph, node, prop, a, b) -> None:
    old = graph.value(node, prop)
    graph.set((node, prop, b if old == a else a))


def _own(name: str) -> tuple[cs.Case, cs.ExpectedReport]:
    case = next(c for c in ALL_CASES if c.suite == "own" and c.name == name)
    return case, cs.load_expected(case)


def _rule_report(exp: cs.ExpectedReport, kind: URIRef):
    return next(
        rr for rr in exp.graph.objects(exp.node, cs.REPORT.ruleReport) if (rr, RDF.type, kind) in exp.graph
    )


def test_harness_flipped_activation_state_fails_metric1() -> None:
    _, exp = _own("testcase-101-count-lteq-4-done")
    got = _copy(exp.graph)
    rr = _rule_report(exp, cs.REPORT.PermissionReport)
    _flip(got, rr, cs.REPORT.activationState, cs.REPORT.Active, cs.REPORT.Inactive)
    cmp = cs.compare(exp, got, True)
    assert not cmp.passes(1)
    msg = cmp.summary()
    assert "activationState expected Active, got Inactive" in msg
    rule = exp.graph.value(rr, cs.REPORT.rule)
    assert str(rule) in msg
    assert cs.compare(exp, got, True, check_isomorphism=True).isomorphic is False


def test_harness_flipped_nested_constraint_fails_metric2() -> None:
    case, exp = _own("testcase-135-nested-and-or-satisfied")
    policy = cs.parse_turtle(case.policy)
    got = _copy(exp.graph)
    # the innermost Unsatisfied operand of the or
    node = next(n for n in got.subjects(cs.REPORT.satisfactionState, cs.REPORT.Unsatisfied))
    constraint = got.value(node, cs.REPORT.constraint)
    _flip(got, node, cs.REPORT.satisfactionState, cs.REPORT.Satisfied, cs.REPORT.Unsatisfied)
    cmp = cs.compare(exp, got, True, policy=policy)
    assert cmp.passes(1)
    assert not cmp.passes(2)
    msg = cmp.summary()
    assert str(constraint) in msg
    assert "odrl:purpose odrl:eq dpv:NonCommercialResearch" in msg
    assert "satisfactionState expected Unsatisfied, got Satisfied" in msg


def test_harness_flipped_refinement_under_action_fails_metric2() -> None:
    _, exp = _own("testcase-139-refinement-unsatisfied")
    got = _copy(exp.graph)
    action = next(got.subjects(RDF.type, cs.REPORT.ActionReport))
    refinement = got.value(action, cs.REPORT.premiseReport)
    _flip(got, refinement, cs.REPORT.satisfactionState, cs.REPORT.Satisfied, cs.REPORT.Unsatisfied)
    cmp = cs.compare(exp, got, False)
    assert cmp.passes(1) and not cmp.passes(2)
    assert "ConstraintReport for" in cmp.summary()


def test_harness_missing_premise_report_fails_metric2() -> None:
    _, exp = _own("testcase-125-window-count-ok")
    got = _copy(exp.graph)
    target = next(got.subjects(RDF.type, cs.REPORT.TargetReport))
    got.remove((None, cs.REPORT.premiseReport, target))
    got.remove((target, None, None))
    cmp = cs.compare(exp, got, True)
    msg = cmp.summary()
    assert "number of premise reports expected 7" in msg and "got 6" in msg
    assert "TargetReport: missing" in msg


def test_harness_missing_and_extra_rule_reports_fail_metric1() -> None:
    _, exp = _own("testcase-165-compact-two-rules-permission")
    got = _copy(exp.graph)
    q = _rule_report(exp, cs.REPORT.ProhibitionReport)
    rule = exp.graph.value(q, cs.REPORT.rule)
    got.set((q, cs.REPORT.rule, URIRef("urn:uuid:00000000-0000-4000-8000-000000000000")))
    msg = cs.compare(exp, got, True).summary()
    assert f"ProhibitionReport for rule <{rule}>: missing from the evaluated report" in msg
    assert "unexpected evaluated rule report(s) for rule <urn:uuid:00000000" in msg


def test_harness_decision_mismatch() -> None:
    _, exp = _own("testcase-148-conflict-perm")
    cmp = cs.compare(exp, exp.graph, False)
    assert cmp.passes(2) and not cmp.ok()
    assert "[decision] expected PERMIT (ex:decision), got DENY" in cmp.summary()
    shared = next(c for c in ALL_CASES if c.name == "testcase-061-violated")
    sexp = cs.load_expected(shared)
    assert "expected DENY (derived" in cs.compare(sexp, sexp.graph, True).summary()


def test_harness_accepts_blank_node_reports() -> None:
    """An engine may use blank nodes for its report nodes: only the IRIs it points to count."""
    _, exp = _own("testcase-137-nested-or-and-satisfied")
    from rdflib import BNode

    keep = {exp.graph.value(rr, cs.REPORT.rule) for rr in exp.graph.objects(exp.node, cs.REPORT.ruleReport)}
    mapping: dict = {}
    got = Graph()
    for s, p, o in exp.graph:
        if (
            p
            in (
                cs.REPORT.rule,
                cs.REPORT.constraint,
                cs.REPORT.policy,
                cs.REPORT.policyRequest,
                cs.REPORT.ruleRequest,
            )
            or o in keep
        ):
            new_o = o
        else:
            new_o = mapping.setdefault(o, BNode()) if str(o).startswith("urn:uuid:") else o
        got.add((mapping.setdefault(s, BNode()), p, new_o))
    assert cs.compare(exp, got, True).ok()


# --------------------------------------------------------------------------- own-case conventions


@pytest.mark.parametrize("case", OWN_PARAMS)
def test_own_case_follows_conventions(case: cs.Case) -> None:
    """Mechanical CONVENTIONS.md checks on the project's own expected reports."""
    exp = cs.load_expected(case)
    g = exp.graph
    pol_graph = cs.parse_turtle(case.policy)
    req_graph = cs.parse_turtle(case.request)
    pol = cs.policy_node(pol_graph)
    req = cs.request_node(req_graph)
    req_perm = req_graph.value(req, cs.ODRL.permission)

    assert len(list(g.objects(exp.node, cs.EX.decision))) == 1
    assert g.value(exp.node, cs.REPORT.policy) == pol
    assert g.value(exp.node, cs.REPORT.policyRequest) == req
    created = g.value(exp.node, cs.DCTERMS.created)
    assert isinstance(created, Literal)
    assert created == cs.sotw_current_time(case.sotw)

    rules = set()
    for prop in (cs.ODRL.permission, cs.ODRL.prohibition, cs.IDS.permission, cs.IDS.prohibition):
        rules |= set(pol_graph.objects(pol, prop))
    reported = {g.value(rr, cs.REPORT.rule) for rr in g.objects(exp.node, cs.REPORT.ruleReport)}
    assert reported == rules, "one rule report per permission and prohibition"
    for rr in g.objects(exp.node, cs.REPORT.ruleReport):
        assert g.value(rr, cs.REPORT.attemptState) == cs.REPORT.Attempted
        assert g.value(rr, cs.REPORT.ruleRequest) == req_perm
        for premise in cs.premise_reports(g, rr):
            constraint = g.value(premise, cs.REPORT.constraint)
            if constraint is not None:
                assert (constraint, None, None) in pol_graph, f"unknown constraint {constraint}"
    for node in set(g.subjects()) | {
        o for o in g.objects() if isinstance(o, URIRef) and (o, None, None) in g
    }:
        assert str(node).startswith("urn:uuid:"), node


def test_own_readme_lists_every_case() -> None:
    text = (OWN_CASES / "README.md").read_text(encoding="utf-8")
    missing = [c.name for c in ALL_CASES if c.suite == "own" and f"`{c.name}`" not in text]
    assert not missing

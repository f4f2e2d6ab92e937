"""Harness for ODRL evaluation cases in the FORCE / SolidLab "ODRL Test Suite" layout.

A case folder (``shared/conformance/odrl/cases/``, ``tests/odrl/cases/``) holds ``manifest.tsv``
(``test_case  policy  request  sotw  title``) and the files it names. This module loads a case the
way the upstream harness does and compares an evaluated compliance report with the expected one.

Comparison (``compare``), generalised from upstream ``src/TestCaseEvaluator.ts`` to policies with
several rules:

* **metric 1, Rule-Activation-similarity**: rule reports are matched by ``report:rule``. Every
  expected rule report must be present with equal ``activationState``, ``attemptState`` and
  ``ruleRequest``; an evaluated Permission/Prohibition report for a rule that the expected report
  does not mention is an error too (upstream insists on exactly one rule report). Evaluated
  ``DutyReport``s linked by ``report:ruleReport`` are ignored.
* **metric 2, Rule-Activation-Constraint-satisfaction-similarity**: metric 1, plus, per rule report,
  the number of premise reports (everything reachable through ``report:premiseReport``, nested
  ones included) must be equal, and every expected premise report must have the same
  ``satisfactionState`` as its evaluated counterpart: ConstraintReports matched by
  ``report:constraint``, Target/Party/Action reports by type.
* **metric 3, RDF isomorphism** after every subject is turned into a blank node (informational).
* **decision**: ``ex:decision ex:Permit|ex:Deny`` on the expected PolicyReport must equal the
  engine's decision. Where the expected report states none but has exactly one rule report (the
  upstream cases), the decision follows from it as the shared ``cases/README.md`` describes it: an
  Active PermissionReport permits, anything else denies.
* **header**: ``report:policy`` / ``report:policyRequest`` of the PolicyReport and the class of each
  matched rule report. Not part of the upstream metrics; checked separately.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rdflib import RDF, BNode, Graph, Literal, Namespace, URIRef
from rdflib.collection import Collection
from rdflib.compare import isomorphic
from rdflib.namespace import DCTERMS
from rdflib.term import Node

REPORT = Namespace("https://w3id.org/force/compliance-report#")
ODRL = Namespace("http://www.w3.org/ns/odrl/2/")
EX = Namespace("http://example.org/")
IDS = Namespace("https://w3id.org/idsa/core/")
SOTW = Namespace("https://w3id.org/force/sotw#")
TEMP_CURRENT_TIME = URIRef("http://example.com/request/currentTime")

MANIFEST_HEADER = ["test_case", "policy", "request", "sotw", "title"]

POLICY_TYPES = frozenset(
    {
        ODRL.Policy,
        ODRL.Set,
        ODRL.Offer,
        ODRL.Agreement,
        ODRL.Privacy,
        ODRL.Ticket,
        ODRL.Assertion,
        IDS.ContractOffer,
        IDS.ContractAgreement,
        IDS.ContractRequest,
    }
)
PREMISE_TYPES = (REPORT.TargetReport, REPORT.PartyReport, REPORT.ActionReport, REPORT.ConstraintReport)
DECIDING_RULE_REPORT_TYPES = (REPORT.PermissionReport, REPORT.ProhibitionReport)

Evaluator = Callable[[Path, Path, Path], tuple[Graph, bool]]


class CaseFormatError(ValueError):
    """A case file does not have the shape the suite's README prescribes."""


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Case:
    """One manifest row, with absolute paths."""

    suite: str
    name: str
    test_case: Path
    policy: Path
    request: Path
    sotw: Path
    title: str


def load_manifest(cases_dir: Path, suite: str | None = None) -> list[Case]:
    """Read ``manifest.tsv`` of a case folder (header row required)."""
    manifest = cases_dir / "manifest.tsv"
    if not manifest.is_file():
        raise FileNotFoundError(f"no manifest.tsv in {cases_dir}")
    with manifest.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or rows[0] != MANIFEST_HEADER:
        raise CaseFormatError(f"{manifest}: header must be {MANIFEST_HEADER}, got {rows[:1]}")
    cases: list[Case] = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(MANIFEST_HEADER):
            raise CaseFormatError(f"{manifest}:{lineno}: expected 5 tab-separated fields: {row}")
        tc, pol, req, sotw, title = row
        cases.append(
            Case(
                suite=suite or cases_dir.name,
                name=Path(tc).stem,
                test_case=cases_dir / tc,
                policy=cases_dir / pol,
                request=cases_dir / req,
                sotw=cases_dir / sotw,
                title=title,
            )
        )
    names = Counter(c.name for c in cases)
    dupes = [n for n, k in names.items() if k > 1]
    if dupes:
        raise CaseFormatError(f"{manifest}: duplicate test cases {dupes}")
    return cases


def parse_turtle(path: Path) -> Graph:
    return Graph().parse(path, format="turtle")


def reachable_subgraph(graph: Graph, start: Node) -> Graph:
    """Upstream ``extractGraph``: triples of ``start``, recursing into IRI objects only."""
    out = Graph()
    seen: set[Node] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        for p, o in graph.predicate_objects(node):
            out.add((node, p, o))
            if isinstance(o, URIRef) and o not in seen:
                todo.append(o)
    return out


def _one(graph: Graph, s: Node, p: Node, what: str) -> Node:
    values = list(graph.objects(s, p))
    if len(values) != 1:
        raise CaseFormatError(f"{what}: expected exactly one {_short(p)} on {_short(s)}, found {len(values)}")
    return values[0]


@dataclass(frozen=True)
class TestCaseInfo:
    node: URIRef
    title: str
    policy: URIRef
    request: URIRef
    sotw: URIRef
    expected_report: URIRef


def read_test_case(case: Case) -> tuple[TestCaseInfo, Graph]:
    """The ``ex:TestCase`` description and the whole test-case graph."""
    g = parse_turtle(case.test_case)
    nodes = list(g.subjects(RDF.type, EX.TestCase))
    if len(nodes) != 1:
        raise CaseFormatError(f"{case.test_case}: expected one ex:TestCase, found {len(nodes)}")
    tc = nodes[0]
    what = str(case.test_case)
    info = TestCaseInfo(
        node=tc,  # type: ignore[arg-type]
        title=str(_one(g, tc, DCTERMS.title, what)),
        policy=_one(g, tc, EX.policy, what),  # type: ignore[arg-type]
        request=_one(g, tc, EX.request, what),  # type: ignore[arg-type]
        sotw=_one(g, tc, EX.sotw, what),  # type: ignore[arg-type]
        expected_report=_one(g, tc, EX.expectedReport, what),  # type: ignore[arg-type]
    )
    return info, g


@dataclass(frozen=True)
class ExpectedReport:
    graph: Graph
    node: URIRef


def load_expected(case: Case) -> ExpectedReport:
    info, g = read_test_case(case)
    return ExpectedReport(reachable_subgraph(g, info.expected_report), info.expected_report)


def sotw_graph(path: Path) -> Graph:
    """Union of the triples reachable from every ``ex:includes`` value of the ``ex:Sotw`` node."""
    g = parse_turtle(path)
    nodes = list(g.subjects(RDF.type, EX.Sotw))
    if len(nodes) != 1:
        raise CaseFormatError(f"{path}: expected one ex:Sotw, found {len(nodes)}")
    out = Graph()
    for inc in g.objects(nodes[0], EX.includes):
        out += reachable_subgraph(g, inc)
    return out


def sotw_current_time(path: Path) -> Literal | None:
    value = sotw_graph(path).value(TEMP_CURRENT_TIME, DCTERMS.issued)
    return value if isinstance(value, Literal) else None


def policy_node(graph: Graph, where: str = "policy") -> URIRef:
    nodes = {s for t in POLICY_TYPES for s in graph.subjects(RDF.type, t)}
    if len(nodes) != 1:
        raise CaseFormatError(f"{where}: expected one policy node, found {sorted(nodes)}")
    return nodes.pop()  # type: ignore[return-value]


def request_node(graph: Graph, where: str = "request") -> URIRef:
    nodes = list(graph.subjects(RDF.type, ODRL.Request))
    if len(nodes) != 1:
        raise CaseFormatError(f"{where}: expected one odrl:Request, found {len(nodes)}")
    return nodes[0]  # type: ignore[return-value]


def check_case_files(case: Case) -> list[str]:
    """Consistency of one case's files with its test-case description. Empty list = fine."""
    problems: list[str] = []
    for label, path in (
        ("test case", case.test_case),
        ("policy", case.policy),
        ("request", case.request),
        ("sotw", case.sotw),
    ):
        if not path.is_file():
            problems.append(f"{label} file missing: {path}")
    if problems:
        return problems
    try:
        info, _ = read_test_case(case)
        if info.title != case.title:
            problems.append(f"manifest title {case.title!r} != dct:title {info.title!r}")
        pol = policy_node(parse_turtle(case.policy), str(case.policy))
        if pol != info.policy:
            problems.append(f"ex:policy {info.policy} but {case.policy.name} holds {pol}")
        req = request_node(parse_turtle(case.request), str(case.request))
        if req != info.request:
            problems.append(f"ex:request {info.request} but {case.request.name} holds {req}")
        sg = parse_turtle(case.sotw)
        sotws = list(sg.subjects(RDF.type, EX.Sotw))
        if sotws != [info.sotw]:
            problems.append(f"ex:sotw {info.sotw} but {case.sotw.name} holds {sotws}")
        exp = load_expected(case)
        if (exp.node, RDF.type, REPORT.PolicyReport) not in exp.graph:
            problems.append(f"expected report {exp.node} is not a report:PolicyReport")
    except CaseFormatError as exc:
        problems.append(str(exc))
    return problems


# --------------------------------------------------------------------------- comparison

_PREFIXES = (
    ("report:", str(REPORT)),
    ("odrl:", str(ODRL)),
    ("ex:", str(EX)),
    ("ids:", str(IDS)),
    ("idsc:", "https://w3id.org/idsa/code/"),
    ("dpv:", "https://w3id.org/dpv#"),
    ("xsd:", "http://www.w3.org/2001/XMLSchema#"),
)


def _short(term: object) -> str:
    if term is None:
        return "(none)"
    if isinstance(term, URIRef):
        text = str(term)
        for prefix, ns in _PREFIXES:
            if text.startswith(ns):
                return prefix + text[len(ns) :]
        return f"<{text}>"
    if isinstance(term, Literal):
        return repr(str(term)) if term.datatype is None else f'"{term}"^^{_short(term.datatype)}'
    if isinstance(term, BNode):
        return f"_:{term}"
    return str(term)


def _state(term: object) -> str:
    if isinstance(term, URIRef) and str(term).startswith(str(REPORT)):
        return str(term)[len(str(REPORT)) :]
    return _short(term)


def _values(graph: Graph, s: Node, p: Node) -> list[Node]:
    return sorted(graph.objects(s, p), key=str)


def _single(graph: Graph, s: Node, p: Node) -> Node | None:
    vals = _values(graph, s, p)
    return vals[0] if len(vals) == 1 else None


def _show_values(vals: list[Node]) -> str:
    if not vals:
        return "(none)"
    if len(vals) == 1:
        return _state(vals[0])
    return "{" + ", ".join(_state(v) for v in vals) + "}"


def premise_reports(graph: Graph, rule_report: Node) -> list[Node]:
    """Every node reachable from ``rule_report`` through ``report:premiseReport`` (any depth)."""
    out: list[Node] = []
    seen: set[Node] = {rule_report}
    todo = list(graph.objects(rule_report, REPORT.premiseReport))
    while todo:
        node = todo.pop(0)
        if node in seen:
            continue
        seen.add(node)
        out.append(node)
        todo.extend(graph.objects(node, REPORT.premiseReport))
    return out


def _premise_type(graph: Graph, node: Node) -> Node | None:
    types = [t for t in PREMISE_TYPES if (node, RDF.type, t) in graph]
    return types[0] if len(types) == 1 else None


def _type_breakdown(graph: Graph, nodes: Iterable[Node]) -> str:
    counts = Counter(_short(_premise_type(graph, n)) for n in nodes)
    return ", ".join(f"{k.removeprefix('report:')} {v}" for k, v in sorted(counts.items()))


def describe_constraint(policy: Graph | None, constraint: Node) -> str:
    """A short rendering of a constraint of the policy, for failure messages."""
    label = _short(constraint)
    if policy is None:
        return label
    for op in (ODRL["and"], ODRL["or"], ODRL.xone, ODRL.andSequence):
        if (constraint, op, None) in policy:
            return f"{label} ({_short(op).removeprefix('odrl:')}(...))"
    for lo, oper, ro in (
        (ODRL.leftOperand, ODRL.operator, ODRL.rightOperand),
        (IDS.leftOperand, IDS.operator, IDS.rightOperand),
    ):
        left = policy.value(constraint, lo)
        if left is None:
            continue
        rights: list[Node] = []
        for r in policy.objects(constraint, ro):
            if (r, RDF.first, None) in policy or r == RDF.nil:
                rights.extend(Collection(policy, r))
            else:
                rights.append(r)
        right = ", ".join(_short(r) for r in rights)
        return f"{label} ({_short(left)} {_short(policy.value(constraint, oper))} {right})"
    return label


@dataclass
class Comparison:
    """Outcome of comparing one evaluated report with the expected one.

    Each list holds human-readable differences; empty lists mean agreement.
    """

    header: list[str] = field(default_factory=list)
    metric1: list[str] = field(default_factory=list)
    metric2: list[str] = field(default_factory=list)
    decision: list[str] = field(default_factory=list)
    isomorphic: bool | None = None

    def passes(self, metric: int) -> bool:
        if metric == 1:
            return not self.metric1
        if metric == 2:
            return not self.metric1 and not self.metric2
        if metric == 3:
            return bool(self.isomorphic)
        raise ValueError(metric)

    def problems(self, metric: int = 2) -> list[str]:
        out = [f"[header] {m}" for m in self.header]
        out += [f"[metric 1] {m}" for m in self.metric1]
        if metric >= 2:
            out += [f"[metric 2] {m}" for m in self.metric2]
        out += [f"[decision] {m}" for m in self.decision]
        return out

    def ok(self, metric: int = 2) -> bool:
        """Header, decision and metrics 1..``metric`` agree (metric 1 or 2)."""
        return not self.problems(metric)

    def summary(self, metric: int = 2) -> str:
        lines = self.problems(metric)
        return "reports agree" if not lines else "\n".join(lines)


def expected_decision(expected: ExpectedReport, derive: bool = True) -> tuple[bool | None, str]:
    """(decision, source). Explicit ``ex:decision``, else derived from a single rule report."""
    vals = _values(expected.graph, expected.node, EX.decision)
    if len(vals) > 1:
        raise CaseFormatError(f"expected report {expected.node}: several ex:decision values")
    if vals:
        if vals[0] == EX.Permit:
            return True, "ex:decision"
        if vals[0] == EX.Deny:
            return False, "ex:decision"
        raise CaseFormatError(f"expected report {expected.node}: ex:decision {vals[0]}")
    if not derive:
        return None, "none"
    rrs = _values(expected.graph, expected.node, REPORT.ruleReport)
    if len(rrs) != 1:
        return None, "none"
    g = expected.graph
    permit = (rrs[0], RDF.type, REPORT.PermissionReport) in g and (
        rrs[0],
        REPORT.activationState,
        REPORT.Active,
    ) in g
    return permit, "derived from the single rule report"


def _find_policy_report(got: Graph, expected: ExpectedReport) -> tuple[Node | None, str]:
    cands = sorted(got.subjects(RDF.type, REPORT.PolicyReport), key=str)
    if len(cands) > 1:
        want = _single(expected.graph, expected.node, REPORT.policyRequest)
        narrowed = [c for c in cands if want is not None and (c, REPORT.policyRequest, want) in got]
        if len(narrowed) == 1:
            return narrowed[0], ""
    if len(cands) != 1:
        return None, (
            f"evaluated graph must hold one report:PolicyReport (for the request), found {len(cands)}"
        )
    return cands[0], ""


def _blanknodeify(graph: Graph) -> Graph:
    """Upstream ``blanknodeify``: every subject (and its uses as object) becomes a blank node."""
    mapping: dict[Node, BNode] = {s: BNode() for s in set(graph.subjects())}
    out = Graph()
    for s, p, o in graph:
        out.add((mapping[s], p, mapping.get(o, o)))
    return out


_EXACT_ISOMORPHISM_LIMIT = 1500


def _bnode_labels(graph: Graph) -> dict[Node, str] | None:
    """Hash of the outgoing structure of every blank node; None if blank nodes form a cycle."""
    labels: dict[Node, str] = {}
    busy: set[Node] = set()

    def label(node: Node) -> str | None:
        if node in labels:
            return labels[node]
        if node in busy:
            return None
        busy.add(node)
        parts = []
        for p, o in graph.predicate_objects(node):
            if isinstance(o, BNode):
                sub = label(o)
                if sub is None:
                    return None
                parts.append(f"{p.n3()} [{sub}]")
            else:
                parts.append(f"{p.n3()} {o.n3()}")
        busy.discard(node)
        labels[node] = str(hash(tuple(sorted(parts))))
        return labels[node]

    for node in {n for n in graph.all_nodes() if isinstance(n, BNode)}:
        if label(node) is None:
            return None
    return labels


def reports_isomorphic(expected: Graph, got: Graph) -> bool:
    """Metric 3: isomorphism of the two graphs after ``_blanknodeify``.

    rdflib's exact check takes tens of seconds on the 4,500-triple report of upstream case 063,
    so a structural invariant (multiset of triples with blank nodes labelled by the hash of
    their outgoing structure) decides first; the exact check confirms it for graphs of up to
    ``_EXACT_ISOMORPHISM_LIMIT`` triples. Above that an equal invariant counts as isomorphic,
    which is exact for tree-shaped reports.
    """
    g1, g2 = _blanknodeify(expected), _blanknodeify(got)
    if len(g1) != len(g2):
        return False
    l1, l2 = _bnode_labels(g1), _bnode_labels(g2)
    if l1 is not None and l2 is not None:

        def sig(g: Graph, lab: dict[Node, str]) -> Counter[tuple[str, str, str]]:
            return Counter(
                (lab.get(s, s.n3()), p.n3(), lab.get(o, o.n3()))  # type: ignore[union-attr]
                for s, p, o in g
            )

        if sig(g1, l1) != sig(g2, l2):
            return False
        if len(g1) > _EXACT_ISOMORPHISM_LIMIT:
            return True
    return isomorphic(g1, g2)


def compare(
    expected: ExpectedReport,
    got: Graph,
    got_decision: bool | None,
    *,
    policy: Graph | None = None,
    derive_decision: bool = True,
    check_isomorphism: bool = False,
) -> Comparison:
    """Compare an evaluated report graph (and decision) with the expected report."""
    cmp = Comparison()
    eg, enode = expected.graph, expected.node

    # decision (independent of the report graph)
    want, source = expected_decision(expected, derive=derive_decision)
    if want is not None:
        if got_decision is None:
            cmp.decision.append(f"engine gave no decision; expected {_verdict(want)} ({source})")
        elif bool(got_decision) != want:
            cmp.decision.append(f"expected {_verdict(want)} ({source}), got {_verdict(bool(got_decision))}")

    if check_isomorphism:
        cmp.isomorphic = reports_isomorphic(eg, got)

    gnode, why = _find_policy_report(got, expected)
    if gnode is None:
        cmp.metric1.append(why)
        return cmp

    for prop in (REPORT.policy, REPORT.policyRequest):
        ev, gv = _values(eg, enode, prop), _values(got, gnode, prop)
        if ev != gv:
            cmp.header.append(
                f"PolicyReport {_short(prop)}: expected {_show_values(ev)}, got {_show_values(gv)}"
            )

    # rule reports by rule IRI
    got_by_rule: dict[Node, list[Node]] = {}
    for rr in got.objects(gnode, REPORT.ruleReport):
        if (rr, RDF.type, REPORT.DutyReport) in got:
            continue
        rules = _values(got, rr, REPORT.rule)
        if len(rules) != 1:
            cmp.metric1.append(f"evaluated rule report {_short(rr)} has {len(rules)} report:rule values")
            continue
        got_by_rule.setdefault(rules[0], []).append(rr)

    expected_rules: set[Node] = set()
    for err in _values(eg, enode, REPORT.ruleReport):
        rule = _single(eg, err, REPORT.rule)
        if rule is None:
            raise CaseFormatError(f"expected rule report {err} needs exactly one report:rule")
        expected_rules.add(rule)
        kind = _rule_kind(eg, err)
        where = f"{kind} for rule {_short(rule)}"
        grrs = got_by_rule.get(rule, [])
        if not grrs:
            cmp.metric1.append(f"{where}: missing from the evaluated report")
            continue
        if len(grrs) > 1:
            cmp.metric1.append(f"{where}: {len(grrs)} evaluated rule reports")
            continue
        grr = grrs[0]
        for t in (REPORT.PermissionReport, REPORT.ProhibitionReport):
            if (err, RDF.type, t) in eg and (grr, RDF.type, t) not in got:
                got_types = [_short(x) for x in got.objects(grr, RDF.type)]
                cmp.header.append(f"{where}: evaluated report is typed {got_types}")
        for prop in (REPORT.activationState, REPORT.attemptState, REPORT.ruleRequest):
            ev, gv = _values(eg, err, prop), _values(got, grr, prop)
            if ev != gv:
                cmp.metric1.append(
                    f"{where}: {_short(prop).removeprefix('report:')} "
                    f"expected {_show_values(ev)}, got {_show_values(gv)}"
                )
        cmp.metric2.extend(_compare_premises(eg, err, got, grr, where, policy))

    for rule, grrs in sorted(got_by_rule.items(), key=lambda kv: str(kv[0])):
        if rule not in expected_rules:
            cmp.metric1.append(
                f"unexpected evaluated rule report(s) for rule {_short(rule)}: "
                f"{', '.join(_short(r) for r in grrs)}"
            )
    return cmp


def _verdict(permit: bool) -> str:
    return "PERMIT" if permit else "DENY"


def _rule_kind(graph: Graph, rr: Node) -> str:
    for t in (REPORT.PermissionReport, REPORT.ProhibitionReport, REPORT.DutyReport):
        if (rr, RDF.type, t) in graph:
            return _short(t).removeprefix("report:")
    return "rule report"


def _compare_premises(
    eg: Graph, err: Node, got: Graph, grr: Node, where: str, policy: Graph | None
) -> list[str]:
    out: list[str] = []
    exp_nodes = premise_reports(eg, err)
    got_nodes = premise_reports(got, grr)
    for n in exp_nodes:
        if _premise_type(eg, n) is None:
            out.append(
                f"{where}: expected premise report {_short(n)} has no single "
                f"Target/Party/Action/ConstraintReport type (defective expected report)"
            )
    if len(exp_nodes) != len(got_nodes):
        out.append(
            f"{where}: number of premise reports expected {len(exp_nodes)} "
            f"({_type_breakdown(eg, exp_nodes)}), got {len(got_nodes)} "
            f"({_type_breakdown(got, got_nodes)})"
        )

    got_constraint: dict[Node, list[Node]] = {}
    got_typed: dict[Node, list[Node]] = {}
    for n in got_nodes:
        t = _premise_type(got, n)
        if t == REPORT.ConstraintReport:
            for c in got.objects(n, REPORT.constraint):
                got_constraint.setdefault(c, []).append(n)
        elif t is not None:
            got_typed.setdefault(t, []).append(n)

    for n in exp_nodes:
        t = _premise_type(eg, n)
        if t is None:
            continue
        want = _values(eg, n, REPORT.satisfactionState)
        if t == REPORT.ConstraintReport:
            c = _single(eg, n, REPORT.constraint)
            if c is None:
                out.append(
                    f"{where}: expected ConstraintReport {_short(n)} has no single "
                    f"report:constraint (defective expected report)"
                )
                continue
            label = f"ConstraintReport for {describe_constraint(policy, c)}"
            matches = got_constraint.get(c, [])
        else:
            label = _short(t).removeprefix("report:")
            matches = got_typed.get(t, [])
        if not matches:
            out.append(f"{where}: {label}: missing (expected {_show_values(want)})")
            continue
        if len(matches) > 1:
            out.append(f"{where}: {label}: {len(matches)} evaluated reports match")
            continue
        have = _values(got, matches[0], REPORT.satisfactionState)
        if want != have:
            out.append(
                f"{where}: {label}: satisfactionState expected {_show_values(want)}, got {_show_values(have)}"
            )
    return out


# --------------------------------------------------------------------------- running


@dataclass
class CaseResult:
    case: Case
    report: Graph
    decision: bool
    comparison: Comparison


def run_case(case: Case, evaluate: Evaluator, *, check_isomorphism: bool = False) -> CaseResult:
    """Evaluate one case with ``evaluate(policy_path, request_path, sotw_path)`` and compare."""
    report, decision = evaluate(case.policy, case.request, case.sotw)
    cmp = compare(
        load_expected(case),
        report,
        decision,
        policy=parse_turtle(case.policy),
        check_isomorphism=check_isomorphism,
    )
    return CaseResult(case, report, decision, cmp)

"""Compliance reports as RDF (FORCE compliance-report vocabulary) and as readable text."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from rdflib import RDF, BNode, Graph, Literal, URIRef
from rdflib.term import Node

from connector.odrl import terms as T
from connector.odrl.evaluate import DutyReport, PremiseReport, Report, RuleReport
from connector.odrl.model import describe, is_blank
from connector.vocab import DCT, DSC, ODRL, REPORT, XSD

CONTEXT = {
    "report": str(REPORT),
    "odrl": str(ODRL),
    "dct": str(DCT),
    "dsc": str(DSC),
    "xsd": str(XSD),
}


def _term(id_: str) -> Node:
    return BNode(id_[2:]) if id_.startswith("_:") else URIRef(id_)


def _literal(v: Any) -> Literal:
    if isinstance(v, Decimal):
        return Literal(v, datatype=XSD.integer if v == v.to_integral_value() else XSD.decimal)
    return Literal(v)


class _TripleList(list[tuple[Node, Node, Node]]):
    """A write-only triple sink: building an rdflib Graph costs ~20 us a triple."""

    def add(self, triple: tuple[Node, Node, Node]) -> None:
        self.append(triple)


class _Writer:
    def __init__(self, new_id: Callable[[], str], sink: Any = None) -> None:
        if sink is None:
            sink = Graph()
            for prefix, ns in CONTEXT.items():
                sink.bind(prefix, ns)
        self.g = sink
        self.new_id = new_id

    def node(self) -> URIRef:
        return URIRef(self.new_id())

    def premise(self, p: PremiseReport) -> URIRef:
        n = self.node()
        g = self.g
        g.add((n, RDF.type, REPORT[p.kind + "Report"]))
        g.add((n, REPORT.satisfactionState, REPORT.Satisfied if p.satisfied else REPORT.Unsatisfied))
        if p.constraint is not None:
            g.add((n, REPORT.constraint, _term(p.constraint)))
        if p.logical_operator is not None:
            g.add((n, REPORT.constraintLogicalOperand, URIRef(p.logical_operator)))
        elif p.kind == "Constraint" and p.operator is not None:
            g.add((n, REPORT.constraintOperator, URIRef(p.operator)))
            # The left value of count is where readings differ (CONVENTIONS.md): left out.
            if p.left_values and not p.reason.startswith("count"):
                for v in p.left_values:
                    g.add(
                        (
                            n,
                            REPORT.constraintLeftOperand,
                            URIRef(v) if isinstance(v, str) and _looks_iri(v) else _literal(v),
                        )
                    )
            for r in p.right or ():
                g.add(
                    (
                        n,
                        REPORT.constraintRightOperand,
                        _term(r.lexical)
                        if r.is_iri
                        else Literal(
                            r.lexical, datatype=URIRef(r.datatype) if r.datatype else None, lang=r.language
                        ),
                    )
                )
        g.add((n, DSC.explanation, Literal(p.reason)))
        for c in p.children:
            g.add((n, REPORT.premiseReport, self.premise(c)))
        return n

    def duty(self, d: DutyReport) -> URIRef:
        if d.report_id is not None:
            # The state of the world already holds this duty's report: refer to it.
            n = URIRef(d.report_id)
            self.g.add((n, RDF.type, REPORT.DutyReport))
            self.g.add((n, REPORT.rule, _term(d.rule)))
            self.g.add((n, REPORT.deonticState, URIRef(d.deontic)))
            return n
        n = self.node()
        g = self.g
        g.add((n, RDF.type, REPORT.DutyReport))
        g.add((n, REPORT.rule, _term(d.rule)))
        g.add((n, REPORT.activationState, REPORT.Active if d.active else REPORT.Inactive))
        g.add((n, REPORT.deonticState, URIRef(d.deontic)))
        g.add((n, REPORT.performanceState, URIRef(d.performance)))
        g.add((n, DSC.explanation, Literal(d.reason)))
        for p in d.premises:
            g.add((n, REPORT.premiseReport, self.premise(p)))
        for c in d.consequences:
            g.add((n, DSC.consequenceReport, self.duty(c)))
        return n

    def rule(self, r: RuleReport) -> URIRef:
        n = self.node()
        g = self.g
        g.add((n, RDF.type, REPORT.PermissionReport if r.kind == "permission" else REPORT.ProhibitionReport))
        g.add((n, REPORT.rule, _term(r.rule)))
        if r.rule_request:
            g.add((n, REPORT.ruleRequest, _term(r.rule_request)))
        g.add((n, REPORT.attemptState, REPORT.Attempted))
        g.add((n, REPORT.activationState, REPORT.Active if r.active else REPORT.Inactive))
        g.add((n, DSC.explanation, Literal(r.reason)))
        for p in r.premises:
            g.add((n, REPORT.premiseReport, self.premise(p)))
        for d in r.conditions:
            g.add((n, REPORT.conditionReport, self.duty(d)))
        for d in r.remedies:
            g.add((n, DSC.remedyReport, self.duty(d)))
        return n

    def report(self, rep: Report) -> URIRef:
        n = self.node()
        g = self.g
        g.add((n, RDF.type, REPORT.PolicyReport))
        g.add((n, DCT.created, Literal(rep.created, datatype=XSD.dateTime)))
        g.add((n, REPORT.policy, _term(rep.policy)))
        if rep.request:
            g.add((n, REPORT.policyRequest, _term(rep.request)))
        for r in rep.rules:
            g.add((n, REPORT.ruleReport, self.rule(r)))
        for o in rep.obligations:
            g.add((n, DSC.obligationReport, self.duty(o)))
        g.add((n, DSC.decision, DSC.Permit if rep.permit else DSC.Deny))
        g.add((n, DSC.conflictStrategy, URIRef(rep.strategy)))
        g.add((n, DSC.explanation, Literal(rep.explanation)))
        return n


def _looks_iri(v: str) -> bool:
    return v.startswith(("http://", "https://", "urn:"))


def report_graph(report: Report, new_id: Callable[[], str] | None = None) -> Graph:
    """The report as an RDF graph; node IRIs are fresh ``urn:uuid:`` unless ``new_id`` says."""
    w = _Writer(new_id or (lambda: uuid.uuid4().urn))
    w.report(report)
    graph: Graph = w.g
    return graph


_PREFIXES = sorted(((ns, prefix) for prefix, ns in CONTEXT.items()), key=lambda x: -len(x[0]))
_PN_LOCAL = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _n3(term: Node) -> str:
    if isinstance(term, URIRef):
        for ns, prefix in _PREFIXES:
            if term.startswith(ns) and _PN_LOCAL.fullmatch(term[len(ns) :]):
                return f"{prefix}:{term[len(ns) :]}"
    return term.n3()


def report_turtle(report: Report, new_id: Callable[[], str] | None = None) -> str:
    """The report as Turtle, written directly (rdflib's serializer takes ~0.4 s for the
    787-constraint case; this takes a few milliseconds). Same triples as ``report_graph``."""
    sink = _TripleList()
    _Writer(new_id or (lambda: uuid.uuid4().urn), sink).report(report)
    lines = [f"@prefix {prefix}: <{ns}> ." for prefix, ns in CONTEXT.items()]
    lines.append("@prefix rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#> .")
    lines.append("")
    current: Node | None = None
    for s_, p_, o_ in sink:
        pred = "a" if p_ == RDF.type else _n3(p_)
        if s_ != current:
            if current is not None:
                lines[-1] += " ."
            lines.append(f"{_n3(s_)} {pred} {_n3(o_)}")
            current = s_
        else:
            lines[-1] += f" ;\n    {pred} {_n3(o_)}"
    if current is not None:
        lines[-1] += " ."
    return "\n".join(lines) + "\n"


def report_jsonld(report: Report) -> str:
    return report_graph(report).serialize(format="json-ld", context=CONTEXT, indent=2)


# --------------------------------------------------------------------------- readable form


def explain_text(report: Report) -> str:
    """The decision tree in readable form: what each rule needed and what held."""
    lines = [
        f"Decision: {report.decision}",
        f"  {report.explanation}",
        f"Conflict strategy: {T.short(report.strategy)}"
        + (" (conflict detected)" if report.conflict else ""),
    ]
    for r in report.rules:
        mark = "ACTIVE" if r.active else "inactive"
        label = r.label or describe(r.kind, "", r.rule)
        lines.append(f"{label[:1].upper()}{label[1:]}: {mark}")
        if not r.premises:
            lines.append("  (no premises: applies to every request)")
        for p in r.premises:
            _premise_lines(p, lines, 1)
        for d in r.conditions:
            _duty_lines(d, lines, 1, "duty")
        for d in r.remedies:
            _duty_lines(d, lines, 1, "remedy")
    for o in report.obligations:
        _duty_lines(o, lines, 0, "Obligation")
    return "\n".join(lines)


def _premise_lines(p: PremiseReport, lines: list[str], depth: int) -> None:
    mark = "✔" if p.satisfied else "✘"
    label = (
        p.kind.lower()
        if p.kind != "Constraint"
        else (T.short(p.logical_operator) if p.logical_operator else "constraint")
    )
    ident = f" {T.short(p.constraint)}" if p.constraint and not is_blank(p.constraint) else ""
    lines.append(f"{'  ' * depth}{mark} {label}{ident}: {p.reason}")
    for c in p.children:
        _premise_lines(c, lines, depth + 1)


def _duty_lines(d: DutyReport, lines: list[str], depth: int, label: str) -> None:
    mark = "✘" if d.blocking else "•"
    lines.append(f"{'  ' * depth}{mark} {label}: {d.reason} [{d.deontic.rsplit('#', 1)[-1]}]")
    for p in d.premises:
        _premise_lines(p, lines, depth + 1)
    for c in d.consequences:
        _duty_lines(c, lines, depth + 1, "consequence")

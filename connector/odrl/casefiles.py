"""Requests and states of the world in RDF, in the layout of the ODRL evaluation test suites
(FORCE/SolidLab cases and ``../shared/conformance/odrl/CONVENTIONS.md``), so that the engine
can be run on any such case: ``connector policy evaluate --policy P --request R --sotw S``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from rdflib import RDF, BNode, Graph, Literal, URIRef
from rdflib.term import Node

from connector.odrl import terms as T
from connector.odrl.evaluate import Report, evaluate
from connector.odrl.model import DutyState, Request, Value, World
from connector.odrl.parse import (
    PolicyError,
    coerce_literal,
    node_id,
    parse_datetime,
    parse_file,
    policy_from_graph,
)
from connector.odrl.report import report_graph
from connector.vocab import DCT, IDS, ODRL, PROV, REPORT, SOTW

CURRENT_TIME = URIRef("http://example.com/request/currentTime")
ODRL_FS = "https://w3id.org/odrl-fs#"
REQUEST_TYPES = (ODRL.Request, IDS.ContractRequest)


def _value(node: Node, operand: str) -> Value:
    if isinstance(node, Literal):
        py, _ = coerce_literal(node, operand)
        return Value(
            lexical=str(node),
            datatype=str(node.datatype) if node.datatype else None,
            language=node.language,
            py=py,
        )
    return Value.iri(node_id(node))


def _one_iri(g: Graph, s: Node, p: URIRef) -> str | None:
    v = g.value(s, p)
    return node_id(v) if v is not None else None


def request_from_graph(g: Graph) -> Request:
    """The request in ``g``: an odrl:Request with one permission (assignee, action, target,
    and its context constraints), or an odrl-fs / sotw EvaluationRequest."""
    nodes = sorted({s for t in REQUEST_TYPES for s in g.subjects(RDF.type, t)}, key=str)
    if not nodes:
        eval_nodes = [s for s in g.subjects(RDF.type, SOTW.EvaluationRequest)] + [
            s for s in g.subjects(RDF.type, URIRef(ODRL_FS + "EvaluationRequest"))
        ]
        if eval_nodes:
            return _evaluation_request(g, eval_nodes[0])
        raise PolicyError("request: no odrl:Request found")
    if len(nodes) > 1:
        raise PolicyError(f"request: {len(nodes)} odrl:Request nodes; one only")
    req = nodes[0]
    perms = sorted(g.objects(req, ODRL.permission), key=str) or sorted(
        g.objects(req, IDS.permission), key=str
    )
    if not perms:
        raise PolicyError(f"request {node_id(req)}: no permission (what is being asked for?)")
    if len(perms) > 1:
        raise PolicyError(f"request {node_id(req)}: {len(perms)} permissions; ask for one action at a time")
    perm = perms[0]
    action = g.value(perm, ODRL.action) or g.value(perm, IDS.action)
    if action is None:
        raise PolicyError(f"request {node_id(req)}: the permission names no action")
    if isinstance(action, BNode):
        action = g.value(action, RDF.value) or action
    context: dict[str, list[Value]] = {}
    ctx_nodes = (
        set(g.objects(perm, ODRL.constraint))
        | set(g.objects(perm, SOTW.context))
        | set(g.objects(perm, URIRef(ODRL_FS + "context")))
    )
    for c in sorted(ctx_nodes, key=str):
        left = g.value(c, ODRL.leftOperand)
        if left is None:
            continue
        operand = T.IDS_LEFT_OPERANDS.get(str(left), str(left))
        for r in g.objects(c, ODRL.rightOperand):
            context.setdefault(operand, []).append(_value(r, operand))
    vocab = T.vocabulary()
    return Request(
        id=node_id(req),
        rule_id=node_id(perm),
        action=vocab.canonical_action(str(action)),
        assignee=_one_iri(g, perm, ODRL.assignee) or _one_iri(g, perm, IDS.assignee),
        target=_one_iri(g, perm, ODRL.target) or _one_iri(g, perm, IDS.target),
        context={k: tuple(v) for k, v in context.items()},
    )


def _evaluation_request(g: Graph, node: Node) -> Request:
    def first(*names: str) -> str | None:
        for name in names:
            for ns in (str(SOTW), ODRL_FS):
                v = g.value(node, URIRef(ns + name))
                if v is not None:
                    return node_id(v)
        return None

    action = first("evaluatedAction", "requestedAction")
    if action is None:
        raise PolicyError("evaluation request names no action")
    return Request(
        id=node_id(node),
        rule_id=node_id(node),
        action=T.vocabulary().canonical_action(action),
        assignee=first("evaluatedParty", "requestingParty"),
        target=first("evaluatedTarget", "requestedTarget"),
    )


def world_from_graph(g: Graph, default_now: datetime | None = None) -> World:
    """The state of the world, read closed-world from ``g``."""
    now_lit = g.value(CURRENT_TIME, DCT.issued)
    if now_lit is None:
        for p in (SOTW.currentTime, URIRef(ODRL_FS + "currentTime")):
            now_lit = next(iter(g.objects(None, p)), None)
            if now_lit is not None:
                break
    if now_lit is not None:
        try:
            now = parse_datetime(str(now_lit))
        except ValueError as exc:
            raise PolicyError(
                f"state of the world: current time {now_lit!s} is not a valid xsd:dateTime"
            ) from exc
    else:
        now = default_now or datetime.now(UTC)
    counts: dict[tuple[str | None, str | None], int] = {}
    started: dict[tuple[str | None, str | None], datetime] = {}
    for s in set(g.subjects(ODRL["count"], None)) | set(g.subjects(PROV.startedAtTime, None)):
        key = (_one_iri(g, s, ODRL.assignee), _one_iri(g, s, ODRL.target))
        c = g.value(s, ODRL["count"])
        if c is not None:
            try:
                counts[key] = int(str(c))
            except ValueError as exc:
                raise PolicyError(f"state of the world: count {c!s} is not an integer") from exc
        t = g.value(s, PROV.startedAtTime)
        if t is not None:
            try:
                started[key] = parse_datetime(str(t))
            except ValueError as exc:
                raise PolicyError(
                    f"state of the world: startedAtTime {t!s} is not a valid xsd:dateTime"
                ) from exc
    types: dict[str, set[str]] = {}
    for s, o in g.subject_objects(RDF.type):
        types.setdefault(node_id(s), set()).add(node_id(o))
    part_of: dict[str, set[str]] = {}
    for s, o in g.subject_objects(ODRL.partOf):
        part_of.setdefault(node_id(s), set()).add(node_id(o))
    duty_states: dict[str, DutyState] = {}
    for rep in g.subjects(RDF.type, REPORT.DutyReport):
        rule = g.value(rep, REPORT.rule)
        deontic = g.value(rep, REPORT.deonticState)
        if rule is None or deontic is None:
            continue
        perf = g.value(rep, REPORT.performanceState)
        duty_states[node_id(rule)] = DutyState(
            deontic=str(deontic), performance=str(perf) if perf is not None else None, report_id=node_id(rep)
        )
    return World(
        now=now,
        counts=counts,
        usage_started=started,
        types={k: frozenset(v) for k, v in types.items()},
        part_of={k: frozenset(v) for k, v in part_of.items()},
        duty_states=duty_states,
    )


def evaluate_files(policy_path: Path | str, request_path: Path | str, sotw_path: Path | str | None) -> Report:
    policy_graph = parse_file(policy_path, "policy")
    policy = policy_from_graph(policy_graph, exclude_types=(str(ODRL.Request),))
    request = request_from_graph(parse_file(request_path, "request"))
    world = (
        world_from_graph(parse_file(sotw_path, "state of the world"))
        if sotw_path
        else (World(now=datetime.now(UTC)))
    )
    return evaluate(policy, request, world)


def evaluate_case_files(policy_path: Path, request_path: Path, sotw_path: Path) -> tuple[Graph, bool]:
    """The compliance report graph and the decision (True = permit) for one case."""
    report = evaluate_files(policy_path, request_path, sotw_path)
    return report_graph(report), report.permit

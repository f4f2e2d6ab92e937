"""Read ODRL 2.2 policies (JSON-LD in any shipped context, expanded JSON-LD, Turtle; ODRL or
IDS Information Model form) into the typed model of ``connector.odrl.model``.

Every document goes through one path: text -> RDF graph (pyld with the offline loader for
JSON-LD, rdflib for Turtle) -> model. Problems are collected with their location so
``connector policy check`` can list them all; ``PolicyError`` carries that list.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pyld import jsonld
from rdflib import RDF, BNode, Dataset, Graph, Literal, URIRef
from rdflib.exceptions import ParserError
from rdflib.term import Node

from connector.odrl import terms as T
from connector.odrl.model import (
    Action,
    AnyConstraint,
    Asset,
    Constraint,
    LogicalConstraint,
    Party,
    Policy,
    Rule,
    RuleKind,
    Value,
)
from connector.vocab import (
    IDS,
    ODRL,
    ODRL_CONTEXT_URL,
    RemoteDocumentRefused,
    jsonld_call,
)

DSP_ODRL_PROFILE_URL = "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_NESTING = 32
MAX_RULES = 10_000

XSD = "http://www.w3.org/2001/XMLSchema#"
POLICY_TYPES = frozenset(
    {
        str(ODRL[t])
        for t in ("Policy", "Set", "Offer", "Agreement", "Request", "Privacy", "Ticket",
                  "Assertion")
    }
    | set(T.IDS_POLICY_TYPES)
)
# Bare words in DSP-form policies ("action": "use", "leftOperand": "dateTime") that the DSP
# profile context leaves undefined resolve against the ODRL namespace, as the profile intends.
JSONLD_BASE = str(ODRL)


@dataclass(frozen=True)
class Problem:
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class PolicyError(ValueError):
    """A policy (or request, or state of the world) that cannot be used, with every problem."""

    def __init__(self, problems: Iterable[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid policy")


# --------------------------------------------------------------------------- documents -> RDF


def _check_size(size: int, what: str) -> None:
    if size > MAX_DOCUMENT_BYTES:
        raise PolicyError(
            f"{what} is {size / 1_048_576:.1f} MiB; the limit is "
            f"{MAX_DOCUMENT_BYTES / 1_048_576:.0f} MiB"
        )


def _remote_refusal(exc: BaseException) -> RemoteDocumentRefused | None:
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, RemoteDocumentRefused):
            return e
        stack.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
        details = getattr(e, "details", None)
        if isinstance(details, dict):
            stack.extend(v for v in details.values() if isinstance(v, BaseException))
    return None


def jsonld_to_graph(document: Any, what: str = "document") -> Graph:
    """Expand a JSON-LD document with the offline loader and return its RDF graph."""
    try:
        nquads = jsonld_call(jsonld.to_rdf, document,
                             options={"base": JSONLD_BASE, "format": "application/n-quads"})
    except RecursionError as exc:
        raise PolicyError(f"{what}: JSON-LD nested too deeply") from exc
    except Exception as exc:
        refused = _remote_refusal(exc)
        if refused is not None:
            raise PolicyError(f"{what}: {refused}") from exc
        raise PolicyError(f"{what}: invalid JSON-LD: {_first_line(exc)}") from exc
    ds = Dataset()
    with warnings.catch_warnings():  # rdflib's nquads parser uses a deprecated Dataset alias
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            ds.parse(data=nquads, format="nquads")
        except ParserError as exc:  # e.g. an action or @id that expands to an IRI with spaces
            raise PolicyError(f"{what}: not a valid IRI in the document: {_first_line(exc)}") from exc
    g = Graph()
    for s, p, o, _ in ds.quads((None, None, None, None)):
        g.add((s, p, o))
    if not any(str(p).startswith(_O) for p in g.predicates()) and any(
        f'"{key}"' in json.dumps(document) for key in ("permission", "prohibition", "obligation")
    ):
        raise PolicyError(
            f"{what}: the ODRL terms (permission, action, ...) are not defined by the "
            "document's @context, so JSON-LD drops them; a policy outside a DSP message needs "
            f"the ODRL profile context ({DSP_ODRL_PROFILE_URL}) or {ODRL_CONTEXT_URL}")
    return g


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    code = getattr(exc, "code", None)
    return f"{msg} ({code})" if code else msg


def parse_text(text: str | bytes, fmt: str | None = None, what: str = "document") -> Graph:
    """Parse Turtle or JSON-LD text (``fmt`` 'turtle' | 'json-ld' | None to sniff)."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    _check_size(len(raw), what)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{what}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if fmt is None:
        fmt = "json-ld" if decoded.lstrip()[:1] in ("{", "[") else "turtle"
    if fmt in ("json-ld", "json", "jsonld"):
        try:
            document = json.loads(decoded)
        except json.JSONDecodeError as exc:
            raise PolicyError(
                f"{what}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from exc
        except RecursionError as exc:
            raise PolicyError(f"{what}: JSON nested too deeply") from exc
        return jsonld_to_graph(document, what)
    if fmt in ("turtle", "ttl", "n3", "nt", "ntriples", "n-triples"):
        g = Graph()
        try:
            g.parse(data=decoded, format="turtle" if fmt in ("ttl", "n3") else fmt)
        except Exception as exc:
            raise PolicyError(f"{what}: malformed Turtle: {_first_line(exc)}") from exc
        return g
    raise PolicyError(f"{what}: unsupported format {fmt!r} (use turtle or json-ld)")


def parse_file(path: str | Path, what: str | None = None) -> Graph:
    p = Path(path)
    what = what or str(p)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise PolicyError(f"{what}: cannot read file: {exc.strerror}") from exc
    _check_size(size, what)
    suffix = p.suffix.lower()
    fmt = {".ttl": "turtle", ".nt": "nt", ".jsonld": "json-ld", ".json": "json-ld"}.get(suffix)
    return parse_text(p.read_bytes(), fmt, what)


# --------------------------------------------------------------------------- RDF -> model


def node_id(node: Node) -> str:
    return f"_:{node}" if isinstance(node, BNode) else str(node)


_O = str(ODRL)
_I = str(IDS)


def _p(name: str) -> tuple[URIRef, URIRef]:
    """The ODRL property and its IDS counterpart."""
    return URIRef(_O + name), URIRef(_I + name)


P_PERMISSION, P_PROHIBITION, P_OBLIGATION = _p("permission"), _p("prohibition"), _p("obligation")
P_DUTY = (URIRef(_O + "duty"), URIRef(_I + "preDuty"), URIRef(_I + "postDuty"))
P_ACTION, P_TARGET = _p("action"), _p("target")
P_ASSIGNEE, P_ASSIGNER = _p("assignee"), _p("assigner")
P_CONSTRAINT = _p("constraint")
P_LEFT, P_OPERATOR = _p("leftOperand"), _p("operator")
P_RIGHT, P_RIGHT_REF = _p("rightOperand"), _p("rightOperandReference")
P_REFINEMENT = (URIRef(_O + "refinement"), URIRef(_I + "actionRefinement"))
P_CONSEQUENCE, P_REMEDY = _p("consequence"), _p("remedy")
P_LOGICAL = {T.OR: _p("or"), T.XONE: _p("xone"), T.AND: _p("and"),
             T.AND_SEQUENCE: _p("andSequence")}
ASSET_COLLECTION = URIRef(_O + "AssetCollection")
PARTY_COLLECTION = URIRef(_O + "PartyCollection")


@dataclass
class _Reader:
    g: Graph
    problems: list[Problem] = field(default_factory=list)
    vocab: T.Vocabulary = field(default_factory=T.vocabulary)

    def values(self, s: Node, props: Iterable[URIRef]) -> list[Node]:
        out: list[Node] = []
        for p in props:
            for o in self.g.objects(s, p):
                out.extend(self.expand_list(o))
        return out

    def expand_list(self, o: Node) -> list[Node]:
        """An RDF list node becomes its members; anything else stays as it is."""
        if isinstance(o, (BNode, URIRef)) and (o, RDF.first, None) in self.g:
            items: list[Node] = []
            seen: set[Node] = set()
            node: Node | None = o
            while node is not None and node != RDF.nil and node not in seen:
                seen.add(node)
                first = self.g.value(node, RDF.first)
                if first is not None:
                    items.append(first)
                node = self.g.value(node, RDF.rest)
            return items
        return [o]

    def one(self, s: Node, props: Iterable[URIRef], where: str, what: str) -> Node | None:
        vals = self.values(s, props)
        if len(vals) > 1:
            self.problems.append(Problem(where, f"has {len(vals)} values for {what}; one only"))
        return vals[0] if vals else None

    def types(self, s: Node) -> set[str]:
        return {str(t) for t in self.g.objects(s, RDF.type)}

    # ----------------------------------------------------------------------- constraints

    def constraint(self, node: Node, where: str, depth: int = 0) -> AnyConstraint | None:
        cid = node_id(node)
        here = f"{where} / constraint {cid}"
        if depth > MAX_NESTING:
            self.problems.append(
                Problem(here, f"logical constraints nested deeper than {MAX_NESTING} levels")
            )
            return None
        if isinstance(node, Literal):
            self.problems.append(Problem(here, "a constraint must be a node, not a literal"))
            return None
        for op, props in P_LOGICAL.items():
            members = self.values(node, props)
            if members:
                operands = []
                for m in members:
                    c = self.constraint(m, here, depth + 1)
                    if c is not None:
                        operands.append(c)
                if len(operands) < 1:
                    self.problems.append(Problem(here, "logical constraint without operands"))
                return LogicalConstraint(id=cid, operator=op, operands=tuple(operands))
        left_node = self.one(node, P_LEFT, here, "leftOperand")
        op_node = self.one(node, P_OPERATOR, here, "operator")
        if left_node is None or op_node is None:
            missing = [n for n, v in (("leftOperand", left_node), ("operator", op_node)) if v is None]
            self.problems.append(Problem(here, f"missing {' and '.join(missing)}"))
            return None
        written_left, written_op = str(left_node), str(op_node)
        left = T.IDS_LEFT_OPERANDS.get(written_left, written_left)
        left = self.vocab.equivalent.get(left, left)
        op = T.IDS_OPERATORS.get(written_op, written_op)
        if op == _O + "neg":  # the ODRL context erratum (w3c/poe#305), if a document carries it
            op = T.NEQ
        if op not in T.OPERATORS:
            self.problems.append(Problem(here, f"unknown operator {T.short(written_op)}"))
        if not self.vocab.known_left_operand(left):
            self.problems.append(Problem(here, f"unknown left operand {T.short(written_left)}"))
        rights = self.values(node, P_RIGHT)
        refs = [str(r) for r in self.values(node, P_RIGHT_REF)]
        if not rights and not refs:
            self.problems.append(Problem(here, "missing rightOperand"))
        right = tuple(self.right_value(r, left, here) for r in rights)
        unit = self.g.value(node, ODRL.unit)
        dtype = self.g.value(node, ODRL.dataType)
        return Constraint(
            id=cid, left_operand=left, operator=op, right=right, right_reference=tuple(refs),
            datatype=str(dtype) if dtype is not None else None,
            unit=str(unit) if unit is not None else None,
            written_left_operand=written_left, written_operator=written_op,
        )

    def right_value(self, node: Node, left: str, where: str) -> Value:
        if isinstance(node, URIRef):
            return Value.iri(str(node))
        if isinstance(node, BNode):
            inner = self.g.value(node, RDF.value)
            if inner is not None:
                return self.right_value(inner, left, where)
            return Value.iri(node_id(node))
        assert isinstance(node, Literal)
        value, error = coerce_literal(node, left)
        if error:
            self.problems.append(Problem(where, error))
        return Value(
            lexical=str(node), datatype=str(node.datatype) if node.datatype else None,
            language=node.language, py=value,
        )

    def constraints(self, node: Node, props: Iterable[URIRef], where: str) -> tuple[AnyConstraint, ...]:
        out = []
        for c in self.values(node, props):
            parsed = self.constraint(c, where)
            if parsed is not None:
                out.append(parsed)
        return tuple(out)

    # ----------------------------------------------------------------------- rule parts

    def actions(self, node: Node, where: str) -> tuple[Action, ...]:
        out = []
        for a in self.values(node, P_ACTION):
            if isinstance(a, Literal):
                self.problems.append(Problem(where, f"action {a!s} is a literal, not an IRI"))
                continue
            refinements = self.constraints(a, P_REFINEMENT, f"{where} / action")
            iri_node = a
            if isinstance(a, BNode) or (a, RDF.value, None) in self.g:
                inner = self.g.value(a, RDF.value)
                if inner is None:
                    self.problems.append(Problem(where, "action node without rdf:value"))
                    continue
                iri_node = inner
            written = str(iri_node)
            iri = self.vocab.canonical_action(written)
            if iri not in self.vocab.actions:
                self.problems.append(Problem(where, f"unknown action {T.short(written)}"))
            out.append(Action(iri=iri, refinements=refinements, written=written))
        return tuple(out)

    def parties(self, node: Node, props: Iterable[URIRef], where: str) -> tuple[Party, ...]:
        out = []
        for p in self.values(node, props):
            iri, coll, refs = self._collection(p, PARTY_COLLECTION, where)
            out.append(Party(iri=iri, is_collection=coll, refinements=refs))
        return tuple(out)

    def assets(self, node: Node, where: str) -> tuple[Asset, ...]:
        out = []
        for a in self.values(node, P_TARGET):
            iri, coll, refs = self._collection(a, ASSET_COLLECTION, where)
            out.append(Asset(iri=iri, is_collection=coll, refinements=refs))
        return tuple(out)

    def _collection(self, n: Node, cls: URIRef, where: str) -> tuple[str, bool, tuple[AnyConstraint, ...]]:
        if isinstance(n, Literal):
            self.problems.append(Problem(where, f"party/asset {n!s} is a literal, not an IRI"))
            return str(n), False, ()
        refs = self.constraints(n, P_REFINEMENT[:1], where)
        source = self.g.value(n, ODRL.source)
        is_coll = (n, RDF.type, cls) in self.g or bool(refs) or source is not None
        # A collection given as a node with odrl:source names the collection by that source.
        iri = node_id(source) if (isinstance(n, BNode) and source is not None) else node_id(n)
        return iri, is_coll, refs

    def rule(self, node: Node, kind: RuleKind, where: str) -> Rule:
        rid = node_id(node)
        here = f"{where} / {kind} {rid}"
        duties = tuple(self.rule(d, "duty", here) for d in self.values(node, P_DUTY))
        consequences = tuple(
            self.rule(d, "duty", here) for d in self.values(node, P_CONSEQUENCE)
        )
        remedies = tuple(self.rule(d, "duty", here) for d in self.values(node, P_REMEDY))
        if kind == "permission" and (consequences or remedies):
            self.problems.append(Problem(here, "a permission has duties, not consequences/remedies"))
        if kind != "prohibition" and remedies:
            self.problems.append(Problem(here, "only a prohibition has remedies"))
        actions = self.actions(node, here)
        if kind in ("permission", "prohibition") and len(actions) > 1:
            self.problems.append(Problem(here, f"has {len(actions)} actions; ODRL allows one"))
        return Rule(
            id=rid, kind=kind, actions=actions, targets=self.assets(node, here),
            assignees=self.parties(node, P_ASSIGNEE, here),
            assigners=self.parties(node, P_ASSIGNER, here),
            constraints=self.constraints(node, P_CONSTRAINT, here),
            duties=duties, consequences=consequences, remedies=remedies,
        )

    def policy(self, node: Node) -> Policy:
        pid = node_id(node)
        where = f"policy {pid}"
        types = self.types(node) & POLICY_TYPES
        ptype = next(iter(sorted(types)), _O + "Set")
        ptype = T.IDS_POLICY_TYPES.get(ptype, ptype)
        rules: dict[str, list[Rule]] = {"permission": [], "prohibition": [], "obligation": []}
        count = 0
        for kind, props in (("permission", P_PERMISSION), ("prohibition", P_PROHIBITION),
                            ("obligation", P_OBLIGATION)):
            for r in self.values(node, props):
                count += 1
                if count > MAX_RULES:
                    self.problems.append(Problem(where, f"more than {MAX_RULES} rules"))
                    break
                rules[kind].append(self.rule(r, kind, where))  # type: ignore[arg-type]
        # Compact policies: policy-level target/assignee/assigner/action apply to every rule
        # that lacks its own.
        shared: dict[str, Any] = {
            "targets": self.assets(node, where),
            "assignees": self.parties(node, P_ASSIGNEE, where),
            "assigners": self.parties(node, P_ASSIGNER, where),
            "actions": self.actions(node, where),
        }
        for kind in rules:
            rules[kind] = [_inherit(r, shared) for r in rules[kind]]
        conflict = self.one(node, _p("conflict"), where, "conflict")
        if conflict is not None and str(conflict) not in T.CONFLICT_TERMS:
            self.problems.append(Problem(where, f"unknown conflict strategy {conflict!s}"))
        if not any(rules.values()) and not self.values(node, (ODRL.inheritFrom,)):
            self.problems.append(Problem(where, "has no permission, prohibition or obligation"))
        meta = {}
        for p, key in ((URIRef("http://purl.org/dc/terms/description"), "description"),
                       (URIRef("http://purl.org/dc/terms/title"), "title")):
            v = self.g.value(node, p)
            if v is not None:
                meta[key] = str(v)
        return Policy(
            id=pid, type=ptype,
            profiles=tuple(str(p) for p in self.values(node, (ODRL.profile,))),
            conflict=str(conflict) if conflict is not None else None,
            permissions=tuple(rules["permission"]), prohibitions=tuple(rules["prohibition"]),
            obligations=tuple(rules["obligation"]),
            inherit_from=tuple(node_id(p) for p in self.values(node, (ODRL.inheritFrom,))),
            meta=meta,
        )


def _inherit(rule: Rule, shared: Mapping[str, Any]) -> Rule:
    changes = {k: v for k, v in shared.items() if v and not getattr(rule, k)}
    return replace(rule, **changes) if changes else rule


def coerce_literal(lit: Literal, left_operand: str | None = None) -> tuple[Any, str | None]:
    """The Python value of a literal, coerced to what ``left_operand`` compares against."""
    lexical = str(lit)
    kind = _expected_kind(left_operand, lit.datatype)
    try:
        if kind == "datetime":
            return parse_datetime(lexical), None
        if kind == "duration":
            return parse_duration(lexical), None
        if kind == "number":
            return Decimal(lexical.strip()), None
        if kind == "boolean":
            if lexical.strip() in ("true", "1"):
                return True, None
            if lexical.strip() in ("false", "0"):
                return False, None
            raise ValueError(lexical)
    except (ValueError, InvalidOperation):
        dt = str(lit.datatype).replace(XSD, "xsd:") if lit.datatype else _KIND_NAMES[kind]
        return lexical, f"right operand {lexical!r} is not a valid {dt}"
    return lexical, None


_KIND_NAMES = {"datetime": "xsd:dateTime", "duration": "xsd:duration", "number": "number",
               "boolean": "xsd:boolean", "string": "string"}


def _expected_kind(left_operand: str | None, datatype: URIRef | None) -> str:
    if left_operand == T.DATE_TIME:
        return "datetime"
    if left_operand in (T.ELAPSED_TIME, _O + "delayPeriod", _O + "timeInterval",
                        _O + "meteredTime"):
        return "duration"
    if left_operand in (T.COUNT, _O + "payAmount", _O + "percentage", _O + "resolution",
                        _O + "absoluteSize", _O + "relativeSize"):
        return "number"
    d = str(datatype) if datatype else ""
    if d in (XSD + "dateTime", XSD + "dateTimeStamp", XSD + "date"):
        return "datetime"
    if d in (XSD + "duration", XSD + "dayTimeDuration", XSD + "yearMonthDuration"):
        return "duration"
    if d in {XSD + t for t in ("integer", "decimal", "double", "float", "int", "long",
                               "nonNegativeInteger", "positiveInteger", "short")}:
        return "number"
    if d == XSD + "boolean":
        return "boolean"
    return "string"


def parse_datetime(text: str) -> datetime:
    s = text.strip()
    if len(s) == 10:  # xsd:date
        d = date.fromisoformat(s)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_duration(text: str) -> timedelta:
    """xsd:duration -> timedelta (months count as 30 days, years as 365: only day/time
    durations compare exactly; ``policy check`` warns about the others)."""
    lit = Literal(text.strip(), datatype=URIRef(XSD + "duration"))
    value = lit.toPython()
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (Literal, str)):
        raise ValueError(text)
    years = getattr(value, "years", 0)
    months = getattr(value, "months", 0)
    td = getattr(value, "tdelta", timedelta())
    return td + timedelta(days=365 * int(years) + 30 * int(months))


def find_policy_nodes(g: Graph) -> list[Node]:
    nodes = {s for t in POLICY_TYPES for s in g.subjects(RDF.type, URIRef(t))}
    # A policy referenced from another one (inheritFrom) or nested in a message stays a candidate.
    return sorted(nodes, key=lambda n: (isinstance(n, BNode), str(n)))


def policy_from_graph(
    g: Graph,
    node: Node | str | None = None,
    *,
    known: Mapping[str, Policy] | None = None,
    strict: bool = False,
    exclude_types: Iterable[str] = (),
) -> Policy:
    """The policy at ``node`` (or the single policy in ``g``), with inheritFrom resolved.

    ``strict`` raises on any problem (used by ``check`` and when a policy is stored); without
    it only structural problems raise, and unknown terms stay in the model so that evaluation
    denies with a reason (fail closed).
    """
    problems, policy = read_policy(g, node, known=known, exclude_types=exclude_types)
    fatal = [p for p in problems if strict or not _evaluable(p)]
    if fatal:
        raise PolicyError(fatal)
    return policy


def _evaluable(p: Problem) -> bool:
    return p.message.startswith(("unknown operator", "unknown left operand", "unknown action",
                                 "right operand"))


def read_policy(
    g: Graph,
    node: Node | str | None = None,
    *,
    known: Mapping[str, Policy] | None = None,
    exclude_types: Iterable[str] = (),
) -> tuple[list[Problem], Policy]:
    reader = _Reader(g)
    if node is None:
        excluded = {URIRef(t) for t in exclude_types}
        every = find_policy_nodes(g)
        # Excluded types (a Request beside the policy it asks about) step aside only when
        # something else is left: a lone Request is itself a policy to read.
        candidates = [n for n in every if not any((n, RDF.type, t) in g for t in excluded)]
        candidates = candidates or every
        if not candidates:
            raise PolicyError("no ODRL policy found (expected a node typed odrl:Set, "
                              "odrl:Offer, odrl:Agreement, odrl:Policy or an IDS contract)")
        referenced = {o for o in g.objects(None, ODRL.inheritFrom)}
        roots = [n for n in candidates if n not in referenced]
        if not roots:  # every policy inherits from another: a cycle, reported when resolved
            roots = candidates[:1]
        if len(roots) > 1:
            raise PolicyError(
                f"{len(roots)} policies found ({', '.join(node_id(n) for n in roots[:5])}); "
                "name the one to use"
            )
        node = roots[0]
    elif isinstance(node, str):
        node = BNode(node[2:]) if node.startswith("_:") else URIRef(node)
    policy = reader.policy(node)
    if policy.inherit_from:
        policy = _resolve_inheritance(policy, g, reader, known or {}, [policy.id])
    return reader.problems, policy


def _resolve_inheritance(
    policy: Policy, g: Graph, reader: _Reader, known: Mapping[str, Policy], chain: list[str]
) -> Policy:
    permissions, prohibitions, obligations = [], [], []
    conflict = policy.conflict
    for parent_id in policy.inherit_from:
        if parent_id in chain:
            cycle = " -> ".join([*chain, parent_id])
            raise PolicyError([Problem(f"policy {chain[0]}", f"cyclic inheritFrom: {cycle}")])
        if len(chain) > MAX_NESTING:
            raise PolicyError([Problem(f"policy {chain[0]}", "inheritFrom chain too long")])
        parent = known.get(parent_id)
        if parent is None:
            pnode = BNode(parent_id[2:]) if parent_id.startswith("_:") else URIRef(parent_id)
            if not any(True for _ in g.triples((pnode, None, None))):
                raise PolicyError([Problem(
                    f"policy {policy.id}",
                    f"inheritFrom {parent_id}: parent policy not available (policies are "
                    "never fetched; provide it in the same document or the policy store)",
                )])
            parent = reader.policy(pnode)
        if parent.inherit_from:
            parent = _resolve_inheritance(parent, g, reader, known, [*chain, parent_id])
        permissions.extend(parent.permissions)
        prohibitions.extend(parent.prohibitions)
        obligations.extend(parent.obligations)
        conflict = conflict or parent.conflict
    return replace(
        policy,
        permissions=tuple(permissions) + policy.permissions,
        prohibitions=tuple(prohibitions) + policy.prohibitions,
        obligations=tuple(obligations) + policy.obligations,
        conflict=conflict,
    )


def load_policy(source: str | Path | dict[str, Any], *, strict: bool = False) -> Policy:
    """A policy from a file path, JSON-LD dict, or Turtle/JSON-LD text."""
    if isinstance(source, dict):
        g = jsonld_to_graph(source, "policy")
    elif isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                      and not source.lstrip().startswith(("{", "@", "["))
                                      and Path(source).exists()):
        g = parse_file(source)
    else:
        g = parse_text(source, None, "policy")
    return policy_from_graph(g, strict=strict, exclude_types=(_O + "Request",))

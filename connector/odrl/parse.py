"""Read ODRL 2.2 policies (JSON-LD in any shipped context, expanded JSON-LD, Turtle; ODRL or
IDS Information Model form) into the typed model of ``connector.odrl.model``.

Every document goes through one path: text -> RDF graph (pyld with the offline loader for
JSON-LD, rdflib for Turtle) -> model. Problems are collected with their location so
``connector policy check`` can list them all; ``PolicyError`` carries that list, each problem
with its kind (``Problem.kind``), so callers act on the kind, never on the wording.

At the boundary, once: CURIEs with a prefix of ``terms.PREFIXES`` that a document's context
left undefined (``idsc:SECURITY_LEVEL`` under the DSP context, ``<dpv:X>`` in Turtle,
``"@type": "xsd:double"``) become the full IRIs they stand for, and so do right operands
written as ``xsd:anyURI`` or CURIE strings. A compact rule (several actions, targets, assignees
or assigners) becomes that many atomic rules, as ODRL 2.2 reads it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import product
from pathlib import Path
from typing import Any
from typing import Literal as TypingLiteral

from pyld import jsonld
from rdflib import RDF, BNode, Graph, Literal, URIRef
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
    describe,
)
from connector.vocab import (
    IDS,
    ODRL,
    ODRL_CONTEXT_URL,
    RemoteDocumentRefused,
    jsonld_call,
)
from connector.wireformat import DSP_ODRL_PROFILE_URL

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_NESTING = 32
MAX_RULES = 10_000

XSD = "http://www.w3.org/2001/XMLSchema#"
POLICY_TYPES = frozenset(
    {
        str(ODRL[t])
        for t in ("Policy", "Set", "Offer", "Agreement", "Request", "Privacy", "Ticket", "Assertion")
    }
    | set(T.IDS_POLICY_TYPES)
)
# Bare words in DSP-form policies ("action": "use", "leftOperand": "dateTime") that the DSP
# profile context leaves undefined resolve against the ODRL namespace, as the profile intends.
JSONLD_BASE = str(ODRL)


class _IllTypedLiteralLog(logging.Filter):
    """rdflib logs a warning with a traceback for every literal whose lexical form does not fit
    its datatype ("five"^^xsd:double). The engine reports those itself, as an IllTypedLiteral
    problem naming the operand and the literal, so the traceback is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.funcName != "_castLexicalToPython"


logging.getLogger("rdflib.term").addFilter(_IllTypedLiteralLog())

# What a problem means for the caller: "malformed" (the document cannot be read as a policy),
# "unknown" (a term the engine does not know: kept, and denied at evaluation), "ill-typed" (a
# right operand that is not of its operand's type: kept as text, and denied), "warning" (the
# policy works, but perhaps not as meant).
ProblemKind = TypingLiteral["malformed", "unknown", "ill-typed", "warning"]
EVALUABLE: frozenset[ProblemKind] = frozenset({"unknown", "ill-typed"})


@dataclass(frozen=True)
class Problem:
    location: str
    message: str
    kind: ProblemKind = "malformed"

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


@dataclass(frozen=True)
class IllTypedLiteral(Problem):
    """A right operand whose literal is not of the type its left operand compares."""

    operand: str = ""  # the left operand as written
    literal: str = ""  # the lexical form
    expected: str = ""  # what it should be (xsd:double, xsd:dateTime, ...)


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
            f"{what} is {size / 1_048_576:.1f} MiB; the limit is {MAX_DOCUMENT_BYTES / 1_048_576:.0f} MiB"
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
    """Expand a JSON-LD document with the offline loader and return its RDF graph (every named
    graph merged into one; the objects of a subject's property in document order)."""
    try:
        expanded = jsonld_call(jsonld.expand, document, options={"base": JSONLD_BASE})
        _check_iris(expanded, what)
        dataset = jsonld_call(jsonld.to_rdf, expanded, options={"base": JSONLD_BASE})
    except PolicyError:
        raise
    except RecursionError as exc:
        raise PolicyError(f"{what}: JSON-LD nested too deeply") from exc
    except Exception as exc:
        refused = _remote_refusal(exc)
        if refused is not None:
            raise PolicyError(f"{what}: {refused}") from exc
        raise PolicyError(f"{what}: invalid JSON-LD: {_first_line(exc)}") from exc
    g = Graph()
    blank: dict[str, BNode] = {}
    for triples in dataset.values():
        for t in triples:
            g.add(
                (
                    _term(t["subject"], blank, what),
                    _term(t["predicate"], blank, what),
                    _term(t["object"], blank, what),
                )
            )
    if not any(str(p).startswith(_O) for p in g.predicates()) and any(
        f'"{key}"' in json.dumps(document) for key in ("permission", "prohibition", "obligation")
    ):
        raise PolicyError(
            f"{what}: the ODRL terms (permission, action, ...) are not defined by the "
            "document's @context, so JSON-LD drops them; a policy outside a DSP message needs "
            f"the ODRL profile context ({DSP_ODRL_PROFILE_URL}) or {ODRL_CONTEXT_URL}"
        )
    return g


_XSD_STRING, _LANG_STRING = XSD + "string", str(RDF.langString)
# characters no IRI holds (RFC 3987): an "IRI" with them is refused, not carried into the model
_NOT_IN_IRI = re.compile(r"[\s<>\"{}|\\^`\x00-\x1f]")


def _check_iris(node: Any, what: str) -> None:
    """Refuse an identifier that is no IRI (``"target": "urn:asset x"``): JSON-LD would drop its
    triple silently, and a rule whose target is dropped would apply to every asset."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, list):
            stack.extend(n)
        elif isinstance(n, dict):
            for key, value in n.items():
                if key in ("@id", "@type") and isinstance(value, (str, list)):
                    for iri in [value] if isinstance(value, str) else value:
                        if isinstance(iri, str) and _NOT_IN_IRI.search(iri):
                            raise PolicyError(f"{what}: {iri!r} is not a valid IRI")
                elif key != "@value":
                    stack.append(value)


def _term(node: Mapping[str, Any], blank: dict[str, BNode], what: str) -> Node:
    """One term of pyld's RDF dataset as an rdflib term, with CURIEs expanded (a fresh blank
    node per label, so no two documents share one)."""
    value = node["value"]
    if node["type"] == "blank node":
        return blank.setdefault(value, BNode())
    if node["type"] == "IRI":
        if _NOT_IN_IRI.search(value):
            raise PolicyError(f"{what}: {value!r} is not a valid IRI")
        return URIRef(T.expand_curie(value))
    datatype = node.get("datatype")
    if datatype == _LANG_STRING and node.get("language"):
        return Literal(value, lang=node["language"])
    if datatype in (None, _XSD_STRING):
        return Literal(value)
    return Literal(value, datatype=URIRef(T.expand_curie(datatype)))


def _expanded(term: Node) -> Node:
    """The term with CURIEs expanded (the term itself when it has none)."""
    if isinstance(term, URIRef):
        full = T.expand_curie(str(term))
        return URIRef(full) if full != str(term) else term
    if isinstance(term, Literal) and term.datatype is not None:
        full = T.expand_curie(str(term.datatype))
        return Literal(str(term), datatype=URIRef(full)) if full != str(term.datatype) else term
    return term


def expand_curies(g: Graph) -> Graph:
    """``g`` with every IRI (and literal datatype) written as a CURIE with a prefix of
    ``terms.PREFIXES`` that the document did not define (``<idsc:USE>`` in Turtle) expanded:
    the same term then means the same whatever a peer wrote. The objects of each subject's
    property keep their order (a rule's position is its place in the document)."""
    if not any(_expanded(t) is not t for triple in g for t in triple):
        return g
    out = Graph()
    for s in {s for s, _, _ in g}:
        for _, p, o in g.triples((s, None, None)):
            out.add((_expanded(s), _expanded(p), _expanded(o)))
    return out


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
        return expand_curies(g)
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
# An IDS contract names its parties ids:consumer / ids:provider: the rules' assignee / assigner.
P_CONSUMER, P_PROVIDER = (URIRef(_I + "consumer"),), (URIRef(_I + "provider"),)
P_CONSTRAINT = _p("constraint")
P_LEFT, P_OPERATOR = _p("leftOperand"), _p("operator")
P_RIGHT, P_RIGHT_REF = _p("rightOperand"), _p("rightOperandReference")
P_UNIT = _p("unit")
# IM 4.2.0 names an action's refinement ids:actionRefinement; IDS-G's examples ids:refinement.
P_REFINEMENT = (URIRef(_O + "refinement"), URIRef(_I + "actionRefinement"), URIRef(_I + "refinement"))
P_CONSEQUENCE, P_REMEDY = _p("consequence"), _p("remedy")
P_LOGICAL = {T.OR: _p("or"), T.XONE: _p("xone"), T.AND: _p("and"), T.AND_SEQUENCE: _p("andSequence")}
ASSET_COLLECTION = URIRef(_O + "AssetCollection")
PARTY_COLLECTION = URIRef(_O + "PartyCollection")
ATOMIC_KINDS = ("permission", "prohibition")


@dataclass
class _Reader:
    g: Graph
    problems: list[Problem] = field(default_factory=list)
    vocab: T.Vocabulary = field(default_factory=T.vocabulary)
    rules: int = 0  # atomic rules read so far (bounded by MAX_RULES)

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

    def constraint(self, node: Node, where: str, position: str, depth: int = 0) -> AnyConstraint | None:
        cid = node_id(node)
        here = f"{where} / {describe('constraint', position, cid)}"
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
                for i, m in enumerate(members, 1):
                    c = self.constraint(m, here, str(i), depth + 1)
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
            self.problems.append(Problem(here, f"unknown operator {T.short(written_op)}", "unknown"))
        if not self.vocab.known_left_operand(left):
            self.problems.append(Problem(here, f"unknown left operand {T.short(written_left)}", "unknown"))
        rights = self.values(node, P_RIGHT)
        refs = [str(r) for r in self.values(node, P_RIGHT_REF)]
        if not rights and not refs:
            self.problems.append(Problem(here, "missing rightOperand"))
        right = tuple(self.right_value(r, left, written_left, here) for r in rights)
        unit = self.one(node, P_UNIT, here, "unit")
        dtype = self.g.value(node, ODRL.dataType)
        return Constraint(
            id=cid,
            left_operand=left,
            operator=op,
            right=right,
            right_reference=tuple(refs),
            datatype=str(dtype) if dtype is not None else None,
            unit=str(unit) if unit is not None else None,
            written_left_operand=written_left,
            written_operator=written_op,
        )

    def right_value(self, node: Node, left: str, written_left: str, where: str) -> Value:
        if isinstance(node, URIRef):
            return Value.iri(str(node))
        if isinstance(node, BNode):
            inner = self.g.value(node, RDF.value)
            if inner is not None:
                return self.right_value(inner, left, written_left, where)
            return Value.iri(node_id(node))
        assert isinstance(node, Literal)
        value, error = coerce_literal(node, left)
        if error:
            self.problems.append(
                IllTypedLiteral(
                    where,
                    f"{T.short(written_left)}: {error}",
                    "ill-typed",
                    operand=written_left,
                    literal=str(node),
                    expected=expected_type(node, left),
                )
            )
        elif isinstance(value, str) and not node.language:
            iri = value if node.datatype == _ANY_URI else _iri_value(value, left)
            if iri is not None:
                return Value.iri(iri)
        return Value(
            lexical=str(node),
            datatype=str(node.datatype) if node.datatype else None,
            language=node.language,
            py=value,
        )

    def constraints(self, node: Node, props: Iterable[URIRef], where: str) -> tuple[AnyConstraint, ...]:
        out = []
        for i, c in enumerate(self.values(node, props), 1):
            parsed = self.constraint(c, where, str(i))
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
                self.problems.append(Problem(where, f"unknown action {T.short(written)}", "unknown"))
            out.append(Action(iri=iri, refinements=refinements, written=written))
        return tuple(out)

    def parties(
        self, node: Node, props: Iterable[URIRef], where: str, literal_iris: bool = False
    ) -> tuple[Party, ...]:
        out = []
        for p in self.values(node, props):
            if literal_iris and isinstance(p, Literal) and _ABSOLUTE_IRI.fullmatch(str(p).strip()):
                out.append(Party(iri=T.expand_curie(str(p).strip())))
                continue
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

    def rule(self, node: Node, kind: RuleKind, where: str, position: str, role: str | None = None) -> Rule:
        """The rule at ``node`` as written (a compact rule stays whole; see ``atomic``)."""
        rid = node_id(node)
        here = f"{where} / {describe(role or kind, position, rid)}"
        duties = tuple(self.rule(d, "duty", here, str(i)) for i, d in enumerate(self.values(node, P_DUTY), 1))
        consequences = tuple(
            self.rule(d, "duty", here, str(i), "consequence")
            for i, d in enumerate(self.values(node, P_CONSEQUENCE), 1)
        )
        remedies = tuple(
            self.rule(d, "duty", here, str(i), "remedy") for i, d in enumerate(self.values(node, P_REMEDY), 1)
        )
        if kind == "permission" and (consequences or remedies):
            self.problems.append(Problem(here, "a permission has duties, not consequences/remedies"))
        if kind != "prohibition" and remedies:
            self.problems.append(Problem(here, "only a prohibition has remedies"))
        return Rule(
            id=rid,
            kind=kind,
            actions=self.actions(node, here),
            targets=self.assets(node, here),
            assignees=self.parties(node, P_ASSIGNEE, here),
            assigners=self.parties(node, P_ASSIGNER, here),
            constraints=self.constraints(node, P_CONSTRAINT, here),
            duties=duties,
            consequences=consequences,
            remedies=remedies,
            position=position,
        )

    def atomic(self, rule: Rule, where: str) -> list[Rule]:
        """A compact permission or prohibition as its atomic rules: one per combination of its
        actions, targets, assignees and assigners (as ODRL 2.2 reads a compact rule), each with the rule's
        constraints and duties, numbered ``<position>.1``, ``<position>.2``, ..."""
        parts = (rule.actions, rule.targets, rule.assignees, rule.assigners)
        n = 1
        for p in parts:
            n *= max(1, len(p))
        self.rules += n
        if self.rules > MAX_RULES:
            self.problems.append(Problem(where, f"more than {MAX_RULES} rules"))
            return []
        if n == 1 or rule.kind not in ATOMIC_KINDS:
            return [rule]
        return [
            replace(
                rule,
                actions=_single(a),
                targets=_single(t),
                assignees=_single(p),
                assigners=_single(q),
                position=f"{rule.position}.{i}",
            )
            for i, (a, t, p, q) in enumerate(product(*(x or (None,) for x in parts)), 1)
        ]

    def policy(self, node: Node) -> Policy:
        pid = node_id(node)
        where = f"policy {pid}" if not isinstance(node, BNode) else "policy"
        types = self.types(node) & POLICY_TYPES
        ptype = next(iter(sorted(types)), _O + "Set")
        ptype = T.IDS_POLICY_TYPES.get(ptype, ptype)
        # Compact policies: policy-level target/assignee/assigner/action apply to every rule
        # that lacks its own.
        shared: dict[str, Any] = {
            "targets": self.assets(node, where),
            "assignees": self.parties(node, P_ASSIGNEE, where)
            or self.parties(node, P_CONSUMER, where, literal_iris=True),
            "assigners": self.parties(node, P_ASSIGNER, where)
            or self.parties(node, P_PROVIDER, where, literal_iris=True),
            "actions": self.actions(node, where),
        }
        rules: dict[str, list[Rule]] = {"permission": [], "prohibition": [], "obligation": []}
        for kind, props in (
            ("permission", P_PERMISSION),
            ("prohibition", P_PROHIBITION),
            ("obligation", P_OBLIGATION),
        ):
            for i, r in enumerate(self.values(node, props), 1):
                if self.rules > MAX_RULES:
                    break
                written = _inherit(self.rule(r, kind, where, str(i)), shared)  # type: ignore[arg-type]
                rules[kind].extend(self.atomic(written, where))
        conflict = self.one(node, _p("conflict"), where, "conflict")
        if conflict is not None and str(conflict) not in T.CONFLICT_TERMS:
            self.problems.append(Problem(where, f"unknown conflict strategy {conflict!s}"))
        if not any(rules.values()) and not self.values(node, (ODRL.inheritFrom,)):
            self.problems.append(Problem(where, "has no permission, prohibition or obligation"))
        meta = {}
        for p, key in (
            (URIRef("http://purl.org/dc/terms/description"), "description"),
            (URIRef("http://purl.org/dc/terms/title"), "title"),
        ):
            v = self.g.value(node, p)
            if v is not None:
                meta[key] = str(v)
        return Policy(
            id=pid,
            type=ptype,
            profiles=tuple(str(p) for p in self.values(node, (ODRL.profile,))),
            conflict=str(conflict) if conflict is not None else None,
            permissions=tuple(rules["permission"]),
            prohibitions=tuple(rules["prohibition"]),
            obligations=tuple(rules["obligation"]),
            inherit_from=tuple(node_id(p) for p in self.values(node, (ODRL.inheritFrom,))),
            meta=meta,
        )


_ANY_URI = URIRef(XSD + "anyURI")


def _single(x: Any) -> tuple[Any, ...]:
    return () if x is None else (x,)


# An absolute IRI (a scheme, then no whitespace), or a CURIE with a known prefix.
_ABSOLUTE_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+")


def _iri_value(text: str, left_operand: str) -> str | None:
    """The IRI a string right operand names (a CURIE ``dpv:X``, a role name ``consumer`` of
    ``dsc:role``), or None when it is text. Operands whose values are text are never IRIs."""
    if left_operand in T.TEXT_OPERANDS:
        return None
    t = text.strip()
    if T.is_curie(t):
        return T.expand_curie(t)
    if left_operand == T.ROLE and t.lower() in T.ROLE_TERMS:
        return T.ROLE_TERMS[t.lower()]
    return None


def _inherit(rule: Rule, shared: Mapping[str, Any]) -> Rule:
    changes = {k: v for k, v in shared.items() if v and not getattr(rule, k)}
    return replace(rule, **changes) if changes else rule


def coerce_literal(lit: Literal, left_operand: str | None = None) -> tuple[Any, str | None]:
    """The Python value of a literal, coerced to what ``left_operand`` compares against, and
    what is wrong with it (None when it fits)."""
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
        if kind == "iri":
            # a policy names identities: an anyURI right operand must be absolute (a
            # placeholder such as "?connectorURI" is not)
            if not _ABSOLUTE_IRI.fullmatch(lexical.strip()):
                raise ValueError(lexical)
            return T.expand_curie(lexical.strip()), None
    except (ValueError, InvalidOperation):
        return lexical, f"right operand {lexical!r} is not a valid {expected_type(lit, left_operand)}"
    return lexical, None


def expected_type(lit: Literal, left_operand: str | None = None) -> str:
    """The type a literal must have where it stands, as a user would write it (xsd:double)."""
    kind = _expected_kind(left_operand, lit.datatype)
    if kind == "iri":
        return _KIND_NAMES[kind]
    if lit.datatype and _expected_kind(None, lit.datatype) == kind:
        return T.short(str(lit.datatype))
    return _KIND_NAMES[kind]


_KIND_NAMES = {
    "datetime": "xsd:dateTime",
    "duration": "xsd:duration",
    "number": "number",
    "boolean": "xsd:boolean",
    "string": "string",
    "iri": "absolute IRI (xsd:anyURI)",
}


def _expected_kind(left_operand: str | None, datatype: URIRef | None) -> str:
    if left_operand == T.DATE_TIME:
        return "datetime"
    if left_operand in (T.ELAPSED_TIME, _O + "delayPeriod", _O + "timeInterval", _O + "meteredTime"):
        return "duration"
    if left_operand in (
        T.COUNT,
        _O + "payAmount",
        _O + "percentage",
        _O + "resolution",
        _O + "absoluteSize",
        _O + "relativeSize",
    ):
        return "number"
    d = str(datatype) if datatype else ""
    if d in (XSD + "dateTime", XSD + "dateTimeStamp", XSD + "date"):
        return "datetime"
    if d in (XSD + "duration", XSD + "dayTimeDuration", XSD + "yearMonthDuration"):
        return "duration"
    if d in {
        XSD + t
        for t in (
            "integer",
            "decimal",
            "double",
            "float",
            "int",
            "long",
            "nonNegativeInteger",
            "positiveInteger",
            "short",
        )
    }:
        return "number"
    if d == XSD + "boolean":
        return "boolean"
    if d == XSD + "anyURI" and left_operand not in T.TEXT_OPERANDS:
        return "iri"
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
    return p.kind in EVALUABLE


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
            raise PolicyError(
                "no ODRL policy found (expected a node typed odrl:Set, "
                "odrl:Offer, odrl:Agreement, odrl:Policy or an IDS contract)"
            )
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
    permissions: list[Rule] = []
    prohibitions: list[Rule] = []
    obligations: list[Rule] = []
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
                raise PolicyError(
                    [
                        Problem(
                            f"policy {policy.id}",
                            f"inheritFrom {parent_id}: parent policy not available (policies are "
                            "never fetched; provide it in the same document or the policy store)",
                        )
                    ]
                )
            parent = reader.policy(pnode)
        if parent.inherit_from:
            parent = _resolve_inheritance(parent, g, reader, known, [*chain, parent_id])
        # an inherited rule is named by its place in the parent: "permission 1 of urn:parent"
        of = f" of {T.short(parent_id)}" if not parent_id.startswith("_:") else " of a parent"
        permissions.extend(replace(r, position=r.position + of) for r in parent.permissions)
        prohibitions.extend(replace(r, position=r.position + of) for r in parent.prohibitions)
        obligations.extend(replace(r, position=r.position + of) for r in parent.obligations)
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
    elif isinstance(source, Path) or (
        isinstance(source, str)
        and "\n" not in source
        and not source.lstrip().startswith(("{", "@", "["))
        and Path(source).exists()
    ):
        g = parse_file(source)
    else:
        g = parse_text(source, None, "policy")
    return policy_from_graph(g, strict=strict, exclude_types=(_O + "Request",))

"""Requests and states of the world in plain JSON, for users who never write JSON-LD.

```json
{"action": "use", "assignee": "urn:participant:bob", "target": "urn:asset:x",
 "purpose": "https://w3id.org/dpv#AcademicResearch",
 "context": {"odrl:recipient": "urn:participant:carol"},
 "world": {"now": "2026-01-05T10:00:00Z", "count": 3, "startedAt": "2026-01-01T00:00:00Z",
           "facts": {"idsc:SECURITY_LEVEL": "idsc:TRUST_SECURITY_PROFILE"},
           "partOf": {"urn:place:Ghent": ["urn:place:Belgium"]},
           "types": {"urn:project:42": ["https://w3id.org/dpv#AcademicResearch"]},
           "duties": {"urn:duty:1": "Violated"}}}
```
Short names: a bare word is an ODRL term (``use``, ``purpose``); ``odrl:``, ``idsc:``,
``ids:``, ``dsc:``, ``dpv:``, ``xsd:`` prefixes are understood.

Policies in plain JSON (what the management API and ``connector policy check`` accept): rules
without JSON-LD, ``{"permission": [{"action": "use", "constraint": [{"leftOperand": "purpose",
"operator": "eq", "rightOperand": "dpv:ScientificResearch"}]}]}``. ``policy_document`` wraps them
in ``POLICY_CONTEXT`` (the DSP contexts and every prefix of ``PREFIXES``); a right operand that
names a term becomes an IRI, a number a typed literal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rdflib import OWL, RDF, Literal

from connector.odrl import terms as T
from connector.odrl.model import DutyState, Request, Value, World
from connector.odrl.parse import XSD, PolicyError, coerce_literal, parse_datetime
from connector.odrl.terms import PREFIXES, expand_term, is_curie
from connector.vocab import ontology_graph
from connector.wireformat import DSP_CONTEXT_URL, DSP_ODRL_PROFILE_URL

__all__ = [
    "POLICY_CONTEXT",
    "PREFIXES",
    "expand_term",
    "is_plain_policy",
    "policy_document",
    "request_from_json",
    "world_from_json",
]

# The context of a policy written in plain JSON: the DSP terms, the ODRL profile that gives
# them outside a message, and every prefix a user may write.
POLICY_CONTEXT: list[Any] = [DSP_CONTEXT_URL, DSP_ODRL_PROFILE_URL, dict(PREFIXES)]
RULE_KEYS = ("permission", "prohibition", "obligation")
_DEONTIC = {"fulfilled": "Fulfilled", "violated": "Violated", "nonset": "NonSet", "pending": "NonSet"}
REPORT_NS = "https://w3id.org/force/compliance-report#"


def canonical_operand(iri: str) -> str:
    """The left operand a policy constraint uses for ``iri`` (IDS codes, deprecated terms)."""
    iri = T.IDS_LEFT_OPERANDS.get(iri, iri)
    return T.vocabulary().equivalent.get(iri, iri)


def _looks_like_term(s: str) -> bool:
    if "://" in s or s.startswith(("urn:", "did:")):
        return True
    return is_curie(s)


# --------------------------------------------------------------------------- plain policies


def is_plain_policy(document: Any) -> bool:
    """A policy in plain JSON: an object with rules and no JSON-LD ``@context``."""
    return (
        isinstance(document, Mapping) and "@context" not in document and any(k in document for k in RULE_KEYS)
    )


def policy_document(document: Mapping[str, Any], policy_id: str | None = None) -> dict[str, Any]:
    """The JSON-LD policy of ``document``: plain rules wrapped in ``POLICY_CONTEXT`` (a policy
    with its own ``@context`` is kept as it is); ``policy_id`` sets its ``@id``."""
    doc = dict(document)
    if "@context" not in doc:
        doc = {"@context": POLICY_CONTEXT, "@type": doc.pop("@type", "Set"), **jsonld_rules(doc)}
    if policy_id is not None:
        doc["@id"] = policy_id
    return doc


def jsonld_rules(node: Any) -> Any:
    """Plain rules -> DSP-profile JSON-LD: right operands that name a term become
    ``{"@id": <full IRI>}``, numbers and booleans typed literals, and an ODRL property the DSP
    contexts do not define (``informedParty``, ``unit``, ``refinement``, ...) is written
    ``odrl:<name>``, so that JSON-LD does not drop it."""
    if isinstance(node, list):
        return [jsonld_rules(x) for x in node]
    if not isinstance(node, Mapping):
        return node
    return {
        _property(k): right_operand(v)
        if k == "rightOperand"
        else {"@id": expand_term(v)}
        if k.endswith("Party") and isinstance(v, str)
        else jsonld_rules(v)
        for k, v in node.items()
    }


def _property(key: str) -> str:
    if key.startswith("@") or ":" in key or key in _DSP_TERMS or key not in _odrl_properties():
        return key
    return "odrl:" + key


# the terms the DSP contexts define (vocab/dspace/*.jsonld); the rest needs a prefix
_DSP_TERMS = frozenset(
    {
        "action",
        "and",
        "andSequence",
        "assignee",
        "assigner",
        "constraint",
        "duty",
        "hasPolicy",
        "leftOperand",
        "obligation",
        "operator",
        "or",
        "permission",
        "profile",
        "prohibition",
        "rightOperand",
        "target",
        "xone",
    }
)


@cache
def _odrl_properties() -> frozenset[str]:
    """Local names of the ODRL vocabulary's properties (offline, from vocab/odrl)."""
    g = ontology_graph(T.O)
    names = {
        str(s)[len(T.O) :]
        for t in (RDF.Property, OWL.ObjectProperty, OWL.DatatypeProperty)
        for s in g.subjects(RDF.type, t)
        if str(s).startswith(T.O)
    }
    return frozenset(names)


def right_operand(v: Any) -> Any:
    """A plain right operand as JSON-LD (DSP wants a string, an object or an array)."""
    if isinstance(v, list):
        return [right_operand(x) for x in v]
    if isinstance(v, bool):
        return {"@value": "true" if v else "false", "@type": XSD + "boolean"}
    if isinstance(v, int):
        return {"@value": str(v), "@type": XSD + "integer"}
    if isinstance(v, float):
        return {"@value": repr(v), "@type": XSD + "decimal"}
    if isinstance(v, str) and _looks_like_term(v.strip()):
        return {"@id": expand_term(v)}
    return v


def to_value(raw: Any, operand: str) -> Value:
    """A JSON value as a typed Value for ``operand`` (IRIs kept; literals coerced)."""
    if isinstance(raw, bool):
        return Value(lexical=str(raw).lower(), py=raw)
    if isinstance(raw, (int, float, Decimal)):
        lit = Literal(str(raw))
    elif isinstance(raw, str):
        if _looks_like_term(raw) and operand not in T.TEXT_OPERANDS:
            return Value.iri(expand_term(raw))
        lit = Literal(raw)
    else:
        raise PolicyError(f"{T.short(operand)}: value {raw!r} must be a string or a number")
    py, error = coerce_literal(lit, operand)
    if error:
        raise PolicyError(f"{T.short(operand)}: {error}")
    if (
        isinstance(raw, (int, float, Decimal))
        and not isinstance(py, (datetime,))
        and (operand not in (T.DATE_TIME, T.ELAPSED_TIME))
    ):
        py = Decimal(str(raw))
    return Value(lexical=str(raw), py=py)


class _WorldIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    now: str | None = None
    count: int | None = Field(default=None, ge=0)
    started_at: str | None = Field(default=None, alias="startedAt")
    facts: dict[str, Any] = Field(default_factory=dict)
    part_of: dict[str, list[str]] = Field(default_factory=dict, alias="partOf")
    types: dict[str, list[str]] = Field(default_factory=dict)
    duties: dict[str, str] = Field(default_factory=dict)


class _RequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    action: str
    assignee: str | None = None
    target: str | None = None
    purpose: str | list[str] | None = None
    recipient: str | list[str] | None = None
    spatial: str | list[str] | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    world: _WorldIn | None = None


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _problem(exc: ValidationError, what: str) -> PolicyError:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or what
        parts.append(f"{what}.{loc}: {err['msg']}")
    return PolicyError("; ".join(parts))


def world_from_json(data: Mapping[str, Any] | None, now: datetime | None = None) -> World:
    try:
        w = _WorldIn.model_validate(data or {})
    except ValidationError as exc:
        raise _problem(exc, "world") from exc
    try:
        current = parse_datetime(w.now) if w.now else (now or datetime.now(UTC))
        started = parse_datetime(w.started_at) if w.started_at else None
    except ValueError as exc:
        raise PolicyError(f"world: not a valid xsd:dateTime: {exc}") from exc
    facts = {}
    for k, v in w.facts.items():
        operand = canonical_operand(expand_term(k))
        facts[operand] = tuple(to_value(x, operand) for x in _as_list(v))
    duties = {}
    for duty, state in w.duties.items():
        name = _DEONTIC.get(state.strip().lower())
        if name is None:
            raise PolicyError(f"world.duties.{duty}: state {state!r} is not Fulfilled, Violated or NonSet")
        duties[expand_term(duty)] = DutyState(deontic=REPORT_NS + name)
    return World(
        now=current,
        counts={(None, None): w.count} if w.count is not None else {},
        usage_started={(None, None): started} if started else {},
        types={expand_term(k): frozenset(expand_term(x) for x in v) for k, v in w.types.items()},
        part_of={expand_term(k): frozenset(expand_term(x) for x in v) for k, v in w.part_of.items()},
        duty_states=duties,
        facts=facts,
    )


def request_from_json(data: Mapping[str, Any], now: datetime | None = None) -> tuple[Request, World]:
    """A plain-JSON request (with its optional ``world``) as the engine's Request and World."""
    try:
        r = _RequestIn.model_validate(data)
    except ValidationError as exc:
        raise _problem(exc, "request") from exc
    context: dict[str, tuple[Value, ...]] = {}
    for name in ("purpose", "recipient", "spatial"):
        v = getattr(r, name)
        if v is not None:
            operand = T.O + name
            context[operand] = tuple(to_value(x, operand) for x in _as_list(v))
    for k, v in r.context.items():
        operand = canonical_operand(expand_term(k))
        context[operand] = tuple(to_value(x, operand) for x in _as_list(v))
    request = Request(
        action=T.vocabulary().canonical_action(expand_term(r.action)),
        assignee=expand_term(r.assignee) if r.assignee else None,
        target=expand_term(r.target) if r.target else None,
        context=context,
    )
    world = world_from_json(r.world.model_dump(by_alias=True) if r.world else None, now)
    return request, world

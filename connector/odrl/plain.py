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
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connector.odrl import terms as T
from connector.odrl.model import DutyState, Request, Value, World
from connector.odrl.parse import PolicyError, coerce_literal, parse_datetime

PREFIXES = {
    "odrl": T.O,
    "idsc": T.IDSC_NS,
    "ids": T.IDS_NS,
    "dsc": T.DSC_NS,
    "dpv": "https://w3id.org/dpv#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "dct": "http://purl.org/dc/terms/",
}
_DEONTIC = {"fulfilled": "Fulfilled", "violated": "Violated", "nonset": "NonSet",
            "pending": "NonSet"}
REPORT_NS = "https://w3id.org/force/compliance-report#"


def expand_term(term: str) -> str:
    """``use`` -> odrl:use IRI; ``idsc:PURPOSE`` -> full IRI; IRIs stay as they are."""
    term = term.strip()
    if "://" in term or term.startswith(("urn:", "_:", "did:")):
        return term
    prefix, sep, local = term.partition(":")
    if sep:
        if prefix in PREFIXES:
            return PREFIXES[prefix] + local
        return term
    return T.O + term


def canonical_operand(iri: str) -> str:
    """The left operand a policy constraint uses for ``iri`` (IDS codes, deprecated terms)."""
    iri = T.IDS_LEFT_OPERANDS.get(iri, iri)
    return T.vocabulary().equivalent.get(iri, iri)


def _looks_like_term(s: str) -> bool:
    if "://" in s or s.startswith(("urn:", "did:")):
        return True
    prefix, sep, local = s.partition(":")
    return bool(sep) and prefix in PREFIXES and bool(local) and " " not in s


def to_value(raw: Any, operand: str) -> Value:
    """A JSON value as a typed Value for ``operand`` (IRIs kept; literals coerced)."""
    from rdflib import Literal

    if isinstance(raw, bool):
        return Value(lexical=str(raw).lower(), py=raw)
    if isinstance(raw, (int, float)):
        lit = Literal(str(raw))
    elif isinstance(raw, str):
        if _looks_like_term(raw):
            return Value.iri(expand_term(raw))
        lit = Literal(raw)
    else:
        raise PolicyError(f"{T.short(operand)}: value {raw!r} must be a string or a number")
    py, error = coerce_literal(lit, operand)
    if error:
        raise PolicyError(f"{T.short(operand)}: {error}")
    if isinstance(raw, (int, float)) and not isinstance(py, (datetime,)) and operand not in (
            T.DATE_TIME, T.ELAPSED_TIME):
        from decimal import Decimal

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
            raise PolicyError(f"world.duties.{duty}: state {state!r} is not Fulfilled, "
                              "Violated or NonSet")
        duties[expand_term(duty)] = DutyState(deontic=REPORT_NS + name)
    return World(
        now=current,
        counts={(None, None): w.count} if w.count is not None else {},
        usage_started={(None, None): started} if started else {},
        types={expand_term(k): frozenset(expand_term(x) for x in v) for k, v in w.types.items()},
        part_of={expand_term(k): frozenset(expand_term(x) for x in v)
                 for k, v in w.part_of.items()},
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

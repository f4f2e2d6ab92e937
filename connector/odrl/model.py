"""The typed ODRL model the engine works on: policies, rules, constraints, parties, assets.

Terms are absolute IRIs (strings); blank nodes are written ``_:id``. Right-operand values are
kept both as written (for reports and round trips) and coerced to Python values (datetime,
timedelta, Decimal, str) so evaluation does no parsing.

Rules are atomic (one action, target, assignee and assigner at most each): a compact rule of the
document becomes as many atomic rules as it has combinations, as ODRL 2.2 reads it. Each keeps
its ``position`` in the document ("2"; "2.1", "2.2" for the parts of a compact rule), so
explanations name it as "permission 2 (urn:...)" and never by a blank node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from connector.odrl.terms import O, short

RuleKind = Literal["permission", "prohibition", "duty", "obligation"]
PyValue = datetime | timedelta | Decimal | bool | str

XSD_NS = "http://www.w3.org/2001/XMLSchema#"


@dataclass(frozen=True)
class Value:
    """One right-operand (or context) value: an IRI or a typed literal."""

    lexical: str
    is_iri: bool = False
    datatype: str | None = None
    language: str | None = None
    py: PyValue | None = None  # the coerced value; for IRIs the IRI string

    @staticmethod
    def iri(iri: str) -> Value:
        return Value(lexical=iri, is_iri=True, py=iri)

    def __str__(self) -> str:
        if self.is_iri:
            return self.lexical
        if self.datatype and self.datatype != XSD_NS + "string":
            return f'"{self.lexical}"^^{self.datatype.replace(XSD_NS, "xsd:")}'
        return f'"{self.lexical}"'


@dataclass(frozen=True)
class Constraint:
    id: str
    left_operand: str  # canonical ODRL IRI (IDS operands mapped)
    operator: str  # canonical ODRL IRI (IDS operators mapped)
    right: tuple[Value, ...]
    right_reference: tuple[str, ...] = ()
    datatype: str | None = None
    unit: str | None = None
    written_left_operand: str = ""  # as in the source, for reports
    written_operator: str = ""


@dataclass(frozen=True)
class LogicalConstraint:
    id: str
    operator: str  # odrl:or | odrl:xone | odrl:and | odrl:andSequence
    operands: tuple[AnyConstraint, ...]


AnyConstraint = Constraint | LogicalConstraint


@dataclass(frozen=True)
class Party:
    iri: str
    is_collection: bool = False
    refinements: tuple[AnyConstraint, ...] = ()


@dataclass(frozen=True)
class Asset:
    iri: str
    is_collection: bool = False
    refinements: tuple[AnyConstraint, ...] = ()


@dataclass(frozen=True)
class Action:
    iri: str  # canonical ODRL IRI (IDS actions mapped)
    refinements: tuple[AnyConstraint, ...] = ()
    written: str = ""


@dataclass(frozen=True)
class Rule:
    id: str
    kind: RuleKind
    actions: tuple[Action, ...] = ()
    targets: tuple[Asset, ...] = ()
    assignees: tuple[Party, ...] = ()
    assigners: tuple[Party, ...] = ()
    constraints: tuple[AnyConstraint, ...] = ()
    duties: tuple[Rule, ...] = ()  # a permission's preconditions
    consequences: tuple[Rule, ...] = ()  # a duty's consequences when it is not fulfilled
    remedies: tuple[Rule, ...] = ()  # a prohibition's remedies when it is infringed
    # where the document has it: "2" (the second permission), "2.1" (a part of a compact rule)
    position: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        """How explanations name the rule: ``permission 2 (urn:...)``, ``duty 1``."""
        return describe(self.kind, self.position, self.id)

    @property
    def is_unconstrained(self) -> bool:
        return not self.constraints and all(not a.refinements for a in self.actions)


@dataclass(frozen=True)
class Policy:
    id: str
    type: str = O + "Set"
    profiles: tuple[str, ...] = ()
    conflict: str | None = None  # None means the default, odrl:invalid
    permissions: tuple[Rule, ...] = ()
    prohibitions: tuple[Rule, ...] = ()
    obligations: tuple[Rule, ...] = ()
    inherit_from: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.permissions + self.prohibitions

    @property
    def conflict_strategy(self) -> str:
        return self.conflict or (O + "invalid")

    @property
    def label(self) -> str:
        """How explanations name the policy: ``offer urn:...``, ``the agreement``."""
        kind = _POLICY_KINDS.get(self.type, "policy")
        return f"the {kind}" if is_blank(self.id) else f"{kind} {short(self.id)}"


_POLICY_KINDS = {O + "Offer": "offer", O + "Agreement": "agreement", O + "Request": "request"}


def is_blank(node_id: str) -> bool:
    return node_id.startswith("_:")


def describe(kind: str, position: str, node_id: str) -> str:
    """``kind position (id)``; a blank node's generated id is never shown."""
    name = f"{kind} {position}" if position else kind
    if is_blank(node_id):
        return name
    return f"{name} ({short(node_id)})" if position else f"{name} {short(node_id)}"


@dataclass(frozen=True)
class DutyState:
    """What the state of the world says of a duty (from an earlier compliance report)."""

    deontic: str  # report:Fulfilled | report:Violated | report:NonSet (full IRIs)
    performance: str | None = None
    report_id: str | None = None  # the existing DutyReport, referenced by conditionReport


@dataclass(frozen=True)
class Request:
    """An access request: who wants to do what with which asset, and for what."""

    action: str
    assignee: str | None = None
    target: str | None = None
    context: dict[str, tuple[Value, ...]] = field(default_factory=dict)
    id: str | None = None  # the odrl:Request
    rule_id: str | None = None  # the request's permission


@dataclass
class World:
    """The state of the world the decision depends on: time, usage, facts, duty states."""

    now: datetime
    # (assignee, target) -> executions already completed (the requested one not counted)
    counts: dict[tuple[str | None, str | None], int] = field(default_factory=dict)
    # (assignee, target) -> start of the usage period (for elapsedTime)
    usage_started: dict[tuple[str | None, str | None], datetime] = field(default_factory=dict)
    types: dict[str, frozenset[str]] = field(default_factory=dict)  # rdf:type facts
    part_of: dict[str, frozenset[str]] = field(default_factory=dict)  # direct odrl:partOf
    duty_states: dict[str, DutyState] = field(default_factory=dict)
    # facts about the requester not carried by the request (DAT attributes, ...):
    facts: dict[str, tuple[Value, ...]] = field(default_factory=dict)

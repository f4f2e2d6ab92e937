"""The duties an agreement puts on the consumer's copy, read once from the parsed ODRL model.

One reading, used by the vault (when the copy must be deleted) and by local use (what each use
must fulfil first). The agreement is read as the engine reads it
(``connector.usage.pipeline.agreement_document`` -> ``connector.odrl.parse``), so every spelling
the engine knows means the same here: ``delete``, ``odrl:delete``, the full IRI and IDS's
``idsc:DELETE`` are one action; a duty is a permission's ``duty`` (IDS: ``preDuty``/``postDuty``)
or a policy-level ``obligation``.

- delete: due at the ``dateTime`` its constraint names (``gteq``/``gt``/``eq``), or a duration
  (``elapsedTime``, IDS's ``idsc:DELAY``) after the agreement was signed; the earliest one wins.
  A delete duty with no time adds no schedule.
- ``idsc:LOG``: every use goes into the consumer's audit log.
- ``inform`` (IDS ``idsc:INFORM``/``idsc:NOTIFY``): every use is reported, to its informed party.
- any other duty: this connector cannot fulfil it, so the copy is not used (fail closed). The
  duties of a ``distribute`` permission bind a copy leaving the vault (connector.usage.export),
  not its local use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from rdflib import BNode, URIRef
from rdflib.graph import Graph
from rdflib.term import Node

from connector.odrl import terms as T
from connector.odrl.model import AnyConstraint, Constraint, LogicalConstraint, Policy, Rule
from connector.odrl.parse import (
    PolicyError,
    jsonld_to_graph,
    parse_datetime,
    parse_duration,
    policy_from_graph,
)
from connector.usage.pipeline import agreement_document

DELETE = T.O + "delete"
INFORM = T.O + "inform"
LOG = T.IDSC_NS + "LOG"
DISTRIBUTE = T.O + "distribute"
INFORMED_PARTY = T.O + "informedParty"
_WHEN = (T.O + "gteq", T.O + "gt", T.O + "eq")
_AFTER = (T.ELAPSED_TIME, T.O + "delayPeriod")  # idsc:DELAY is odrl:delayPeriod
# the DSP context leaves informedParty undefined: the one term this reading adds
_INFORMED_PARTY_TERM = {"informedParty": {"@id": INFORMED_PARTY, "@type": "@id"}}


@dataclass(frozen=True, slots=True)
class Duties:
    """What an agreement obliges the consumer to do with its copy."""

    delete_at: datetime | None  # when the copy must be deleted (None: never)
    log: bool  # idsc:LOG: every use in the consumer's audit log
    inform: tuple[str, ...]  # parties to inform of every use ("" where none is named)
    unhandled: tuple[str, ...] = ()  # duties this connector cannot fulfil: no local use
    has_delete: bool = False  # some delete duty, timed or not

    def deletion_due(self, now: datetime) -> bool:
        return self.delete_at is not None and self.delete_at <= now


def agreement_duties(policy: Mapping[str, Any], signed_at: datetime | None = None) -> Duties:
    """The duties of an agreement's policy (compact JSON-LD as stored), a delay counted from
    ``signed_at`` (None: a delay schedules nothing). An agreement that does not parse is
    refused whole (``unhandled``). Cached by the policy's text: local use asks at every read."""
    return _read(json.dumps(policy, sort_keys=True, separators=(",", ":")), signed_at)


@lru_cache(maxsize=1024)
def _read(text: str, signed_at: datetime | None) -> Duties:
    try:
        graph, model = _parsed(json.loads(text))
    except PolicyError as exc:
        return Duties(None, False, (), (f"(the agreement does not parse: {exc})",))
    due: list[datetime] = []
    has_delete = logs = False
    inform: list[str] = []
    unhandled: list[str] = []
    for duty, of_distribute in _duties(model):
        action = duty.actions[0].iri if duty.actions else ""
        if action == DELETE:
            has_delete = True
            due.extend(_due(duty, signed_at))
        elif of_distribute:
            continue  # binds a copy leaving the vault (connector.usage.export)
        elif action == LOG:
            logs = True
        elif action == INFORM:
            parties = [str(p) for p in graph.objects(_node(duty.id), URIRef(INFORMED_PARTY))]
            inform.extend(parties or [""])
        else:
            unhandled.append(_name(action) if action else f"{duty.label} (no action)")
    return Duties(min(due) if due else None, logs, tuple(inform), tuple(unhandled), has_delete)


def delete_after(policy: Mapping[str, Any], signed_at: datetime | None) -> datetime | None:
    """When the agreement's delete duty falls due, or None if it has none with a time."""
    return agreement_duties(policy, signed_at).delete_at


def _parsed(policy: Mapping[str, Any]) -> tuple[Graph, Policy]:
    doc = agreement_document(policy)
    context = doc.get("@context")
    doc["@context"] = [*(context if isinstance(context, list) else [context]), _INFORMED_PARTY_TERM]
    doc.setdefault("@type", T.O + "Agreement")  # a bare rule set as stored by older versions
    graph = jsonld_to_graph(doc, "agreement")
    return graph, policy_from_graph(graph, exclude_types=(T.O + "Request",))


def _duties(model: Policy) -> Iterator[tuple[Rule, bool]]:
    """Every duty with whether it is a distribute permission's."""
    for rule in model.permissions:
        distributes = any(a.iri == DISTRIBUTE for a in rule.actions)
        for duty in rule.duties:
            yield duty, distributes
    for duty in model.obligations:
        yield duty, False


def _name(action: str) -> str:
    return action.rsplit("/", 1)[-1].rsplit("#", 1)[-1]


def _due(duty: Rule, signed_at: datetime | None) -> Iterator[datetime]:
    for c in _atomic(duty.constraints):
        if c.operator not in _WHEN or not c.right:
            continue
        value = c.right[0].lexical
        if c.left_operand == T.DATE_TIME:
            yield parse_datetime(value)
        elif c.left_operand in _AFTER and signed_at is not None:
            yield signed_at + parse_duration(value)


def _atomic(constraints: tuple[AnyConstraint, ...]) -> Iterator[Constraint]:
    for c in constraints:
        if isinstance(c, LogicalConstraint):
            yield from _atomic(c.operands)
        else:
            yield c


def _node(node_id: str) -> Node:
    return BNode(node_id[2:]) if node_id.startswith("_:") else URIRef(node_id)


__all__ = ["Duties", "agreement_duties", "delete_after"]

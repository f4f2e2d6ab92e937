"""A policy's terms in words, for people choosing an offer: "use, at most 3 times, until
2027-01-31T00:00:00Z, for ScientificResearch; then delete it within P30D".

Read from the parsed model (connector.odrl.parse), so every spelling the engine accepts (ODRL,
IDS, plain names, compact or full IRIs) reads the same. What has no phrase of its own is said
plainly as operand, operator and value; nothing is left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from connector.odrl import terms as T
from connector.odrl.model import AnyConstraint, Constraint, LogicalConstraint, Policy, Rule, Value
from connector.odrl.parse import PolicyError, load_policy
from connector.odrl.plain import POLICY_CONTEXT

_OPERATOR_WORDS = {
    T.EQ: "is",
    T.NEQ: "is not",
    T.LT: "below",
    T.LTEQ: "at most",
    T.GT: "above",
    T.GTEQ: "at least",
    T.IS_A: "is a",
    T.HAS_PART: "has part",
    T.IS_PART_OF: "is part of",
    T.IS_ALL_OF: "is all of",
    T.IS_ANY_OF: "is one of",
    T.IS_NONE_OF: "is none of",
}
_LOGICAL_WORDS = {T.OR: "or", T.XONE: "exactly one of", T.AND: "and", T.AND_SEQUENCE: "and then"}


def short(iri: str) -> str:
    """The last segment of a vocabulary IRI (``http://www.w3.org/ns/odrl/2/use`` -> ``use``);
    an IRI without one (``https://connector.example/``) as it is."""
    for sep in ("#", "/", ":"):
        if sep in iri:
            last = iri.rsplit(sep, 1)[1]
            return last if last else iri
    return iri


def _values(right: tuple[Value, ...]) -> str:
    return ", ".join(short(v.lexical) if v.is_iri else v.lexical for v in right)


def _constraint(c: AnyConstraint) -> str:
    if isinstance(c, LogicalConstraint):
        joined = f" {_LOGICAL_WORDS.get(c.operator, short(c.operator))} ".join(
            _constraint(o) for o in c.operands
        )
        return f"({joined})"
    return _atomic(c)


def _atomic(c: Constraint) -> str:
    left, op, value = c.left_operand, c.operator, _values(c.right)
    unit = f" {short(c.unit)}" if c.unit else ""
    if left == T.O + "count" and op in (T.LTEQ, T.LT):
        limit = int(float(value)) - (1 if op == T.LT else 0) if value.replace(".", "").isdigit() else value
        return f"at most {limit} times"
    if left == T.O + "dateTime":
        if op in (T.LT, T.LTEQ):
            return f"until {value}"
        if op in (T.GT, T.GTEQ):
            return f"from {value}"
    if left == T.O + "elapsedTime" and op in (T.LT, T.LTEQ, T.EQ):
        return f"within {value} of the agreement"
    if left == T.O + "purpose":
        return (
            f"for {value}"
            if op in (T.EQ, T.IS_A, T.IS_ANY_OF, T.IS_ALL_OF)
            else f"not for {value}"
            if op in (T.NEQ, T.IS_NONE_OF)
            else f"purpose {_OPERATOR_WORDS[op]} {value}"
        )
    if left == T.O + "spatial":
        return (
            f"in {value}"
            if op in (T.EQ, T.IS_A, T.IS_ANY_OF, T.IS_PART_OF)
            else f"not in {value}"
            if op in (T.NEQ, T.IS_NONE_OF)
            else f"place {_OPERATOR_WORDS[op]} {value}"
        )
    return f"{short(left)} {_OPERATOR_WORDS.get(op, short(op))} {value}{unit}"


def _rule(r: Rule) -> str:
    actions = " and ".join(short(a.iri) for a in r.actions) or "act"
    said = [
        actions,
        *(_constraint(c) for a in r.actions for c in a.refinements),
        *(_constraint(c) for c in r.constraints),
    ]
    text = ", ".join(said)
    duties = [_rule(d) for d in r.duties]
    if duties:
        text += "; then " + "; and ".join(duties)
    return text


def in_words(policy: Policy) -> list[str]:
    """One line per rule: permissions as they are, prohibitions as "never ...", obligations as
    "must ..."."""
    return (
        [_rule(r) for r in policy.permissions]
        + [f"never {_rule(r)}" for r in policy.prohibitions]
        + [f"must {_rule(r)}" for r in policy.obligations]
    )


def offer_in_words(offer: Mapping[str, Any], context: Any = POLICY_CONTEXT) -> list[str]:
    """An offer as a catalog shows it (DSP JSON-LD), in words: its rules only, so the same
    terms on many datasets are read once. A policy the engine cannot read says so."""
    rules = {k: offer[k] for k in ("permission", "prohibition", "obligation", "profile") if k in offer}
    return list(_cached(json.dumps({"@context": context, **rules}, sort_keys=True)))


@lru_cache(maxsize=1024)
def _cached(text: str) -> tuple[str, ...]:
    doc = json.loads(text)
    try:
        return tuple(in_words(load_policy({**doc, "@type": "Offer", "@id": "urn:uuid:terms"})))
    except PolicyError as exc:
        return (f"terms this connector cannot read: {exc}",)

"""Which policy template an offer was made from, read back from its rules: pure, no I/O.

The templates (connector.odrl.templates, ``policies/*.json``) are the only source: each one's
*shape* is computed from its policy, and an offer's shape is compared with them. A shape is the
set of its rules, each as (where it sits: permission, prohibition, a permission's duty, ...;
its action; its constraints' and refinements' (leftOperand, operator) pairs; a duty's assignee
when the template fixes one). Values (right operands, targets, assigners, ids) do not count, so
every offer filled from a template has that template's shape whatever its parameters.

An offer whose shape no template has (several templates combined, hand-written terms) is
``custom``; search filters by the template name (``template=n-times-usage``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from connector.odrl.templates import fill, templates
from connector.odrl.terms import expand_term

__all__ = ["CUSTOM", "offer_template"]

CUSTOM = "custom"
RULE_KINDS = ("permission", "prohibition", "obligation")
NESTED_KINDS = ("duty", "consequence", "remedy")
LOGICAL = ("and", "or", "xone", "andSequence")
Shape = frozenset[tuple[str, str, tuple[tuple[str, str], ...], str]]


def _iri(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("@id", "")
    return expand_term(value) if isinstance(value, str) and value.strip() else ""


def _items(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _operands(constraints: Any, out: set[tuple[str, str]]) -> None:
    for c in _items(constraints):
        if not isinstance(c, Mapping):
            continue
        for logical in LOGICAL:
            if logical in c:
                inner = c[logical]
                _operands(inner.get("@list", inner) if isinstance(inner, Mapping) else inner, out)
        if "leftOperand" in c:
            out.add((_iri(c["leftOperand"]), _iri(c.get("operator"))))


def _rules(
    node: Mapping[str, Any],
    where: str,
    kinds: tuple[str, ...],
    out: set[tuple[str, str, tuple[tuple[str, str], ...], str]],
) -> None:
    for kind in kinds:
        for rule in _items(node.get(kind)):
            if not isinstance(rule, Mapping):
                continue
            operands: set[tuple[str, str]] = set()
            _operands(rule.get("constraint"), operands)
            action: Any = None
            for a in _items(rule.get("action")):
                if isinstance(a, Mapping) and ("refinement" in a or "rdf:value" in a):
                    _operands(a.get("refinement"), operands)
                    action = a.get("rdf:value", a.get("value", a.get("@id")))
                else:
                    action = a
            assignee = _iri(rule.get("assignee")) if kind in NESTED_KINDS else ""
            here = f"{where}/{kind}"
            out.add((here, _iri(action), tuple(sorted(operands)), assignee))
            _rules(rule, here, NESTED_KINDS, out)


def shape(policy: Mapping[str, Any]) -> Shape:
    """The offer's rules without their values (see the module docstring)."""
    out: set[tuple[str, str, tuple[tuple[str, str], ...], str]] = set()
    _rules(policy, "", RULE_KINDS, out)
    return frozenset(out)


@cache
def _by_shape() -> dict[Shape, str]:
    found: dict[Shape, str] = {}
    for t in templates():
        every = {p.name: p.example for p in t.parameters if p.example is not None}
        required = {k: v for k, v in every.items() if t.parameter(k).required}
        for params in (required, every):  # an unset optional parameter drops its constraint
            s = shape(
                fill(
                    t.name,
                    params,
                    policy_id="urn:shape",
                    target="urn:shape:target",
                    assigner="urn:shape:assigner",
                )
            )
            if found.setdefault(s, t.name) != t.name:  # the shape would tell neither apart
                raise ValueError(f"the templates {found[s]} and {t.name} have the same rules")
    return found


def offer_template(offer: Mapping[str, Any]) -> str:
    """The name of the template ``offer`` was filled from, or ``custom``."""
    return _by_shape().get(shape(offer), CUSTOM)

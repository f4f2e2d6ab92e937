"""A policy as one enforcement point can decide it: the constraints on facts that point knows,
the rest left to the points that know them.

One agreement is decided at several points, each with the facts it can trust (see
``connector.odrl.facts``): the catalog and the negotiation know only what the authority attests
in the requester's token; the data plane and a consumer's local use know also what the request
states, time, counts, payments. ``residual(policy, known)`` is the policy with every constraint
on an operand outside ``known`` decided as "not decided here", in three-valued logic:

- in a permission (and in an action's refinements), an undecided constraint is no reason to
  deny: it is dropped, and a logical constraint with an undecided branch is dropped as a whole
  unless it is a conjunction (``and``/``andSequence``: its decided branches remain);
- a prohibition applies only when every constraint of it is decided here: one with an undecided
  constraint is left to the later points (dropped here);
- duties are fulfilled by what happens later (a use, a payment): they are dropped here, as
  obligations are.

So a requester that is denied by the residual policy is denied at every later point too, and
an offer the catalog hides could never be used. A policy with no permission left, or one that
prohibits the action outright (``prohibit-access``), is denied at the catalog: the asset leaves
it, and a negotiation for it terminates with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from connector.odrl import terms as T
from connector.odrl.model import AnyConstraint, LogicalConstraint, Policy, Rule

Known = Callable[[str], bool]  # is this left operand (a full IRI) decided here?


def residual(policy: Policy, known: Known | Iterable[str]) -> Policy:
    """``policy`` with what ``known`` does not decide left to later enforcement points."""
    is_known = known if callable(known) else frozenset(known).__contains__
    permissions = tuple(_permission(r, is_known) for r in policy.permissions)
    prohibitions = tuple(r for r in policy.prohibitions if _decided(r, is_known))
    return replace(policy, permissions=permissions, prohibitions=prohibitions, obligations=())


def _permission(rule: Rule, known: Known) -> Rule:
    actions = tuple(replace(a, refinements=_keep(a.refinements, known)) for a in rule.actions)
    assignees = tuple(replace(p, refinements=_keep(p.refinements, known)) for p in rule.assignees)
    targets = tuple(replace(t, refinements=_keep(t.refinements, known)) for t in rule.targets)
    return replace(
        rule,
        actions=actions,
        assignees=assignees,
        targets=targets,
        constraints=_keep(rule.constraints, known),
        duties=(),
    )


def _keep(constraints: tuple[AnyConstraint, ...], known: Known) -> tuple[AnyConstraint, ...]:
    """The constraints of a conjunction (a rule's, a refinement's) decided here."""
    out: list[AnyConstraint] = []
    for c in constraints:
        kept = _only_known(c, known)
        if kept is not None:
            out.append(kept)
    return tuple(out)


def _only_known(c: AnyConstraint, known: Known) -> AnyConstraint | None:
    """``c`` as far as it is decided here; None when nothing of it is."""
    if not isinstance(c, LogicalConstraint):
        return c if known(c.left_operand) else None
    if c.operator in (T.AND, T.AND_SEQUENCE):
        inner = _keep(c.operands, known)
        return replace(c, operands=inner) if inner else None
    # or / xone: an undecided branch might hold, so the whole is undecided
    return c if all(_fully_known(o, known) for o in c.operands) else None


def _fully_known(c: AnyConstraint, known: Known) -> bool:
    if isinstance(c, LogicalConstraint):
        return all(_fully_known(o, known) for o in c.operands)
    return known(c.left_operand)


def _decided(rule: Rule, known: Known) -> bool:
    """A prohibition every constraint of which is decided here (it applies or it does not)."""
    refinements = (
        *[x for a in rule.actions for x in a.refinements],
        *[x for p in rule.assignees for x in p.refinements],
        *[x for t in rule.targets for x in t.refinements],
    )
    return all(_fully_known(c, known) for c in (*rule.constraints, *refinements))


__all__ = ["Known", "residual"]

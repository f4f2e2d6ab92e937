"""Distribution of a consumer's copy: what the agreement says about a copy leaving the vault.

``distribution_terms(policy)`` reads the parsed agreement once: which permissions grant
``odrl:distribute``, whether they oblige the consumer to encrypt (duty ``idsc:ENCRYPT``) or to
pass a policy on (duty ``odrl:nextPolicy``, its target the policy for third parties; IDS-G also
writes it as a ``idsc:TARGET_POLICY`` refinement of the duty), and which duties this connector
cannot fulfil when it exports. ``decide(terms, ...)`` asks the policy engine
(``connector.odrl.compile``) for one export, supplying the duty states the export makes true:
the encrypt duty is Fulfilled when the copy leaves encrypted to a named recipient, Violated
otherwise; the next-policy duty is Fulfilled when the next policy is attached.

Why distribute must be granted by name: in ODRL 2.2 ``use`` includes ``distribute``, so a plain
``use`` permission (n-times usage, a time window, delete-after) would let the copy leave. A copy
that leaves the vault can no longer be held to those constraints (no count, no deletion), so
this connector lets a copy leave only under a permission whose action is ``odrl:distribute``
(``idsc:DISTRIBUTE``), and decides on those permissions together with every prohibition of the
agreement. ``use`` alone is answered "distribute is not granted".

Pure: no I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from connector.odrl import terms as T
from connector.odrl.compile import Decider, Decision, DecisionRequest, compile_policy
from connector.odrl.model import AnyConstraint, Constraint, LogicalConstraint, Policy, Rule

DISTRIBUTE = T.O + "distribute"
ENCRYPT = T.IDSC_NS + "ENCRYPT"
NEXT_POLICY = T.O + "nextPolicy"
LOG = T.IDSC_NS + "LOG"
FULFILLED = "https://w3id.org/force/compliance-report#Fulfilled"
VIOLATED = "https://w3id.org/force/compliance-report#Violated"
ENCRYPTED_STATE = "ENCRYPTED"  # idsc:ARTIFACT_STATE of an encrypted copy (IDS-G pc18)


@dataclass(frozen=True)
class DistributionTerms:
    """What an agreement says about distributing the consumer's copy."""

    policy_id: str
    permitted: bool  # some permission names odrl:distribute
    reason: str  # why distribution is not granted ("" when it is)
    requires_encryption: bool  # every distribute permission obliges encryption
    encrypt_duties: tuple[str, ...]  # duty ids (idsc:ENCRYPT)
    next_policy_duties: tuple[str, ...]  # duty ids (odrl:nextPolicy)
    next_policy: str | None  # the IRI (or node id) of the policy to pass on
    log_duties: tuple[str, ...]  # duty ids (idsc:LOG): fulfilled by the audit entry of the export
    unhandled: tuple[str, ...]  # duties this connector cannot fulfil on export (labels)
    artifact_states: tuple[Any, ...]  # the value an idsc:ARTIFACT_STATE constraint wants
    decider: Decider | None  # the distribute permissions and every prohibition, compiled

    @property
    def requires_next_policy(self) -> bool:
        return bool(self.next_policy_duties)


def _action(rule: Rule) -> str:
    return rule.actions[0].iri if rule.actions else ""


def _refined_target_policy(duty: Rule) -> str | None:
    """IDS-G names the next policy in a ``idsc:TARGET_POLICY`` refinement of the duty's action
    (or a constraint of the duty, where actions are plain strings, as in DSP messages)."""
    refinements = [r for action in duty.actions for r in action.refinements]
    for c in _atomic((*refinements, *duty.constraints)):
        if c.left_operand == T.TARGET_POLICY and c.right:
            return c.right[0].lexical
    return None


def _atomic(cs: tuple[AnyConstraint, ...]) -> list[Constraint]:
    out: list[Constraint] = []
    for c in cs:
        if isinstance(c, LogicalConstraint):
            out.extend(_atomic(c.operands))
        else:
            out.append(c)
    return out


def distribution_terms(policy: Policy) -> DistributionTerms:
    """The distribution terms of a parsed agreement (``connector.odrl.parse.load_policy``)."""
    grants = tuple(r for r in policy.permissions if _action(r) == DISTRIBUTE)
    if not grants:
        granted = ", ".join(f"{T.short(_action(r))} ({r.label})" for r in policy.permissions)
        reason = (
            f"distribute is not granted: {policy.label} grants "
            f"{granted or 'no permission'}, and a copy leaves the vault only under an "
            "explicit odrl:distribute permission"
        )
        return DistributionTerms(policy.id, False, reason, False, (), (), None, (), (), (), None)
    encrypt: list[str] = []
    nexts: list[str] = []
    logs: list[str] = []
    unhandled: list[str] = []
    states: list[Any] = []  # the idsc:ARTIFACT_STATE value meaning "encrypted"
    next_policy: str | None = None
    every_encrypts = True
    for rule in grants:
        encrypts = False
        for duty in rule.duties:
            action = _action(duty)
            if action == ENCRYPT:
                encrypt.append(duty.id)
                encrypts = True
            elif action == NEXT_POLICY:
                nexts.append(duty.id)
                named = (duty.targets[0].iri if duty.targets else None) or (_refined_target_policy(duty))
                if named is None:
                    unhandled.append(f"{duty.label} of {rule.label} names no policy to pass on")
                elif next_policy not in (None, named):
                    unhandled.append(
                        f"{duty.label} of {rule.label} names a second next policy {T.short(named)}"
                    )
                else:
                    next_policy = named
            elif action == LOG:
                logs.append(duty.id)
            else:
                unhandled.append(f"{duty.label} ({T.short(action or '?')}) of {rule.label}")
        wanted = [
            v.py if v.py is not None else v.lexical
            for c in _atomic(rule.constraints)
            if c.left_operand == T.ARTIFACT_STATE
            for v in c.right
            if _is_encrypted_state(v.lexical)
        ]
        states.extend(wanted)
        every_encrypts = every_encrypts and (encrypts or bool(wanted))
    sub = replace(policy, permissions=grants, obligations=())
    return DistributionTerms(
        policy.id,
        True,
        "",
        every_encrypts,
        tuple(encrypt),
        tuple(nexts),
        next_policy,
        tuple(logs),
        tuple(unhandled),
        tuple(states[:1]),
        compile_policy(sub),
    )


def _is_encrypted_state(value: Any) -> bool:
    text = str(value)
    return text.rsplit("/", 1)[-1].rsplit("#", 1)[-1].upper() == ENCRYPTED_STATE


def duty_states(terms: DistributionTerms, *, encrypted: bool, next_policy_attached: bool) -> dict[str, str]:
    """The compliance state of each distribute duty that an export makes true or false."""
    states = {d: FULFILLED if encrypted else VIOLATED for d in terms.encrypt_duties}
    states.update({d: FULFILLED if next_policy_attached else VIOLATED for d in terms.next_policy_duties})
    states.update({d: FULFILLED for d in terms.log_duties})
    return states


def decide(
    terms: DistributionTerms,
    *,
    encrypted: bool,
    next_policy_attached: bool,
    now: datetime,
    assignee: str | None,
    target: str | None,
    count: int = 0,
    started_at: datetime | None = None,
    context: Mapping[str, tuple[Any, ...]] | None = None,
) -> Decision:
    """May the copy leave the vault so? ``count``: the agreement's earlier distributions."""
    if not terms.permitted or terms.decider is None:
        return Decision(False, terms.reason)
    if terms.unhandled:
        return Decision(
            False,
            f"the agreement's duty {terms.unhandled[0]} cannot be fulfilled "
            "by this connector, so the copy does not leave the vault",
        )
    facts = dict(context or {})
    if encrypted and terms.artifact_states:
        facts[T.ARTIFACT_STATE] = terms.artifact_states
    decision = terms.decider(
        DecisionRequest(
            action=DISTRIBUTE,
            now=now,
            assignee=assignee,
            target=target,
            count=count,
            started_at=started_at,
            context=facts,
            duties=duty_states(terms, encrypted=encrypted, next_policy_attached=next_policy_attached),
        )
    )
    if not decision.permit and not encrypted and terms.requires_encryption:
        return Decision(
            False,
            "the agreement permits distribution only encrypted to a named "
            f"recipient (idsc:ENCRYPT): no unencrypted export ({decision.reason})",
        )
    return decision


__all__ = [
    "DISTRIBUTE",
    "ENCRYPT",
    "NEXT_POLICY",
    "DistributionTerms",
    "decide",
    "distribution_terms",
    "duty_states",
]

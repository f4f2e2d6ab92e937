"""``evaluate(policy, request, world) -> Report``: the explaining evaluator.

Pure: time, use counts, duty states and facts all come in through ``World``. The report follows
the FORCE compliance report model (one rule report per permission and prohibition, a premise
report per target, party, action, constraint and nested operand, duty reports) and carries a
human-readable reason for every premise and for the decision. Decisions default to deny, and an
unknown operand, operator or action never satisfies a premise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from connector.odrl import terms as T
from connector.odrl.model import (
    AnyConstraint,
    Constraint,
    LogicalConstraint,
    Policy,
    Request,
    Rule,
    Value,
    World,
)
from connector.odrl.operators import SYMBOL, Incomparable, compare, member

R = "https://w3id.org/force/compliance-report#"
FULFILLED, VIOLATED, NONSET = R + "Fulfilled", R + "Violated", R + "NonSet"
PERFORMED, UNPERFORMED, UNKNOWN = R + "Performed", R + "Unperformed", R + "Unknown"


@dataclass
class PremiseReport:
    kind: str  # "Target" | "Party" | "Action" | "Constraint"
    satisfied: bool
    reason: str
    constraint: str | None = None
    logical_operator: str | None = None
    left_values: tuple[Any, ...] | None = None
    operator: str | None = None
    right: tuple[Value, ...] | None = None
    children: list[PremiseReport] = field(default_factory=list)

    def count(self) -> int:
        return 1 + sum(c.count() for c in self.children)


@dataclass
class DutyReport:
    rule: str
    active: bool
    deontic: str
    performance: str
    blocking: bool
    reason: str
    report_id: str | None = None  # an existing report in the state of the world
    premises: list[PremiseReport] = field(default_factory=list)
    consequences: list[DutyReport] = field(default_factory=list)


@dataclass
class RuleReport:
    kind: str  # "permission" | "prohibition"
    rule: str
    rule_request: str | None
    active: bool
    reason: str
    label: str = ""  # "permission 2 (urn:...) of offer urn:..." (never a blank node)
    premises: list[PremiseReport] = field(default_factory=list)
    conditions: list[DutyReport] = field(default_factory=list)
    remedies: list[DutyReport] = field(default_factory=list)


@dataclass
class Report:
    policy: str
    request: str | None
    created: datetime
    rules: list[RuleReport]
    obligations: list[DutyReport]
    permit: bool
    conflict: bool
    strategy: str
    explanation: str

    @property
    def decision(self) -> str:
        return "PERMIT" if self.permit else "DENY"


def _fmt(v: Any) -> str:
    if isinstance(v, datetime):
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, timedelta):
        return _fmt_duration(v)
    if isinstance(v, Value):
        return _fmt(v.py) if v.py is not None and not v.is_iri else T.short(v.lexical)
    if isinstance(v, str):
        return T.short(v) if "://" in v or v.startswith(("urn:", "_:", "did:")) else repr(v)
    return str(v)


def _fmt_duration(td: timedelta) -> str:
    secs = int(td.total_seconds())
    days, rest = divmod(secs, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (
        "P"
        + (f"{days}D" if days else "")
        + (
            "T" + (f"{h}H" if h else "") + (f"{m}M" if m else "") + (f"{s}S" if s else "")
            if (h or m or s)
            else ("" if days else "T0S")
        )
    )


def _fmt_values(vals: Sequence[Any]) -> str:
    return ", ".join(_fmt(v) for v in vals) if vals else "(none)"


class _Evaluation:
    def __init__(self, request: Request, world: World, policy: Policy) -> None:
        self.request = request
        self.world = world
        self.vocab = T.vocabulary()
        self.of_policy = f" of {policy.label}"

    # ------------------------------------------------------------------ operand values

    def _usage_key_lookup(self, table: dict[Any, Any]) -> Any:
        a, t = self.request.assignee, self.request.target
        for key in ((a, t), (a, None), (None, t), (None, None)):
            if key in table:
                return table[key]
        return None

    def left_values(self, operand: str) -> tuple[list[Any], str | None]:
        """The value(s) of a left operand, or a reason why there is none."""
        if operand == T.DATE_TIME:
            return [self.world.now], None
        if operand == T.COUNT:
            done = self._usage_key_lookup(self.world.counts) or 0
            # The execution now requested counts: `count lteq 5` allows five uses in all.
            return [Decimal(done + 1)], None
        if operand == T.ELAPSED_TIME:
            start = self._usage_key_lookup(self.world.usage_started)
            if start is None:
                return [], "the start of the usage period is not known"
            return [self.world.now - start], None
        values = self.request.context.get(operand) or self.world.facts.get(operand)
        if not values:
            return [], f"the request states no {T.short(operand)}"
        return [v.py if v.py is not None else v.lexical for v in values], None

    # ------------------------------------------------------------------ constraints

    def constraint(self, c: AnyConstraint) -> PremiseReport:
        if isinstance(c, LogicalConstraint):
            return self.logical(c)
        return self.atomic(c)

    def logical(self, c: LogicalConstraint) -> PremiseReport:
        children = [self.constraint(o) for o in c.operands]
        n = sum(ch.satisfied for ch in children)
        op = c.operator
        if op == T.OR:
            ok = n >= 1
        elif op == T.XONE:
            ok = n == 1
        else:  # and, andSequence: every operand, in order
            ok = n == len(children) and bool(children)
        name = T.short(op)
        reason = f"{name}: {n} of {len(children)} operands satisfied" + (
            "" if ok else (" (exactly one required)" if op == T.XONE else "")
        )
        return PremiseReport(
            "Constraint", ok, reason, constraint=c.id, logical_operator=op, children=children
        )

    def atomic(self, c: Constraint) -> PremiseReport:
        name = T.short(c.written_left_operand or c.left_operand)
        base: dict[str, Any] = dict(constraint=c.id, operator=c.operator, right=c.right)
        if not self.vocab.known_left_operand(c.left_operand):
            return PremiseReport(
                "Constraint", False, f"unknown left operand {name}: not understood, so denied", **base
            )
        if c.operator not in T.OPERATORS:
            return PremiseReport(
                "Constraint", False, f"unknown operator {T.short(c.written_operator)}: denied", **base
            )
        if c.right_reference and not c.right:
            return PremiseReport(
                "Constraint",
                False,
                f"{name}: right operand is a reference ({', '.join(c.right_reference)}) that "
                "the connector does not dereference",
                **base,
            )
        lefts, missing = self.left_values(c.left_operand)
        if missing:
            return PremiseReport("Constraint", False, f"{name}: {missing}", **base)
        rights = [v.py if v.py is not None else v.lexical for v in c.right]
        try:
            ok = compare(c.operator, lefts, rights, self.world.types, self.world.part_of)
        except (Incomparable, ValueError) as exc:
            return PremiseReport("Constraint", False, f"{name}: {exc}", left_values=tuple(lefts), **base)
        sym = SYMBOL.get(c.operator, T.short(c.operator))
        verdict = "holds" if ok else "does not hold"
        reason = f"{name} {_fmt_values(lefts)} {sym} {_fmt_values(c.right)} {verdict}"
        if c.left_operand == T.COUNT:
            done = lefts[0] - 1
            reason = (
                f"count: this would be use number {lefts[0]} ({done} completed); "
                f"{sym} {_fmt_values(c.right)} {verdict}"
            )
        return PremiseReport("Constraint", ok, reason, left_values=tuple(lefts), **base)

    # ------------------------------------------------------------------ rule premises

    def target(self, rule: Rule) -> PremiseReport | None:
        if not rule.targets:
            return None
        requested = self.request.target
        children: list[PremiseReport] = []
        ok = False
        for asset in rule.targets:
            refs = [self.constraint(r) for r in asset.refinements]
            children.extend(refs)
            inside = requested is not None and self._member(requested, asset.iri)
            if inside and all(r.satisfied for r in refs):
                ok = True
        names = _fmt_values([a.iri for a in rule.targets])
        if ok:
            reason = (
                f"target {_fmt(requested)} is {names}"
                if any(a.iri == requested for a in rule.targets)
                else (f"target {_fmt(requested)} is part of {names}")
            )
        elif requested is None:
            reason = f"the request names no target; the rule is about {names}"
        else:
            reason = f"target {_fmt(requested)} is not {names}"
        return PremiseReport("Target", ok, reason, children=children)

    def party(self, rule: Rule) -> PremiseReport | None:
        if not rule.assignees:
            return None
        requester = self.request.assignee
        children: list[PremiseReport] = []
        ok = False
        for party in rule.assignees:
            refs = [self.constraint(r) for r in party.refinements]
            children.extend(refs)
            if (
                requester is not None
                and self._member(requester, party.iri)
                and all(r.satisfied for r in refs)
            ):
                ok = True
        names = _fmt_values([p.iri for p in rule.assignees])
        if ok:
            reason = f"assignee {_fmt(requester)} is (in) {names}"
        elif requester is None:
            reason = f"the request names no party; the rule is for {names}"
        else:
            reason = f"{_fmt(requester)} is not {names}"
        return PremiseReport("Party", ok, reason, children=children)

    def action(self, rule: Rule) -> PremiseReport | None:
        if not rule.actions:
            return None
        requested = self.request.action
        children: list[PremiseReport] = []
        ok = False
        unknown = []
        for action in rule.actions:
            refs = [self.constraint(r) for r in action.refinements]
            children.extend(refs)
            if action.iri not in self.vocab.actions:
                unknown.append(action.written or action.iri)
                continue
            if self.vocab.action_covers(action.iri, requested) and all(r.satisfied for r in refs):
                ok = True
        names = _fmt_values([a.iri for a in rule.actions])
        if ok:
            reason = (
                f"action {_fmt(requested)} is {names}"
                if any(a.iri == requested for a in rule.actions)
                else f"action {_fmt(requested)} is included in {names}"
            )
        elif unknown:
            reason = f"unknown action {_fmt_values(unknown)}: not understood, so denied"
        elif any(self.vocab.action_covers(a.iri, requested) for a in rule.actions):
            failed = [c.reason for c in children if not c.satisfied]
            reason = f"action {_fmt(requested)} matches {names} but its refinement fails: " + (
                "; ".join(failed)
            )
        else:
            reason = f"action {_fmt(requested)} is not {names} nor included in it"
        return PremiseReport("Action", ok, reason, children=children)

    def _member(self, x: str, collection: str) -> bool:
        return member(x, collection, self.world.part_of)

    # ------------------------------------------------------------------ duties

    def duty(self, duty: Rule) -> DutyReport:
        premises = [self.constraint(c) for c in duty.constraints]
        active = all(p.satisfied for p in premises)
        state = self.world.duty_states.get(duty.id)
        deontic = state.deontic if state else NONSET
        performance = (
            state.performance
            if state and state.performance
            else (PERFORMED if deontic == FULFILLED else UNKNOWN)
        )
        consequences = [self.duty(c) for c in duty.consequences]
        name = duty.label + (f" to {_fmt_values([a.iri for a in duty.actions])}" if duty.actions else "")
        blocking = False
        if deontic == VIOLATED:
            if duty.consequences and all(c.deontic == FULFILLED for c in consequences):
                reason = f"{name} was violated; its consequences are fulfilled"
            else:
                blocking = True
                reason = f"{name} is violated" + (
                    "; its consequences are not all fulfilled" if duty.consequences else ""
                )
        elif deontic == FULFILLED:
            reason = f"{name} is fulfilled"
        else:
            reason = f"{name} is pending (not violated)"
        return DutyReport(
            rule=duty.id,
            active=active,
            deontic=deontic,
            performance=performance,
            blocking=blocking,
            reason=reason,
            report_id=state.report_id if state else None,
            premises=premises,
            consequences=consequences,
        )

    # ------------------------------------------------------------------ rules

    def rule(self, rule: Rule) -> RuleReport:
        premises = [p for p in (self.target(rule), self.party(rule), self.action(rule)) if p]
        premises.extend(self.constraint(c) for c in rule.constraints)
        conditions = [self.duty(d) for d in rule.duties] if rule.kind == "permission" else []
        remedies = [self.duty(d) for d in rule.remedies]
        failed = [p for p in premises if not p.satisfied]
        blocking = [d for d in conditions if d.blocking]
        active = not failed and not blocking
        label = rule.label + self.of_policy
        if active:
            reason = f"{label} applies" + (
                f": {'; '.join(p.reason for p in premises)}"
                if premises
                else " (no premise: it applies to every request)"
            )
        else:
            why = [_deepest_reason(p) for p in failed] + [d.reason for d in blocking]
            reason = f"{label} does not apply: {'; '.join(why)}"
        return RuleReport(
            kind=rule.kind,
            rule=rule.id,
            rule_request=self.request.rule_id,
            active=active,
            reason=reason,
            label=label,
            premises=premises,
            conditions=conditions,
            remedies=remedies,
        )


def _deepest_reason(p: PremiseReport) -> str:
    if p.logical_operator is None:
        return p.reason
    failed = [c for c in p.children if not c.satisfied]
    if p.logical_operator in (T.AND, T.AND_SEQUENCE) and failed:
        return "; ".join(_deepest_reason(c) for c in failed)
    return p.reason


def _overlap(p: Rule, q: Rule, vocab: T.Vocabulary) -> bool:
    """Permission p and prohibition q conflict in every state of the world."""
    if not (p.is_unconstrained and q.is_unconstrained):
        return False
    if any(x.refinements for xs in (p.targets, q.targets, p.assignees, q.assignees) for x in xs):
        return False
    pt, qt = {a.iri for a in p.targets}, {a.iri for a in q.targets}
    if pt and qt and not (pt & qt):
        return False
    pa, qa = {a.iri for a in p.assignees}, {a.iri for a in q.assignees}
    if pa and qa and not (pa & qa):
        return False
    if p.actions and q.actions:
        return any(
            vocab.action_covers(x.iri, y.iri) or vocab.action_covers(y.iri, x.iri)
            for x in p.actions
            for y in q.actions
        )
    return True


def decide(policy: Policy, rules: Sequence[RuleReport]) -> tuple[bool, bool, str]:
    """(permit, conflict, explanation) from the rule reports, as CONVENTIONS.md section 3."""
    vocab = T.vocabulary()
    active_p = [r for r in rules if r.kind == "permission" and r.active]
    active_q = [r for r in rules if r.kind == "prohibition" and r.active]
    conflict = bool(active_p and active_q)
    static = None
    if not conflict:
        for p in policy.permissions:
            for q in policy.prohibitions:
                if _overlap(p, q, vocab):
                    static = (p.label, q.label)
                    break
            if static:
                break
        conflict = static is not None
    strategy = policy.conflict_strategy
    sname = T.short(strategy)
    if strategy == T.INVALID and conflict:
        if static:
            why = f"{static[0]} and {static[1]} of {policy.label} conflict in every state of the world"
        else:
            why = f"{active_p[0].label} and {active_q[0].label} both apply"
        return False, True, f"DENY: {why}, and the conflict strategy {sname} voids the policy"
    if active_p and active_q:
        if strategy == T.PERM:
            return (
                True,
                True,
                (
                    f"PERMIT: {active_p[0].reason}; {active_q[0].label} also "
                    f"applies but the conflict strategy {sname} lets the "
                    "permission override it"
                ),
            )
        return (
            False,
            True,
            (
                f"DENY: {active_q[0].reason}; it overrides {active_p[0].label} "
                f"under the conflict strategy {sname}"
            ),
        )
    if active_p:
        return True, conflict, f"PERMIT: {active_p[0].reason}"
    reasons = [r.reason for r in rules if r.kind == "prohibition" and r.active]
    reasons += [r.reason for r in rules if r.kind == "permission"]
    if not policy.permissions:
        reasons.append(f"{policy.label} grants no permission")
    return False, conflict, "DENY: " + ("; ".join(reasons) or "no permission applies")


def evaluate(policy: Policy, request: Request, world: World) -> Report:
    """Evaluate ``request`` against ``policy`` in ``world``; deny unless a permission applies."""
    ev = _Evaluation(request, world, policy)
    rules = [ev.rule(r) for r in policy.rules]
    obligations = [ev.duty(o) for o in policy.obligations]
    permit, conflict, explanation = decide(policy, rules)
    violated = [o for o in obligations if o.deontic == VIOLATED]
    if violated:
        explanation += "; note: " + "; ".join(o.reason for o in violated)
    return Report(
        policy=policy.id,
        request=request.id,
        created=world.now,
        rules=rules,
        obligations=obligations,
        permit=permit,
        conflict=conflict,
        strategy=policy.conflict_strategy,
        explanation=explanation,
    )

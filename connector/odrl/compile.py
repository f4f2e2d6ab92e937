"""``compile_policy(policy) -> Decider``: the hot-path form of a policy.

All RDF and JSON-LD work, operand coercion, action-hierarchy closure and conflict analysis are
done once, at compile time. A decision is then a few closure calls over plain Python values.
The decisions are the same as ``evaluate``'s (a property-based test holds the two together);
only the explanation is shorter: the first reason that denies.
"""

from __future__ import annotations

import operator as _op
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

from connector.identity.participants import as_participant_iri
from connector.odrl import terms as T
from connector.odrl.evaluate import VIOLATED, _overlap
from connector.odrl.model import AnyConstraint, Constraint, LogicalConstraint, Policy, Rule
from connector.odrl.operators import SYMBOL, Incomparable, compare, member, satisfying_levels


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """Everything one decision needs, as plain values (no RDF)."""

    action: str
    now: datetime
    assignee: str | None = None
    target: str | None = None
    count: int = 0  # executions already completed (the requested one not counted)
    started_at: datetime | None = None  # start of the usage period, for elapsedTime
    context: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # operand -> values
    duties: Mapping[str, str] = field(default_factory=dict)  # duty id -> deontic state IRI
    part_of: Mapping[str, frozenset[str]] = field(default_factory=dict)
    types: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    permit: bool
    reason: str

    def __bool__(self) -> bool:
        return self.permit


Check = Callable[[DecisionRequest], "str | None"]  # None = satisfied, else the reason


@lru_cache(maxsize=65536)
def party_iri(party: str) -> str:
    """A party in the one form policies and requests are matched in: a participant id
    (``SKI:keyid:AKI``, not an IRI) as its IRI ``urn:participant:...``; an IRI as it is. So a
    policy naming a participant by either form matches a requester named by either form, at
    every enforcement point."""
    return as_participant_iri(party)


def _fmt(v: Any) -> str:
    if isinstance(v, datetime):
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, str):
        return T.short(v)
    return str(v)


def _values(c: Constraint) -> list[Any]:
    return [v.py if v.py is not None else v.lexical for v in c.right]


def _compile_constraint(c: AnyConstraint, vocab: T.Vocabulary) -> Check:
    if isinstance(c, LogicalConstraint):
        return _compile_logical(c, vocab)
    name = T.short(c.written_left_operand or c.left_operand)
    if not vocab.known_left_operand(c.left_operand):
        msg = f"unknown left operand {name}: not understood, so denied"
        return lambda req: msg
    if c.operator not in T.OPERATORS:
        msg = f"unknown operator {T.short(c.written_operator)}: denied"
        return lambda req: msg
    rights = _values(c)
    if not rights:
        msg = f"{name}: right operand is a reference the connector does not dereference"
        return lambda req: msg
    op = c.operator
    sym = SYMBOL.get(op, T.short(op))
    shown = ", ".join(_fmt(r) for r in rights)
    left = c.left_operand
    scalar = op in SYMBOL and len(rights) == 1
    r0 = rights[0]

    if left == T.DATE_TIME and scalar and isinstance(r0, datetime):
        test = _order_test(op, r0)
        fail = f"{name} {{}} {sym} {shown} does not hold"
        return lambda req: None if test(req.now) else fail.format(_fmt(req.now))
    if left == T.COUNT and scalar and isinstance(r0, Decimal):
        test = _order_test(op, r0)
        return lambda req: (
            None
            if test(req.count + 1)
            else (
                f"count: this would be use number {req.count + 1} ({req.count} completed); "
                f"{sym} {shown} does not hold"
            )
        )
    if left == T.ELAPSED_TIME and scalar and isinstance(r0, timedelta):
        test = _order_test(op, r0)

        def elapsed(req: DecisionRequest) -> str | None:
            if req.started_at is None:
                return f"{name}: the start of the usage period is not known"
            return (
                None
                if test(req.now - req.started_at)
                else (f"{name} {req.now - req.started_at} {sym} {shown} does not hold")
            )

        return elapsed

    def generic(req: DecisionRequest) -> str | None:
        if left == T.DATE_TIME:
            lefts: Any = (req.now,)
        elif left == T.COUNT:
            lefts = (Decimal(req.count + 1),)
        elif left == T.ELAPSED_TIME:
            if req.started_at is None:
                return f"{name}: the start of the usage period is not known"
            lefts = (req.now - req.started_at,)
        else:
            lefts = req.context.get(left)
            if not lefts:
                return f"{name}: the request states no {T.short(left)}"
        try:
            ok = compare(op, lefts, rights, req.types, req.part_of)
        except (Incomparable, ValueError) as exc:
            return f"{name}: {exc}"
        if ok:
            return None
        return f"{name} {', '.join(_fmt(v) for v in lefts)} {sym} {shown} does not hold"

    return generic


def _order_test(op: str, r: Any) -> Callable[[Any], bool]:
    if op == T.EQ:
        return lambda v: v == r
    if op == T.NEQ:
        return lambda v: v != r
    if op == T.LT:
        return lambda v: v < r
    if op == T.LTEQ:
        return lambda v: v <= r
    if op == T.GT:
        return lambda v: v > r
    return lambda v: v >= r


def _compile_logical(c: LogicalConstraint, vocab: T.Vocabulary) -> Check:
    checks = [_compile_constraint(o, vocab) for o in c.operands]
    op, name, n = c.operator, T.short(c.operator), len(checks)
    if op in (T.AND, T.AND_SEQUENCE):

        def all_of(req: DecisionRequest) -> str | None:
            if not checks:
                return f"{name}: no operands"
            for ch in checks:
                r = ch(req)
                if r is not None:
                    return r
            return None

        return all_of
    if op == T.OR:

        def any_of(req: DecisionRequest) -> str | None:
            reasons = []
            for ch in checks:
                r = ch(req)
                if r is None:
                    return None
                reasons.append(r)
            return f"{name}: none of {n} operands holds ({'; '.join(reasons[:3])})"

        return any_of

    def exactly_one(req: DecisionRequest) -> str | None:
        k = sum(ch(req) is None for ch in checks)
        return None if k == 1 else f"{name}: {k} of {n} operands satisfied (exactly one required)"

    return exactly_one


def _compile_rule(
    rule: Rule, vocab: T.Vocabulary, of_policy: str = ""
) -> Callable[[DecisionRequest], str | None]:
    checks: list[Check] = []
    if rule.targets:
        targets = tuple(a.iri for a in rule.targets)
        t_refs = [_compile_constraint(r, vocab) for a in rule.targets for r in a.refinements]

        def target_check(req: DecisionRequest) -> str | None:
            t = req.target
            if t is None:
                return "the request names no target"
            if t not in targets and not any(member(t, x, req.part_of) for x in targets):
                return f"target {_fmt(t)} is not {', '.join(map(_fmt, targets))}"
            for ch in t_refs:
                r = ch(req)
                if r is not None:
                    return r
            return None

        checks.append(target_check)
    if rule.assignees:
        parties = tuple(party_iri(p.iri) for p in rule.assignees)
        p_refs = [_compile_constraint(r, vocab) for p in rule.assignees for r in p.refinements]

        def party_check(req: DecisionRequest) -> str | None:
            a = party_iri(req.assignee) if req.assignee else None
            if a is None:
                return "the request names no party"
            if a not in parties and not any(member(a, x, req.part_of) for x in parties):
                return f"{_fmt(a)} is not {', '.join(map(_fmt, parties))}"
            for ch in p_refs:
                r = ch(req)
                if r is not None:
                    return r
            return None

        checks.append(party_check)
    if rule.actions:
        options: list[tuple[frozenset[str], list[Check], str]] = []
        for action in rule.actions:
            if action.iri not in vocab.actions:
                options.append((frozenset(), [], f"unknown action {T.short(action.written)}"))
                continue
            covered = covered_actions(action.iri)
            refs = [_compile_constraint(r, vocab) for r in action.refinements]
            options.append((covered, refs, T.short(action.iri)))

        def action_check(req: DecisionRequest) -> str | None:
            reason = None
            for covered, refs, label in options:
                if req.action not in covered:
                    reason = reason or (
                        label
                        if label.startswith("unknown")
                        else f"action {_fmt(req.action)} is not {label} nor included in it"
                    )
                    continue
                failed = next((r for r in (ch(req) for ch in refs) if r is not None), None)
                if failed is None:
                    return None
                reason = failed
            return reason

        checks.append(action_check)
    checks.extend(_compile_constraint(c, vocab) for c in rule.constraints)
    duties = (
        [(d.id, d.label, tuple(c.id for c in d.consequences)) for d in rule.duties]
        if (rule.kind == "permission")
        else []
    )
    name = rule.label + of_policy

    def rule_check(req: DecisionRequest) -> str | None:
        for ch in checks:
            r = ch(req)
            if r is not None:
                return f"{name} does not apply: {r}"
        for duty_id, duty_label, consequences in duties:
            if req.duties.get(duty_id) == VIOLATED and not (
                consequences and all(req.duties.get(c) == _FULFILLED for c in consequences)
            ):
                return f"{name} does not apply: {duty_label} is violated"
        return None

    return rule_check


_FULFILLED = "https://w3id.org/force/compliance-report#Fulfilled"


@cache
def covered_actions(action: str) -> frozenset[str]:
    """Every requested action a rule action covers, with deprecated and IDS spellings."""
    vocab = T.vocabulary()
    covered = {a for a, sup in vocab.included_in.items() if action in sup} | {action}
    aliases = {**T.IDS_ACTIONS, **vocab.equivalent}
    covered |= {alias for alias, canonical in aliases.items() if canonical in covered}
    return frozenset(covered)


# ------------------------------------------------------------------ the fast path
# A rule whose constraints are conjunctions of plain comparisons compiles to a flat tuple of
# tests run in one loop: no closure per constraint, C-level comparison functions, and no
# allocation on a permit. Anything else (refinements, or/xone, isA, isPartOf, ...) goes
# through the closures above. Both give the same answers; the closures also explain.

_NOW, _COUNT, _ELAPSED, _IN, _NOT_IN, _ALL = range(6)
_ORDER_FN = {T.EQ: _op.eq, T.NEQ: _op.ne, T.LT: _op.lt, T.LTEQ: _op.le, T.GT: _op.gt, T.GTEQ: _op.ge}
FastTest = tuple[int, Any, Any]


def _fast_tests(constraints: tuple[AnyConstraint, ...], vocab: T.Vocabulary) -> list[FastTest] | None:
    tests: list[FastTest] = []
    for c in constraints:
        if isinstance(c, LogicalConstraint):
            if c.operator not in (T.AND, T.AND_SEQUENCE) or not c.operands:
                return None
            inner = _fast_tests(c.operands, vocab)
            if inner is None:
                return None
            tests.extend(inner)
            continue
        if not vocab.known_left_operand(c.left_operand) or c.operator not in T.OPERATORS:
            return None
        rights = _values(c)
        if not rights:
            return None
        left, op, r0 = c.left_operand, c.operator, rights[0]
        if left == T.SECURITY_LEVEL:  # ordered levels: the set of levels that satisfy it
            levels = satisfying_levels(op, rights)
            if levels is None:
                return None
            tests.append((_IN, left, levels))
            continue
        if left in (T.DATE_TIME, T.COUNT, T.ELAPSED_TIME):
            if op not in _ORDER_FN or len(rights) != 1:
                return None
            if left == T.DATE_TIME and isinstance(r0, datetime):
                tests.append((_NOW, _ORDER_FN[op], r0))
            elif left == T.COUNT and isinstance(r0, Decimal):
                tests.append((_COUNT, _ORDER_FN[op], int(r0) if r0 == int(r0) else r0))
            elif left == T.ELAPSED_TIME and isinstance(r0, timedelta):
                tests.append((_ELAPSED, _ORDER_FN[op], r0))
            else:
                return None
        elif all(isinstance(r, str) for r in rights) and (
            op in (T.IS_ANY_OF, T.IS_NONE_OF) or (op in (T.EQ, T.NEQ))
        ):
            kind = _IN if op in (T.EQ, T.IS_ANY_OF) else _NOT_IN
            tests.append((kind, left, frozenset(rights)))
        elif all(isinstance(r, str) for r in rights) and op == T.IS_ALL_OF:
            tests.append((_ALL, left, frozenset(rights)))
        else:
            return None
    return tests


FastSpec = tuple[Any, Any, Any, tuple[FastTest, ...], bool]
_INTERNED: dict[Any, Any] = {}
_INTERN_LIMIT = 1_000_000


def _intern(x: Any) -> Any:
    """Share equal compiled parts between deciders: 100,000 agreements made from a handful of
    offers then hold one copy of each test, set and spec, which keeps decisions cache-friendly."""
    if len(_INTERNED) > _INTERN_LIMIT:
        _INTERNED.clear()
    return _INTERNED.setdefault(x, x)


def _fast_rule(rule: Rule, vocab: T.Vocabulary) -> FastSpec | None:
    if any(x.refinements for xs in (rule.actions, rule.targets, rule.assignees) for x in xs):
        return None
    if any(a.iri not in vocab.actions for a in rule.actions):
        return None
    tests = _fast_tests(rule.constraints, vocab)
    if tests is None:
        return None
    targets = _intern(frozenset(a.iri for a in rule.targets)) or None
    parties = _intern(frozenset(party_iri(p.iri) for p in rule.assignees)) or None
    covered: frozenset[str] | None = None
    if rule.actions:
        covered = _intern(frozenset().union(*(covered_actions(a.iri) for a in rule.actions)))
    has_duties = bool(rule.duties) and rule.kind == "permission"
    spec: FastSpec = _intern(
        (covered, targets, parties, _intern(tuple(_intern(t) for t in tests)), has_duties)
    )
    return spec


def _run_fast(spec: FastSpec, req: DecisionRequest) -> bool:
    covered, targets, parties, tests, has_duties = spec
    if covered is not None and req.action not in covered:
        return False
    if targets is not None:
        t = req.target
        if t not in targets and (
            t is None or not req.part_of or not any(member(t, x, req.part_of) for x in targets)
        ):
            return False
    if parties is not None:
        a = party_iri(req.assignee) if req.assignee else None
        if a not in parties and (
            a is None or not req.part_of or not any(member(a, x, req.part_of) for x in parties)
        ):
            return False
    for kind, fn, r in tests:
        if kind == _NOW:
            if not fn(req.now, r):
                return False
        elif kind == _COUNT:
            if not fn(req.count + 1, r):
                return False
        elif kind == _ELAPSED:
            if req.started_at is None or not fn(req.now - req.started_at, r):
                return False
        elif kind == _ALL:  # every right value among the request's (roles: held, among others)
            values = req.context.get(fn)
            if not values:
                return False
            if all(type(v) is str for v in values):
                if not r.issubset(values):
                    return False
            else:
                try:
                    if not compare(T.IS_ALL_OF, values, tuple(r), req.types, req.part_of):
                        return False
                except (Incomparable, ValueError):
                    return False
        else:
            values = req.context.get(fn)
            if not values:
                return False
            for v in values:
                if type(v) is not str:
                    # a typed value: the general comparison decides
                    op = T.IS_ANY_OF if kind == _IN else T.IS_NONE_OF
                    try:
                        if not compare(op, values, tuple(r), req.types, req.part_of):
                            return False
                    except (Incomparable, ValueError):
                        return False
                    break
                if (v in r) != (kind == _IN):
                    return False
    return not has_duties or not req.duties


class Decider:
    """A compiled policy: ``decider(request) -> Decision``. Thread-safe, no I/O."""

    __slots__ = ("_explainer", "_fast", "_permit", "_policy", "_single", "policy_id")

    def __init__(self, policy: Policy) -> None:
        vocab = T.vocabulary()
        self.policy_id = policy.id
        self._policy = policy
        self._explainer: _Explainer | None = None
        # The common shape (permissions only, each a conjunction of plain comparisons) decides
        # on the fast path; the explaining closures are built on the first deny.
        self._fast: tuple[tuple[FastSpec, Decision], ...] | None = None
        if policy.permissions and not policy.prohibitions:
            fast = [_fast_rule(r, vocab) for r in policy.permissions]
            specs = [f for f in fast if f is not None]
            if len(specs) == len(fast):
                self._fast = tuple(
                    (f, Decision(True, f"{r.label} of {policy.label} applies"))
                    for f, r in zip(specs, policy.permissions, strict=True)
                )
        if self._fast is None:
            self._explainer = _Explainer(policy)
        # One permission (an agreement's usual shape): keep its spec and permit on the decider
        # itself, two fewer objects to reach per decision.
        self._single: FastSpec | None = None
        self._permit: Decision | None = None
        if self._fast is not None and len(self._fast) == 1:
            self._single, self._permit = self._fast[0]

    def __call__(self, req: DecisionRequest) -> Decision:
        single = self._single
        if single is not None:
            if _run_fast(single, req):
                return self._permit  # type: ignore[return-value]
        elif self._fast is not None:
            for spec, permit in self._fast:
                if _run_fast(spec, req):
                    return permit
        explainer = self._explainer
        if explainer is None:
            explainer = self._explainer = _Explainer(self._policy)
        return explainer(req)


class _Explainer:
    """The closure form of a policy: decides any shape, and says why it denies."""

    __slots__ = ("_conflict", "_label", "_permissions", "_prohibitions", "_strategy", "_vocab_equiv")

    def __init__(self, policy: Policy) -> None:
        vocab = T.vocabulary()
        of = f" of {policy.label}"
        self._label = policy.label
        # (check, "permission 2 (urn:...) of offer urn:...")
        self._permissions = [(_compile_rule(r, vocab, of), r.label + of) for r in policy.permissions]
        self._prohibitions = [(_compile_rule(r, vocab, of), r.label + of) for r in policy.prohibitions]
        self._strategy = policy.conflict_strategy
        self._conflict = next(
            (
                (p.label + of, q.label + of)
                for p in policy.permissions
                for q in policy.prohibitions
                if _overlap(p, q, vocab)
            ),
            None,
        )
        self._vocab_equiv = {**T.IDS_ACTIONS, **vocab.equivalent}

    def __call__(self, req: DecisionRequest) -> Decision:
        action = self._vocab_equiv.get(req.action)
        if action is not None:
            req = _with_action(req, action)
        reasons: list[str] = []
        permitted = None
        for check, label in self._permissions:
            r = check(req)
            if r is None:
                permitted = label
                if not self._prohibitions:
                    return Decision(True, f"{label} applies")
                break
            reasons.append(r)
        prohibited = None
        for check, label in self._prohibitions:
            if check(req) is None:
                prohibited = label
                break
        strategy = self._strategy
        if strategy == T.INVALID and (self._conflict or (permitted and prohibited)):
            p, q = self._conflict or (permitted, prohibited)
            return Decision(
                False, f"{p} and {q} conflict; the policy is void (conflict strategy odrl:invalid)"
            )
        if permitted and prohibited:
            if strategy == T.PERM:
                return Decision(True, f"{permitted} applies and overrides {prohibited} (odrl:perm)")
            return Decision(False, f"{prohibited} applies and overrides {permitted} (odrl:prohibit)")
        if permitted:
            return Decision(True, f"{permitted} applies")
        if prohibited:
            reasons.insert(0, f"{prohibited} applies")
        if not self._permissions:
            reasons.append(f"{self._label} grants no permission")
        return Decision(False, "; ".join(reasons))


def _with_action(req: DecisionRequest, action: str) -> DecisionRequest:
    return DecisionRequest(
        action=action,
        now=req.now,
        assignee=req.assignee,
        target=req.target,
        count=req.count,
        started_at=req.started_at,
        context=req.context,
        duties=req.duties,
        part_of=req.part_of,
        types=req.types,
    )


def compile_policy(policy: Policy) -> Decider:
    """Compile ``policy`` once; decide many requests with no RDF or JSON-LD work."""
    return Decider(policy)

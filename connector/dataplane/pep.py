"""The policy enforcement decision for one data request.

Pure apart from the use counter it is given: token binding, transfer state, the compiled
agreement (time window, purpose, ...) are checked first; only when all of them permit is one use
counted, atomically, against the limit taken from the agreement's count constraint. So a denied
request never burns a use, and N concurrent requests against an N-use agreement get exactly N
permits; in any number of processes sharing the store, never more than N (with
`uses.UseReservations`, another replica's unused reserved uses may deny a request for about a
second: see that module).

One data request (one GET, ranged or not) is one use.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from connector import metrics
from connector.identity.tokens import Claims
from connector.odrl import terms as T
from connector.odrl.compile import Decider, DecisionRequest, compile_policy
from connector.odrl.model import AnyConstraint, Constraint, LogicalConstraint, Policy, Rule
from connector.odrl.parse import load_policy
from connector.usage.modify import Modification, planned

USE = T.O + "use"
COMPENSATE = T.O + "compensate"
READ = T.O + "read"  # what a data request asks for (connector.usage.pipeline.DATA_ACTION)
SERVING_STATES = frozenset({"STARTED"})

# (agreement_id, consumer_id, target, limit) -> (allowed, count_after): a UseReservations, or
# Store.consume_use. Called only for a counted policy whose other checks all permitted.
ConsumeUse = Callable[[str, str, str, "int | None"], Awaitable[tuple[bool, int]]]


class UnenforceableCount(ValueError):
    """The agreement counts uses in a form that cannot be enforced as one atomic limit."""


class Uses(NamedTuple):
    counted: bool  # the policy has a count constraint
    limit: int | None  # permitted uses in all (None: not counted)


def _count_constraints(cs: Iterable[AnyConstraint], conjunctive: bool) -> list[Constraint]:
    found: list[Constraint] = []
    for c in cs:
        if isinstance(c, LogicalConstraint):
            inner = _count_constraints(c.operands, conjunctive and c.operator in (T.AND, T.AND_SEQUENCE))
            found.extend(inner)
        elif c.left_operand == T.COUNT:
            if not conjunctive:
                raise UnenforceableCount("a count constraint inside odrl:or/odrl:xone is not enforceable")
            found.append(c)
    return found


def _number(c: Constraint) -> Decimal:
    if len(c.right) != 1:
        raise UnenforceableCount("a count constraint must have exactly one right operand")
    v = c.right[0].py
    if isinstance(v, bool) or not isinstance(v, int | float | Decimal):
        raise UnenforceableCount(f"count right operand {c.right[0].lexical!r} is not a number")
    return Decimal(v)


def use_limit(policy: Policy | dict[str, Any]) -> Uses:
    """The number of uses the agreement grants: `count lteq N` -> N, `count lt N` -> N-1.

    Several count constraints (or permissions) give the smallest limit. Any other form (gt, eq,
    a count under or/xone) raises UnenforceableCount: the caller denies (fail closed).
    """
    if isinstance(policy, dict):
        policy = load_policy(policy)
    limits: list[int] = []
    for rule in (*policy.permissions, *policy.prohibitions, *policy.obligations):
        cs = list(_count_constraints(rule.constraints, True))
        for action in rule.actions:
            cs.extend(_count_constraints(action.refinements, True))
        if cs and rule not in policy.permissions:
            raise UnenforceableCount("a count constraint outside a permission is not enforceable")
        for c in cs:
            n = _number(c)
            if c.operator == T.LTEQ:
                limits.append(max(0, math.floor(n)))
            elif c.operator == T.LT:
                limits.append(max(0, math.ceil(n) - 1))
            else:
                raise UnenforceableCount(
                    f"count {T.short(c.operator)} {c.right[0].lexical} is not an enforceable limit"
                )
    return Uses(bool(limits), min(limits) if limits else None)


# operands decided from the request itself (its time, its use number), never from facts
_NO_FACTS = frozenset({T.DATE_TIME, T.COUNT, T.ELAPSED_TIME})


def _fact_operands(policy: Policy) -> frozenset[str]:
    """Every left operand the policy tests that a fact decides."""
    found: set[str] = set()

    def walk(cs: Iterable[AnyConstraint]) -> None:
        for c in cs:
            if isinstance(c, LogicalConstraint):
                walk(c.operands)
            else:
                found.add(c.left_operand)

    def rule(r: Rule) -> None:
        walk(r.constraints)
        for a in r.actions:
            walk(a.refinements)
        for t in r.targets:
            walk(t.refinements)
        for p in r.assignees:
            walk(p.refinements)
        for d in (*r.duties, *r.consequences, *r.remedies):
            rule(d)

    for r in (*policy.permissions, *policy.prohibitions, *policy.obligations):
        rule(r)
    return frozenset(found - _NO_FACTS)


@dataclass(frozen=True, slots=True)
class AgreementPolicy:
    """An agreement's compiled form for the data plane."""

    agreement_id: str
    target: str  # the asset the agreement is about (the use counter's key)
    decider: Decider
    uses: Uses | None  # None: the count form is unenforceable (every request denied)
    unenforceable: str = ""
    # the parsed agreement the decider was compiled from (duty ids are its own), and whether a
    # duty must be paid before use (connector.usage.payments)
    model: Policy | None = None
    pays: bool = False
    transit: Modification | None = None  # what the provider's data plane does to the data
    # the operands its constraints test beyond time and count: none, and a request needs no
    # facts gathered (the common case costs nothing)
    operands: frozenset[str] = frozenset()

    @classmethod
    def compile(cls, agreement_id: str, target: str, policy: Policy | dict[str, Any]) -> AgreementPolicy:
        if isinstance(policy, dict):
            policy = load_policy(policy)
        try:
            uses: Uses | None = use_limit(policy)
            why = ""
        except UnenforceableCount as exc:
            uses, why = None, str(exc)
        pays = any(a.iri == COMPENSATE for r in policy.permissions for d in r.duties for a in d.actions)
        return cls(
            agreement_id,
            target,
            compile_policy(policy),
            uses,
            why,
            policy,
            pays,
            planned(policy, "transit"),
            _fact_operands(policy),
        )


@dataclass(frozen=True, slots=True)
class TransferView:
    """What the data plane needs to know about a transfer (from the store, or a test)."""

    transfer_id: str
    agreement_id: str
    consumer_id: str
    state: str
    agreement: AgreementPolicy
    source: Any  # a connector.dataplane.sources.DataSource
    started_at: datetime | None = None  # start of the usage period, for elapsedTime
    ended: str | None = None  # why the agreement no longer serves (retired), None while it does
    # push: the consumer's DAT snapshot the provider keeps with the transfer
    # ({"attested": attributes, "attestedAt": the DAT's iat})
    attested: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PepDecision:
    permit: bool
    reason: str
    count_after: int | None = None  # the use number this request is, when counted

    def __bool__(self) -> bool:
        return self.permit


def _deny(reason: str) -> PepDecision:
    return PepDecision(False, reason)


@dataclass(frozen=True, slots=True)
class Circumstances:
    """What holds for one data request beyond the token's binding: its facts (attested, stated,
    held: ``connector.usage.pipeline.request_facts``), the states of the agreement's duties,
    and a duty that must be fulfilled before any use and is not (a payment), with its reason."""

    facts: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    duties: Mapping[str, str] = field(default_factory=dict)
    unmet: str | None = None


NOTHING = Circumstances()


async def decide(
    claims: Claims,
    transfer: TransferView,
    *,
    now: datetime,
    circumstances: Circumstances = NOTHING,
    consume: ConsumeUse,
) -> PepDecision:
    """Permit or deny one data request; counts a use only if everything else permits (and
    counts the decision in the process's metrics)."""
    d = await _decide(claims, transfer, now=now, circumstances=circumstances, consume=consume)
    metrics.decision(d.permit, d.reason)
    if d.permit and d.count_after is not None:
        metrics.DATAPLANE_USES.inc()
    return d


async def _decide(
    claims: Claims,
    transfer: TransferView,
    *,
    now: datetime,
    circumstances: Circumstances,
    consume: ConsumeUse,
) -> PepDecision:
    attrs = claims.attributes
    if (
        attrs.get("transferId") != transfer.transfer_id
        or attrs.get("agreementId") != transfer.agreement_id
        or claims.subject != transfer.consumer_id
    ):
        return _deny("the token is not bound to this transfer, agreement and consumer")
    if str(transfer.state) not in SERVING_STATES:
        return _deny(f"the transfer is {transfer.state}, not STARTED")
    policy = transfer.agreement
    if policy.agreement_id != transfer.agreement_id:
        return _deny("the transfer's agreement does not match its policy")
    if transfer.ended is not None:
        return _deny(transfer.ended)
    if policy.uses is None:
        return _deny(f"the agreement cannot be enforced: {policy.unenforceable}")
    if circumstances.unmet is not None:
        return _deny(circumstances.unmet)

    def request(count: int) -> DecisionRequest:
        return DecisionRequest(
            action=READ,
            now=now,
            assignee=transfer.consumer_id,
            target=policy.target,
            count=count,
            started_at=transfer.started_at,
            context=circumstances.facts,
            duties=circumstances.duties,
        )

    # everything but the count, decided as if this were the first use
    decision = policy.decider(request(0))
    if not decision.permit:
        return _deny(decision.reason)
    if not policy.uses.counted:
        return PepDecision(True, decision.reason)
    allowed, count_after = await consume(
        transfer.agreement_id, transfer.consumer_id, policy.target, policy.uses.limit
    )
    if allowed:
        return PepDecision(True, decision.reason, count_after)
    # the engine's own words for the count that was exhausted
    exhausted = policy.decider(request(count_after))
    if exhausted.permit:  # the limit is stricter than the engine's reading: say so plainly
        return _deny(f"the agreement's {policy.uses.limit} uses are used up")
    return _deny(exhausted.reason)


def still_permitted(
    transfer: TransferView, *, now: datetime, circumstances: Circumstances = NOTHING
) -> str | None:
    """While data flows: None if the transfer is still STARTED and the agreement, decided as of
    ``now`` on everything but the count (the use was counted when the response began), still
    permits; else why not. A time window or an elapsed time that ends mid-stream cuts the
    stream off, as a suspension does."""
    if str(transfer.state) not in SERVING_STATES:
        return f"the transfer is {transfer.state}"
    if transfer.ended is not None:
        return transfer.ended
    if circumstances.unmet is not None:
        return circumstances.unmet
    policy = transfer.agreement
    if policy.uses is None:
        return f"the agreement cannot be enforced: {policy.unenforceable}"
    decision = policy.decider(
        DecisionRequest(
            action=READ,
            now=now,
            assignee=transfer.consumer_id,
            target=policy.target,
            count=0,
            started_at=transfer.started_at,
            context=circumstances.facts,
            duties=circumstances.duties,
        )
    )
    return None if decision.permit else decision.reason

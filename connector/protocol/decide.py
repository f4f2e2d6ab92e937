"""The provider's answer to a ContractRequestMessage, as a pure function (not part of the state
machine): agree, with the ODRL Agreement to send, or terminate, with the reason.

* The requester must be eligible for the offer: the offer's access policy (compiled once with
  ``connector.odrl.compile``) must permit ``odrl:use`` of the dataset by the requester, with the
  requester's attributes (its DAT claims) as the request's context. An offer without an access
  policy is open to every authenticated participant. The offer's own usage constraints (count,
  time window, purpose, ...) are not evaluated here: they bind the use of the data and are
  enforced by the data plane against the agreement.
* The request equal to an eligible offer is agreed with the offer's rules. A counter-offer is
  agreed with its own rules when it is at least as strict as an eligible offer; the check is sound
  and conservative (see ``at_least_as_strict``): when in doubt, it is not stricter.
* Every termination says why, with the policy engine's deny reason where it decided.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal, cast

from connector.odrl import terms as T
from connector.odrl.compile import Decision as EngineDecision
from connector.odrl.compile import DecisionRequest
from connector.odrl.model import (
    Action,
    AnyConstraint,
    Asset,
    Constraint,
    LogicalConstraint,
    Party,
    Policy,
    Rule,
)
from connector.protocol.common import OfferCheck, new_uuid
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import standalone_policy

RULE_KEYS = ("permission", "prohibition", "obligation")
AccessDecider = Callable[[DecisionRequest], EngineDecision]  # a compiled policy (compile_policy)
# what names a policy and its parties rather than saying what it permits
IDENTITY_KEYS = frozenset({"@context", "@id", "@type", "target", "assigner", "assignee", "timestamp"})


@dataclass(frozen=True)
class Requester:
    """Who asks: the authenticated participant id and its attributes (left-operand IRI -> values)."""

    participant_id: str
    attributes: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @staticmethod
    def of(participant_id: str, attributes: Mapping[str, Any] | None = None) -> Requester:
        """Attributes as a DAT carries them: a value or a list of values per operand IRI."""
        attrs = {
            k: tuple(v) if isinstance(v, (list, tuple, set, frozenset)) else (v,)
            for k, v in (attributes or {}).items()
        }
        return Requester(participant_id, attrs)


@dataclass(frozen=True)
class KnownOffer:
    """An offer of the provider for one dataset: the ODRL Offer (DSP form, as in the catalog),
    the dataset it is for, and its compiled access policy (None: open to every participant)."""

    offer: Mapping[str, Any]
    target: str
    access: AccessDecider | None = field(default=None, compare=False)

    @property
    def id(self) -> str:
        return str(self.offer.get("@id", ""))


@dataclass(frozen=True)
class Decision:
    outcome: Literal["AGREE", "TERMINATE"]
    reason: str
    agreement: dict[str, Any] | None = None  # for AGREE: send it with negotiation.Agree
    offer_id: str | None = None  # the known offer the decision rests on

    @property
    def agree(self) -> bool:
        return self.outcome == "AGREE"


def access_decision(offer: KnownOffer, requester: Requester, now: datetime) -> EngineDecision:
    """Whether ``requester`` may see and negotiate ``offer`` (no RDF work: compiled policy)."""
    if offer.access is None:
        return EngineDecision(True, "the offer has no access policy")
    return offer.access(
        DecisionRequest(
            action=T.USE,
            now=now,
            assignee=requester.participant_id,
            target=offer.target,
            context=requester.attributes,
        )
    )


def check_offer(offers: Sequence[KnownOffer], requested: Mapping[str, Any]) -> OfferCheck:
    """Whether the offer of an initial ContractRequestMessage names, by its ``@id``, an offer of
    the provider for the dataset it names (DSP: "If the Provider is not aware of the offer.@id
    value, it must respond with an error message"). Its terms may differ (a counter-offer, which
    ``decide_request`` judges), and whether the requester may have it is ``decide_request``'s
    question too: a known offer opens a negotiation, which then terminates with the reason."""
    req_id, target = requested.get("@id"), requested.get("target")
    named = [o for o in offers if o.id == req_id]
    if not named:
        return OfferCheck(
            False,
            f"offer {req_id} is not an offer of this provider (offer.@id must name an offer of its catalog)",
        )
    if not any(o.target == target for o in named):
        return OfferCheck(False, f"offer {req_id} is not for dataset {target}")
    return OfferCheck(True, f"offer {req_id} is for dataset {target}")


def decide_request(
    offers: Sequence[KnownOffer],
    requested: Mapping[str, Any],
    requester: Requester,
    now: datetime,
    *,
    provider_id: str,
    new_id: Callable[[], str] = new_uuid,
) -> Decision:
    """Agree to ``requested`` (the offer of a ContractRequestMessage) or terminate, and why."""
    target = requested.get("target")
    req_id = requested.get("@id")
    candidates = [o for o in offers if o.target == target]
    if not candidates:
        return Decision("TERMINATE", f"no offer of {provider_id} is for dataset {target}")
    candidates.sort(key=lambda o: o.id != req_id)  # the offer the request names first
    reasons: list[str] = []
    eligible = []
    for o in candidates:
        d = access_decision(o, requester, now)
        if d.permit:
            eligible.append(o)
        else:
            reasons.append(f"offer {o.id} is not available to {requester.participant_id}: {d.reason}")
    if not eligible:
        return Decision("TERMINATE", "; ".join(reasons), offer_id=candidates[0].id)
    for o in eligible:
        if same_terms(requested, o.offer):
            return Decision(
                "AGREE",
                f"the request is offer {o.id}",
                _agreement(o.offer, target, provider_id, requester, now, new_id),
                o.id,
            )
    try:
        wanted = standalone_policy(requested)
    except ProtocolError as exc:
        return Decision("TERMINATE", f"the requested offer cannot be read: {'; '.join(exc.reasons)}")
    for o in eligible:
        problems = at_least_as_strict(wanted, _offer_policy(_canonical(o.offer), o.target))
        if not problems:
            return Decision(
                "AGREE",
                f"the counter-offer is at least as strict as offer {o.id}",
                _agreement(requested, target, provider_id, requester, now, new_id),
                o.id,
            )
        reasons.append(f"the counter-offer is not at least as strict as offer {o.id}: {'; '.join(problems)}")
    return Decision("TERMINATE", "; ".join(reasons), offer_id=eligible[0].id)


def verify_agreement(
    offer: Mapping[str, Any], agreement: Mapping[str, Any], *, consumer_id: str, provider_id: str
) -> list[str]:
    """The consumer's check before it verifies: the agreement is what it asked for (empty: ok)."""
    problems = []
    if agreement.get("target") != offer.get("target"):
        problems.append(
            f"the agreement is for {agreement.get('target')}, the offer for {offer.get('target')}"
        )
    if agreement.get("assignee") != consumer_id:
        problems.append(f"the agreement's assignee {agreement.get('assignee')} is not {consumer_id}")
    if agreement.get("assigner") != provider_id:
        problems.append(f"the agreement's assigner {agreement.get('assigner')} is not {provider_id}")
    if not same_terms(agreement, offer):
        problems.append("the agreement's rules differ from the offer's")
    return problems


# ----------------------------------------------------------------------------- agreement


def _agreement(
    source: Mapping[str, Any],
    target: Any,
    provider_id: str,
    requester: Requester,
    now: datetime,
    new_id: Callable[[], str],
) -> dict[str, Any]:
    agreement: dict[str, Any] = {
        "@id": new_id(),
        "@type": "Agreement",
        "target": target,
        "assigner": provider_id,
        "assignee": requester.participant_id,
        "timestamp": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for key, value in source.items():  # the terms: rules, profile, and whatever else they carry
        if key not in IDENTITY_KEYS:
            agreement[key] = json.loads(json.dumps(value))
    return agreement


def _normal(x: Any, ordered: bool = False) -> Any:
    if isinstance(x, dict):
        return {k: _normal(v, k == "andSequence") for k, v in sorted(x.items())}
    if isinstance(x, list):
        items = [_normal(v) for v in x]
        return items if ordered else sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return x


def same_terms(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The same terms: everything but the identity keys (@id, target, parties, timestamp) equal,
    JSON arrays compared as sets as in RDF (andSequence in order)."""
    keys = (set(a) | set(b)) - IDENTITY_KEYS
    return all(_normal(a.get(k)) == _normal(b.get(k)) for k in keys)


def _canonical(offer: Mapping[str, Any]) -> str:
    return json.dumps(offer, sort_keys=True, separators=(",", ":"))


@lru_cache(maxsize=4096)
def _offer_policy(canonical: str, target: str) -> Policy:
    return standalone_policy(json.loads(canonical), target)


# ----------------------------------------------------------------------------- strictness


def at_least_as_strict(request: Policy, offer: Policy) -> list[str]:
    """Why ``request`` may permit something ``offer`` does not (empty: it is at least as strict).

    Sound and conservative: every permission of the request must fall within one of the offer's
    (same action and target, the offer's parties kept or narrowed, every offer constraint present
    with an equal value or, for count / dateTime / elapsedTime under an ordering operator, a
    narrower one, every duty kept), every prohibition and obligation of the offer must be in the
    request, and the conflict strategy and profiles must be the same. Anything else (other
    operators, logical constraints, refinements) must be exactly equal.
    """
    problems: list[str] = []
    if request.conflict_strategy != offer.conflict_strategy:
        problems.append(
            f"conflict strategy {T.short(request.conflict_strategy)} instead of "
            f"{T.short(offer.conflict_strategy)}"
        )
    if set(request.profiles) != set(offer.profiles):
        problems.append("the profiles differ")
    for pr in request.permissions:
        why = [_rule_within(pr, po) for po in offer.permissions]
        if all(why):
            detail = min(why, key=len) if why else ["the offer grants no permission"]
            problems.append(f"permission to {_actions(pr)} goes beyond the offer ({'; '.join(detail)})")
    for kind, mine, theirs in (
        ("prohibition", request.prohibitions, offer.prohibitions),
        ("obligation", request.obligations, offer.obligations),
    ):
        have = {_rule_shape(r) for r in mine}
        for r in theirs:
            if _rule_shape(r) not in have:
                problems.append(f"the offer's {kind} of {_actions(r)} is missing or changed")
    return problems


def _actions(r: Rule) -> str:
    return ", ".join(T.short(a.iri) for a in r.actions) or "(no action)"


def _rule_within(pr: Rule, po: Rule) -> list[str]:
    """Why permission ``pr`` is not within ``po`` (empty: it is)."""
    why = []
    if {_action_shape(a) for a in pr.actions} != {_action_shape(a) for a in po.actions}:
        return [f"action {_actions(pr)} is not {_actions(po)}"]
    if {_party_shape(a) for a in pr.targets} != {_party_shape(a) for a in po.targets}:
        return ["the target differs"]
    for attr, name in (("assignees", "assignee"), ("assigners", "assigner")):
        mine = {_party_shape(p) for p in getattr(pr, attr)}
        theirs = {_party_shape(p) for p in getattr(po, attr)}
        if theirs and not (mine and mine <= theirs):
            why.append(f"the {name} is widened")
    for c in po.constraints:
        if not any(narrower(mine, c) for mine in pr.constraints):
            why.append(f"constraint {_describe(c)} is missing or widened")
    have = {_rule_shape(d) for d in pr.duties}
    for d in po.duties:
        if _rule_shape(d) not in have:
            why.append(f"duty to {_actions(d)} is missing or changed")
    return why


_ORDER = (T.LT, T.LTEQ, T.GT, T.GTEQ, T.EQ)
_YEAR_MONTH = re.compile(r"^-?P(?:[^T]*[YM])")  # durations with years or months compare inexactly


def narrower(mine: AnyConstraint, theirs: AnyConstraint) -> bool:
    """Whether ``mine`` holds only where ``theirs`` holds (False when that cannot be shown)."""
    if _shape(mine) == _shape(theirs):
        return True
    if not (isinstance(mine, Constraint) and isinstance(theirs, Constraint)):
        return False
    if mine.left_operand != theirs.left_operand or mine.left_operand not in (
        T.COUNT,
        T.DATE_TIME,
        T.ELAPSED_TIME,
    ):
        return False
    if mine.operator not in _ORDER or theirs.operator not in _ORDER or theirs.operator == T.EQ:
        return False
    if len(mine.right) != 1 or len(theirs.right) != 1 or mine.right_reference or theirs.right_reference:
        return False
    if (mine.unit, mine.datatype) != (theirs.unit, theirs.datatype):
        return False
    b, a = cast(Any, mine.right[0].py), cast(Any, theirs.right[0].py)
    kinds = (Decimal, datetime, timedelta)
    if not any(isinstance(a, k) and isinstance(b, k) for k in kinds) or isinstance(a, bool):
        return False
    if isinstance(a, timedelta) and any(
        _YEAR_MONTH.match(v.lexical.strip()) for v in (mine.right[0], theirs.right[0])
    ):
        return False
    op, mop = theirs.operator, mine.operator
    if op == T.LTEQ:
        return mop in (T.LTEQ, T.LT, T.EQ) and b <= a
    if op == T.LT:
        return (mop == T.LT and b <= a) or (mop in (T.LTEQ, T.EQ) and b < a)
    if op == T.GTEQ:
        return mop in (T.GTEQ, T.GT, T.EQ) and b >= a
    return (mop == T.GT and b >= a) or (mop in (T.GTEQ, T.EQ) and b > a)  # op == GT


def _value(v: Any) -> str:
    if v.py is None or (isinstance(v.py, timedelta) and _YEAR_MONTH.match(v.lexical.strip())):
        return repr((v.is_iri, v.lexical))  # P1M is not exactly P30D
    return repr((v.is_iri, str(v.py)))


def _shape(c: AnyConstraint) -> Any:
    """A constraint without its (blank node) identity, for comparison."""
    if isinstance(c, LogicalConstraint):
        return ("logical", c.operator, tuple(sorted(repr(_shape(o)) for o in c.operands)))
    return (
        "atomic",
        c.left_operand,
        c.operator,
        tuple(sorted(_value(v) for v in c.right)),
        tuple(sorted(c.right_reference)),
        c.unit,
        c.datatype,
    )


def _shapes(cs: Iterable[AnyConstraint]) -> tuple[str, ...]:
    return tuple(sorted(repr(_shape(c)) for c in cs))


def _action_shape(a: Action) -> Any:
    return (a.iri, _shapes(a.refinements))


def _party_shape(p: Party | Asset) -> Any:
    return (p.iri, p.is_collection, _shapes(p.refinements))


def _rule_shape(r: Rule) -> Any:
    return (
        r.kind,
        tuple(sorted(repr(_action_shape(a)) for a in r.actions)),
        tuple(sorted(repr(_party_shape(t)) for t in r.targets)),
        tuple(sorted(repr(_party_shape(p)) for p in r.assignees)),
        _shapes(r.constraints),
        tuple(sorted(repr(_rule_shape(d)) for d in (*r.duties, *r.consequences, *r.remedies))),
    )


def _describe(c: AnyConstraint) -> str:
    if isinstance(c, LogicalConstraint):
        return f"{T.short(c.operator)}({', '.join(_describe(o) for o in c.operands)})"
    right = ", ".join(v.lexical for v in c.right) or ", ".join(c.right_reference)
    return f"{T.short(c.left_operand)} {T.short(c.operator)} {right}"

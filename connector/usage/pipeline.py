"""One policy pipeline: an agreement compiled once, decided by the same decider at every point,
fed from the same fact sources.

- ``agreement_document``: the one JSON-LD reading of a stored agreement or policy (the engine's
  ``POLICY_CONTEXT``, every prefix a policy may use), so ``idsc:SECURITY_LEVEL`` means the same
  at the catalog, in negotiation, at the data plane and at a consumer's local use.
- ``compiled_agreement``: the data plane's and the local use's compiled form, cached by the
  agreement's id and text.
- ``catalog_decider``: the contract policy as the catalog and the negotiation can decide it,
  with the facts the authority attests (``connector.odrl.stage.residual``).
- ``request_facts``: the facts of one request, from the three sources: attested (the token),
  stated (the request), held (the provider's or the consumer's connector).
- ``DATA_ACTION``: what a pull, a push and a local read ask for: ``odrl:read``. A permission to
  ``use`` covers it (ODRL's ``read`` is included in ``use``), and so does one to ``read`` alone
  (``distribute-only-if-encrypted``), while ``distribute`` stays a separate question.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from functools import lru_cache
from typing import Any

from connector.dataplane.pep import AgreementPolicy
from connector.odrl import terms as T
from connector.odrl.compile import Decision, DecisionRequest, compile_policy
from connector.odrl.facts import ATTESTED, DERIVED, context_facts, fact_values, stated_facts
from connector.odrl.parse import load_policy
from connector.odrl.plain import POLICY_CONTEXT
from connector.odrl.stage import residual
from connector.usage.crossborder import derived_facts, provider_facts

DATA_ACTION = T.O + "read"
DecideFn = Callable[[DecisionRequest], Decision]  # a compiled policy, or a composition of them

# the request headers (data plane) and fields (management API) of the stated facts
STATED_HEADERS = {
    "X-Purpose": T.PURPOSE,
    "X-Application": T.APPLICATION,
    "X-Event": T.O + "event",
    "X-Location": T.SPATIAL,
}


def agreement_document(policy: Mapping[str, Any]) -> dict[str, Any]:
    """A stored policy (an agreement's, an offer's contract policy) as the engine reads it."""
    if "@context" in policy:
        return dict(policy)
    return {"@context": POLICY_CONTEXT, **policy}


def compiled_agreement(agreement_id: str, target: str, policy: Mapping[str, Any]) -> AgreementPolicy:
    """The agreement compiled once (cached by its id and text)."""
    text = json.dumps(policy, sort_keys=True, separators=(",", ":"))
    return _compiled(agreement_id, target, text)


@lru_cache(maxsize=4096)
def _compiled(agreement_id: str, target: str, text: str) -> AgreementPolicy:
    return AgreementPolicy.compile(agreement_id, target, agreement_document(json.loads(text)))


def catalog_decider(contract_policy: Mapping[str, Any]) -> DecideFn:
    """The contract policy decided on attested facts only (the catalog, the negotiation): a
    requester it denies could never use the data, so the offer is not shown and a request for
    it is terminated, with the reason."""
    return _catalog(json.dumps(contract_policy, sort_keys=True, separators=(",", ":")))


@lru_cache(maxsize=1024)
def _catalog(text: str) -> DecideFn:
    staged = residual(
        load_policy(agreement_document(json.loads(text))),
        lambda operand: operand in ATTESTED or operand in DERIVED,
    )
    decider = compile_policy(staged)

    def decide(req: DecisionRequest) -> Decision:
        return decider(replace(req, action=DATA_ACTION, count=0, started_at=None))

    return decide


def both(first: DecideFn | None, second: DecideFn) -> DecideFn:
    """Permit when both permit; the first denial's reason otherwise."""
    if first is None:
        return second

    def decide(req: DecisionRequest) -> Decision:
        d = first(req)
        return d if not d.permit else second(req)

    return decide


def request_facts(
    attested: Mapping[str, Any] | None = None,
    *,
    stated: Mapping[str, tuple[Any, ...]] | None = None,
    held: Mapping[str, tuple[Any, ...]] | None = None,
    own: Mapping[str, Any] | None = None,
    attested_facts: Mapping[str, tuple[Any, ...]] | None = None,
    derive: bool = True,
) -> dict[str, tuple[Any, ...]]:
    """One request's facts: operand IRI -> values.

    ``attested``: the requester's attributes as the authority states them (``securityProfile``,
    ``roles``, ``jurisdiction``, ...: a DAT's, or the snapshot in a transfer token), or
    ``attested_facts``, the same already mapped by ``fact_values`` (a caller that caches them
    per token); ``stated`` and ``held``: context facts (``connector.odrl.facts.context_facts``);
    ``own``: the deciding connector's own attested attributes (its jurisdiction, for
    cross-border rules). A held or stated fact never stands in for an attested one: attested
    operands come from the token only. Derived facts (``dsf:exportStatus``: domestic, assessed
    or unassessed export) come from both (``connector.usage.crossborder``); ``derive=False``
    skips them for a policy that does not test them."""
    held_all: dict[str, tuple[Any, ...]] = dict(held or {})
    if own:
        held_all.update(provider_facts(own))
    facts: dict[str, tuple[Any, ...]] = {}
    for source in (held_all, stated or {}):
        for k, v in source.items():
            if k not in ATTESTED and k not in DERIVED:
                facts[k] = facts.get(k, ()) + tuple(v)
    attested = attested or {}
    facts.update(attested_facts if attested_facts is not None else fact_values(attested))
    if derive:
        facts.update(derived_facts(attested, held_all))
    return facts


class AttestedFacts:
    """``fact_values`` of a token's attested attributes, kept per token (its id and the time
    of its snapshot): a token is verified once and then used for many requests."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: dict[tuple[str, Any], dict[str, tuple[Any, ...]]] = {}
        self._max = max_entries

    def __call__(
        self, token_id: str, attested_at: Any, attested: Mapping[str, Any] | None
    ) -> dict[str, tuple[Any, ...]]:
        key = (token_id, attested_at)
        hit = self._entries.get(key)
        if hit is None:
            if len(self._entries) >= self._max:
                self._entries.clear()
            hit = self._entries[key] = fact_values(attested or {})
        return hit


def stated_from_headers(headers: Mapping[str, str]) -> dict[str, tuple[Any, ...]]:
    """The facts a data request states in its headers (a comma-separated list each)."""
    raw: dict[str, list[str]] = {}
    for header, operand in STATED_HEADERS.items():
        value = headers.get(header)
        if value:
            raw[operand] = [v.strip() for v in value.split(",") if v.strip()]
    return context_facts(raw)


def stated(
    *,
    purpose: str | Iterable[str] | None = None,
    application: str | Iterable[str] | None = None,
    event: str | Iterable[str] | None = None,
    location: str | Iterable[str] | None = None,
) -> dict[str, tuple[Any, ...]]:
    """The facts a request states by name (``--purpose``, ``--application``, ...): the
    engine's ``stated_facts``, the place of use named ``location`` as the CLI and API name it."""
    return stated_facts(purpose=purpose, application=application, event=event, spatial=location)


def headers_for(facts: Mapping[str, str | Iterable[str] | None]) -> dict[str, str]:
    """The data-plane request headers that state ``facts`` (name -> value(s)), for a client."""
    names = {
        "purpose": "X-Purpose",
        "application": "X-Application",
        "event": "X-Event",
        "location": "X-Location",
    }
    out: dict[str, str] = {}
    for name, value in facts.items():
        if value is None or name not in names:
            continue
        values = [value] if isinstance(value, str) else list(value)
        if values:
            out[names[name]] = ",".join(values)
    return out


__all__ = [
    "DATA_ACTION",
    "STATED_HEADERS",
    "AttestedFacts",
    "agreement_document",
    "both",
    "catalog_decider",
    "compiled_agreement",
    "headers_for",
    "request_facts",
    "stated",
    "stated_from_headers",
]

"""Facts the policy engine tests, and where each comes from.

A decision tests left operands against facts. Both the explaining evaluator (``World.facts``,
``Request.context``) and the compiled decider (``DecisionRequest.context``) read them as a map
from the operand's full IRI to its values. The sources, so that every enforcement point feeds
the same facts the same way:

- attested by the authority in the participant's token (``fact_values``): ``idsc:SECURITY_LEVEL``
  (``securityProfile``), ``dsc:role`` (``roles``), ``dsc:membership`` and ``odrl:systemDevice``
  (``referringConnector``; IDS-G's ``idsc:CONNECTOR`` and ``idsc:SYSTEM`` read the same fact),
  ``dsf:jurisdiction`` (``jurisdiction``: every level containing the participant),
  ``dsf:certification`` (``certifications``), ``dsf:group`` (``groups``, as ``urn:group:N``)
  and ``dsf:participant`` (``participantIri``); the forms are connector.identity.participants';
- stated with a request (``stated_facts``): ``odrl:purpose``, ``dsc:application`` (IDS-G's
  ``idsc:APPLICATION``), ``odrl:event``, ``odrl:spatial``, ``odrl:recipient``;
- held by the provider or the consumer's connector (``context_facts`` of what it holds):
  ``idsc:STATE`` (provider-side state), ``odrl:event`` (active events), ``odrl:payAmount``
  (payment received; IDS's ``idsc:PAY_AMOUNT`` and ``idsc:PAYMENT``), ``idsc:ARTIFACT_STATE``
  (the state of the copy: encrypted, anonymized), ``dsf:registeredAssessment`` (assessment
  references the provider accepts);
- derived from attested and held facts (connector.usage.crossborder): ``dsf:exportStatus``.

A fact nobody states is absent, and an absent fact never satisfies a constraint (the decision
denies and names the operand). Keys may be written in any spelling a policy may use (a CURIE,
an IDS code, the full IRI) and values as CURIEs: both are expanded here, once, so that
``dpv:ScientificResearch`` stated with a request meets ``dpv:ScientificResearch`` in a policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from connector.identity.participants import (
    AttestationError,
    group_iri,
    jurisdiction_of,
)
from connector.odrl import terms as T
from connector.odrl.model import Value
from connector.odrl.plain import canonical_operand, expand_term, to_value
from connector.odrl.terms import MEMBERSHIP, ROLE_TERMS

MEMBER = T.DSC_NS + "Member"

# The operands each source feeds (documentation for the runtime; see the module docstring).
ATTESTED = frozenset(
    {
        T.SECURITY_LEVEL,
        T.ROLE,
        MEMBERSHIP,
        T.O + "systemDevice",
        T.JURISDICTION,
        T.CERTIFICATION,
        T.GROUP,
        T.PARTICIPANT,
    }
)
STATED = frozenset({T.PURPOSE, T.APPLICATION, T.O + "event", T.SPATIAL, T.RECIPIENT})
HELD = frozenset({T.IDS_STATE, T.O + "event", T.O + "payAmount", T.ARTIFACT_STATE, T.REGISTERED_ASSESSMENT})
DERIVED = frozenset({T.EXPORT_STATUS})


def fact_values(attributes: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Operand IRI -> IRI values, from a token's attributes (unknown attributes ignored)."""
    facts: dict[str, tuple[str, ...]] = {}
    profile = attributes.get("securityProfile")
    if isinstance(profile, str) and profile:
        facts[T.SECURITY_LEVEL] = (expand_term(profile),)
    roles = attributes.get("roles") or ()
    if isinstance(roles, (list, tuple)):
        facts[T.ROLE] = tuple(ROLE_TERMS[r] for r in roles if r in ROLE_TERMS)
    if attributes.get("membership") is True:
        facts[T.MEMBERSHIP] = (MEMBER,)
    connector = attributes.get("referringConnector")
    if isinstance(connector, str) and connector:
        facts[T.O + "systemDevice"] = (connector,)
    facts.update(_participant_facts(attributes))
    return {k: v for k, v in facts.items() if v}


def _participant_facts(attributes: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Jurisdiction, certifications, groups, participant IRI. The verifiers validated them; a
    value that is not of its form anyway is left out (an absent fact denies)."""
    facts: dict[str, tuple[str, ...]] = {}
    try:
        jurisdiction = jurisdiction_of(attributes.get("jurisdiction"))
    except AttestationError:
        jurisdiction = None
    if jurisdiction is not None:
        facts[T.JURISDICTION] = jurisdiction.iris()
    facts[T.CERTIFICATION] = tuple(expand_term(c) for c in _strings(attributes, "certifications"))
    groups = []
    for name in _strings(attributes, "groups"):
        try:
            groups.append(group_iri(name))
        except AttestationError:
            continue
    facts[T.GROUP] = tuple(groups)
    iri = attributes.get("participantIri")
    if isinstance(iri, str) and iri:
        facts[T.PARTICIPANT] = (iri,)
    return facts


def _strings(attributes: Mapping[str, Any], name: str) -> tuple[str, ...]:
    values = attributes.get(name) or ()
    if not isinstance(values, (list, tuple)):
        return ()
    return tuple(v for v in values if isinstance(v, str) and v)


def world_facts(attributes: Mapping[str, Any]) -> dict[str, tuple[Value, ...]]:
    """The same facts as typed values for ``World.facts``."""
    return {k: tuple(Value.iri(v) for v in vs) for k, vs in fact_values(attributes).items()}


def context_facts(values: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Facts for ``DecisionRequest.context``: operand (any spelling) -> its values, a value or
    a list of values each (CURIEs expanded to IRIs, numbers as Decimal, times as datetime).

    Raises ``PolicyError`` for a value that does not fit its operand (a payment that is not a
    number), so a caller refuses it at its boundary."""
    out: dict[str, tuple[Any, ...]] = {}
    for key, raw in values.items():
        if raw is None:
            continue
        operand = canonical_operand(expand_term(key))
        items = raw if isinstance(raw, (list, tuple, set, frozenset)) else (raw,)
        typed = tuple(_plain(to_value(x, operand)) for x in items)
        if typed:
            out[operand] = out.get(operand, ()) + typed
    return out


def stated_facts(
    *,
    purpose: str | Iterable[str] | None = None,
    application: str | Iterable[str] | None = None,
    event: str | Iterable[str] | None = None,
    spatial: str | Iterable[str] | None = None,
    recipient: str | Iterable[str] | None = None,
) -> dict[str, tuple[Any, ...]]:
    """What a request states (``--purpose dpv:ScientificResearch``, ...), as context facts."""
    return context_facts(
        {
            T.PURPOSE: _items(purpose),
            T.APPLICATION: _items(application),
            T.O + "event": _items(event),
            T.SPATIAL: _items(spatial),
            T.RECIPIENT: _items(recipient),
        }
    )


def _items(v: str | Iterable[str] | None) -> list[str] | None:
    if v is None:
        return None
    items = [v] if isinstance(v, str) else list(v)
    return [x for x in items if x] or None


def _plain(v: Value) -> Any:
    """A typed value as the compiled decider compares it (IRIs as strings)."""
    if v.is_iri:
        return v.lexical
    return v.py if v.py is not None else v.lexical


# ROLE_TERMS (terms.py): the roles a token states, as dsc:role values
__all__ = [
    "ATTESTED",
    "DERIVED",
    "HELD",
    "MEMBER",
    "ROLE_TERMS",
    "STATED",
    "context_facts",
    "fact_values",
    "stated_facts",
    "world_facts",
]

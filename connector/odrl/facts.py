"""What a verified participant token says, as facts the policy engine can test.

A DAT's attributes (security profile, roles, membership, the connector it runs) become values
of left operands: ``idsc:SECURITY_LEVEL``, ``dsc:role``, ``dsc:membership`` and
``odrl:systemDevice``. Both the explaining evaluator (``World.facts``) and the compiled decider
(``DecisionRequest.context``) read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.odrl import terms as T
from connector.odrl.model import Value
from connector.odrl.plain import expand_term

ROLE_TERMS = {"provider": T.DSC_NS + "Provider", "consumer": T.DSC_NS + "Consumer",
              "broker": T.DSC_NS + "Broker"}
MEMBER = T.DSC_NS + "Member"


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
    return {k: v for k, v in facts.items() if v}


def world_facts(attributes: Mapping[str, Any]) -> dict[str, tuple[Value, ...]]:
    """The same facts as typed values for ``World.facts``."""
    return {k: tuple(Value.iri(v) for v in vs) for k, vs in fact_values(attributes).items()}

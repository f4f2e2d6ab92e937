"""The ODRL 2.2 vocabulary as the engine needs it: actions and their hierarchy, operators,
left operands, conflict terms, and the IDS Information Model terms mapped onto them.

Read once from the shipped ``vocab/odrl/ODRL22.ttl``; nothing is hard-coded that the vocabulary
already says (the action hierarchy comes from ``odrl:includedIn``, deprecated terms from
``skos:exactMatch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from rdflib import RDF, URIRef
from rdflib.namespace import SKOS

from connector.vocab import IDS, IDSC, ODRL, ontology_graph

O = str(ODRL)
IDSC_NS = str(IDSC)
IDS_NS = str(IDS)

EQ, NEQ, LT, LTEQ, GT, GTEQ = (O + x for x in ("eq", "neq", "lt", "lteq", "gt", "gteq"))
IS_A, HAS_PART, IS_PART_OF = O + "isA", O + "hasPart", O + "isPartOf"
IS_ALL_OF, IS_ANY_OF, IS_NONE_OF = O + "isAllOf", O + "isAnyOf", O + "isNoneOf"
OPERATORS = frozenset(
    {EQ, NEQ, LT, LTEQ, GT, GTEQ, IS_A, HAS_PART, IS_PART_OF, IS_ALL_OF, IS_ANY_OF, IS_NONE_OF}
)
ORDERING_OPERATORS = frozenset({LT, LTEQ, GT, GTEQ})
SET_OPERATORS = frozenset({IS_ALL_OF, IS_ANY_OF, IS_NONE_OF})

OR, XONE, AND, AND_SEQUENCE = O + "or", O + "xone", O + "and", O + "andSequence"
LOGICAL_OPERATORS = (OR, XONE, AND, AND_SEQUENCE)

PERM, PROHIBIT, INVALID = O + "perm", O + "prohibit", O + "invalid"
CONFLICT_TERMS = frozenset({PERM, PROHIBIT, INVALID})

USE, TRANSFER = O + "use", O + "transfer"

# Left operands whose value the engine derives itself rather than reading from the request.
DATE_TIME, ELAPSED_TIME, COUNT = O + "dateTime", O + "elapsedTime", O + "count"
PURPOSE, RECIPIENT, SPATIAL = O + "purpose", O + "recipient", O + "spatial"

# IDS operands without an ODRL counterpart: evaluated against facts about the requester
# (its DAT attributes, the connector it runs, the endpoint it calls).
SECURITY_LEVEL = IDSC_NS + "SECURITY_LEVEL"
ENDPOINT = IDSC_NS + "ENDPOINT"
IDS_STATE = IDSC_NS + "STATE"
IDS_USER = IDSC_NS + "USER"
IDS_PATH = IDSC_NS + "PATH"
IDS_QUANTITY = IDSC_NS + "QUANTITY"

# Left operands of this connector's data space, for facts the authority vouches for in a
# participant's token (roles such as provider/consumer, memberships, the application in use).
DSC_NS = "https://w3id.org/dataspace-connector/ns#"
ROLE, MEMBERSHIP, APPLICATION = DSC_NS + "role", DSC_NS + "membership", DSC_NS + "application"
# Refinements of a duty to modify the data (connector.usage.modify): the fields or columns to
# drop or to hash, and a regular expression with its replacement.
DROP, HASH = DSC_NS + "drop", DSC_NS + "hash"
PATTERN, REPLACEMENT = DSC_NS + "pattern", DSC_NS + "replacement"
MODIFY_OPERANDS = frozenset({DROP, HASH, PATTERN, REPLACEMENT})
DSC_LEFT_OPERANDS = frozenset({ROLE, MEMBERSHIP, APPLICATION, *MODIFY_OPERANDS})
# The roles a token states (its ``roles`` claim) as the values of ``dsc:role``.
ROLE_TERMS = {"provider": DSC_NS + "Provider", "consumer": DSC_NS + "Consumer", "broker": DSC_NS + "Broker"}

# Left operands of facts about participants that IDS has no term for (vocab/facts/facts.ttl):
# attested by the authority in the DAT, held by a provider, or derived from both
# (connector.usage.crossborder). Values are IRIs (connector.identity.participants).
DSF_NS = "https://w3id.org/dataspace-connector/facts#"
JURISDICTION, CERTIFICATION, GROUP, PARTICIPANT = (
    DSF_NS + x for x in ("jurisdiction", "certification", "group", "participant")
)
REGISTERED_ASSESSMENT, PROVIDER_JURISDICTION, EXPORT_STATUS = (
    DSF_NS + x for x in ("registeredAssessment", "providerJurisdiction", "exportStatus")
)
DSF_LEFT_OPERANDS = frozenset(
    {
        JURISDICTION,
        CERTIFICATION,
        GROUP,
        PARTICIPANT,
        REGISTERED_ASSESSMENT,
        PROVIDER_JURISDICTION,
        EXPORT_STATUS,
    }
)

# Left operands that IDS connectors send beyond the Information Model 4.2.0 code list (IDS-G
# usage-control examples). Those with a counterpart map onto it, so a policy means the same in
# either form; the rest are refinements of duties (what to log, whom to notify, which policy to
# pass on, what to replace) or facts about the artifact, evaluated like any other fact: a value
# nobody states never satisfies a constraint.
ARTIFACT_STATE = IDSC_NS + "ARTIFACT_STATE"
LOG_LEVEL = IDSC_NS + "LOG_LEVEL"
NOTIFICATION_LEVEL = IDSC_NS + "NOTIFICATION_LEVEL"
TARGET_POLICY = IDSC_NS + "TARGET_POLICY"
JSON_PATH = IDSC_NS + "JSON_PATH"
REPLACE_WITH = IDSC_NS + "REPLACE_WITH"
# Operands whose values are free text (a JSON path, a replacement), never read as IRIs.
TEXT_OPERANDS = frozenset({JSON_PATH, REPLACE_WITH, *MODIFY_OPERANDS})

IDS_LEFT_OPERANDS: dict[str, str] = {
    IDSC_NS + "POLICY_EVALUATION_TIME": DATE_TIME,
    IDSC_NS + "DATE_TIME": DATE_TIME,
    IDSC_NS + "CONNECTOR": O + "systemDevice",
    IDSC_NS + "SYSTEM_DEVICE": O + "systemDevice",
    IDSC_NS + "ROLE": ROLE,
    IDSC_NS + "APPLICATION": APPLICATION,
    IDSC_NS + "PAYMENT": O + "payAmount",
    IDSC_NS + "RECIPIENT": RECIPIENT,
    ARTIFACT_STATE: ARTIFACT_STATE,
    LOG_LEVEL: LOG_LEVEL,
    NOTIFICATION_LEVEL: NOTIFICATION_LEVEL,
    TARGET_POLICY: TARGET_POLICY,
    JSON_PATH: JSON_PATH,
    REPLACE_WITH: REPLACE_WITH,
    IDSC_NS + "ELAPSED_TIME": ELAPSED_TIME,
    IDSC_NS + "COUNT": COUNT,
    IDSC_NS + "PURPOSE": PURPOSE,
    IDSC_NS + "ABSOLUTE_SPATIAL_POSITION": SPATIAL,
    IDSC_NS + "SYSTEM": O + "systemDevice",
    IDSC_NS + "EVENT": O + "event",
    IDSC_NS + "PAY_AMOUNT": O + "payAmount",
    IDSC_NS + "DELAY": O + "delayPeriod",
    IDSC_NS + "RECURRENCE_RATE": O + "timeInterval",
    SECURITY_LEVEL: SECURITY_LEVEL,
    ENDPOINT: ENDPOINT,
    IDS_STATE: IDS_STATE,
    IDS_USER: IDS_USER,
    IDS_PATH: IDS_PATH,
    IDS_QUANTITY: IDS_QUANTITY,
}

IDS_OPERATORS: dict[str, str] = {
    IDSC_NS + "EQ": EQ,
    IDSC_NS + "EQUALS": EQ,
    IDSC_NS + "SAME_AS": EQ,
    IDSC_NS + "STRING_EQ": EQ,
    IDSC_NS + "TEMPORAL_EQUALS": EQ,
    IDSC_NS + "DURATION_EQ": EQ,
    IDSC_NS + "HAS_STATE": EQ,
    IDSC_NS + "NOT": NEQ,
    IDSC_NS + "LT": LT,
    IDSC_NS + "LTEQ": LTEQ,
    IDSC_NS + "GT": GT,
    IDSC_NS + "GTEQ": GTEQ,
    IDSC_NS + "BEFORE": LT,
    IDSC_NS + "AFTER": GT,
    IDSC_NS + "SHORTER": LT,
    IDSC_NS + "SHORTER_EQ": LTEQ,
    IDSC_NS + "LONGER": GT,
    IDSC_NS + "LONGER_EQ": GTEQ,
    IDSC_NS + "IN": IS_ANY_OF,
    IDSC_NS + "INSIDE": IS_PART_OF,
    IDSC_NS + "MEMBER_OF": IS_PART_OF,
    IDSC_NS + "CONTAINS": HAS_PART,
    IDSC_NS + "SPATIAL_CONTAINS": HAS_PART,
    # A duty's refinement "defines" a parameter of the duty (the level to log at, the value to
    # replace with); IDS-G's ODRL form of the same examples writes odrl:eq.
    IDSC_NS + "DEFINES_AS": EQ,
}

# IDS actions (idsc:READ, ...) map onto the ODRL action of the same name where there is one.
_IDS_ACTION_NAMES = {
    "USE": "use",
    "READ": "read",
    "DISTRIBUTE": "distribute",
    "DELETE": "delete",
    "PRINT": "print",
    "DISPLAY": "display",
    "MODIFY": "modify",
    "ANONYMIZE": "anonymize",
    "AGGREGATE": "aggregate",
    "COMPENSATE": "compensate",
    "INFORM": "inform",
    "NOTIFY": "inform",
    "TRANSFER": "transfer",
    "SELL": "sell",
    "GIVE": "give",
    "REPRODUCE": "reproduce",
    "ARCHIVE": "archive",
    "INDEX": "index",
    "TRANSLATE": "translate",
    "WATERMARK": "watermark",
    "DERIVE": "derive",
    "EXECUTE": "execute",
    "GRANT_USE": "grantUse",
    "NEXT_POLICY": "nextPolicy",
    "WRITE": "modify",
}
IDS_ACTIONS: dict[str, str] = {IDSC_NS + k: O + v for k, v in _IDS_ACTION_NAMES.items()}
# IDS usage actions with no ODRL counterpart: known terms, each included in the ODRL action
# named (IDS-G's idsc:REPLACE replaces values, a kind of odrl:modify; idsc:INCREMENT_COUNTER is
# the duty of counting a use).
REPLACE, INCREMENT_COUNTER = IDSC_NS + "REPLACE", IDSC_NS + "INCREMENT_COUNTER"
IDS_ONLY_ACTIONS: dict[str, str] = {
    **{
        IDSC_NS + k: USE
        for k in ("LOG", "ENCRYPT", "TRACK_PROVENANCE", "AGGREGATE_BY_CONSUMER", "AGGREGATE_BY_PROVIDER")
    },
    INCREMENT_COUNTER: USE,
    REPLACE: O + "modify",
}

# Rule and policy terms of the IDS Information Model, mapped onto ODRL.
IDS_POLICY_TYPES = {
    IDS_NS + "ContractOffer": O + "Offer",
    IDS_NS + "ContractAgreement": O + "Agreement",
    IDS_NS + "ContractRequest": O + "Request",
    IDS_NS + "Contract": O + "Policy",
}


@dataclass(frozen=True)
class Vocabulary:
    actions: frozenset[str]
    # action -> every action it is included in, itself included (reflexive-transitive closure)
    included_in: dict[str, frozenset[str]]
    left_operands: frozenset[str]
    equivalent: dict[str, str]  # deprecated term -> current term (skos:exactMatch)

    def canonical_action(self, iri: str) -> str:
        iri = IDS_ACTIONS.get(iri, iri)
        return self.equivalent.get(iri, iri)

    def action_covers(self, rule_action: str, requested: str) -> bool:
        """True if ``requested`` is ``rule_action`` or (transitively) included in it."""
        rule_action = self.canonical_action(rule_action)
        requested = self.canonical_action(requested)
        if rule_action == requested:
            return True
        return rule_action in self.included_in.get(requested, ())

    def known_left_operand(self, iri: str) -> bool:
        return iri in self.left_operands


@cache
def vocabulary() -> Vocabulary:
    g = ontology_graph("http://www.w3.org/ns/odrl/2/")
    actions = {str(s) for s in g.subjects(RDF.type, ODRL.Action)}
    direct: dict[str, set[str]] = {}
    for s, o in g.subject_objects(ODRL.includedIn):
        direct.setdefault(str(s), set()).add(str(o))
        actions.update((str(s), str(o)))
    equivalent: dict[str, str] = {}
    for s, o in g.subject_objects(SKOS.exactMatch):
        s_, o_ = str(s), str(o)
        # Map a deprecated term onto the current one (the one that is not deprecated).
        if (URIRef(s_), ODRL.includedIn, None) not in g and s_ in actions:
            equivalent.setdefault(s_, o_)
    for ids_action, parent in IDS_ONLY_ACTIONS.items():
        actions.add(ids_action)
        direct.setdefault(ids_action, set()).add(parent)
    closure: dict[str, frozenset[str]] = {}
    for action in actions:
        seen: set[str] = set()
        stack = [action]
        while stack:
            a = stack.pop()
            if a in seen:
                continue
            seen.add(a)
            stack.extend(direct.get(a, ()))
            if a in equivalent:
                stack.append(equivalent[a])
        closure[action] = frozenset(seen)
    left = {str(s) for s in g.subjects(RDF.type, ODRL.LeftOperand)}
    left.update(IDS_LEFT_OPERANDS.values())
    left.update(DSC_LEFT_OPERANDS)
    left.update(DSF_LEFT_OPERANDS)
    # system / device are deprecated spellings of systemDevice
    for old in ("system", "device"):
        equivalent[O + old] = O + "systemDevice"
    return Vocabulary(
        actions=frozenset(actions),
        included_in=closure,
        left_operands=frozenset(left),
        equivalent=equivalent,
    )


# The one prefix table: what a user may write as a CURIE (``dpv:ScientificResearch``) wherever
# a term is expected (policies, request facts, template parameters), and how explanations
# shorten IRIs. No registered URI scheme has these names, so an "IRI" ``idsc:X`` is always the
# CURIE, whatever context a document came with.
PREFIXES = {
    "odrl": O,
    "idsc": IDSC_NS,
    "ids": IDS_NS,
    "dsc": DSC_NS,
    "dsf": DSF_NS,
    "dpv": "https://w3id.org/dpv#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "dct": "http://purl.org/dc/terms/",
}
_BY_NAMESPACE = sorted(((ns, p) for p, ns in PREFIXES.items()), key=lambda x: -len(x[0]))


def expand_curie(iri: str) -> str:
    """``idsc:PURPOSE`` -> its full IRI; anything else (full IRIs, unknown schemes) unchanged."""
    prefix, sep, local = iri.partition(":")
    if sep and prefix in PREFIXES and not local.startswith("//"):
        return PREFIXES[prefix] + local
    return iri


def is_curie(text: str) -> bool:
    """``text`` is a CURIE with a known prefix (``dpv:X``), not a full IRI."""
    prefix, sep, local = text.partition(":")
    return (
        bool(sep)
        and prefix in PREFIXES
        and bool(local)
        and not local.startswith("//")
        and not any(c.isspace() for c in text)
    )


def expand_term(term: str) -> str:
    """``use`` -> odrl:use IRI; ``idsc:PURPOSE`` -> full IRI; IRIs stay as they are."""
    term = term.strip()
    if "://" in term or term.startswith(("urn:", "_:", "did:")):
        return term
    if ":" in term:
        return expand_curie(term)
    return O + term


def short(iri: str) -> str:
    """A readable short form of an IRI for explanations (odrl:read, idsc:PURPOSE, ...)."""
    for ns, prefix in _BY_NAMESPACE:
        if iri.startswith(ns) and len(iri) > len(ns):
            return f"{prefix}:{iri[len(ns) :]}"
    return iri

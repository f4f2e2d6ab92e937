"""Ids of assets, policies and offers: absolute IRIs, bounded in length, or minted from a name.

An id names a dataset, a policy or an offer in the DSP catalog, in agreements and in the RDF
self-description, so it must be an IRI that every one of them can carry. The rule (RFC 3987,
``absolute-IRI``, section 2.2):

* a scheme (a letter, then letters, digits, ``+``, ``-`` or ``.``), a colon, then at least one
  character; at most ``MAX_ID_LENGTH`` characters in all;
* not a scheme that is a prefix of the JSON-LD contexts the connector writes ids into
  (``RESERVED_SCHEMES``: ``odrl:x`` would read as an ODRL term there, and the self-description
  could not be compacted);
* no whitespace (ASCII or Unicode), no control character (C0, DEL, C1), none of
  ``<>"{}|\\^`` and backtick;
* ``%`` only as the start of a percent-encoding (``%`` and two hex digits);
* other non-ASCII characters only where RFC 3987 allows them (``ucschar``): no surrogates, no
  non-characters, no private-use characters, and no bidirectional formatting characters
  (section 4.1 forbids them in IRIs).

A plain name without a scheme (letters, digits, ``.``, ``_``, ``~``, ``-``, starting with a
letter or a digit) is minted into ``urn:<kind>:<name>``: ``weather`` -> ``urn:asset:weather``.
References (an offer's ``assetIds`` and policy ids) follow the same rule, so ``weather`` means
``urn:asset:weather`` wherever an asset id is expected. No id is given: ``urn:<kind>:<uuid>``.

Anything else is refused with ``InvalidId`` (the HTTP edge: 400 with ``ID_RULE``).
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

IdKind = Literal["asset", "policy", "offer"]
MAX_ID_LENGTH = 512

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_LOCAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~\-]*")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ASCII_EXCLUDED = frozenset('<>"{}|\\^`')
# RFC 3987 ucschar, without the bidirectional formatting characters of section 4.1
_UCS_RANGES = (
    (0xA0, 0xD7FF),
    (0xF900, 0xFDCF),
    (0xFDF0, 0xFFEF),
    *((plane << 16, (plane << 16) + 0xFFFD) for plane in range(1, 15)),
)
_BIDI_FORMATTING = frozenset({0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E})
# The prefixes of the JSON-LD contexts ids appear in: the DSP context (catalog, agreements),
# the policies' context (connector.odrl.plain.POLICY_CONTEXT) and
# the self-description's (connector.selfdescription.PREFIXES); a test keeps this in step.
RESERVED_SCHEMES = frozenset(
    {"dcat", "dct", "dpv", "dsc", "dsf", "dspace", "ids", "idsc", "odrl", "rdf", "rdfs", "xsd"}
)

ID_RULE = (
    f"an id is an absolute IRI of at most {MAX_ID_LENGTH} characters (a scheme such as "
    "urn: or https:, not a JSON-LD prefix such as odrl: or dcat:, then no whitespace, "
    'control characters or any of <>"{}|\\^`), or a plain name (letters, digits, '
    ". _ ~ -) that becomes urn:<kind>:<name>"
)


class InvalidId(ValueError):
    """An id that is neither an absolute IRI within the bounds nor a plain name."""

    def __init__(self, kind: str, value: str, problem: str) -> None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"invalid {kind} id {shown!r}: {problem}; {ID_RULE}")
        self.kind = kind
        self.problem = problem


def _char_allowed(c: str) -> bool:
    o = ord(c)
    if o < 0x80:
        return 0x20 < o < 0x7F and c not in _ASCII_EXCLUDED
    if o in _BIDI_FORMATTING or c.isspace():
        return False
    return any(lo <= o <= hi for lo, hi in _UCS_RANGES)


def iri_problem(value: str) -> str | None:
    """Why ``value`` is not an absolute IRI by the rule above (None: it is one)."""
    if not value:
        return "it is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"it is longer than {MAX_ID_LENGTH} characters"
    scheme = _SCHEME.match(value)
    if scheme is None:
        return "it has no scheme (such as urn: or https:)"
    if scheme.end() == len(value):
        return "nothing follows the scheme"
    if value[: scheme.end() - 1].lower() in RESERVED_SCHEMES:
        return f"{value[: scheme.end()]} is a JSON-LD prefix of the connector's contexts"
    bad = next((c for c in value if not _char_allowed(c)), None)
    if bad is not None:
        return f"the character U+{ord(bad):04X} is not allowed in an IRI"
    if _PERCENT.search(value):
        return "'%' must start a percent-encoding (two hex digits)"
    return None


def is_absolute_iri(value: str) -> bool:
    return iri_problem(value) is None


def resolve_id(value: str, kind: IdKind) -> str:
    """The id ``value`` stands for: the IRI itself, or ``urn:<kind>:<name>`` for a plain name.
    Raises ``InvalidId``."""
    if _LOCAL_NAME.fullmatch(value):
        value = f"urn:{kind}:{value}"
    problem = iri_problem(value)
    if problem is not None:
        raise InvalidId(kind, value, problem)
    return value


def new_id(given: str | None, kind: IdKind) -> str:
    """The id of a new asset, policy or offer: ``given`` resolved, or a fresh ``urn:<kind>:<uuid>``."""
    return f"urn:{kind}:{uuid.uuid4()}" if given is None else resolve_id(given, kind)

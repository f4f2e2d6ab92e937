"""Cross-border facts: is handing the data to this requester an export, and is it assessed?

A pure function of what the authority attests about the requester and what the provider holds,
called at every enforcement point (catalog, negotiation, each pull and push, and the consumer's
local uses), so the ``export-assessment`` template decides the same everywhere::

    facts = {**fact_values(attributes), **held, **derived_facts(attributes, held)}

``attributes`` are the requester's attested attributes as ``Claims.attributes`` of its DAT has
them (at the data plane: the transfer token's ``attested`` snapshot); ``held`` maps operand IRIs
to values, the provider-held facts (``HeldFacts.facts(now)``) plus the provider's own
jurisdiction (``provider_facts`` of the provider's own DAT claims). The accepted assessment
references are the provider-held fact ``dsf:registeredAssessment``
(``connector facts set dsf:registeredAssessment urn:assessment:...``).

``dsf:exportStatus`` is

- ``dsf:Domestic`` when both parties are attested in the same country (ISO 3166-1: a
  subdivision or zone does not make a border);
- ``dsf:AssessedExport`` otherwise (another country, or a country either party lacks, which
  counts as abroad: fail closed) when the requester's attested certifications include a
  reference the provider registered;
- ``dsf:UnassessedExport`` otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from connector.identity.participants import JURISDICTION_URN, jurisdiction_of
from connector.odrl import terms as T
from connector.odrl.facts import fact_values
from connector.odrl.plain import expand_term

DOMESTIC = T.DSF_NS + "Domestic"
ASSESSED_EXPORT = T.DSF_NS + "AssessedExport"
UNASSESSED_EXPORT = T.DSF_NS + "UnassessedExport"
EXPORT_STATUSES = (DOMESTIC, ASSESSED_EXPORT, UNASSESSED_EXPORT)


def provider_facts(own_attributes: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The provider's own jurisdiction (from its own DAT's attributes) as a held fact."""
    levels = fact_values(own_attributes).get(T.JURISDICTION, ())
    return {T.PROVIDER_JURISDICTION: levels} if levels else {}


def derived_facts(
    attested: Mapping[str, Any], held: Mapping[str, Iterable[Any]]
) -> dict[str, tuple[str, ...]]:
    """``{dsf:exportStatus: (status,)}`` for a requester whose attested attributes are
    ``attested``, given the provider-held facts ``held`` (operand IRI -> values)."""
    try:
        jurisdiction = jurisdiction_of(attested.get("jurisdiction"))
    except ValueError:
        jurisdiction = None
    own = _country(held.get(T.PROVIDER_JURISDICTION, ()))
    if jurisdiction is not None and own is not None and jurisdiction.country == own:
        return {T.EXPORT_STATUS: (DOMESTIC,)}
    carried = {expand_term(c) for c in fact_values(attested).get(T.CERTIFICATION, ())}
    registered = {expand_term(str(v)) for v in held.get(T.REGISTERED_ASSESSMENT, ())}
    return {T.EXPORT_STATUS: (ASSESSED_EXPORT if carried & registered else UNASSESSED_EXPORT,)}


def _country(levels: Iterable[Any]) -> str | None:
    """The country among jurisdiction IRIs (``urn:jurisdiction:CN``), if exactly one."""
    countries = {
        str(v)[len(JURISDICTION_URN) :]
        for v in levels
        if str(v).startswith(JURISDICTION_URN) and len(str(v)) == len(JURISDICTION_URN) + 2
    }
    return countries.pop() if len(countries) == 1 else None

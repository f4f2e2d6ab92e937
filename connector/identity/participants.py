"""What the authority attests about a participant beyond its keys, and the IRI forms of it.

Pure functions and small frozen models, with no I/O, so the authority (which validates what an
operator registers), the token layer (which validates what a DAT claims) and the policy engine
(which reads facts) share one definition.

* Participant IRI: a participant id (``SKI:keyid:AKI``) is not an IRI (an id that begins with a
  digit has no URI scheme; one that begins with a letter only seems to). Its IRI form is
  ``urn:participant:<id>`` with every character outside the URN name-string set (RFC 8141)
  percent-encoded; deterministic, and ``participant_id_from_iri`` reverses it exactly.
* Jurisdiction: an ISO 3166-1 alpha-2 country, optionally an ISO 3166-2 subdivision of that
  country (``CN-SH``) and a zone inside it (a free-trade pilot zone: a short token such as
  ``lingang``, or an IRI). As facts it is every level that contains the participant, most
  general first (``urn:jurisdiction:CN``, ``urn:jurisdiction:CN-SH``,
  ``urn:jurisdiction:CN-SH:lingang``), so a policy that names a country also covers its
  subdivisions and zones, and a policy that excludes a country excludes them too.
* Groups: named by the authority (``partners``); as facts ``urn:group:<name>``.
* Certifications: IRIs or URNs such as a security assessment reference ``urn:assessment:...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

PARTICIPANT_URN = "urn:participant:"
JURISDICTION_URN = "urn:jurisdiction:"
GROUP_URN = "urn:group:"

# ISO 3166-1 alpha-2 (officially assigned codes, 249), from the iso-codes database.
COUNTRIES = frozenset(
    (
        "AD",
        "AE",
        "AF",
        "AG",
        "AI",
        "AL",
        "AM",
        "AO",
        "AQ",
        "AR",
        "AS",
        "AT",
        "AU",
        "AW",
        "AX",
        "AZ",
        "BA",
        "BB",
        "BD",
        "BE",
        "BF",
        "BG",
        "BH",
        "BI",
        "BJ",
        "BL",
        "BM",
        "BN",
        "BO",
        "BQ",
        "BR",
        "BS",
        "BT",
        "BV",
        "BW",
        "BY",
        "BZ",
        "CA",
        "CC",
        "CD",
        "CF",
        "CG",
        "CH",
        "CI",
        "CK",
        "CL",
        "CM",
        "CN",
        "CO",
        "CR",
        "CU",
        "CV",
        "CW",
        "CX",
        "CY",
        "CZ",
        "DE",
        "DJ",
        "DK",
        "DM",
        "DO",
        "DZ",
        "EC",
        "EE",
        "EG",
        "EH",
        "ER",
        "ES",
        "ET",
        "FI",
        "FJ",
        "FK",
        "FM",
        "FO",
        "FR",
        "GA",
        "GB",
        "GD",
        "GE",
        "GF",
        "GG",
        "GH",
        "GI",
        "GL",
        "GM",
        "GN",
        "GP",
        "GQ",
        "GR",
        "GS",
        "GT",
        "GU",
        "GW",
        "GY",
        "HK",
        "HM",
        "HN",
        "HR",
        "HT",
        "HU",
        "ID",
        "IE",
        "IL",
        "IM",
        "IN",
        "IO",
        "IQ",
        "IR",
        "IS",
        "IT",
        "JE",
        "JM",
        "JO",
        "JP",
        "KE",
        "KG",
        "KH",
        "KI",
        "KM",
        "KN",
        "KP",
        "KR",
        "KW",
        "KY",
        "KZ",
        "LA",
        "LB",
        "LC",
        "LI",
        "LK",
        "LR",
        "LS",
        "LT",
        "LU",
        "LV",
        "LY",
        "MA",
        "MC",
        "MD",
        "ME",
        "MF",
        "MG",
        "MH",
        "MK",
        "ML",
        "MM",
        "MN",
        "MO",
        "MP",
        "MQ",
        "MR",
        "MS",
        "MT",
        "MU",
        "MV",
        "MW",
        "MX",
        "MY",
        "MZ",
        "NA",
        "NC",
        "NE",
        "NF",
        "NG",
        "NI",
        "NL",
        "NO",
        "NP",
        "NR",
        "NU",
        "NZ",
        "OM",
        "PA",
        "PE",
        "PF",
        "PG",
        "PH",
        "PK",
        "PL",
        "PM",
        "PN",
        "PR",
        "PS",
        "PT",
        "PW",
        "PY",
        "QA",
        "RE",
        "RO",
        "RS",
        "RU",
        "RW",
        "SA",
        "SB",
        "SC",
        "SD",
        "SE",
        "SG",
        "SH",
        "SI",
        "SJ",
        "SK",
        "SL",
        "SM",
        "SN",
        "SO",
        "SR",
        "SS",
        "ST",
        "SV",
        "SX",
        "SY",
        "SZ",
        "TC",
        "TD",
        "TF",
        "TG",
        "TH",
        "TJ",
        "TK",
        "TL",
        "TM",
        "TN",
        "TO",
        "TR",
        "TT",
        "TV",
        "TW",
        "TZ",
        "UA",
        "UG",
        "UM",
        "US",
        "UY",
        "UZ",
        "VA",
        "VC",
        "VE",
        "VG",
        "VI",
        "VN",
        "VU",
        "WF",
        "WS",
        "YE",
        "YT",
        "ZA",
        "ZM",
        "ZW",
    )
)

_SUBDIVISION = re.compile(r"([A-Z]{2})-[A-Z0-9]{1,3}")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# An absolute IRI or URN: a scheme, then no whitespace, controls or characters IRIs exclude.
_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`\x00-\x1f\x7f]{1,2040}")
# RFC 8141 NSS characters kept as they are (unreserved, sub-delims but "%", ":" and "@", "/").
_URN_SAFE = "-._~!$&'()*+,;=:@/"
_PARTICIPANT_ID = re.compile(r"[0-9A-F]{2}(?::[0-9A-F]{2})*:keyid:[0-9A-F]{2}(?::[0-9A-F]{2})*")


class AttestationError(ValueError):
    """An attested attribute does not have the form this module defines."""


# --- participants ----------------------------------------------------------------------------


def participant_iri(participant_id: str) -> str:
    """``urn:participant:<id>``, percent-encoding what a URN name string cannot hold."""
    if not isinstance(participant_id, str) or not participant_id or len(participant_id) > 512:
        raise AttestationError("a participant id is a non-empty string of at most 512 characters")
    return PARTICIPANT_URN + quote(participant_id, safe=_URN_SAFE)


def participant_id_from_iri(iri: str) -> str:
    """The participant id of ``urn:participant:<id>``; AttestationError for any other IRI."""
    if not isinstance(iri, str) or not iri.startswith(PARTICIPANT_URN) or len(iri) <= len(PARTICIPANT_URN):
        raise AttestationError(f"{str(iri)[:80]!r} is not a participant IRI ({PARTICIPANT_URN}...)")
    pid = unquote(iri[len(PARTICIPANT_URN) :], errors="strict")
    if participant_iri(pid) != iri:  # one IRI per participant: refuse other spellings
        raise AttestationError(f"{iri[:80]!r} is not the canonical IRI of a participant")
    return pid


def is_participant_id(text: str) -> bool:
    """``text`` has the shape of a participant id as this data space's CA derives them."""
    return isinstance(text, str) and _PARTICIPANT_ID.fullmatch(text) is not None


def as_participant_iri(party: str) -> str:
    """A party as a policy names it, in the form requesters are matched in: a participant id
    becomes its IRI; a participant IRI, and any other IRI (a connector, a group), stays."""
    return participant_iri(party) if is_participant_id(party) else party


# --- jurisdictions -----------------------------------------------------------------------------


def check_iri(value: str, what: str) -> str:
    if not isinstance(value, str) or not _IRI.fullmatch(value):
        raise AttestationError(f"{what} must be an absolute IRI or URN, not {str(value)[:80]!r}")
    return value


class Jurisdiction(BaseModel):
    """Where a participant is established, as the authority attests it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    country: str
    subdivision: str | None = None
    zone: str | None = None

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        if value not in COUNTRIES:
            raise ValueError(f"country {value[:10]!r} is not an ISO 3166-1 alpha-2 code")
        return value

    @field_validator("subdivision")
    @classmethod
    def _subdivision(cls, value: str | None) -> str | None:
        if value is not None and not _SUBDIVISION.fullmatch(value):
            raise ValueError(f"subdivision {value[:12]!r} is not an ISO 3166-2 code such as CN-SH")
        return value

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None and not _TOKEN.fullmatch(value) and not _IRI.fullmatch(value):
            raise ValueError("zone must be a short lower-case token (a-z, 0-9, . _ -) or an IRI")
        return value

    @model_validator(mode="after")
    def _nested(self) -> Jurisdiction:
        if self.subdivision is not None and not self.subdivision.startswith(self.country + "-"):
            raise ValueError(f"subdivision {self.subdivision} is not in country {self.country}")
        return self

    def claim(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)

    def iris(self) -> tuple[str, ...]:
        """Every jurisdiction that contains the participant, most general first."""
        out = [JURISDICTION_URN + self.country]
        inner = self.subdivision or self.country
        if self.subdivision is not None:
            out.append(JURISDICTION_URN + self.subdivision)
        if self.zone is not None:
            out.append(self.zone if ":" in self.zone else f"{JURISDICTION_URN}{inner}:{self.zone}")
        return tuple(out)


def jurisdiction_of(value: Any) -> Jurisdiction | None:
    """A jurisdiction claim (``{"country": "CN", "subdivision": "CN-SH"}``) or None when absent;
    AttestationError when present but malformed."""
    if value is None:
        return None
    if isinstance(value, Jurisdiction):
        return value
    if not isinstance(value, Mapping):
        raise AttestationError("jurisdiction must be an object with a country")
    try:
        return Jurisdiction.model_validate(dict(value))
    except ValueError as exc:
        raise AttestationError(f"jurisdiction: {_first_error(exc)}") from exc


def jurisdiction_label(value: Any) -> str | None:
    """The most specific code of a jurisdiction claim (``CN-SH``, ``CN-SH:lingang``), for
    reports; None when there is none or it is malformed."""
    try:
        j = jurisdiction_of(value)
    except AttestationError:
        return None
    if j is None:
        return None
    base = j.subdivision or j.country
    return f"{base}:{j.zone}" if j.zone else base


def crosses_border(a: Any, b: Any) -> bool | None:
    """Do two jurisdiction claims lie in different countries? None when either is unknown."""
    try:
        ja, jb = jurisdiction_of(a), jurisdiction_of(b)
    except AttestationError:
        return None
    if ja is None or jb is None:
        return None
    return ja.country != jb.country


# --- groups and certifications --------------------------------------------------------------


def check_group_name(name: str) -> str:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise AttestationError(
            f"group name {str(name)[:70]!r} must be 1-63 lower-case letters, digits, . _ -"
        )
    return name


def group_iri(name: str) -> str:
    return GROUP_URN + check_group_name(name)


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", exc)).removeprefix("Value error, ")
    return str(exc)

"""Token models and issuance: the verified `Claims`, the DAT payload, and transfer tokens.

A DAT (Dynamic Attribute Token) is the authority's statement "this participant is a member, with
these attributes"; a transfer token is a provider's statement "this consumer may pull this
transfer under this agreement from this data plane". Both are short-lived JWTs.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from connector.identity import jose
from connector.identity.errors import InvalidGrant, InvalidToken
from connector.identity.jose import TokenRules, VerificationKey
from connector.identity.keys import SigningKey
from connector.identity.participants import (
    AttestationError,
    check_group_name,
    check_iri,
    jurisdiction_of,
    participant_iri,
)
from connector.wireformat import IDS_CONTEXT_URL, WallClock

IdFactory = Callable[[], str]

IDS_CONTEXT = IDS_CONTEXT_URL
DAT_AUDIENCE = "idsc:IDS_CONNECTORS_ALL"
DEFAULT_SCOPE = "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL"
SECURITY_PROFILES = (
    "idsc:BASE_SECURITY_PROFILE",
    "idsc:TRUST_SECURITY_PROFILE",
    "idsc:TRUST_PLUS_SECURITY_PROFILE",
)
ROLES = ("provider", "consumer", "broker")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def new_jti() -> str:
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verifier vouches for, whatever the identity scheme behind it.

    `subject` is the participant id (DAT), the consumer id (transfer token) or, for a future
    DCP verifier, the holder's DID. Scheme-specific facts sit in `attributes`; `raw` is the full
    verified payload for auditing.
    """

    scheme: str
    issuer: str
    subject: str
    audience: tuple[str, ...]
    issued_at: float
    not_before: float
    expires_at: float
    token_id: str
    key_id: str | None
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.attributes.get("roles", ()))

    @property
    def security_profile(self) -> str | None:
        return self.attributes.get("securityProfile")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.attributes.get("scopes", ()))


# --- DAT ---------------------------------------------------------------------------------


def build_dat_payload(
    *,
    issuer: str,
    participant_id: str,
    attributes: Mapping[str, Any],
    audience: str,
    scopes: Sequence[str],
    now: float,
    lifetime: int,
    jti: str,
) -> dict[str, Any]:
    """The IDS DatPayload claims plus the participant's registered attributes."""
    iat = int(now)
    payload: dict[str, Any] = {
        "@context": IDS_CONTEXT,
        "@type": "ids:DatPayload",
        "iss": issuer,
        "sub": participant_id,
        "aud": audience,
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime,
        "jti": jti,
        "scopes": list(scopes),
        "securityProfile": attributes.get("securityProfile", SECURITY_PROFILES[0]),
        "referringConnector": attributes.get("referringConnector"),
        "name": attributes.get("name"),
        "membership": bool(attributes.get("membership", False)),
        "roles": list(attributes.get("roles", ())),
    }
    certs = attributes.get("transportCertsSha256")
    if certs:
        payload["transportCertsSha256"] = list(certs)
    if payload["referringConnector"] is None:
        del payload["referringConnector"]
    payload["participantIri"] = participant_iri(participant_id)
    if attributes.get("jurisdiction"):
        payload["jurisdiction"] = dict(attributes["jurisdiction"])
    payload["certifications"] = list(attributes.get("certifications", ()))
    payload["groups"] = list(attributes.get("groups", ()))
    return payload


def _str_list(payload: Mapping[str, Any], name: str, label: str) -> tuple[str, ...]:
    value = payload.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidToken(f"{label}: claim {name!r} must be a list of strings")
    return tuple(value)


def _attested(payload: Mapping[str, Any], subject: str, label: str) -> dict[str, Any]:
    """The attributes the authority attests about ``subject``, validated (fail closed: a
    malformed claim refuses the token). Claims added later are optional when reading."""
    profile = payload.get("securityProfile")
    if not isinstance(profile, str):
        raise InvalidToken(f"{label}: claim 'securityProfile' must be a string")
    membership = payload.get("membership", False)
    if not isinstance(membership, bool):
        raise InvalidToken(f"{label}: claim 'membership' must be a boolean")
    for name in ("referringConnector", "name"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            raise InvalidToken(f"{label}: claim {name!r} must be a string")
    iri = participant_iri(subject)
    if payload.get("participantIri", iri) != iri:
        raise InvalidToken(f"{label}: claim 'participantIri' is not the IRI of its subject")
    try:
        jurisdiction = jurisdiction_of(payload.get("jurisdiction"))
        certifications = _str_list(payload, "certifications", label)
        groups = _str_list(payload, "groups", label)
        for c in certifications:
            check_iri(c, "a certification")
        for g in groups:
            check_group_name(g)
    except AttestationError as exc:
        raise InvalidToken(f"{label}: {exc}") from exc
    return {
        "securityProfile": profile,
        "roles": _str_list(payload, "roles", label),
        "membership": membership,
        "referringConnector": payload.get("referringConnector"),
        "name": payload.get("name"),
        "participantIri": iri,
        "jurisdiction": MappingProxyType(jurisdiction.claim()) if jurisdiction else None,
        "certifications": certifications,
        "groups": groups,
    }


def dat_claims(payload: dict[str, Any], kid: str | None) -> Claims:
    """Claims of a DAT whose signature and registered claims were already checked."""
    label = "DAT"
    attributes = {
        **_attested(payload, payload["sub"], label),
        "scopes": _str_list(payload, "scopes", label),
        "transportCertsSha256": _str_list(payload, "transportCertsSha256", label),
    }
    return Claims(
        scheme="dat",
        issuer=payload["iss"],
        subject=payload["sub"],
        audience=jose.audiences(payload),
        issued_at=payload["iat"],
        not_before=payload["nbf"],
        expires_at=payload["exp"],
        token_id=payload["jti"],
        key_id=kid,
        attributes=MappingProxyType(attributes),
        raw=MappingProxyType(payload),
    )


def attested_snapshot(claims: Claims) -> dict[str, Any]:
    """The `attested` claim a provider puts into a transfer token: what the consumer's DAT
    attests (its attributes without scopes and transport pins), as JSON."""
    out: dict[str, Any] = {}
    for key, value in claims.attributes.items():
        if key in ("scopes", "transportCertsSha256") or value is None:
            continue
        if isinstance(value, Mapping):
            value = dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


# --- transfer tokens ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferTokens:
    """What the provider hands back in an EDR: a short-lived access token and a refresh token."""

    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


def transfer_access_rules(
    *, provider_id: str, audience: str, leeway: float = 30.0, max_lifetime: float = 3600.0
) -> TokenRules:
    return TokenRules(
        label="transfer token",
        typ=frozenset({jose.TRANSFER_TYP}),
        issuer=provider_id,
        audience=frozenset({audience}),
        leeway=leeway,
        max_lifetime=max_lifetime,
    )


def transfer_claims(payload: dict[str, Any], kid: str | None) -> Claims:
    label = "transfer token"
    for name in ("agreementId", "transferId"):
        value = payload.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidToken(f"{label}: missing or invalid claim {name!r}")
    attributes: dict[str, Any] = {"agreementId": payload["agreementId"], "transferId": payload["transferId"]}
    if "attested" in payload:  # absent in tokens issued before attested snapshots
        attested, at = payload["attested"], payload.get("attestedAt")
        if not isinstance(attested, dict):
            raise InvalidToken(f"{label}: claim 'attested' must be an object")
        if not isinstance(at, (int, float)) or isinstance(at, bool) or not math.isfinite(at):
            raise InvalidToken(f"{label}: claim 'attestedAt' must be a number")
        attributes["attested"] = MappingProxyType(_attested(attested, payload["sub"], f"{label} (attested)"))
        attributes["attestedAt"] = at
    return Claims(
        scheme="transfer",
        issuer=payload["iss"],
        subject=payload["sub"],
        audience=jose.audiences(payload),
        issued_at=payload["iat"],
        not_before=payload["nbf"],
        expires_at=payload["exp"],
        token_id=payload["jti"],
        key_id=kid,
        attributes=MappingProxyType(attributes),
        raw=MappingProxyType(payload),
    )


class TransferTokenIssuer:
    """Provider side: issues transfer tokens and rotates them against one-time refresh tokens.

    A refresh token is a JWT signed by the provider for the provider itself (aud = provider id),
    bound to the same agreement, transfer, consumer and data plane. Each refresh consumes it (jti
    recorded in `replay`) and returns a new pair, so a stolen refresh token works at most once.
    """

    def __init__(
        self,
        signing_key: SigningKey,
        provider_id: str,
        *,
        replay: Any,
        clock: WallClock = time.time,
        new_id: IdFactory = new_jti,
        access_lifetime: int = 300,
        refresh_lifetime: int = 3600,
        leeway: float = 30.0,
        is_transfer_active: Callable[[str], bool] | None = None,
    ):
        if not 0 < access_lifetime <= 3600 or not 0 < refresh_lifetime <= 86400:
            raise ValueError("transfer token lifetimes must be positive and at most 1 h / 24 h")
        self._key = signing_key
        self.provider_id = provider_id
        self._replay = replay
        self._clock = clock
        self._new_id = new_id
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime
        self._is_active = is_transfer_active
        self._refresh_rules = TokenRules(
            label="refresh token",
            typ=frozenset({jose.TRANSFER_REFRESH_TYP}),
            issuer=provider_id,
            audience=frozenset({provider_id}),
            leeway=leeway,
            max_lifetime=refresh_lifetime,
        )

    @property
    def verification_key(self) -> VerificationKey:
        return VerificationKey(kid=self._key.kid, alg=self._key.alg, key=self._key.public_key)

    def issue(
        self,
        *,
        agreement_id: str,
        transfer_id: str,
        consumer_id: str,
        audience: str,
        attested: Claims | None = None,
    ) -> TransferTokens:
        """`attested`: the consumer's verified DAT claims; a snapshot of its attested
        attributes goes into the access token (`attested`, `attestedAt` = the DAT's iat)."""
        for name, value in (
            ("agreement_id", agreement_id),
            ("transfer_id", transfer_id),
            ("consumer_id", consumer_id),
            ("audience", audience),
        ):
            if not isinstance(value, str) or not value or len(value) > 512:
                raise ValueError(f"{name} must be a non-empty string")
        iat = int(self._clock())
        binding = {"agreementId": agreement_id, "transferId": transfer_id}
        access = {
            "iss": self.provider_id,
            "sub": consumer_id,
            "aud": audience,
            "iat": iat,
            "nbf": iat,
            "exp": iat + self.access_lifetime,
            "jti": self._new_id(),
            **binding,
        }
        if attested is not None:
            if attested.subject != consumer_id:
                raise ValueError("the attested claims are not the consumer's")
            access["attested"] = attested_snapshot(attested)
            access["attestedAt"] = int(attested.issued_at)
        refresh = {
            "iss": self.provider_id,
            "sub": consumer_id,
            "aud": self.provider_id,
            "iat": iat,
            "nbf": iat,
            "exp": iat + self.refresh_lifetime,
            "jti": self._new_id(),
            "dataPlane": audience,
            **binding,
        }
        return TransferTokens(
            access_token=jose.encode(access, self._key, typ=jose.TRANSFER_TYP),
            refresh_token=jose.encode(refresh, self._key, typ=jose.TRANSFER_REFRESH_TYP),
            expires_in=self.access_lifetime,
        )

    def refresh(
        self, refresh_token: str, *, consumer_id: str, attested: Claims | None = None
    ) -> TransferTokens:
        """Exchange a refresh token presented by `consumer_id` (from its verified DAT, whose
        claims `attested` are snapshot into the new access token)."""
        now = self._clock()
        rules = self._refresh_rules
        try:
            header = jose.parse_header(refresh_token, rules)
            if header.get("kid") != self._key.kid:
                raise InvalidToken("refresh token: unknown kid (not this provider's key)")
            payload = jose.verify_signature(refresh_token, header, self.verification_key, "refresh token")
            jose.check_claims(payload, rules, now)
        except InvalidToken as exc:
            raise InvalidGrant(exc.description) from exc
        if payload["sub"] != consumer_id:
            raise InvalidGrant("refresh token: issued to another consumer")
        for name in ("agreementId", "transferId", "dataPlane"):
            if not isinstance(payload.get(name), str) or not payload[name]:
                raise InvalidGrant(f"refresh token: missing or invalid claim {name!r}")
        if self._is_active is not None and not self._is_active(payload["transferId"]):
            raise InvalidGrant("refresh token: the transfer is no longer active")
        replay_key = hashlib.sha256(f"{payload['iss']}\x00{payload['jti']}".encode()).digest()
        try:
            self._replay.check(replay_key, now)
        except InvalidToken as exc:
            raise InvalidGrant(f"refresh token: {exc.description}") from exc
        self._replay.add(replay_key, payload["exp"] + rules.leeway, now)
        return self.issue(
            agreement_id=payload["agreementId"],
            transfer_id=payload["transferId"],
            consumer_id=consumer_id,
            audience=payload["dataPlane"],
            attested=attested,
        )

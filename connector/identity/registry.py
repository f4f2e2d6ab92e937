"""Operator actions on an authority directory: register, revoke, rotate the signing key,
change a participant's attested attributes, and keep named groups.

Shared by the admin API and the CLI; each action is one locked read-modify-write of state.json,
so a refused action (taken name, foreign CA, unknown participant) leaves the files untouched.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from connector.identity.ca import (
    certificate_pem,
    common_name,
    load_csr_or_certificate,
    participant_id,
    validate_name,
)
from connector.identity.errors import Conflict, NotFound, RegistrationError
from connector.identity.keys import SigningKey
from connector.identity.participants import participant_iri
from connector.identity.store import (
    AuthorityState,
    AuthorityStore,
    GroupRecord,
    ParticipantAttributes,
    ParticipantRecord,
    SigningKeyRecord,
)


def _name_taken(state: AuthorityState, name: str) -> bool:
    folded = name.casefold()
    return any(p.name.casefold() == folded for p in state.participants.values())


def register_participant(
    store: AuthorityStore,
    pem: bytes,
    *,
    now: float,
    attributes: ParticipantAttributes | None = None,
) -> ParticipantRecord:
    """Certify a CSR (or accept a certificate this CA issued) and record the participant."""
    attributes = attributes or ParticipantAttributes()
    _check_groups_exist(store.state(), attributes.groups)
    parsed = load_csr_or_certificate(pem)
    if isinstance(parsed, x509.CertificateSigningRequest):
        name = common_name(parsed.subject)
        if name is None:
            raise RegistrationError("CSR subject must carry exactly one common name (CN)")
        validate_name(name)
        if _name_taken(store.state(), name):  # before signing anything
            raise Conflict(f"participant name {name!r} is already taken")
        cert = store.ca.sign_csr(parsed, now=now, validity_days=store.config.certificate_validity_days)
    else:
        store.ca.check_issued(parsed, now=now)
        cert = parsed
    pid = participant_id(cert)
    name = common_name(cert.subject) or ""
    record = ParticipantRecord(
        participant_id=pid,
        name=name,
        certificate=certificate_pem(cert),
        attributes=attributes,
        registered_at=now,
    )

    def change(state: AuthorityState) -> ParticipantRecord:
        if pid in state.participants:
            raise Conflict(f"participant {pid} is already registered (same key)")
        if _name_taken(state, name):
            raise Conflict(f"participant name {name!r} is already taken")
        _check_groups_exist(state, attributes.groups)
        state.participants[pid] = record
        return record

    return store.mutate(change)


def revoke_participant(store: AuthorityStore, pid: str, *, now: float, reason: str = "") -> ParticipantRecord:
    """Revoke at once; idempotent (a second revocation changes nothing)."""
    current = store.state().participants.get(pid)
    if current is None:
        raise NotFound(f"no participant {pid[:200]!r}")
    if current.revoked_at is not None:
        return current

    def change(state: AuthorityState) -> ParticipantRecord:
        record = state.participants[pid]
        if record.revoked_at is None:
            record.revoked_at = now
            record.revocation_reason = reason or None
            state.revocation_seq += 1
        return record

    return store.mutate(change)


def _drop_retired(state: AuthorityState, now: float) -> None:
    state.keys = [k for k in state.keys if k.retire_at is None or k.retire_at > now]


def prepare_next_key(store: AuthorityStore, *, now: float) -> SigningKeyRecord:
    """Generate and publish the next signing key ahead of a rotation (not signing yet)."""
    existing = store.state().key_with("next")
    if existing is not None:
        return existing
    key = SigningKey.generate(store.config.alg)
    store.write_signing_key(key)

    def change(state: AuthorityState) -> SigningKeyRecord:
        nxt = state.key_with("next")
        if nxt is not None:
            return nxt
        record = SigningKeyRecord(kid=key.kid, alg=key.alg, status="next", created_at=now, jwk=key.jwk())
        state.keys.append(record)
        return record

    record = store.mutate(change)
    if record.kid != key.kid:
        store.delete_signing_key(key.kid)
    return record


def rotate_signing_key(store: AuthorityStore, *, now: float, overlap: int | None = None) -> dict[str, Any]:
    """Promote the next key (made now if none) to current; the old one is published for
    `overlap` seconds (default: the DAT lifetime, so every token it signed still verifies)."""
    overlap = store.config.default_key_overlap if overlap is None else overlap
    if overlap < 0:
        raise RegistrationError("overlap must be >= 0 seconds")
    prepare_next_key(store, now=now)

    def change(state: AuthorityState) -> tuple[str, str]:
        current = state.key_with("current")
        nxt = state.key_with("next")
        assert current is not None and nxt is not None
        current.status = "previous"
        current.retire_at = now + overlap
        nxt.status = "current"
        _drop_retired(state, now)
        return current.kid, nxt.kid

    old, new = store.mutate(change)
    store.delete_signing_key(old)  # it never signs again; its public JWK stays in state.json
    return {"current": new, "previous": old, "previous_retire_at": now + overlap}


def retire_previous_keys(store: AuthorityStore, *, now: float) -> list[str]:
    """End the overlap now: tokens signed with previous keys stop verifying."""

    def change(state: AuthorityState) -> list[str]:
        gone = [k.kid for k in state.keys if k.status == "previous"]
        state.keys = [k for k in state.keys if k.status != "previous"]
        return gone

    return store.mutate(change)


def participant_view(record: ParticipantRecord) -> dict[str, Any]:
    return {
        "participant_id": record.participant_id,
        "participant_iri": participant_iri(record.participant_id),
        "name": record.name,
        "attributes": record.attributes.model_dump(by_alias=True, exclude_none=True),
        "certificate": record.certificate,
        "registered_at": record.registered_at,
        "attributes_changed_at": record.attributes_changed_at,
        "revoked_at": record.revoked_at,
        "revocation_reason": record.revocation_reason,
    }


# --- attested attributes and groups -------------------------------------------------------------


def _check_groups_exist(state: AuthorityState, groups: Iterable[str]) -> None:
    unknown = sorted(set(groups) - set(state.groups))
    if unknown:
        raise NotFound(f"no group {', '.join(unknown)[:200]} (create it first)")


def _set_attributes(
    state: AuthorityState, pid: str, attributes: ParticipantAttributes, now: float
) -> ParticipantRecord:
    """Store new attributes; if what DATs attest changed, mark the time: the next whole second
    (DATs count in whole seconds), so every DAT issued until now has an earlier `iat`, and
    DATs issued from now on are dated no earlier than it (authority.issue_token)."""
    record = state.participants[pid]
    if attributes.attested != record.attributes.attested:
        record.attributes_changed_at = max(math.floor(now) + 1, record.attributes_changed_at or 0)
        state.revocation_seq += 1
    record.attributes = attributes
    return record


def update_attributes(
    store: AuthorityStore, pid: str, changes: dict[str, Any], *, now: float
) -> ParticipantRecord:
    """Change a participant's attributes: `changes` holds attribute names (as in DATs, e.g.
    `jurisdiction`, `certifications`, `groups`, `securityProfile`) and their new values; a
    value of None resets the attribute to its default."""
    if "transportCertsSha256" in changes or "transport_certs_sha256" in changes:
        raise RegistrationError("transport certificates change through issue-tls only")

    def change(state: AuthorityState) -> ParticipantRecord:
        record = state.participants.get(pid)
        if record is None:
            raise NotFound(f"no participant {pid[:200]!r}")
        if record.revoked_at is not None:
            raise Conflict(f"participant {pid} is revoked")
        merged = record.attributes.model_dump(by_alias=True)
        defaults = ParticipantAttributes().model_dump(by_alias=True)
        for key, value in changes.items():
            if key not in merged:
                raise RegistrationError(f"unknown attribute {key[:60]!r}")
            merged[key] = defaults[key] if value is None else value
        attributes = ParticipantAttributes.model_validate(merged)
        _check_groups_exist(state, attributes.groups)
        return _set_attributes(state, pid, attributes, now)

    return store.mutate(change)


def create_group(store: AuthorityStore, name: str, *, now: float, description: str = "") -> GroupRecord:
    group = GroupRecord(name=name, description=description, created_at=now)

    def change(state: AuthorityState) -> GroupRecord:
        if name in state.groups:
            raise Conflict(f"group {name!r} already exists")
        state.groups[name] = group
        return group

    return store.mutate(change)


def delete_group(store: AuthorityStore, name: str, *, now: float) -> list[str]:
    """Delete a group; its members leave it (their DATs issued before now become stale)."""

    def change(state: AuthorityState) -> list[str]:
        if name not in state.groups:
            raise NotFound(f"no group {name[:80]!r}")
        del state.groups[name]
        left = []
        for pid, record in state.participants.items():
            if name in record.attributes.groups:
                groups = tuple(g for g in record.attributes.groups if g != name)
                _set_attributes(state, pid, record.attributes.model_copy(update={"groups": groups}), now)
                left.append(pid)
        return left

    return store.mutate(change)


def set_membership(
    store: AuthorityStore, name: str, pid: str, *, member: bool, now: float
) -> ParticipantRecord:
    """Add `pid` to group `name` (member=True) or remove it; idempotent."""

    def change(state: AuthorityState) -> ParticipantRecord:
        if name not in state.groups:
            raise NotFound(f"no group {name[:80]!r}")
        record = state.participants.get(pid)
        if record is None:
            raise NotFound(f"no participant {pid[:200]!r}")
        current = record.attributes.groups
        if member and name not in current:
            groups = (*current, name)
        elif not member and name in current:
            groups = tuple(g for g in current if g != name)
        else:
            return record
        attributes = ParticipantAttributes.model_validate(
            {**record.attributes.model_dump(by_alias=True), "groups": groups}
        )
        return _set_attributes(state, pid, attributes, now)

    return store.mutate(change)


def group_views(state: AuthorityState) -> list[dict[str, Any]]:
    return [
        {
            "name": g.name,
            "description": g.description,
            "created_at": g.created_at,
            "members": sorted(pid for pid, p in state.participants.items() if g.name in p.attributes.groups),
        }
        for g in sorted(state.groups.values(), key=lambda g: g.name)
    ]


def attribute_changes(state: AuthorityState, *, since: float) -> dict[str, int]:
    """Participants whose attested attributes changed after `since`: id -> time of change."""
    return {
        pid: p.attributes_changed_at
        for pid, p in state.participants.items()
        if p.attributes_changed_at is not None and p.attributes_changed_at > since
    }


def issue_tls_certificate(store: AuthorityStore, pid: str, pem: bytes, *, now: float) -> tuple[str, str]:
    """Certify a participant's TLS key for the hosts its CSR names; returns (certificate PEM,
    SHA-256 of its DER). The hash joins the participant's transportCertsSha256, so DATs bind
    the participant to the certificate its connector presents."""
    record = store.state().participants.get(pid)
    if record is None:
        raise NotFound(f"no participant {pid[:200]!r}")
    if record.revoked_at is not None:
        raise Conflict(f"participant {pid} is revoked")
    parsed = load_csr_or_certificate(pem)
    if not isinstance(parsed, x509.CertificateSigningRequest):
        raise RegistrationError("expected a TLS certificate signing request")
    if common_name(parsed.subject) != record.name:
        raise RegistrationError(f"TLS CSR common name must be the participant's name {record.name!r}")
    cert = store.ca.sign_tls_csr(parsed, now=now, validity_days=store.config.certificate_validity_days)
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def change(state: AuthorityState) -> None:
        current = state.participants[pid]
        hashes = (*current.attributes.transport_certs_sha256, digest)[-8:]
        current.attributes = current.attributes.model_copy(update={"transport_certs_sha256": hashes})

    store.mutate(change)
    return certificate_pem(cert), digest

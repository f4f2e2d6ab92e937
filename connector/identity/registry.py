"""Operator actions on an authority directory: register, revoke, rotate the signing key.

Shared by the admin API and the CLI; each action is one locked read-modify-write of state.json,
so a refused action (taken name, foreign CA, unknown participant) leaves the files untouched.
"""

from __future__ import annotations

import hashlib
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
from connector.identity.store import (
    AuthorityState,
    AuthorityStore,
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
    parsed = load_csr_or_certificate(pem)
    if isinstance(parsed, x509.CertificateSigningRequest):
        name = common_name(parsed.subject)
        if name is None:
            raise RegistrationError("CSR subject must carry exactly one common name (CN)")
        validate_name(name)
        if _name_taken(store.state(), name):  # before signing anything
            raise Conflict(f"participant name {name!r} is already taken")
        cert = store.ca.sign_csr(
            parsed, now=now, validity_days=store.config.certificate_validity_days
        )
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
        state.participants[pid] = record
        return record

    return store.mutate(change)


def revoke_participant(
    store: AuthorityStore, pid: str, *, now: float, reason: str = ""
) -> ParticipantRecord:
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
        record = SigningKeyRecord(
            kid=key.kid, alg=key.alg, status="next", created_at=now, jwk=key.jwk()
        )
        state.keys.append(record)
        return record

    record = store.mutate(change)
    if record.kid != key.kid:
        store.delete_signing_key(key.kid)
    return record


def rotate_signing_key(
    store: AuthorityStore, *, now: float, overlap: int | None = None
) -> dict[str, Any]:
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
        "name": record.name,
        "attributes": record.attributes.model_dump(by_alias=True),
        "certificate": record.certificate,
        "registered_at": record.registered_at,
        "revoked_at": record.revoked_at,
        "revocation_reason": record.revocation_reason,
    }


def issue_tls_certificate(
    store: AuthorityStore, pid: str, pem: bytes, *, now: float
) -> tuple[str, str]:
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
        raise RegistrationError(
            f"TLS CSR common name must be the participant's name {record.name!r}")
    cert = store.ca.sign_tls_csr(parsed, now=now,
                                 validity_days=store.config.certificate_validity_days)
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def change(state: AuthorityState) -> None:
        current = state.participants[pid]
        hashes = (*current.attributes.transport_certs_sha256, digest)[-8:]
        current.attributes = current.attributes.model_copy(
            update={"transport_certs_sha256": hashes})

    store.mutate(change)
    return certificate_pem(cert), digest

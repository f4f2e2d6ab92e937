"""The notices a consumer signs for its provider: a deletion notice when the agreement's delete
duty deleted the copy (connector.consumer.duty_rounds), a use notice before each local use the
agreement's inform duty (or its use count) reports (connector.consumer.local_use).

Each is a JWS signed by the consumer's participant key, with its data-space certificate in
`x5c` (typ `deletion-notice+jwt` or `use-notice+jwt`). The provider checks that certificate
against the data-space CA and against the caller's DAT subject, verifies the signature, and
keeps the notice in its audit log.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Protocol

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from connector.identity.ca import participant_id
from connector.identity.keys import SigningKey

NOTICE_TYP = "deletion-notice+jwt"
USE_NOTICE_TYP = "use-notice+jwt"
NOTICE_TYPS = frozenset({NOTICE_TYP, USE_NOTICE_TYP})
MAX_NOTICE_BYTES = 16 * 1024


class NoticeError(ValueError):
    pass


class NoticeSubject(Protocol):
    """What a notice says of the copy (connector.consumer.vault.VaultItem)."""

    @property
    def agreement_id(self) -> str: ...
    @property
    def transfer_id(self) -> str: ...
    @property
    def provider_id(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def deleted_at(self) -> str | None: ...


def sign_notice(key: SigningKey, certificate: x509.Certificate, item: NoticeSubject, now: datetime) -> str:
    der = certificate.public_bytes(serialization.Encoding.DER)
    claims = {
        "iss": participant_id(certificate),
        "aud": item.provider_id,
        "iat": int(now.timestamp()),
        "agreementId": item.agreement_id,
        "transferId": item.transfer_id,
        "sha256": item.sha256,
        "deletedAt": item.deleted_at or now.isoformat(),
    }
    return jwt.encode(
        claims,
        key.private_key,
        algorithm=key.alg,
        headers={"typ": NOTICE_TYP, "x5c": [base64.b64encode(der).decode()]},
    )


def sign_use_notice(
    key: SigningKey,
    certificate: x509.Certificate,
    item: NoticeSubject,
    *,
    audience: str,
    use_number: int,
    purpose: str | None,
    now: datetime,
) -> str:
    """A use notice (the agreement's `inform` duty): the consumer used its copy, the n-th time."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    claims: dict[str, Any] = {
        "iss": participant_id(certificate),
        "aud": audience,
        "iat": int(now.timestamp()),
        "agreementId": item.agreement_id,
        "transferId": item.transfer_id,
        "sha256": item.sha256,
        "usedAt": now.isoformat(),
        "useNumber": use_number,
    }
    if purpose:
        claims["purpose"] = purpose
    return jwt.encode(
        claims,
        key.private_key,
        algorithm=key.alg,
        headers={"typ": USE_NOTICE_TYP, "x5c": [base64.b64encode(der).decode()]},
    )


def verify_notice(
    token: str, *, ca: x509.Certificate, sender: str, audience: str, now: datetime
) -> dict[str, Any]:
    """The notice's claims (with its ``typ``), after checking its certificate (issued by the
    data-space CA, valid, naming the sender) and its signature; NoticeError with the reason
    otherwise. A deletion notice carries ``deletedAt``, a use notice ``usedAt``/``useNumber``."""
    if not isinstance(token, str) or len(token) > MAX_NOTICE_BYTES:
        raise NoticeError("the notice must be a compact JWS of at most 16 KiB")
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") not in NOTICE_TYPS or header.get("alg") not in ("EdDSA", "ES256"):
            raise NoticeError("not a deletion or use notice (typ/alg)")
        chain = header.get("x5c")
        if not isinstance(chain, list) or len(chain) != 1:
            raise NoticeError("the notice must carry the sender's certificate in x5c")
        cert = x509.load_der_x509_certificate(base64.b64decode(chain[0]))
    except (jwt.PyJWTError, ValueError) as exc:
        raise NoticeError(f"malformed notice: {exc}") from exc
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as exc:
        raise NoticeError("the notice's certificate is not issued by this data space") from exc
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise NoticeError("the notice's certificate is not valid now")
    if participant_id(cert) != sender:
        raise NoticeError("the notice's certificate is not the caller's")
    try:
        claims = jwt.decode(
            token,
            cert.public_key(),  # type: ignore[arg-type]
            algorithms=[header["alg"]],
            audience=audience,
            issuer=sender,
        )
    except jwt.PyJWTError as exc:
        raise NoticeError(f"the notice does not verify: {exc}") from exc
    when = "deletedAt" if header["typ"] == NOTICE_TYP else "usedAt"
    for name in ("agreementId", "transferId", "sha256", when):
        if not isinstance(claims.get(name), str):
            raise NoticeError(f"the notice lacks {name}")
    if header["typ"] == USE_NOTICE_TYP and type(claims.get("useNumber")) is not int:
        raise NoticeError("the use notice lacks useNumber")
    claims["typ"] = header["typ"]
    return claims


__all__ = [
    "MAX_NOTICE_BYTES",
    "NOTICE_TYP",
    "NOTICE_TYPS",
    "USE_NOTICE_TYP",
    "NoticeError",
    "NoticeSubject",
    "sign_notice",
    "sign_use_notice",
    "verify_notice",
]

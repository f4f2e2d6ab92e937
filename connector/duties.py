"""Duties the consumer's connector enforces on its local copy: delete after a time, with a signed
deletion notice to the provider; log every local use; inform the provider (or another party) of
every use with a signed use notice.

A pulled file is registered in the consumer's vault with the agreement it came under. The
agreement's `delete` duty (a permission duty whose `dateTime` constraint says from when, or
whose `elapsedTime` constraint says after how long since the agreement) gives the deletion
time. The connector's scheduler deletes the file then and sends the provider a deletion notice:
a JWS signed by the consumer's participant key, with its data-space certificate in `x5c`. The
provider checks that certificate against the data-space CA and against the caller's DAT
subject, verifies the signature, and keeps the notice in its audit log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from connector.identity.ca import participant_id
from connector.identity.keys import SigningKey
from connector.odrl import terms as T
from connector.odrl.parse import parse_datetime, parse_duration

NOTICE_TYP = "deletion-notice+jwt"
USE_NOTICE_TYP = "use-notice+jwt"
NOTICE_TYPS = frozenset({NOTICE_TYP, USE_NOTICE_TYP})
MAX_NOTICE_BYTES = 16 * 1024


class NoticeError(ValueError):
    pass


def delete_after(agreement: dict[str, Any], signed_at: datetime) -> datetime | None:
    """When the agreement's delete duty falls due, or None if it has none."""
    due: list[datetime] = []
    for rule in agreement.get("permission") or []:
        for duty in rule.get("duty") or []:
            action = duty.get("action")
            name = action if isinstance(action, str) else (action or {}).get("@id", "")
            if name not in ("delete", "odrl:delete", T.O + "delete"):
                continue
            for c in duty.get("constraint") or []:
                left = str(c.get("leftOperand", ""))
                right = c.get("rightOperand")
                value = right.get("@value") if isinstance(right, dict) else right
                if value is None:
                    continue
                if left.endswith("dateTime") and c.get("operator") in ("gteq", "gt", "eq"):
                    due.append(parse_datetime(str(value)))
                elif left.endswith("elapsedTime") and c.get("operator") in ("gteq", "gt", "eq"):
                    due.append(signed_at + parse_duration(str(value)))
    return min(due) if due else None


@dataclass
class VaultItem:
    path: str
    agreement_id: str
    transfer_id: str
    provider_id: str
    provider_address: str
    sha256: str
    delete_at: str | None
    registered_at: str
    deleted_at: str | None = None
    notice_sent: bool = False
    uses: int = 0  # local uses counted by the connector (reads through the management API)
    id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "agreementId": self.agreement_id,
                "transferId": self.transfer_id, "providerId": self.provider_id,
                "sha256": self.sha256, "deleteAt": self.delete_at,
                "registeredAt": self.registered_at, "deletedAt": self.deleted_at,
                "noticeSent": self.notice_sent, "uses": self.uses}


class Vault:
    """The consumer's register of local copies under agreements (a JSON file per item)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def item_id(agreement_id: str, path: str) -> str:
        return hashlib.sha256(f"{agreement_id}|{path}".encode()).hexdigest()[:24]

    def _record(self, item: VaultItem) -> Path:
        return self.root / f"{self.item_id(item.agreement_id, item.path)}.json"

    def get(self, item_id: str) -> VaultItem | None:
        if not (len(item_id) == 24 and all(c in "0123456789abcdef" for c in item_id)):
            return None
        f = self.root / f"{item_id}.json"
        try:
            item = VaultItem(**json.loads(f.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        item.id = item_id
        return item

    def save(self, item: VaultItem) -> None:
        tmp = self._record(item).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(item), indent=1))
        os.replace(tmp, self._record(item))

    def register(self, path: Path, *, agreement: dict[str, Any], agreement_id: str,
                 signed_at: datetime, transfer_id: str, provider_id: str,
                 provider_address: str, now: datetime) -> VaultItem:
        if not path.is_file():
            raise FileNotFoundError(f"no file {path}")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        due = delete_after(agreement, signed_at)
        item = VaultItem(path=str(path.resolve()), agreement_id=agreement_id,
                         transfer_id=transfer_id, provider_id=provider_id,
                         provider_address=provider_address, sha256=digest.hexdigest(),
                         delete_at=due.isoformat() if due else None,
                         registered_at=now.isoformat())
        item.id = self.item_id(agreement_id, item.path)
        earlier = self.get(item.id)
        if earlier is not None:  # the same copy again: its local uses still count
            item.uses = earlier.uses
        self.save(item)
        return item

    def items(self) -> list[VaultItem]:
        out = []
        for f in sorted(self.root.glob("*.json")):
            try:
                item = VaultItem(**json.loads(f.read_text()))
                item.id = f.stem
                out.append(item)
            except (ValueError, TypeError):
                continue  # a damaged record is skipped, never a crash of the scheduler
        return out

    def due(self, now: datetime) -> list[VaultItem]:
        return [i for i in self.items() if i.delete_at and not i.notice_sent
                and datetime.fromisoformat(i.delete_at) <= now]


def sign_notice(key: SigningKey, certificate: x509.Certificate, item: VaultItem,
                now: datetime) -> str:
    der = certificate.public_bytes(serialization.Encoding.DER)
    claims = {"iss": participant_id(certificate), "aud": item.provider_id,
              "iat": int(now.timestamp()), "agreementId": item.agreement_id,
              "transferId": item.transfer_id, "sha256": item.sha256,
              "deletedAt": item.deleted_at or now.isoformat()}
    return jwt.encode(claims, key.private_key, algorithm=key.alg,
                      headers={"typ": NOTICE_TYP, "x5c": [base64.b64encode(der).decode()]})


def sign_use_notice(key: SigningKey, certificate: x509.Certificate, item: VaultItem, *,
                    audience: str, use_number: int, purpose: str | None, now: datetime) -> str:
    """A use notice (the agreement's `inform` duty): the consumer used its copy, the n-th time."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    claims: dict[str, Any] = {
        "iss": participant_id(certificate), "aud": audience, "iat": int(now.timestamp()),
        "agreementId": item.agreement_id, "transferId": item.transfer_id, "sha256": item.sha256,
        "usedAt": now.isoformat(), "useNumber": use_number}
    if purpose:
        claims["purpose"] = purpose
    return jwt.encode(claims, key.private_key, algorithm=key.alg,
                      headers={"typ": USE_NOTICE_TYP, "x5c": [base64.b64encode(der).decode()]})


def verify_notice(token: str, *, ca: x509.Certificate, sender: str, audience: str,
                  now: datetime) -> dict[str, Any]:
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
        claims = jwt.decode(token, cert.public_key(), algorithms=[header["alg"]],  # type: ignore[arg-type]
                            audience=audience, issuer=sender)
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


__all__ = ["NoticeError", "Vault", "VaultItem", "delete_after", "sign_notice", "sign_use_notice",
           "verify_notice"]

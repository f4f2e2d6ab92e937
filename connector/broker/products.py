"""Data product registration certificates.

A provider registers a data product (dataset id, title, license, the content's SHA-256) with its
DAT; the broker records it and answers with a certificate: a compact JWS (``typ``
``data-product-certificate+jwt``) signed with the broker's participant key, its participant
certificate (issued by the data-space CA) in ``x5c``, over::

    {"iss": <broker participant id>, "sub": <publisher participant id>, "jti": <certificate id>,
     "iat": <registration time>, "product": {"datasetId", "title", "license", "contentSha256"},
     "duplicateOf": [{"id", "publisher", "registeredAt"}, ...]}

``duplicateOf`` lists earlier registrations of the same content by *other* participants (a later
registration is flagged with the earlier ones, never refused: the broker cannot know who is
right). Anyone holding the data-space CA certificate verifies a certificate offline
(:func:`verify_certificate`, ``connector broker verify CERT --ca ca.crt``): the ``x5c``
certificate must be a participant certificate the CA issued, valid at ``iat``, its key must
verify the signature, and ``iss`` must be its participant id.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, Field

from connector.broker.store import metadata
from connector.identity.client import ParticipantIdentity
from connector.identity.keys import KeyFormatError, algorithm_of
from connector.store import Store
from connector.usage.envelope import RecipientRefused, recipient_from_certificate

__all__ = ["CERTIFICATE_TYP", "CertificateInvalid", "ProductIn", "Registered", "issue", "verify_certificate"]

CERTIFICATE_TYP = "data-product-certificate+jwt"
MAX_CERTIFICATE_BYTES = 64 * 1024

products = sa.Table(
    "broker_products",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("publisher", sa.Text, nullable=False),
    sa.Column("dataset_id", sa.Text, nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False, index=True),
    sa.Column("registered_at", sa.Float, nullable=False),
    sa.Column("certificate", sa.Text, nullable=False),
)


class ProductIn(BaseModel):
    """A data product registration request (JSON)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    dataset_id: str = Field(alias="datasetId", min_length=1, max_length=2000)
    title: str = Field(min_length=1, max_length=1000)
    license: str = Field(default="", max_length=2000)
    content_sha256: str = Field(alias="contentSha256", pattern=r"^[0-9a-f]{64}$")


class CertificateInvalid(ValueError):
    """A certificate that does not verify; the reason says why."""


@dataclass(frozen=True, slots=True)
class Registered:
    id: str
    certificate: str
    duplicate_of: tuple[Mapping[str, Any], ...]


async def issue(
    store: Store, signer: ParticipantIdentity, publisher: str, product: ProductIn, now: float
) -> Registered:
    """Record the product and sign its certificate (earlier registrations of the same content
    by others listed in it)."""
    product_id = f"urn:uuid:{uuid.uuid4()}"
    async with store.transaction() as tx:
        earlier = await tx.execute(
            sa.select(products.c.id, products.c.publisher, products.c.registered_at)
            .where(products.c.content_sha256 == product.content_sha256, products.c.publisher != publisher)
            .order_by(products.c.registered_at, products.c.id)
            .limit(20)
        )
        duplicates = tuple(
            {"id": r.id, "publisher": r.publisher, "registeredAt": r.registered_at} for r in earlier
        )
        der = signer.certificate.public_bytes(serialization.Encoding.DER)
        token = jwt.encode(
            {
                "iss": signer.participant_id,
                "sub": publisher,
                "jti": product_id,
                "iat": int(now),
                "product": {
                    "datasetId": product.dataset_id,
                    "title": product.title,
                    "license": product.license,
                    "contentSha256": product.content_sha256,
                },
                "duplicateOf": list(duplicates),
            },
            signer.key.private_key,
            algorithm=signer.key.alg,
            headers={"typ": CERTIFICATE_TYP, "x5c": [base64.b64encode(der).decode()]},
        )
        await tx.execute(
            sa.insert(products).values(
                id=product_id,
                publisher=publisher,
                dataset_id=product.dataset_id,
                content_sha256=product.content_sha256,
                registered_at=now,
                certificate=token,
            )
        )
    return Registered(product_id, token, duplicates)


async def certificate_of(store: Store, product_id: str) -> str | None:
    async with store.transaction(readonly=True) as tx:
        row = (await tx.execute(sa.select(products.c.certificate).where(products.c.id == product_id))).first()
        return None if row is None else str(row.certificate)


def verify_certificate(token: str, ca: x509.Certificate) -> dict[str, Any]:
    """The claims of a certificate that verifies against the data-space CA, offline;
    CertificateInvalid with the reason otherwise."""
    if len(token) > MAX_CERTIFICATE_BYTES:
        raise CertificateInvalid("not a certificate: too long")
    try:
        header = jwt.get_unverified_header(token)
        chain = header.get("x5c")
        if header.get("typ") != CERTIFICATE_TYP:
            raise CertificateInvalid(f"not a data product certificate (typ {header.get('typ')!r})")
        if not isinstance(chain, list) or len(chain) != 1 or not isinstance(chain[0], str):
            raise CertificateInvalid("the certificate has no broker certificate (x5c)")
        cert = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
        alg = algorithm_of(cert.public_key())
        claims = jwt.decode(
            token,
            cert.public_key(),  # type: ignore[arg-type]
            algorithms=[alg],
            options={"verify_aud": False, "verify_iat": False, "require": ["iss", "sub", "jti", "iat"]},
        )
    except CertificateInvalid:
        raise
    except (jwt.PyJWTError, ValueError, binascii.Error, KeyFormatError) as exc:
        raise CertificateInvalid(f"the signature does not verify: {exc}") from exc
    try:
        broker = recipient_from_certificate(
            cert, ca, datetime.fromtimestamp(float(claims["iat"]), UTC), role="broker"
        )
    except RecipientRefused as exc:
        raise CertificateInvalid(str(exc)) from exc
    if claims["iss"] != broker.participant_id:
        raise CertificateInvalid(f"issued as {claims['iss']!r} but signed by {broker.participant_id}")
    if not isinstance(claims.get("product"), dict):
        raise CertificateInvalid("the certificate names no product")
    return claims

"""Data product certificates: issued over HTTP with a DAT, verified offline against the CA,
a later registration of the same content by another participant flagged, forgeries refused."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from broker_testlib import FixedTokens
from conftest import Clock
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from connector.broker.app import broker_app
from connector.broker.products import CertificateInvalid, verify_certificate
from connector.broker.service import Broker
from connector.http.clientcert import ClientCertificates
from connector.http.limits import DEFAULT_LIMITS
from connector.identity.ca import CertificateAuthority, create_csr
from connector.identity.client import ParticipantIdentity

ALICE, BOB = "AA:keyid:01", "BB:keyid:02"
SHA = "ab" * 32
PRODUCT = {
    "datasetId": "urn:ds:weather",
    "title": "Weather 2024",
    "license": "https://creativecommons.org/licenses/by/4.0/",
    "contentSha256": SHA,
}


def identity(ca: CertificateAuthority, name: str) -> ParticipantIdentity:
    key = ed25519.Ed25519PrivateKey.generate()
    return ParticipantIdentity.from_parts(key, ca.sign_csr(create_csr(key, name), now=time.time()))


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(ec.generate_private_key(ec.SECP256R1()), "Test", now=time.time() - 60)


@pytest.fixture
async def http(broker: Broker, ca: CertificateAuthority) -> AsyncIterator[TestClient]:
    broker.signer = identity(ca, "broker")
    app = broker_app(
        broker,
        FixedTokens({"tok-alice": ALICE, "tok-bob": BOB}),
        limits=DEFAULT_LIMITS,
        body_bytes=65536,
        client_certs=ClientCertificates("none"),
    )
    async with TestClient(TestServer(app)) as client:
        yield client


async def _product(http: TestClient, token: str, body: object) -> tuple[int, dict]:
    resp = await http.post(
        "/products",
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return resp.status, await resp.json()


async def test_certificate_verifies_offline_and_duplicates_are_flagged(
    http: TestClient, broker: Broker, ca: CertificateAuthority, clock: Clock
) -> None:
    status, first = await _product(http, "tok-alice", PRODUCT)
    clock.now += 1
    assert status == 201 and first["duplicateOf"] == []
    claims = verify_certificate(first["certificate"], ca.certificate)
    assert claims["sub"] == ALICE and claims["product"]["contentSha256"] == SHA
    assert broker.signer is not None and claims["iss"] == broker.signer.participant_id
    # Alice again: her own content, not a duplicate; Bob: flagged with Alice's earlier one
    assert (await _product(http, "tok-alice", PRODUCT))[1]["duplicateOf"] == []
    clock.now += 1
    status, second = await _product(http, "tok-bob", PRODUCT)
    assert status == 201
    flagged = verify_certificate(second["certificate"], ca.certificate)["duplicateOf"]
    assert [d["publisher"] for d in flagged] == [ALICE, ALICE]
    assert flagged[0]["id"] == first["id"]
    resp = await http.get(f"/products/{first['id']}")
    assert (await resp.json())["certificate"] == first["certificate"]


async def test_forged_certificates_are_refused(http: TestClient, ca: CertificateAuthority) -> None:
    status, done = await _product(http, "tok-alice", PRODUCT)
    assert status == 201
    token = done["certificate"]
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = BOB
    forged = ".".join(
        [header, base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("="), signature]
    )
    with pytest.raises(CertificateInvalid, match="signature"):
        verify_certificate(forged, ca.certificate)
    other_ca = CertificateAuthority.create(
        ec.generate_private_key(ec.SECP256R1()), "Other", now=time.time() - 60
    )
    with pytest.raises(CertificateInvalid, match="not issued by this data space"):
        verify_certificate(token, other_ca.certificate)
    # signed by a genuine participant of the data space that is not the issuer it names
    mallory = identity(ca, "mallory")
    der = base64.b64encode(mallory.certificate.public_bytes(serialization.Encoding.DER)).decode()
    claims["iss"] = "someone else"
    fake = jwt.encode(
        claims,
        mallory.key.private_key,
        algorithm=mallory.key.alg,
        headers={"typ": "data-product-certificate+jwt", "x5c": [der]},
    )
    with pytest.raises(CertificateInvalid, match="signed by"):
        verify_certificate(fake, ca.certificate)
    for junk in ("", "a.b.c", "x" * 70000):
        with pytest.raises(CertificateInvalid):
            verify_certificate(junk, ca.certificate)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {**PRODUCT, "contentSha256": "XYZ"},
        {**PRODUCT, "extra": 1},
        [],
        "x",
        {**PRODUCT, "title": ""},
    ],
)
async def test_bad_product_requests_are_400(http: TestClient, body: object) -> None:
    status, answer = await _product(http, "tok-alice", body)
    assert status == 400 and answer["error"]


async def test_a_dat_is_required_for_products(http: TestClient) -> None:
    resp = await http.post("/products", json=PRODUCT)
    assert resp.status == 401

"""Keys, JWKs, thumbprints and the data-space CA."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from connector.identity.ca import (
    PARTICIPANT_ID_RE,
    CertificateAuthority,
    CertificateError,
    create_csr,
    participant_id,
)
from connector.identity.errors import RegistrationError
from connector.identity.keys import (
    KeyFormatError,
    SigningKey,
    algorithm_of,
    generate_private_key,
    jwk_thumbprint,
    load_private_key_pem,
    private_key_to_pem,
    public_jwk,
    public_key_from_jwk,
)

NOW = 1_750_000_000.0


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_key_roundtrip_and_jwk(alg: str) -> None:
    key = generate_private_key(alg)  # type: ignore[arg-type]
    assert algorithm_of(key) == alg
    again = load_private_key_pem(private_key_to_pem(key))
    jwk = public_jwk(key.public_key())
    assert "d" not in jwk and jwk["alg"] == alg and jwk["use"] == "sig"
    assert jwk["kid"] == jwk_thumbprint(jwk) == public_jwk(again.public_key())["kid"]
    parsed_alg, parsed = public_key_from_jwk(jwk)
    assert parsed_alg == alg
    assert public_jwk(parsed) == jwk


def test_thumbprint_rfc8037_vector() -> None:
    # RFC 8037 appendix A.3
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert jwk_thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_signing_key_kid_is_thumbprint() -> None:
    key = SigningKey.generate("ES256")
    assert key.kid == jwk_thumbprint(key.jwk())


@pytest.mark.parametrize(
    "make",
    [
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["p384", "rsa"],
)
def test_other_key_types_refused(make: object) -> None:
    key = make()  # type: ignore[operator]
    with pytest.raises(KeyFormatError, match="unsupported"):
        algorithm_of(key)
    with pytest.raises(KeyFormatError):
        load_private_key_pem(private_key_to_pem(key))


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        ({"kty": "OKP", "crv": "Ed25519", "x": "AA", "d": "AA"}, "private key material"),
        ({"kty": "RSA", "n": "AQAB", "e": "AQAB"}, "unsupported JWK"),
        ({"kty": "OKP", "crv": "X25519", "x": "AA"}, "unsupported JWK"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "!!"}, "malformed JWK"),
    ],
)
def test_bad_jwks_refused(jwk: dict[str, str], reason: str) -> None:
    with pytest.raises(KeyFormatError, match=reason):
        public_key_from_jwk(jwk)


def test_jwk_alg_must_match_key() -> None:
    jwk = public_jwk(generate_private_key("EdDSA").public_key())
    jwk["alg"] = "ES256"
    with pytest.raises(KeyFormatError, match="does not match"):
        public_key_from_jwk(jwk)


@pytest.fixture(params=["EdDSA", "ES256"])
def ca(request: pytest.FixtureRequest) -> CertificateAuthority:
    return CertificateAuthority.create(generate_private_key(request.param), "Test", now=NOW)


def test_ca_certificate(ca: CertificateAuthority) -> None:
    cert = ca.certificate
    assert cert.issuer == cert.subject
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    cert.verify_directly_issued_by(cert)


def test_sign_csr_and_participant_id(ca: CertificateAuthority) -> None:
    key = generate_private_key("EdDSA")
    cert = ca.sign_csr(create_csr(key, "Alice"), now=NOW)
    ca.check_issued(cert, now=NOW)
    pid = participant_id(cert)
    assert PARTICIPANT_ID_RE.fullmatch(pid)
    ski, aki = pid.split(":keyid:")
    expected_ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    assert ski == ":".join(f"{b:02X}" for b in expected_ski)
    assert aki == ":".join(f"{b:02X}" for b in ca.key_identifier)
    assert re.fullmatch(r"([0-9A-F]{2}:){19}[0-9A-F]{2}", ski)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Alice"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_foreign_ca_refused(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create(generate_private_key("EdDSA"), "Test", now=NOW)
    cert = other.sign_csr(create_csr(generate_private_key("EdDSA"), "Mallory"), now=NOW)
    # same subject name as ours ("Test Data Space CA"): only the signature tells them apart
    with pytest.raises(CertificateError, match="not issued by this CA"):
        ca.check_issued(cert, now=NOW)


def test_expired_and_future_certificates_refused(ca: CertificateAuthority) -> None:
    cert = ca.sign_csr(create_csr(generate_private_key("EdDSA"), "Alice"), now=NOW)
    with pytest.raises(CertificateError, match="expired"):
        ca.check_issued(cert, now=NOW + 400 * 86400)
    with pytest.raises(CertificateError, match="not yet valid"):
        ca.check_issued(cert, now=NOW - 3600)


def test_ca_certificate_is_not_a_participant(ca: CertificateAuthority) -> None:
    with pytest.raises(CertificateError, match="CA certificate"):
        ca.check_issued(ca.certificate, now=NOW)


def test_csr_with_bad_signature_refused(ca: CertificateAuthority) -> None:
    # flip a bit in the signature: the CSR no longer proves possession of its key
    der = bytearray(create_csr(generate_private_key("ES256"), "Alice").public_bytes(Encoding.DER))
    der[-5] ^= 0x01
    csr = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(RegistrationError, match="signature is invalid"):
        ca.sign_csr(csr, now=NOW)


def test_csr_without_cn_refused(ca: CertificateAuthority) -> None:
    key = generate_private_key("EdDSA")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "X")]))
        .sign(key, None)
    )
    with pytest.raises(RegistrationError, match="common name"):
        ca.sign_csr(csr, now=NOW)


def test_csr_with_rsa_key_refused(ca: CertificateAuthority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rsa")]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(RegistrationError, match="key not accepted"):
        ca.sign_csr(csr, now=NOW)


def test_certificate_validity_capped_by_ca() -> None:
    ca = CertificateAuthority.create(generate_private_key("EdDSA"), "T", now=NOW, validity_days=10)
    cert = ca.sign_csr(create_csr(generate_private_key("EdDSA"), "A"), now=NOW, validity_days=365)
    assert cert.not_valid_after_utc <= ca.certificate.not_valid_after_utc
    assert cert.not_valid_after_utc < dt.datetime.fromtimestamp(NOW + 11 * 86400, tz=dt.UTC)

"""The data-space certificate authority: root certificate, CSR signing, participant ids.

A participant id is derived from its certificate as IDS DAPS does: the subject key identifier and
the authority key identifier as upper-case colon-separated hex, joined by `:keyid:`. It is thus
bound both to the participant's key and to the CA that certified it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connector.identity.errors import RegistrationError
from connector.identity.keys import KeyFormatError, PrivateKey, PublicKey, algorithm_of

PARTICIPANT_ID_RE = re.compile(r"[0-9A-F]{2}(?::[0-9A-F]{2}){0,63}:keyid:[0-9A-F]{2}(?::[0-9A-F]{2}){0,63}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@()'&+-]{0,63}")


class CertificateError(RegistrationError):
    """A certificate is not acceptable: foreign CA, bad signature, expired, wrong extensions."""


def hex_colon(data: bytes) -> str:
    return ":".join(f"{b:02X}" for b in data)


def validate_name(name: str) -> str:
    """A participant's human name: 1-64 printable characters, no control or markup characters."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise RegistrationError(
            f"invalid participant name {name!r}: use 1-64 letters, digits, spaces or ._@()'&+-, "
            "starting with a letter or digit"
        )
    return name


def _signing_hash(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _ski(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound as exc:
        raise CertificateError("certificate has no subject key identifier") from exc


def _aki(cert: x509.Certificate) -> bytes:
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound as exc:
        raise CertificateError("certificate has no authority key identifier") from exc
    if aki.key_identifier is None:
        raise CertificateError("certificate's authority key identifier has no key id")
    return aki.key_identifier


def participant_id(cert: x509.Certificate) -> str:
    """`SKI:keyid:AKI` of a participant certificate, as IDS DAPS derives client ids."""
    return f"{hex_colon(_ski(cert))}:keyid:{hex_colon(_aki(cert))}"


def common_name(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else None


def create_csr(key: PrivateKey, name: str) -> x509.CertificateSigningRequest:
    """A participant's certificate signing request: CN = its human name."""
    validate_name(name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, _signing_hash(key))


def create_tls_csr(key: PrivateKey, name: str, hosts: list[str]) -> x509.CertificateSigningRequest:
    """A CSR for a TLS certificate naming ``hosts`` (DNS names or IP addresses)."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, _signing_hash(key))
    )


def load_csr_or_certificate(
    data: bytes,
) -> x509.CertificateSigningRequest | x509.Certificate:
    """Parse a PEM CSR or certificate, with a clear error for anything else."""
    if not isinstance(data, bytes | bytearray) or len(data) > 64 * 1024:
        raise RegistrationError("expected a PEM CSR or certificate of at most 64 KiB")
    text = bytes(data)
    try:
        if b"-----BEGIN CERTIFICATE REQUEST-----" in text:
            return x509.load_pem_x509_csr(text)
        if b"-----BEGIN CERTIFICATE-----" in text:
            return x509.load_pem_x509_certificate(text)
    except ValueError as exc:
        raise RegistrationError(f"malformed PEM: {exc}") from exc
    raise RegistrationError("expected a PEM 'CERTIFICATE REQUEST' or 'CERTIFICATE' block")


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _as_datetime(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(ts), tz=dt.UTC)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """The data space's root: signs participant certificates and checks that it issued one."""

    key: PrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(
        cls, key: PrivateKey, name: str, *, now: float, validity_days: int = 3650
    ) -> CertificateAuthority:
        algorithm_of(key)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"{validate_name(name)} Data Space CA"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            ]
        )
        public = key.public_key()
        ski = x509.SubjectKeyIdentifier.from_public_key(public)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_as_datetime(now - 60))
            .not_valid_after(_as_datetime(now + validity_days * 86400))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, _signing_hash(key))
        )
        return cls(key=key, certificate=cert)

    @property
    def key_identifier(self) -> bytes:
        return _ski(self.certificate)

    def _checked_request(self, csr: x509.CertificateSigningRequest, what: str) -> tuple[PublicKey, str]:
        """The CSR's key and common name, after the checks every issued certificate needs."""
        if not csr.is_signature_valid:
            raise RegistrationError(f"{what} signature is invalid (the request was altered)")
        try:
            public: PublicKey = csr.public_key()  # type: ignore[assignment]
            algorithm_of(public)
        except KeyFormatError as exc:
            raise RegistrationError(f"{what} key not accepted: {exc}") from exc
        name = common_name(csr.subject)
        if name is None:
            raise RegistrationError(f"{what} subject must carry exactly one common name (CN)")
        validate_name(name)
        ca_public = self.certificate.public_key()
        if public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == ca_public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise RegistrationError(f"{what} uses the CA's own key")
        return public, name

    def _issue(
        self,
        public: PublicKey,
        name: str,
        *,
        now: float,
        validity_days: int,
        extensions: list[tuple[x509.ExtensionType, bool]],
    ) -> x509.Certificate:
        ca_not_after = self.certificate.not_valid_after_utc.timestamp()
        not_after = min(now + validity_days * 86400, ca_not_after)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_as_datetime(now - 60))
            .not_valid_after(_as_datetime(not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return (
            builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    x509.SubjectKeyIdentifier(self.key_identifier)
                ),
                critical=False,
            )
            .sign(self.key, _signing_hash(self.key))
        )

    def sign_csr(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        now: float,
        validity_days: int = 365,
    ) -> x509.Certificate:
        """Issue a participant certificate for a CSR whose self-signature verifies."""
        public, name = self._checked_request(csr, "CSR")
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        return self._issue(public, name, now=now, validity_days=validity_days, extensions=[(usage, True)])

    def sign_tls_csr(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        now: float,
        validity_days: int = 365,
    ) -> x509.Certificate:
        """Issue a TLS certificate (server and client auth) for the hosts named in the CSR.

        The CSR must carry a subjectAltName with DNS names and/or IP addresses only; they are
        copied as they are, so peers can check the host name against the certificate.
        """
        public, name = self._checked_request(csr, "TLS CSR")
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound as exc:
            raise RegistrationError("TLS CSR names no host (subjectAltName missing)") from exc
        hosts = list(san)
        if (
            not hosts
            or len(hosts) > 16
            or any(not isinstance(h, (x509.DNSName, x509.IPAddress)) for h in hosts)
        ):
            raise RegistrationError("TLS CSR subjectAltName must hold 1-16 DNS names or IP addresses")
        return self._issue(
            public,
            name,
            now=now,
            validity_days=validity_days,
            extensions=[(x509.SubjectAlternativeName(hosts), False)],
        )

    def check_issued(self, cert: x509.Certificate, *, now: float) -> None:
        """Raise CertificateError unless `cert` is a valid participant certificate of this CA."""
        if cert.issuer != self.certificate.subject:
            raise CertificateError(
                f"certificate not issued by this CA (issuer {cert.issuer.rfc4514_string()!r})"
            )
        try:
            cert.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CertificateError("certificate not issued by this CA (signature does not verify)") from exc
        if _aki(cert) != self.key_identifier:
            raise CertificateError("certificate not issued by this CA (authority key id differs)")
        if cert.not_valid_before_utc.timestamp() > now:
            raise CertificateError("certificate is not yet valid")
        if cert.not_valid_after_utc.timestamp() <= now:
            raise CertificateError("certificate has expired")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is not None and constraints.ca:
            raise CertificateError("a CA certificate cannot be a participant certificate")
        try:
            algorithm_of(cert.public_key())
        except KeyFormatError as exc:
            raise CertificateError(f"certificate key not accepted: {exc}") from exc
        if common_name(cert.subject) is None:
            raise CertificateError("certificate subject must carry exactly one common name (CN)")
        participant_id(cert)


def public_key_of(cert: x509.Certificate) -> PublicKey:
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise CertificateError("certificate key is neither Ed25519 nor ECDSA P-256")
    algorithm_of(key)
    return key

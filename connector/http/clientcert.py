"""Where the DSP server takes a peer's client certificate from, and how strictly a DAT's
certificate binding (``transportCertsSha256``) is checked: decided here, once, for every route
(the authentication middleware in connector.http.dsp asks `ClientCertificates.binding_problem`).

The modes (``[dsp] tls_mode``, connector.config):

``mutual``  TLS; the handshake requires a client certificate from the data-space CA. A bound DAT
            must come with one of its certificates.
``server``  TLS; a client certificate is asked for but optional (peers such as EDC have none).
            Where one is presented it must be one the DAT is bound to; where none is, the
            binding is not checked: a stolen DAT is usable without its holder's certificate.
``proxy``   plain HTTP on a private or loopback address behind a TLS-terminating proxy. The
            certificate comes from the header ``client_cert_header``, taken only from a peer
            address in ``trusted_proxies``; from anyone else the header is ignored (and logged).
            Binding then as in ``server``.
``none``    plain HTTP for loopback tests (the old ``plain_http = true``): no certificate.

The header's format is ``client_cert_format``:

``pem``         (the default) one certificate as URL-escaped PEM, as nginx's
                ``$ssl_client_escaped_cert`` writes it (``-----BEGIN%20CERTIFICATE-----%0AMIIB...``);
                the PEM with its line breaks folded into spaces or tabs is accepted too.
``envoy-xfcc``  Envoy's ``x-forwarded-client-cert``: comma-separated elements, one per proxy hop,
                each of ``;``-separated ``Key=value`` pairs (keys case-insensitive; a value with
                ``,`` ``;`` or ``=`` double-quoted, a ``"`` in it as ``\"``). Only the LAST element
                is read: the one the nearest proxy (the trusted one) appended for the client it
                saw; the elements before it are other hops' (with ``forward_client_cert_details``
                APPEND_FORWARD possibly the client's own words) and are never believed. Of that
                element: ``Cert`` (URL-escaped PEM) gives the certificate, and a ``Hash`` beside it
                must be its DER's SHA-256; without ``Cert`` the ``Hash`` (Envoy's SHA-256 of the
                client certificate's DER, what a DAT's binding names) is the certificate's digest;
                with neither (``By``, ``Subject``, ``URI``, ``DNS`` only) no certificate is presented.
``auto``        per request: Envoy's format where the value starts with ``Key=``, else PEM.

A header from a trusted proxy that is repeated, oversized or cannot be read (not exactly one
certificate; in Envoy's format also unbalanced quotes, text after a quoted value, an empty
element, two ``Cert`` or two ``Hash`` keys, a ``Hash`` that is not a hex SHA-256 or not the one of
its ``Cert``) is refused (`CertificateHeaderError`: a 401 with the reason, logged), never guessed
from and never a 500. An empty or absent header means the proxy saw no client certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509

from connector.http.tls import check_transport_binding, peer_certificate_sha256
from connector.identity.tokens import Claims
from connector.identity.verify import Verifier

log = logging.getLogger(__name__)

TlsMode = Literal["mutual", "server", "proxy", "none"]
CertFormat = Literal["pem", "envoy-xfcc", "auto"]
MAX_HEADER_CHARS = 16384  # one URL-escaped certificate (a chain or garbage is larger)
# Envoy's header: a Cert and a Chain (the Cert again and its CAs) of the nearest hop, and the
# elements of the hops before it
MAX_XFCC_CHARS = 4 * MAX_HEADER_CHARS
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110 token)
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(?P<body>[A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")
_XFCC_KEY = re.compile(r"[ \t]*([A-Za-z][A-Za-z0-9_-]*)=")
_XFCC_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"[ \t]*', re.DOTALL)
_XFCC_BARE = re.compile(r'([^,;"]*)')
_XFCC_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class CertificateHeaderError(ValueError):
    """A trusted proxy's certificate header that cannot be read: refused (401), never guessed."""


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """``trusted_proxies`` as networks (CIDRs or single addresses); ValueError naming a bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is neither an IP address nor a CIDR") from exc
    return tuple(networks)


def certificate_sha256_from_header(value: str) -> str | None:
    """SHA-256 (hex) of the DER of the one certificate in a header value (URL-escaped PEM, or
    PEM folded onto one line); None for an empty value; CertificateHeaderError otherwise."""
    if len(value) > MAX_HEADER_CHARS:
        raise CertificateHeaderError(
            f"the client certificate header is longer than {MAX_HEADER_CHARS} characters"
        )
    try:
        text = unquote(value.strip(), errors="strict") if "%" in value else value.strip()
    except UnicodeDecodeError as exc:
        raise CertificateHeaderError("the client certificate header's URL escapes are not UTF-8") from exc
    if not text:
        return None
    found = list(_PEM.finditer(text))
    if len(found) != 1:
        raise CertificateHeaderError(
            "the client certificate header holds no PEM certificate"
            if not found
            else "the client certificate header holds more than one certificate"
        )
    outside = (text[: found[0].start()] + text[found[0].end() :]).strip()
    if outside:
        raise CertificateHeaderError("the client certificate header holds text besides its PEM certificate")
    try:
        der = base64.b64decode("".join(found[0]["body"].split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CertificateHeaderError("the client certificate header's PEM is not valid base64") from exc
    try:
        x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateHeaderError(
            "the client certificate header's PEM is not an X.509 certificate"
        ) from exc
    return hashlib.sha256(der).hexdigest()


def xfcc_elements(value: str) -> list[list[tuple[str, str]]]:
    """Envoy's ``x-forwarded-client-cert`` value as its elements (one per proxy hop, in order),
    each a list of (key in lower case, value unquoted); CertificateHeaderError if it is not one."""
    if len(value) > MAX_XFCC_CHARS:
        raise CertificateHeaderError(
            f"the client certificate header is longer than {MAX_XFCC_CHARS} characters"
        )
    elements: list[list[tuple[str, str]]] = []
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(value)
    while True:
        key = _XFCC_KEY.match(value, i)
        if key is None:
            raise CertificateHeaderError(
                f"the client certificate header (Envoy's format) has no Key=value at character {i}"
            )
        i = key.end()
        quoted = _XFCC_QUOTED.match(value, i)
        if quoted is not None:
            text = _XFCC_ESCAPE.sub(r"\1", quoted[1])
            i = quoted.end()
        elif value.startswith('"', i):
            raise CertificateHeaderError(
                f"the client certificate header (Envoy's format): the quoted {key[1]} value is not closed"
            )
        else:
            bare = _XFCC_BARE.match(value, i)
            assert bare is not None  # matches the empty string
            text = bare[1].strip()
            i = bare.end()
        pairs.append((key[1].lower(), text))
        if i == n:
            elements.append(pairs)
            return elements
        if value[i] == ",":
            elements.append(pairs)
            pairs = []
        elif value[i] != ";":  # a quote in a bare value, or text after a quoted one
            raise CertificateHeaderError(
                f"the client certificate header (Envoy's format) has {value[i]!r} after the "
                f"{key[1]} value where ';', ',' or its end belongs"
            )
        i += 1


def certificate_sha256_from_xfcc(value: str) -> str | None:
    """SHA-256 (hex) of the client certificate in the last element of Envoy's
    ``x-forwarded-client-cert`` (the one the nearest proxy added for its client): its ``Cert``'s
    DER (a ``Hash`` beside it must agree), else its ``Hash``; None for an empty value or an
    element with neither; CertificateHeaderError for anything else."""
    if not value.strip():
        return None
    current = xfcc_elements(value)[-1]
    certs = [v for k, v in current if k == "cert"]
    hashes = [v for k, v in current if k == "hash"]
    if len(certs) > 1 or len(hashes) > 1:
        which = "Cert" if len(certs) > 1 else "Hash"
        raise CertificateHeaderError(f"the client certificate header's element has more than one {which}")
    digest = hashes[0] if hashes else None
    if digest is not None and not _SHA256_HEX.fullmatch(digest):
        raise CertificateHeaderError("the client certificate header's Hash is not a hex SHA-256")
    if not certs:
        if digest is None:
            log.info("the client certificate header's element has no Cert and no Hash: no certificate")
        return digest.lower() if digest is not None else None
    if not certs[0].strip():
        raise CertificateHeaderError("the client certificate header's Cert is empty")
    try:
        sha = certificate_sha256_from_header(certs[0])
    except CertificateHeaderError as exc:
        raise CertificateHeaderError(f"Cert: {exc}") from exc
    if digest is not None and digest.lower() != sha:
        raise CertificateHeaderError("the client certificate header's Hash is not the SHA-256 of its Cert")
    return sha


def certificate_sha256(value: str, fmt: CertFormat = "pem") -> str | None:
    """SHA-256 (hex) of the certificate in a trusted proxy's header value in the format ``fmt``
    ("auto": Envoy's where the value starts with ``Key=``, else PEM); None for no certificate;
    CertificateHeaderError if it cannot be read."""
    if fmt == "envoy-xfcc" or (fmt == "auto" and _XFCC_KEY.match(value.lstrip())):
        return certificate_sha256_from_xfcc(value)
    return certificate_sha256_from_header(value)


def _peer_address(request: web.Request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not isinstance(peer, tuple) or not peer:
        return None  # a Unix socket, or the connection is gone
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class Presented:
    """The client certificate of a request as this mode sees it: its SHA-256 or None."""

    sha256: str | None
    source: Literal["tls", "header", "none"]


@dataclass(frozen=True)
class ClientCertificates:
    """The one place that knows where a request's client certificate comes from."""

    mode: TlsMode
    header: str = "X-Forwarded-Client-Cert"
    trusted_proxies: tuple[Network, ...] = ()
    format: CertFormat = "pem"

    @classmethod
    def of(
        cls,
        mode: TlsMode,
        *,
        header: str = "X-Forwarded-Client-Cert",
        trusted_proxies: Sequence[str] = (),
        format: CertFormat = "pem",
    ) -> ClientCertificates:
        return cls(mode, header, parse_networks(trusted_proxies), format)

    def trusts(self, request: web.Request) -> bool:
        """Whether the request's peer address is one of the trusted proxies."""
        address = _peer_address(request)
        return address is not None and any(address in n for n in self.trusted_proxies)

    def presented(self, request: web.Request) -> Presented:
        """The request's client certificate; CertificateHeaderError if a trusted proxy's header
        cannot be read."""
        if self.mode in ("mutual", "server"):
            sha = peer_certificate_sha256(request)
            return Presented(sha, "tls" if sha else "none")
        if self.mode == "none":
            return Presented(None, "none")
        values = request.headers.getall(self.header, [])
        if not any(v.strip() for v in values):
            return Presented(None, "none")
        if not self.trusts(request):
            log.warning(
                "DSP %s %s: %s header from %s ignored: not one of the trusted_proxies",
                request.method,
                request.path,
                self.header,
                request.remote,
            )
            return Presented(None, "none")
        if len(values) > 1:
            raise CertificateHeaderError(f"the {self.header} header is given {len(values)} times")
        sha = certificate_sha256(values[0], self.format)
        return Presented(sha, "header" if sha else "none")

    def binding_problem(self, request: web.Request, bound: Sequence[str]) -> str | None:
        """None if a DAT bound to ``bound`` (its ``transportCertsSha256``) may be used on this
        request, else why not. Mutual TLS: a bound DAT needs one of its certificates. The other
        modes: checked only where a certificate is presented. CertificateHeaderError for a
        trusted proxy's unreadable header."""
        presented = self.presented(request)
        if presented.sha256 is None and self.mode != "mutual":
            return None
        return check_transport_binding(bound, presented.sha256)


class BindingRefused(Exception):
    """A valid DAT presented without the certificate it is bound to (the reason in words)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def bound_claims(
    verifier: Verifier, certificates: ClientCertificates, request: web.Request, token: str
) -> Claims:
    """A request's DAT verified and its certificate binding checked, for every edge that takes
    a DAT (the DSP endpoints, the broker): the claims, or IdentityError (the verifier),
    CertificateHeaderError (a trusted proxy's unreadable header) or BindingRefused. Each edge
    answers these in its own protocol's words; the checks are these, everywhere."""
    claims = await verifier.verify(token)
    why = certificates.binding_problem(request, list(claims.attributes.get("transportCertsSha256") or ()))
    if why:
        raise BindingRefused(why)
    return claims

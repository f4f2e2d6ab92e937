"""TLS for DSP: server and client contexts trusting only the data-space CA.

Connectors serve DSP with a certificate the data-space CA issued for their host names
(`connector init --tls-host`, `connector authority issue-tls`) and verify peers against that
CA. The server always asks for the peer's certificate: with ``require_client_cert`` (``[dsp]
tls_mode = "mutual"``) the handshake fails without one; without it (``"server"``, the data plane)
a peer may present none, and one it presents must still be from the data-space CA. When a DAT
carries ``transportCertsSha256``, the certificate the peer presented must be one of them
(`check_transport_binding`; connector.http.clientcert decides where the certificate comes from
and when the binding is checked).
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web


def server_context(
    cert_file: Path, key_file: Path, ca_file: Path, *, require_client_cert: bool = False
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(
    ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None and key_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def peer_certificate_sha256(request: web.Request) -> str | None:
    """SHA-256 (hex) of the DER certificate the peer presented on this connection, if any."""
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


def check_transport_binding(bound: Sequence[str], presented: str | None) -> str | None:
    """None if the token's transport binding holds, else the reason it does not.

    A token without ``transportCertsSha256`` is not bound. A bound token must come over a
    connection where the peer presented one of those certificates (mutual TLS)."""
    if not bound:
        return None
    if presented is None:
        return "the token is bound to a TLS certificate but the peer presented none"
    if presented.lower() not in {b.lower() for b in bound}:
        return "the TLS certificate the peer presented is not the one its token is bound to"
    return None

"""The DSP TLS modes (`[dsp] tls_mode`, connector.http.clientcert) on real connector processes:
a peer without a data-space client certificate (as EDC) in "server" mode, the handshake refusal
in "mutual" mode, the client certificate from a trusted proxy's header in "proxy" mode (nginx's
URL-escaped PEM and Envoy's x-forwarded-client-cert, told apart by client_cert_format = "auto"),
and a whole negotiation between two connectors in "server" mode.

Every participant's DAT is bound to its TLS certificate (`authority issue-tls`): Alice presents
hers, Mallory's certificate (also from the data-space CA) is the wrong one for Alice's DAT."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from urllib.parse import quote

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dataspace_testlib import Connector, DataSpace, fresh_dat, negotiate, offer_asset

from connector.config import load_config
from connector.devspace import Connector as DevConnector
from connector.http.tls import client_context
from connector.initconfig import attested_security_profile, check

pytestmark = pytest.mark.integration
CATALOG_REQUEST = {
    "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
    "@type": "CatalogRequestMessage",
}


def _tls(space: DataSpace, cert_of: DevConnector | None) -> ssl.SSLContext:
    """A client context trusting the data-space CA, presenting ``cert_of``'s TLS certificate."""
    ca = cert_of.directory / "ca.crt" if cert_of else space.authority.directory / "ca.crt"
    if cert_of is None:
        return client_context(ca)
    return client_context(ca, cert_of.directory / "tls.crt", cert_of.directory / "tls.key")


def _catalog(
    url: str,
    dat: str | None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    source: str | None = None,
) -> tuple[int, str]:
    """POST /catalog/request: (status, body); from the local address ``source`` if given."""

    async def post() -> tuple[int, str]:
        connector = aiohttp.TCPConnector(
            ssl=ssl_context if ssl_context is not None else False, local_addr=(source, 0) if source else None
        )
        async with aiohttp.ClientSession(connector=connector) as session:
            sent = {**(headers or {}), **({"Authorization": f"Bearer {dat}"} if dat else {})}
            async with session.post(
                f"{url}/catalog/request",
                json=CATALOG_REQUEST,
                headers=sent,
                timeout=aiohttp.ClientTimeout(total=20),
            ) as r:
                return r.status, await r.text()

    return asyncio.run(post())


def _escaped_pem(c: DevConnector) -> str:
    """The TLS certificate as nginx's $ssl_client_escaped_cert passes it."""
    return quote((c.directory / "tls.crt").read_text(), safe="")


def _xfcc(c: DevConnector, *, cert: bool = True, digest_of: DevConnector | None = None) -> str:
    """The XFCC element Envoy appends for a client presenting ``c``'s TLS certificate."""
    pem = (c.directory / "tls.crt").read_text()
    of = (digest_of or c).directory / "tls.crt"
    der = x509.load_pem_x509_certificate(of.read_bytes()).public_bytes(serialization.Encoding.DER)
    element = f"By=spiffe://proxy.example/edge;Hash={hashlib.sha256(der).hexdigest()}"
    if cert:
        element += f';Cert="{quote(pem, safe="")}"'
    return element + f';Subject="CN={c.name},O=Data Space";URI=spiffe://{c.name}'


@pytest.fixture(scope="module")
def peers(space: DataSpace) -> dict[str, Connector]:
    """Alice and Mallory: participants with TLS certificates; their connectors never run."""
    return {name: space.connector(name, roles=("consumer",), start=False) for name in ("alice", "mallory")}


def test_server_mode_serves_a_peer_without_a_client_certificate(
    space: DataSpace, peers: dict[str, Connector]
) -> None:
    srv = space.connector("srv", roles=("provider",), tls_mode="server")
    dat = fresh_dat(space, peers["alice"])
    status, body = _catalog(srv.dsp_url, dat, ssl_context=_tls(space, None))
    assert status == 200 and "Catalog" in body, body
    # the DAT is still required
    assert _catalog(srv.dsp_url, None, ssl_context=_tls(space, None))[0] == 404
    # a certificate presented must be the one the DAT is bound to
    assert _catalog(srv.dsp_url, dat, ssl_context=_tls(space, peers["alice"]))[0] == 200
    status, _ = _catalog(srv.dsp_url, dat, ssl_context=_tls(space, peers["mallory"]))
    assert status == 404
    assert any("not the one its token is bound to" in line for line in srv.log)


def test_mutual_mode_refuses_a_peer_without_a_client_certificate_at_the_handshake(
    space: DataSpace, peers: dict[str, Connector]
) -> None:
    mtls = space.connector("mtls", roles=("provider",), tls_mode="mutual")
    dat = fresh_dat(space, peers["alice"])
    with pytest.raises(aiohttp.ClientError):
        _catalog(mtls.dsp_url, dat, ssl_context=_tls(space, None))
    assert _catalog(mtls.dsp_url, dat, ssl_context=_tls(space, peers["alice"]))[0] == 200
    assert _catalog(mtls.dsp_url, dat, ssl_context=_tls(space, peers["mallory"]))[0] == 404


def test_proxy_mode_takes_the_certificate_header_only_from_trusted_proxies(
    space: DataSpace, peers: dict[str, Connector]
) -> None:
    # the proxy is 127.0.0.1; 127.0.0.2 (also loopback) is anyone else on the way
    prx = space.connector(
        "prx", roles=("provider",), tls_mode="proxy", trusted_proxies=("127.0.0.1/32",), start=False
    )
    text = prx.config.read_text()
    prx.config.write_text(
        text.replace('tls_mode = "proxy"\n', 'tls_mode = "proxy"\nclient_cert_format = "auto"\n')
    )
    assert load_config(prx.config).dsp.client_cert_format == "auto"
    prx.start()
    assert prx.dsp_url.startswith("https://")  # the public URL: the proxy's
    plain = prx.dsp_address
    assert plain.startswith("http://")
    dat = fresh_dat(space, peers["alice"])
    header = "X-Forwarded-Client-Cert"
    alice, mallory = _escaped_pem(peers["alice"]), _escaped_pem(peers["mallory"])

    # from the trusted proxy: the certificate is taken and the DAT's binding checked against it
    assert _catalog(plain, dat, headers={header: alice}, source="127.0.0.1")[0] == 200
    assert _catalog(plain, dat, headers={header: mallory}, source="127.0.0.1")[0] == 404
    assert _catalog(plain, dat, source="127.0.0.1")[0] == 200  # the proxy saw no certificate
    status, body = _catalog(
        plain, dat, headers={header: "-----BEGIN%20CERTIFICATE-----%0Azz"}, source="127.0.0.1"
    )
    assert status == 401 and "no PEM certificate" in body, body

    # from anyone else: the header is ignored (and logged), as if no certificate was presented
    assert _catalog(plain, dat, headers={header: mallory}, source="127.0.0.2")[0] == 200
    assert any("ignored: not one of the trusted_proxies" in line for line in prx.log)
    assert _catalog(plain, None, headers={header: alice}, source="127.0.0.2")[0] == 404

    # Envoy's format from the trusted proxy: the last element's Cert (and Hash) bind the DAT
    a, m = peers["alice"], peers["mallory"]
    assert _catalog(plain, dat, headers={header: _xfcc(a)}, source="127.0.0.1")[0] == 200
    assert _catalog(plain, dat, headers={header: _xfcc(m)}, source="127.0.0.1")[0] == 404
    assert _catalog(plain, dat, headers={header: _xfcc(a, cert=False)}, source="127.0.0.1")[0] == 200
    assert _catalog(plain, dat, headers={header: _xfcc(m, cert=False)}, source="127.0.0.1")[0] == 404
    # an earlier hop's (or the client's own) element is not the client's certificate
    both = f"{_xfcc(a)},{_xfcc(m)}"
    assert _catalog(plain, dat, headers={header: both}, source="127.0.0.1")[0] == 404
    status, body = _catalog(plain, dat, headers={header: _xfcc(a, digest_of=m)}, source="127.0.0.1")
    assert status == 401 and "not the SHA-256 of its Cert" in body, body
    status, body = _catalog(plain, dat, headers={header: _xfcc(a) + ';Cert="x"'}, source="127.0.0.1")
    assert status == 401 and "more than one Cert" in body, body
    # Envoy's format from anyone else: ignored, well-formed or not
    assert _catalog(plain, dat, headers={header: _xfcc(m)}, source="127.0.0.2")[0] == 200
    assert _catalog(plain, dat, headers={header: 'By=x;Cert="'}, source="127.0.0.2")[0] == 200


def test_two_connectors_in_server_mode_negotiate(space: DataSpace) -> None:
    provider = space.connector("sprov", roles=("provider",), tls_mode="server")
    consumer = space.connector("scons", roles=("consumer",), tls_mode="server")
    offer = offer_asset(
        provider,
        asset_id="urn:asset:server-mode",
        contract={"template": "n-times-usage", "params": {"max": "3"}},
    )
    final = negotiate(consumer, provider, offer)
    assert final["state"] == "FINALIZED", (final, consumer.log[-20:], provider.log[-20:])
    status, agreements = provider.api("GET", "/api/agreements")
    assert status == 200 and [a["id"] for a in agreements] == [final["agreementId"]]
    assert agreements[0]["consumerId"] == consumer.participant_id


def test_config_check_holds_the_mode_against_the_attested_security_profile(space: DataSpace) -> None:
    """`connector config check` asks the authority for the connector's DAT: a TRUST profile
    asks for mutual TLS, so "server" is weaker than the data space asks; BASE is not."""
    trusted = space.connector(
        "trusty", roles=("provider",), tls_mode="server", start=False, profile="idsc:TRUST_SECURITY_PROFILE"
    )
    assert attested_security_profile(load_config(trusted.config)) == "idsc:TRUST_SECURITY_PROFILE"
    findings = check(trusted.config, ask_authority=True)
    assert not [f for f in findings if f.level == "error"], findings
    asked = [f.text for f in findings if "weaker than the data space asks" in f.text]
    assert len(asked) == 1 and "idsc:TRUST_SECURITY_PROFILE" in asked[0]
    base = space.connector("basic", roles=("provider",), tls_mode="server", start=False)
    assert not [
        f for f in check(base.config, ask_authority=True) if "weaker than the data space asks" in f.text
    ]
    # the authority out of reach: no DAT, the rule cannot be applied (and nothing breaks)
    offline = load_config(base.config).model_copy(
        update={
            "connector": load_config(base.config).connector.model_copy(
                update={"authority_url": "http://127.0.0.1:9"}
            )
        }
    )
    assert attested_security_profile(offline, timeout=2) is None

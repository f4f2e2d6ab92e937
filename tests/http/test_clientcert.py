"""Where a DSP request's client certificate comes from (connector.http.clientcert): the proxy's
header parsed (URL-escaped PEM), the trust decision by the peer's address over a real loopback
connection, and the binding rule of each mode."""

from __future__ import annotations

import datetime
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict

from connector.http.clientcert import (
    MAX_HEADER_CHARS,
    CertificateHeaderError,
    ClientCertificates,
    certificate_sha256_from_header,
    parse_networks,
)
from connector.http.limits import DEFAULT_LIMITS, start_site

HEADER = "X-Forwarded-Client-Cert"


def _certificate(name: str) -> tuple[str, str]:
    """(PEM, SHA-256 of the DER) of a fresh self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return cert.public_bytes(serialization.Encoding.PEM).decode(), hashlib.sha256(der).hexdigest()


ALICE_PEM, ALICE_SHA = _certificate("alice")
MALLORY_PEM, MALLORY_SHA = _certificate("mallory")


def test_the_url_escaped_pem_of_nginx_is_read() -> None:
    escaped = quote(ALICE_PEM, safe="")
    assert escaped.startswith("-----BEGIN%20CERTIFICATE-----%0A")
    assert certificate_sha256_from_header(escaped) == ALICE_SHA
    # '+' and '/' of base64 may come escaped or not: unquote, never unquote_plus
    assert certificate_sha256_from_header(quote(ALICE_PEM, safe="/+")) == ALICE_SHA


def test_pem_folded_onto_one_line_is_read() -> None:
    assert certificate_sha256_from_header(ALICE_PEM.replace("\n", " ")) == ALICE_SHA
    assert certificate_sha256_from_header(ALICE_PEM.replace("\n", "\t")) == ALICE_SHA


def test_an_empty_header_is_no_certificate() -> None:
    assert certificate_sha256_from_header("") is None
    assert certificate_sha256_from_header("   ") is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("garbage", "no PEM certificate"),
        (quote("-----BEGIN CERTIFICATE-----\nzz\n", safe=""), "no PEM certificate"),
        (quote(ALICE_PEM + MALLORY_PEM, safe=""), "more than one certificate"),
        (quote("junk" + ALICE_PEM, safe=""), "text besides"),
        ("-----BEGIN CERTIFICATE----- QUJD= -----END CERTIFICATE-----", "not an X.509"),
        ("-----BEGIN CERTIFICATE----- QUJ -----END CERTIFICATE-----", "not valid base64"),
        ("%ff%fe" + quote(ALICE_PEM, safe=""), "not UTF-8"),
        ("x" * (MAX_HEADER_CHARS + 1), "longer than"),
    ],
)
def test_a_malformed_header_is_refused_with_the_reason(value: str, reason: str) -> None:
    with pytest.raises(CertificateHeaderError, match=reason):
        certificate_sha256_from_header(value)


def test_trusted_proxies_are_addresses_or_cidrs() -> None:
    assert [str(n) for n in parse_networks(["10.0.0.0/8", "127.0.0.1", "::1"])] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
        "::1/128",
    ]
    with pytest.raises(ValueError, match=r"proxy\.example"):
        parse_networks(["proxy.example"])


# ---------------------------------------------------------------- over a real connection


@pytest.fixture
async def seen() -> AsyncIterator[str]:
    """A loopback server that answers with what each configured ClientCertificates makes of
    the request (?mode=...&trusted=...&bound=...)."""

    async def handle(request: web.Request) -> web.Response:
        q = request.query
        certs = ClientCertificates.of(q["mode"], trusted_proxies=q.getall("trusted", []))  # type: ignore[arg-type]
        try:
            presented = certs.presented(request)
            why = certs.binding_problem(request, q.getall("bound", []))
        except CertificateHeaderError as exc:
            return web.json_response({"error": str(exc)}, status=401)
        return web.json_response(
            {
                "sha256": presented.sha256,
                "source": presented.source,
                "binding": why,
                "trusted": certs.trusts(request),
            }
        )

    app = web.Application()
    app.router.add_get("/", handle)
    # header values beyond the default 8190 bytes ([limits] header_field_bytes may allow them):
    # the certificate header's own cap is what refuses an oversized one
    limits = replace(
        DEFAULT_LIMITS, header_field_bytes=4 * MAX_HEADER_CHARS, header_line_bytes=4 * MAX_HEADER_CHARS
    )
    listening = await start_site(app, "127.0.0.1", 0, limits=limits)
    yield listening.url
    await listening.runner.cleanup()


async def _ask(
    url: str,
    params: list[tuple[str, str]],
    headers: list[tuple[str, str]] | None = None,
    source: str = "127.0.0.1",
) -> tuple[int, dict[str, object]]:
    """GET with ``headers`` (repeats kept) from the local address ``source``."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url + "/", params=params, headers=CIMultiDict(headers or [])) as resp,
    ):
        return resp.status, await resp.json()


async def test_the_header_from_a_trusted_proxy_is_taken(seen: str) -> None:
    proxy = [("mode", "proxy"), ("trusted", "127.0.0.0/30"), ("bound", ALICE_SHA)]
    status, out = await _ask(seen, proxy, [(HEADER, quote(ALICE_PEM, safe=""))])
    assert status == 200 and out == {
        "sha256": ALICE_SHA,
        "source": "header",
        "binding": None,
        "trusted": True,
    }
    status, out = await _ask(seen, proxy, [(HEADER, quote(MALLORY_PEM, safe=""))])
    assert status == 200 and out["sha256"] == MALLORY_SHA and "not the one" in str(out["binding"])
    # the proxy saw no certificate: the binding is not checked (as tls_mode = "server")
    status, out = await _ask(seen, proxy)
    assert out == {"sha256": None, "source": "none", "binding": None, "trusted": True}


async def test_the_header_from_anyone_else_is_ignored_and_logged(
    seen: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = [("mode", "proxy"), ("trusted", "127.0.0.1"), ("bound", ALICE_SHA)]
    with caplog.at_level(logging.WARNING, logger="connector.http.clientcert"):
        status, out = await _ask(seen, proxy, [(HEADER, quote(MALLORY_PEM, safe=""))], source="127.0.0.2")
    assert status == 200 and out == {"sha256": None, "source": "none", "binding": None, "trusted": False}
    assert "ignored: not one of [dsp] trusted_proxies" in caplog.text
    # garbage from an untrusted peer is ignored too: nothing from it is read
    status, out = await _ask(seen, proxy, [(HEADER, "garbage")], source="127.0.0.2")
    assert status == 200 and out["source"] == "none"
    # no proxies trusted at all: the header is never read
    status, out = await _ask(seen, [("mode", "proxy")], [(HEADER, quote(MALLORY_PEM, safe=""))])
    assert out["sha256"] is None and out["trusted"] is False


async def test_a_trusted_proxys_bad_header_is_refused(seen: str) -> None:
    proxy = [("mode", "proxy"), ("trusted", "127.0.0.1")]
    status, out = await _ask(seen, proxy, [(HEADER, "garbage")])
    assert status == 401 and "no PEM certificate" in str(out["error"])
    twice = [(HEADER, quote(ALICE_PEM, safe="")), (HEADER, quote(ALICE_PEM, safe=""))]
    status, out = await _ask(seen, proxy, twice)
    assert status == 401 and "given 2 times" in str(out["error"])
    status, out = await _ask(seen, proxy, [(HEADER, "x" * (MAX_HEADER_CHARS + 1))])
    assert status == 401 and "longer than" in str(out["error"])


async def test_the_header_counts_only_in_proxy_mode(seen: str) -> None:
    header = [(HEADER, quote(ALICE_PEM, safe=""))]
    for mode in ("server", "none", "mutual"):
        status, out = await _ask(
            seen, [("mode", mode), ("trusted", "127.0.0.1"), ("bound", ALICE_SHA)], header
        )
        assert status == 200 and out["sha256"] is None and out["source"] == "none", mode
        # without TLS no certificate: only "mutual" refuses a bound DAT without one
        assert (out["binding"] is not None) is (mode == "mutual"), (mode, out)
    # an unbound DAT needs no certificate in any mode
    assert (await _ask(seen, [("mode", "mutual")]))[1]["binding"] is None

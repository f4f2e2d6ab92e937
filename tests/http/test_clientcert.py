"""Where a DSP request's client certificate comes from (connector.http.clientcert): the proxy's
header parsed (URL-escaped PEM, and Envoy's x-forwarded-client-cert over a matrix of valid and
hostile values), the trust decision by the peer's address over a real loopback connection, and
the binding rule of each mode."""

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
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from connector.http.clientcert import (
    MAX_HEADER_CHARS,
    MAX_XFCC_CHARS,
    CertificateHeaderError,
    ClientCertificates,
    certificate_sha256,
    certificate_sha256_from_header,
    certificate_sha256_from_xfcc,
    parse_networks,
    xfcc_elements,
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
CA_PEM, _ = _certificate("ca")


def _xfcc(pem: str, *, digest: str | None = None, by: str = "spiffe://proxy.example/ns/edge") -> str:
    """One XFCC element as Envoy writes it: By, Hash, the URL-escaped PEM quoted, Chain, the
    Subject always quoted, URI and DNS SANs."""
    cert = quote(pem, safe="")
    chain = quote(pem + CA_PEM, safe="")
    return (
        f'By={by};Hash={digest or hashlib.sha256(_der(pem)).hexdigest()};Cert="{cert}";'
        f'Chain="{chain}";Subject="CN=alice,O=Example\\, Inc.;OU=a=b";URI=spiffe://alice;'
        "DNS=alice.example;DNS=www.alice.example"
    )


def _der(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


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


# ---------------------------------------------------------------- Envoy's XFCC

ALICE_CERT = quote(ALICE_PEM, safe="")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(_xfcc(ALICE_PEM), ALICE_SHA, id="envoy-element"),
        pytest.param(f'Cert="{ALICE_CERT}"', ALICE_SHA, id="cert-only"),
        pytest.param(f"Cert={ALICE_CERT}", ALICE_SHA, id="cert-unquoted"),
        pytest.param(f'cert="{ALICE_CERT}";HASH={ALICE_SHA.upper()}', ALICE_SHA, id="keys-any-case"),
        pytest.param(f"By=spiffe://p;Hash={ALICE_SHA.upper()}", ALICE_SHA, id="hash-only"),
        # one element per hop: only the last one, the nearest (trusted) proxy's, is read
        pytest.param(f"{_xfcc(MALLORY_PEM)},{_xfcc(ALICE_PEM)}", ALICE_SHA, id="last-of-two"),
        pytest.param(f"{_xfcc(ALICE_PEM)}, {_xfcc(MALLORY_PEM)}", MALLORY_SHA, id="last-of-two-spaced"),
        pytest.param(f'Subject="a\\"quoted\\",b;c=d";Cert="{ALICE_CERT}"', ALICE_SHA, id="escaped-quotes"),
        pytest.param('By=spiffe://p;Subject="CN=x";URI=spiffe://x', None, id="no-cert-no-hash"),
        pytest.param("", None, id="empty"),
        pytest.param("  ", None, id="blank"),
    ],
)
def test_envoys_header_is_read(value: str, expected: str | None) -> None:
    assert certificate_sha256_from_xfcc(value) == expected
    assert certificate_sha256(value, "envoy-xfcc") == expected
    assert certificate_sha256(value, "auto") == expected


def test_envoys_elements_and_their_quoting() -> None:
    value = 'By=a;Subject="x,y;z=\\"q\\"";DNS=d1;DNS=d2, URI=u'
    assert xfcc_elements(value) == [
        [("by", "a"), ("subject", 'x,y;z="q"'), ("dns", "d1"), ("dns", "d2")],
        [("uri", "u")],
    ]


def test_an_element_without_cert_or_hash_is_no_certificate_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="connector.http.clientcert"):
        assert certificate_sha256_from_xfcc(f"{_xfcc(ALICE_PEM)},By=spiffe://p;URI=spiffe://x") is None
    assert "no Cert and no Hash" in caplog.text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param("x" * (MAX_XFCC_CHARS + 1), "longer than", id="oversized"),
        pytest.param(f"By=a;{'DNS=x;' * (MAX_XFCC_CHARS // 6)}", "longer than", id="many-pairs"),
        pytest.param(f'Cert="{ALICE_CERT}";Cert="{MALLORY_PEM}"', "more than one Cert", id="two-certs"),
        pytest.param(f"Hash={ALICE_SHA};hash={ALICE_SHA}", "more than one Hash", id="two-hashes"),
        pytest.param(_xfcc(ALICE_PEM, digest=MALLORY_SHA), "not the SHA-256 of its Cert", id="hash-mismatch"),
        pytest.param(f"Hash={ALICE_SHA[:-2]}", "not a hex SHA-256", id="hash-short"),
        pytest.param(f"Hash={'z' * 64}", "not a hex SHA-256", id="hash-not-hex"),
        pytest.param(f'Cert="{ALICE_CERT}', "not closed", id="unclosed-quote"),
        pytest.param(f'Cert="{ALICE_CERT}"junk', "'j' after the Cert value", id="text-after-quote"),
        pytest.param('By=a"b', "after the By value", id="quote-in-bare-value"),
        pytest.param(f"By=a,,Hash={ALICE_SHA}", "no Key=value", id="empty-element"),
        pytest.param(f"Hash={ALICE_SHA},", "no Key=value", id="trailing-comma"),
        pytest.param("garbage", "no Key=value", id="garbage"),
        pytest.param(";Hash=" + ALICE_SHA, "no Key=value", id="leading-semicolon"),
        pytest.param('Cert="garbage"', "Cert: .*no PEM certificate", id="cert-not-pem"),
        pytest.param(f'Cert="{quote(ALICE_PEM + MALLORY_PEM, safe="")}"', "more than one", id="cert-two"),
        pytest.param('Cert=""', "Cert is empty", id="cert-empty"),
        # a client's own element (APPEND_FORWARD) crafted to swallow the proxy's: the quote it
        # leaves open ends at the proxy's Cert quote, and the PEM after it is no separator
        pytest.param(f'By=evil;Cert="x,{_xfcc(MALLORY_PEM)}', "after the Cert value", id="smuggled-element"),
    ],
)
def test_a_hostile_envoy_header_is_refused_with_the_reason(value: str, reason: str) -> None:
    with pytest.raises(CertificateHeaderError, match=reason):
        certificate_sha256_from_xfcc(value)
    with pytest.raises(CertificateHeaderError):
        certificate_sha256(value, "envoy-xfcc")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["By=", "Hash=", ALICE_SHA, "Cert=", '"', "\\", ",", ";", "=", " ", "x", ALICE_CERT, "%0A", "%ZZ"]
        ),
        max_size=12,
    ).map("".join)
    | st.text(max_size=200)
)
def test_any_envoy_header_is_read_or_refused_never_an_other_error(value: str) -> None:
    for fmt in ("envoy-xfcc", "auto", "pem"):
        try:
            sha = certificate_sha256(value, fmt)  # type: ignore[arg-type]
        except CertificateHeaderError:
            continue
        assert sha is None or len(sha) == 64


def test_auto_tells_the_formats_apart_and_pem_keeps_todays_reading() -> None:
    assert certificate_sha256(quote(ALICE_PEM, safe=""), "auto") == ALICE_SHA
    assert certificate_sha256(ALICE_PEM.replace("\n", " "), "auto") == ALICE_SHA
    assert certificate_sha256(_xfcc(ALICE_PEM), "auto") == ALICE_SHA
    with pytest.raises(CertificateHeaderError, match="no PEM certificate"):
        certificate_sha256("garbage", "auto")
    # the default: Envoy's header is not PEM (the PEM inside it is not the whole value)
    with pytest.raises(CertificateHeaderError, match="text besides"):
        certificate_sha256(f'By=spiffe://p;Cert="{ALICE_CERT}"', "pem")
    with pytest.raises(CertificateHeaderError, match="no Key=value"):
        certificate_sha256(quote(ALICE_PEM, safe=""), "envoy-xfcc")


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
        certs = ClientCertificates.of(
            q["mode"],  # type: ignore[arg-type]
            trusted_proxies=q.getall("trusted", []),
            format=q.get("format", "pem"),  # type: ignore[arg-type]
        )
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
    assert "ignored: not one of the trusted_proxies" in caplog.text
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


async def test_envoys_header_from_a_trusted_proxy_is_taken_and_from_anyone_else_ignored(
    seen: str,
) -> None:
    proxy = [("mode", "proxy"), ("trusted", "127.0.0.1"), ("bound", ALICE_SHA), ("format", "envoy-xfcc")]
    status, out = await _ask(seen, proxy, [(HEADER, _xfcc(ALICE_PEM))])
    assert status == 200 and out == {
        "sha256": ALICE_SHA,
        "source": "header",
        "binding": None,
        "trusted": True,
    }
    # an earlier element (another hop's, or the client's own) does not count: the last one does
    status, out = await _ask(seen, proxy, [(HEADER, f"{_xfcc(ALICE_PEM)},{_xfcc(MALLORY_PEM)}")])
    assert status == 200 and out["sha256"] == MALLORY_SHA and "not the one" in str(out["binding"])
    status, out = await _ask(seen, proxy, [(HEADER, _xfcc(ALICE_PEM, digest=MALLORY_SHA))])
    assert status == 401 and "not the SHA-256 of its Cert" in str(out["error"])
    # from anyone else: ignored, hostile or not
    for value in (_xfcc(MALLORY_PEM), 'Cert="x'):
        status, out = await _ask(seen, proxy, [(HEADER, value)], source="127.0.0.2")
        assert status == 200 and out == {"sha256": None, "source": "none", "binding": None, "trusted": False}


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

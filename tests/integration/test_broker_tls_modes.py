"""The broker's `tls_mode` (connector.broker.config) on real broker processes, with the
certificates of a real authority: the handshake refusal in "mutual", an optional client
certificate in "server", the certificate from a trusted proxy's header in "proxy", plain HTTP in
"none"; in each, where the broker takes a DAT (its own routes: 401 with the reason; its DSP
catalog: 404) the DAT's certificate binding is held as the mode says. And ``GET /metrics``: behind
``metrics_key_file`` (none: 401, a wrong one: 403), absent without it (404), counting requests,
searches, crawls and registrations once a provider registered itself and was searched.

Every participant's DAT is bound to its TLS certificate (`authority issue-tls`): Alice presents
hers, Mallory's (also from the data-space CA) is the wrong one for Alice's DAT."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from dataspace_testlib import Connector, DataSpace, fresh_dat
from prometheus_client.parser import text_string_to_metric_families
from test_broker_e2e import BrokerProcess, eventually, provider
from test_tls_modes import CATALOG_REQUEST, _escaped_pem, _tls, _xfcc

pytestmark = pytest.mark.integration
HEADER = "X-Forwarded-Client-Cert"
METRICS_KEY = "scrape-key-of-this-test-0123456789"


def _call(
    broker: BrokerProcess,
    method: str,
    path: str,
    *,
    dat: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    source: str | None = None,
    json_body: Any = None,
) -> tuple[int, str]:
    """One request to the broker: (status, body); from the local address ``source`` if given."""

    async def go() -> tuple[int, str]:
        connector = aiohttp.TCPConnector(
            ssl=ssl_context if ssl_context is not None else False, local_addr=(source, 0) if source else None
        )
        sent = {**(headers or {}), **({"Authorization": f"Bearer {dat}"} if dat else {})}
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(
                method,
                broker.url + path,
                headers=sent,
                json=json_body,
                timeout=aiohttp.ClientTimeout(total=20),
            ) as r,
        ):
            return r.status, await r.text()

    return asyncio.run(go())


def _own_route(broker: BrokerProcess, dat: str | None, **kw: Any) -> tuple[int, str]:
    """A route of the broker's own that takes a DAT: 404 (no such registration) once the DAT
    and its binding are accepted, 401 with the reason when not."""
    return _call(broker, "DELETE", "/registrations/urn:uuid:no-such-registration", dat=dat, **kw)


def _dsp_catalog(broker: BrokerProcess, dat: str | None, **kw: Any) -> int:
    """The broker's DSP catalog request: 200, or 404 for a DAT refused (as at a connector)."""
    return _call(broker, "POST", "/catalog/request", dat=dat, json_body=CATALOG_REQUEST, **kw)[0]


@pytest.fixture(scope="module")
def peers(space: DataSpace) -> dict[str, Connector]:
    """Alice and Mallory: participants with TLS certificates; their connectors never run."""
    return {name: space.connector(name, roles=("consumer",), start=False) for name in ("alice", "mallory")}


def _broker(space: DataSpace, name: str, settings: str, scheme: str = "https") -> Iterator[BrokerProcess]:
    b = BrokerProcess(space, name=name, settings=settings, scheme=scheme)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def mutual(space: DataSpace) -> Iterator[BrokerProcess]:
    yield from _broker(space, "b-mutual", 'tls_mode = "mutual"')


@pytest.fixture(scope="module")
def server(space: DataSpace) -> Iterator[BrokerProcess]:
    key = space.root / "metrics.key"
    key.write_text(METRICS_KEY + "\n")
    yield from _broker(space, "b-server", f'tls_mode = "server"\nmetrics_key_file = "{key}"')


def test_mutual_mode_refuses_a_client_without_a_certificate_at_the_handshake(
    space: DataSpace, peers: dict[str, Connector], mutual: BrokerProcess
) -> None:
    alice, mallory = peers["alice"], peers["mallory"]
    dat = fresh_dat(space, alice)
    with pytest.raises(aiohttp.ClientError):
        _call(mutual, "GET", "/search?q=x", ssl_context=_tls(space, None))
    assert _call(mutual, "GET", "/search?q=x", ssl_context=_tls(space, mallory))[0] == 200
    assert _own_route(mutual, dat, ssl_context=_tls(space, alice))[0] == 404  # accepted
    status, body = _own_route(mutual, dat, ssl_context=_tls(space, mallory))
    assert status == 401 and "not the one its token is bound to" in body, body
    assert _own_route(mutual, None, ssl_context=_tls(space, alice))[0] == 401
    assert _dsp_catalog(mutual, dat, ssl_context=_tls(space, alice)) == 200
    assert _dsp_catalog(mutual, dat, ssl_context=_tls(space, mallory)) == 404
    # no metrics_key_file: no /metrics, whatever is sent
    status, _ = _call(
        mutual, "GET", "/metrics", ssl_context=_tls(space, alice), headers={"X-Api-Key": METRICS_KEY}
    )
    assert status == 404


def test_server_mode_takes_clients_without_a_certificate_and_checks_one_presented(
    space: DataSpace, peers: dict[str, Connector], server: BrokerProcess
) -> None:
    alice, mallory = peers["alice"], peers["mallory"]
    dat = fresh_dat(space, alice)
    assert _call(server, "GET", "/search?q=x", ssl_context=_tls(space, None))[0] == 200
    # without a certificate the binding is not checked; the DAT is still required
    assert _own_route(server, dat, ssl_context=_tls(space, None))[0] == 404
    assert _own_route(server, None, ssl_context=_tls(space, None))[0] == 401
    assert _dsp_catalog(server, dat, ssl_context=_tls(space, None)) == 200
    assert _dsp_catalog(server, None, ssl_context=_tls(space, None)) == 404
    # a certificate presented must be the one the DAT is bound to
    assert _own_route(server, dat, ssl_context=_tls(space, alice))[0] == 404
    status, body = _own_route(server, dat, ssl_context=_tls(space, mallory))
    assert status == 401 and "not the one its token is bound to" in body, body
    assert _dsp_catalog(server, dat, ssl_context=_tls(space, mallory)) == 404


def test_proxy_mode_takes_the_certificate_header_only_from_trusted_proxies(
    space: DataSpace, peers: dict[str, Connector]
) -> None:
    # the proxy is 127.0.0.1; 127.0.0.2 (also loopback) is anyone else on the way
    settings = (
        'tls_mode = "proxy"\ntrusted_proxies = ["127.0.0.1/32"]\npublic_url = "https://broker.example"\n'
        'client_cert_format = "auto"'
    )
    for prx in _broker(space, "b-proxy", settings, scheme="http"):
        dat = fresh_dat(space, peers["alice"])
        alice, mallory = _escaped_pem(peers["alice"]), _escaped_pem(peers["mallory"])

        # the broker names itself by the proxy's https URL
        status, turtle = _call(prx, "GET", "/", headers={"Accept": "text/turtle"}, source="127.0.0.1")
        assert status == 200 and "<https://broker.example" in turtle, turtle
        # from the trusted proxy: the certificate is taken and the DAT's binding checked against it
        assert _own_route(prx, dat, headers={HEADER: alice}, source="127.0.0.1")[0] == 404
        status, body = _own_route(prx, dat, headers={HEADER: mallory}, source="127.0.0.1")
        assert status == 401 and "not the one its token is bound to" in body, body
        assert _dsp_catalog(prx, dat, headers={HEADER: mallory}, source="127.0.0.1") == 404
        assert _own_route(prx, dat, source="127.0.0.1")[0] == 404  # the proxy saw no certificate
        status, body = _own_route(
            prx, dat, headers={HEADER: "-----BEGIN%20CERTIFICATE-----%0Azz"}, source="127.0.0.1"
        )
        assert status == 401 and "no PEM certificate" in body, body

        # Envoy's x-forwarded-client-cert from the trusted proxy (client_cert_format = "auto")
        assert _own_route(prx, dat, headers={HEADER: _xfcc(peers["alice"])}, source="127.0.0.1")[0] == 404
        status, body = _own_route(prx, dat, headers={HEADER: _xfcc(peers["mallory"])}, source="127.0.0.1")
        assert status == 401 and "not the one its token is bound to" in body, body
        forged = _xfcc(peers["mallory"], digest_of=peers["alice"])  # a Hash that is not the Cert's
        assert _own_route(prx, dat, headers={HEADER: forged}, source="127.0.0.1")[0] == 401

        # from anyone else: the header is ignored (and logged), as if no certificate was presented
        assert _own_route(prx, dat, headers={HEADER: mallory}, source="127.0.0.2")[0] == 404
        assert _dsp_catalog(prx, dat, headers={HEADER: mallory}, source="127.0.0.2") == 200
        assert any(f"{HEADER} header from 127.0.0.2 ignored" in line for line in prx.log), prx.log[-10:]
        assert _own_route(prx, None, headers={HEADER: alice}, source="127.0.0.2")[0] == 401


def test_none_mode_is_plain_http_without_certificates(space: DataSpace, peers: dict[str, Connector]) -> None:
    for plain in _broker(space, "b-none", 'tls_mode = "none"', scheme="http"):
        dat = fresh_dat(space, peers["alice"])
        assert _call(plain, "GET", "/search?q=x")[0] == 200
        # no certificate to check: the DAT alone, a certificate header means nothing
        assert _own_route(plain, dat, headers={HEADER: _escaped_pem(peers["mallory"])})[0] == 404
        assert _own_route(plain, None)[0] == 401
        assert _dsp_catalog(plain, dat) == 200


def _metrics(broker: BrokerProcess, space: DataSpace, **headers: str) -> tuple[int, str]:
    return _call(broker, "GET", "/metrics", ssl_context=_tls(space, None), headers=headers)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(text: str, name: str, **labels: str) -> float | None:
    return _samples(text).get((name, frozenset(labels.items())))


def test_metrics_behind_the_key_count_requests_searches_crawls_and_registrations(
    space: DataSpace, server: BrokerProcess
) -> None:
    assert _metrics(server, space)[0] == 401
    assert _metrics(server, space, Authorization="Bearer wrong-key-of-the-right-length")[0] == 403
    assert _metrics(server, space, **{"X-Api-Key": "wrong-key-of-the-right-length"})[0] == 403
    assert _metrics(server, space, Authorization=f"Basic {METRICS_KEY}")[0] == 401

    # a provider registers itself (its heartbeat) and its catalog is crawled
    carol = provider(space, server, "carol")
    try:
        eventually(
            lambda: (
                _call(server, "GET", "/search?q=x", ssl_context=_tls(space, None))[0] == 200
                and any(r["available"] for r in _registrations(server, space))
            ),
            "carol registered",
        )
        assert _call(server, "GET", "/sparql?query=ASK%7B%7D", ssl_context=_tls(space, None))[0] == 200

        def scraped() -> str | None:
            status, text = _metrics(server, space, Authorization=f"Bearer {METRICS_KEY}")
            assert status == 200, text
            crawled = _value(text, "connector_broker_crawls_total", outcome="crawled")
            return text if crawled else None

        text = eventually(scraped, "a crawl of carol's catalog counted")
    finally:
        carol.stop()
    assert (_value(text, "connector_broker_searches_total", kind="search") or 0) >= 1
    assert (_value(text, "connector_broker_searches_total", kind="sparql") or 0) >= 1
    assert _value(text, "connector_broker_registrations", state="available") == 1
    assert _value(text, "connector_broker_registrations", state="unavailable") == 0
    search_ok = _value(text, "connector_http_requests_total", app="broker", route="/search", status="200")
    assert search_ok is not None and search_ok >= 2
    refused = _value(text, "connector_http_requests_total", app="broker", route="/metrics", status="403")
    assert refused == 2
    status, again = _metrics(server, space, **{"X-Api-Key": METRICS_KEY})
    assert status == 200 and "connector_broker_searches_total" in again


def _registrations(broker: BrokerProcess, space: DataSpace) -> list[dict[str, Any]]:
    status, body = _call(broker, "GET", "/registrations", ssl_context=_tls(space, None))
    assert status == 200, body
    return list(json.loads(body)["registrations"])

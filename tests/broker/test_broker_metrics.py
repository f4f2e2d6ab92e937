"""The broker's GET /metrics (connector.broker.metrics): absent without a key (404), the key as
a bearer token or X-Api-Key (none, a repeated or an ambiguous one: 401; a wrong one: 403), and
the registrations gauge by availability read from the store at scrape time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from broker_testlib import FixedTokens, description
from conftest import Clock
from prometheus_client.parser import text_string_to_metric_families
from raw_http import raw_status

from connector import metrics
from connector.broker.app import broker_app
from connector.broker.service import Broker
from connector.http.clientcert import ClientCertificates
from connector.http.limits import DEFAULT_LIMITS
from connector.http.observe import count_requests

KEY = "k3y-of-the-broker-metrics-0123456789"
ALICE, BOB = "AA:keyid:01", "BB:keyid:02"
TOKENS = {"tok-alice": ALICE, "tok-bob": BOB}
DATASET = {"id": "urn:ds:weather", "title": "Weather observations"}


async def _client(broker: Broker, key: str | None) -> TestClient:
    app = broker_app(
        broker,
        FixedTokens(TOKENS),
        limits=DEFAULT_LIMITS,
        body_bytes=1 << 20,
        client_certs=ClientCertificates("none"),
        metrics_key=key,
    )
    client = TestClient(TestServer(count_requests(app, "broker")))
    await client.start_server()
    return client


@pytest.fixture
async def http(broker: Broker) -> AsyncIterator[TestClient]:
    client = await _client(broker, KEY)
    yield client
    await client.close()


def _gauge(text: str, state: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "connector_broker_registrations" and s.labels == {"state": state}:
                return s.value
    return None


async def test_no_key_configured_no_metrics(broker: Broker) -> None:
    client = await _client(broker, None)
    try:
        for headers in ({}, {"Authorization": f"Bearer {KEY}"}, {"X-Api-Key": KEY}):
            assert (await client.get("/metrics", headers=headers)).status == 404
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": f"Basic {KEY}"}, 401),
        ({"Authorization": f"Bearer {KEY}", "X-Api-Key": KEY}, 401),  # which one counts? neither
        ({"Authorization": f"Bearer {KEY}x"}, 403),
        ({"X-Api-Key": KEY[:-1]}, 403),
        ({"X-Api-Key": "é" * 20}, 403),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"Authorization": f"bearer {KEY}"}, 200),
        ({"X-Api-Key": KEY}, 200),
    ],
)
async def test_the_key(http: TestClient, headers: dict[str, str], status: int) -> None:
    resp = await http.get("/metrics", headers=headers)
    assert resp.status == status, await resp.text()
    if status == 401:
        assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_a_repeated_key_header_is_none(http: TestClient) -> None:
    resp = await http.get("/metrics", headers=[("X-Api-Key", KEY), ("X-Api-Key", KEY)])
    assert resp.status == 401


@pytest.mark.skipif(not metrics.ENABLED, reason="CONNECTOR_METRICS=off")
async def test_registrations_by_availability_at_scrape_time(
    http: TestClient, broker: Broker, clock: Clock
) -> None:
    for token, who, url in (
        ("tok-alice", ALICE, "https://a.example/dsp"),
        ("tok-bob", BOB, "https://b.example/dsp"),
    ):
        resp = await http.post(
            "/registrations",
            data=description(who, url, [DATASET]),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/turtle"},
        )
        assert resp.status == 201, await resp.text()
        clock.now += broker.settings.ttl / 2 + 1  # alice's ages past the ttl, bob's not
    text = await (await http.get("/metrics", headers={"X-Api-Key": KEY})).text()
    assert (_gauge(text, "available"), _gauge(text, "unavailable")) == (1, 1)
    assert 'connector_http_requests_total{app="broker",route="/registrations",status="201"}' in text
    assert "connector_broker_searches_total" in text


@pytest.mark.parametrize("header", [b"X-Api-Key: \xff\xfe\x80", b"Authorization: Bearer \xff\xfe\x80"])
async def test_a_key_of_any_bytes_is_refused_never_an_error(http: TestClient, header: bytes) -> None:
    assert await raw_status(http, b"GET /metrics HTTP/1.1\r\n" + header + b"\r\n") == 403

"""The federated crawl on SQLite and PostgreSQL: catalogs served by the connector's own catalog
builder (the DSP form and the Link-header pages a provider sends), crawled, indexed for search
(with the policy-template filter) and SPARQL; failures back off; a next page elsewhere is not
followed. The policy-template classifier over every template in policies/."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer
from broker_testlib import FixedTokens, description
from conftest import Clock
from dsp_schema import assert_valid

from connector.broker.app import broker_app
from connector.broker.crawl import (
    Crawler,
    CrawlFailed,
    CrawlSettings,
    backoff_delay,
    read_catalog,
)
from connector.broker.service import Broker
from connector.broker.store import SearchQuery
from connector.broker.templates import CUSTOM, offer_template
from connector.http.client import Delivery
from connector.http.clientcert import ClientCertificates
from connector.http.limits import DEFAULT_LIMITS
from connector.odrl.templates import fill, templates
from connector.protocol.catalog import CatalogBuilder, CatalogDataset
from connector.protocol.decide import KnownOffer, Requester
from connector.protocol.messages import DataService
from connector.selfdescription import TURTLE
from connector.wireformat import DSP_CONTEXT_URL

ALICE = "AA:keyid:01"
A_URL = "https://alice.example/dsp"
BROKER_ID = "BR:keyid:09"


@pytest.mark.parametrize("name", [t.name for t in templates()])
def test_every_template_is_told_from_its_offer(name: str) -> None:
    t = next(t for t in templates() if t.name == name)
    required = {p.name: p.example for p in t.parameters if p.required}
    every = {p.name: p.example for p in t.parameters if p.example is not None}
    for params in (required, every):
        offer = fill(name, params, policy_id="urn:uuid:o", target="urn:ds:x", assigner="urn:a")
        offer.pop("target", None)  # as a catalog lists it
        assert offer_template(offer) == name


def test_an_offer_of_no_template_is_custom() -> None:
    two = fill("n-times-usage", {"max": "3"})
    two["permission"][0]["constraint"].append(
        {"leftOperand": "purpose", "operator": "eq", "rightOperand": "dpv:Research"}
    )
    assert offer_template(two) == CUSTOM
    assert offer_template({"@type": "Offer"}) == CUSTOM


def test_backoff_grows_never_below_half_a_step_and_is_capped() -> None:
    rand = random.Random(7).random
    waits = [backoff_delay(n, 2.0, 60.0, rand) for n in range(1, 12)]
    for n, w in enumerate(waits, start=1):
        step = min(60.0, 2.0 * 2 ** (n - 1))
        assert step / 2 <= w <= step
    assert backoff_delay(1, 2.0, 60.0, lambda: 0.0) == 1.0
    assert backoff_delay(50, 2.0, 60.0, lambda: 1.0) == 60.0


def _builder(
    n: int, participant: str = ALICE, base: str = A_URL, prefix: str = "urn:ds:live"
) -> CatalogBuilder:
    items = []
    for i in range(n):
        did = f"{prefix}-{i:03d}"
        template = "n-times-usage" if i % 2 else "purpose-restricted"
        params = {"max": "5"} if i % 2 else {"purpose": "dpv:ScientificResearch"}
        offer = fill(template, params, policy_id=f"urn:uuid:offer-{i:03d}")
        items.append(
            CatalogDataset(
                id=did,
                offers=(KnownOffer(offer, did),),
                title=f"Live sensor feed {i}",
                description="Particulate matter per minute",
                keywords=("air", "sensor"),
            )
        )
    return CatalogBuilder(
        catalog_id=f"{base}#catalog",
        participant_id=participant,
        service=DataService(id=f"{base}#dsp", endpoint_url=base),
        datasets=items,
    )


class BuilderPeer:
    """Providers' DSP catalog endpoints without the sockets: the connector's catalog builder
    answers each request for the broker, with its pages and Link headers (``builder``: alice's;
    ``others``: by DSP base URL)."""

    def __init__(
        self,
        builder: CatalogBuilder | None,
        *,
        next_elsewhere: bool = False,
        others: dict[str, CatalogBuilder] | None = None,
    ) -> None:
        self.builder = builder
        self.others = others or {}
        self.next_elsewhere = next_elsewhere
        self.calls: list[str] = []

    async def post(self, url: str, payload: Any) -> Delivery:
        self.calls.append(url)
        assert payload["@type"] == "CatalogRequestMessage"
        base = url.split("/catalog/request", 1)[0]
        builder = self.builder if base == A_URL else self.others[base]
        if builder is None:
            return Delivery(False, False, None, None, "ClientConnectorError: refused")
        query = parse_qs(urlsplit(url).query)
        here = f"{base}/catalog/request?pageSize={query['pageSize'][0]}"
        page = builder.catalog(
            Requester.of(BROKER_ID),
            datetime.now(UTC),
            page_size=int(query["pageSize"][0]),
            cursor=query.get("cursor", [None])[0],
            base_url=here,
        )
        # as a connector links its next page: the cursor only (the crawler keeps its pageSize)
        nxt = page.next_cursor and f"{base}/catalog/request?cursor={page.next_cursor}"
        if nxt and self.next_elsewhere:
            nxt = nxt.replace("alice.example", "bob.example")
        return Delivery(True, False, 200, page.wire, "", next_url=nxt or None)

    async def close(self) -> None:
        pass


def crawler(broker: Broker, peer: BuilderPeer, clock: Clock, **settings: Any) -> Crawler:
    return Crawler(
        broker.store,
        peer,
        CrawlSettings(**{"page_size": 4, **settings}),
        ttl=broker.settings.ttl,
        indexed=broker.reindex,
        clock=clock,
        rand=lambda: 0.5,
    )


async def test_crawl_indexes_every_page_for_search_filters_and_sparql(broker: Broker, clock: Clock) -> None:
    described = description(
        ALICE, A_URL, [{"id": "urn:ds:live-000", "title": "Described feed", "keywords": ["described"]}]
    )
    await broker.register(ALICE, described, TURTLE)
    peer = BuilderPeer(_builder(10))
    c = crawler(broker, peer, clock)
    assert await c.tick() == 1
    await c.wait()
    assert len(peer.calls) == 3  # 4 + 4 + 2 datasets, every page followed
    page = await broker.search(SearchQuery(text="particulate", limit=50))
    assert page.total == 10 and {h.source for h in page.hits} == {"catalog"}
    # the description's entry of a dataset the live catalog lists is left out of search
    assert (await broker.search(SearchQuery(text="described"))).total == 0
    n_times = await broker.search(SearchQuery(filters={"template": ["n-times-usage"]}, limit=50))
    assert sorted(h.dataset_id for h in n_times.hits) == [f"urn:ds:live-{i:03d}" for i in range(1, 10, 2)]
    status = (await broker.crawls())[0].view()
    assert (status["state"], status["datasets"], status["pages"]) == ("crawled", 10, 3)
    result = await broker.index.query(
        "PREFIX odrl: <http://www.w3.org/ns/odrl/2/> PREFIX dcat: <http://www.w3.org/ns/dcat#> "
        "SELECT (COUNT(DISTINCT ?d) AS ?n) WHERE { ?c a dcat:Catalog ; dcat:dataset ?d . "
        "?d odrl:hasPolicy/odrl:permission/odrl:constraint/odrl:leftOperand odrl:count }"
    )
    assert result.rows[0][0].value == "5"
    # not due again before the interval; due again after it
    assert await c.tick() == 0
    clock.now += 301
    await broker.register(ALICE, described, TURTLE)  # a heartbeat: still available
    assert await c.tick() == 1
    await c.wait()
    # a catalog of someone else's participant is refused; the last good crawl stays indexed
    peer.builder = _builder(3, participant="EV:keyid:66")
    clock.now += 301
    await broker.register(ALICE, described, TURTLE)
    await c.tick()
    await c.wait()
    status = (await broker.crawls())[0].view()
    assert status["state"] == "failing" and "not the registrant's" in status["error"]
    assert (await broker.search(SearchQuery(text="particulate"))).total == 10


async def test_a_failing_connector_backs_off(broker: Broker, clock: Clock) -> None:
    await broker.register(ALICE, description(ALICE, A_URL, []), TURTLE)
    peer = BuilderPeer(None)
    c = crawler(broker, peer, clock, backoff=2.0, backoff_cap=10.0)
    waits = []
    for _ in range(5):
        await c.tick()
        await c.wait()
        status = (await broker.crawls())[0]
        assert await c.tick() == 0  # not retried before its backoff
        waits.append(status.next_at - clock.now)
        clock.now = status.next_at
    assert len(peer.calls) == 5
    assert waits == [1.5, 3.0, 6.0, 7.5, 7.5]  # rand 0.5: 3/4 of min(cap, 2 * 2^(n-1))
    assert status.failures == 5 and "refused" in (status.error or "")
    # re-registering does not cut a failing connector's backoff short
    clock.now -= 1
    await broker.register(ALICE, description(ALICE, A_URL, [{"id": "urn:ds:x", "title": "X"}]), TURTLE)
    assert await c.tick() == 0


async def test_a_next_page_elsewhere_is_not_followed(broker: Broker, clock: Clock) -> None:
    await broker.register(ALICE, description(ALICE, A_URL, []), TURTLE)
    peer = BuilderPeer(_builder(6), next_elsewhere=True)
    c = crawler(broker, peer, clock)
    await c.tick()
    await c.wait()
    assert len(peer.calls) == 1
    status = (await broker.crawls())[0].view()
    assert status["state"] == "failing" and "not followed" in status["error"]


def test_read_catalog_refuses_what_is_not_a_catalog() -> None:
    with pytest.raises(CrawlFailed, match="not a DSP catalog"):
        read_catalog([{"@type": "Dataset"}], participant=ALICE, max_datasets=10)
    with pytest.raises(CrawlFailed, match="more than 2 datasets"):
        read_catalog(
            [_builder(3).catalog(Requester.of(BROKER_ID), datetime.now(UTC)).wire],
            participant=ALICE,
            max_datasets=2,
        )


async def test_the_catalog_of_catalogs_pages_through_every_crawled_catalog(
    broker: Broker, clock: Clock
) -> None:
    bob, b_url = "BB:keyid:02", "https://bob.example/dsp"
    await broker.register(ALICE, description(ALICE, A_URL, []), TURTLE)
    await broker.register(bob, description(bob, b_url, []), TURTLE)
    peer = BuilderPeer(_builder(4), others={b_url: _builder(3, bob, b_url, "urn:ds:bob")})
    c = crawler(broker, peer, clock)
    await c.tick()
    await c.wait()
    app = broker_app(
        broker,
        FixedTokens({"tok-carol": "CC:keyid:03"}),
        limits=DEFAULT_LIMITS,
        body_bytes=1 << 20,
        client_certs=ClientCertificates("none"),
    )
    message = {"@context": [DSP_CONTEXT_URL], "@type": "CatalogRequestMessage"}
    found: list[tuple[str, str]] = []
    async with TestClient(TestServer(app)) as http:
        resp = await http.post("/catalog/request", json=message)
        assert resp.status == 404  # no DAT: as at a connector
        assert_valid(await resp.json(), "catalog-error")
        url: str | None = "/catalog/request?pageSize=3"
        pages = 0
        while url:
            resp = await http.post(url, json=message, headers={"Authorization": "Bearer tok-carol"})
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            assert_valid(body, "catalog")
            found += [(cat["participantId"], d["@id"]) for cat in body["catalog"] for d in cat["dataset"]]
            nxt = resp.links.get("next")
            url = str(nxt["url"].relative()) if nxt else None
            pages += 1
        resp = await http.post(
            "/catalog/request?cursor=bm9wZQ", json=message, headers={"Authorization": "Bearer tok-carol"}
        )
        assert resp.status == 400
        assert_valid(await resp.json(), "catalog-error")
    assert pages == 3
    assert sorted(found) == sorted(
        [(ALICE, f"urn:ds:live-{i:03d}") for i in range(4)] + [(bob, f"urn:ds:bob-{i:03d}") for i in range(3)]
    )

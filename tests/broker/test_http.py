"""The broker's HTTP edge: authentication, ownership (403 with the reason), malformed, oversized
and hostile input (4xx with a reason, never a 500), search parameters, the SPARQL Protocol."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from broker_testlib import FixedTokens, description
from rdflib import RDF, Graph

from connector.broker.app import broker_app
from connector.broker.service import Broker
from connector.http.clientcert import ClientCertificates
from connector.http.limits import DEFAULT_LIMITS
from connector.selfdescription import validate_ids
from connector.vocab import IDS

ALICE, BOB = "AA:keyid:01", "BB:keyid:02"
A_URL, B_URL = "https://alice.example/dsp", "https://bob.example/dsp"
TOKENS = {"tok-alice": ALICE, "tok-bob": BOB}
WEATHER = {
    "id": "urn:ds:weather",
    "title": "Weather observations",
    "keywords": ["climate"],
    "media_type": "text/csv",
}
STATIONS = {"id": "urn:ds:stations", "title": "Stations", "keywords": ["climate"]}
TTL = {"Content-Type": "text/turtle"}
BODY_BYTES = 256 * 1024


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


@pytest.fixture
async def http(broker: Broker) -> AsyncIterator[TestClient]:
    app = broker_app(
        broker,
        FixedTokens(TOKENS),
        limits=DEFAULT_LIMITS,
        body_bytes=BODY_BYTES,
        client_certs=ClientCertificates("none"),
    )
    async with TestClient(TestServer(app)) as client:
        yield client


async def _register(http: TestClient, token: str, body: bytes, **headers: str) -> tuple[int, dict]:
    resp = await http.post("/registrations", data=body, headers=auth(token, **(headers or TTL)))
    return resp.status, await resp.json()


async def test_register_search_and_unregister(http: TestClient) -> None:
    status, entry = await _register(http, "tok-alice", description(ALICE, A_URL, [WEATHER]))
    assert status == 201 and entry["participant"] == ALICE and entry["available"]
    status, again = await _register(http, "tok-alice", description(ALICE, A_URL, [WEATHER]))
    assert status == 200 and again["id"] == entry["id"]
    resp = await http.get("/search", params={"q": "weather"})
    found = await resp.json()
    assert found["total"] == 1
    assert found["results"][0]["dataset"] == "urn:ds:weather"
    assert found["results"][0]["endpoint"] == A_URL
    assert (await http.get(f"/registrations/{entry['id']}")).status == 200
    resp = await http.delete(f"/registrations/{entry['id']}", headers=auth("tok-alice"))
    assert resp.status == 204
    assert (await (await http.get("/search")).json())["total"] == 0
    assert (await http.get(f"/registrations/{entry['id']}")).status == 404


async def test_a_dat_is_required_and_checked(http: TestClient) -> None:
    body = description(ALICE, A_URL, [WEATHER])
    for headers in (
        {},
        {"Authorization": "Basic x"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer forged"},
    ):
        resp = await http.post("/registrations", data=body, headers={**TTL, **headers})
        assert resp.status == 401
        assert (await resp.json())["error"]
    # two Authorization headers count as none
    resp = await http.post(
        "/registrations",
        data=body,
        headers=[
            ("Content-Type", "text/turtle"),
            ("Authorization", "Bearer tok-alice"),
            ("Authorization", "Bearer tok-bob"),
        ],
    )
    assert resp.status == 401


async def test_overwriting_another_participants_registration_is_403(http: TestClient) -> None:
    status, entry = await _register(http, "tok-alice", description(ALICE, A_URL, [WEATHER]))
    assert status == 201
    status, refused = await _register(http, "tok-bob", description(ALICE, A_URL, [STATIONS]))
    assert status == 403 and "not about the token's subject" in refused["error"]
    status, refused = await _register(http, "tok-bob", description(BOB, A_URL, [STATIONS]))
    assert status == 403 and "registered by another participant" in refused["error"]
    resp = await http.delete(f"/registrations/{entry['id']}", headers=auth("tok-bob"))
    assert resp.status == 403
    found = await (await http.get("/search")).json()
    assert [r["dataset"] for r in found["results"]] == ["urn:ds:weather"]


@pytest.mark.parametrize(
    "body, content_type, status, reason",
    [
        (b"@prefix : <", "text/turtle", 400, "invalid Turtle"),
        (b"\xff\xfe", "text/turtle", 400, "not UTF-8"),
        (b"{", "application/ld+json", 400, "not JSON"),
        (b'{"a": NaN}', "application/ld+json", 400, ""),
        (b"[" * 500 + b"]" * 500, "application/ld+json", 400, "nested"),
        (
            json.dumps({"@context": "http://127.0.0.1:1/evil.jsonld", "@id": "urn:x"}).encode(),
            "application/ld+json",
            400,
            "",
        ),
        (b"<urn:a> <urn:b> <urn:c> .", "text/plain", 400, "send text/turtle"),
        (b"<urn:a> <urn:b> <urn:c> .", "text/turtle", 400, "no connector"),
        (b"x" * (BODY_BYTES + 1), "text/turtle", 413, "exceeds"),
    ],
)
async def test_bad_bodies_are_refused_with_a_reason(
    http: TestClient, body: bytes, content_type: str, status: int, reason: str
) -> None:
    resp = await http.post(
        "/registrations", data=body, headers=auth("tok-alice", **{"Content-Type": content_type})
    )
    assert resp.status == status
    answer = await resp.json()
    text = answer["error"] + " ".join(answer.get("problems", []))
    assert reason in text


async def test_bad_search_parameters_are_400(http: TestClient) -> None:
    for params in (
        {"limit": "0"},
        {"limit": "x"},
        {"offset": "-1"},
        {"q": ["a", "b"]},
        {"sort": "x"},
        {"sort": ["title", "title"]},
        {"order": "x"},
        {"all": "maybe"},
        {"q": "x" * 2000},
    ):
        resp = await http.get("/search", params=params)
        assert resp.status == 400, params
        assert (await resp.json())["error"]


async def test_search_filters_over_http(http: TestClient) -> None:
    await _register(http, "tok-alice", description(ALICE, A_URL, [WEATHER]))
    await _register(http, "tok-bob", description(BOB, B_URL, [STATIONS]))
    both = await (await http.get("/search", params={"q": "climate"})).json()
    assert both["total"] == 2
    csv_only = await (await http.get("/search", params={"q": "climate", "format": "text/csv"})).json()
    assert [r["dataset"] for r in csv_only["results"]] == ["urn:ds:weather"]


QUERY = (
    "PREFIX dcat: <http://www.w3.org/ns/dcat#> PREFIX dct: <http://purl.org/dc/terms/> "
    "SELECT ?d ?t WHERE { ?d a dcat:Dataset ; dct:title ?t } ORDER BY ?d"
)


async def test_sparql_protocol(http: TestClient) -> None:
    await _register(http, "tok-alice", description(ALICE, A_URL, [WEATHER]))
    await _register(http, "tok-bob", description(BOB, B_URL, [STATIONS]))
    resp = await http.get("/sparql", params={"query": QUERY})
    assert resp.status == 200 and resp.content_type == "application/sparql-results+json"
    rows = (await resp.json(content_type=None))["results"]["bindings"]
    assert [r["d"]["value"] for r in rows] == ["urn:ds:stations", "urn:ds:weather"]
    resp = await http.post(
        "/sparql", data=QUERY, headers={"Content-Type": "application/sparql-query", "Accept": "text/csv"}
    )
    assert resp.status == 200 and resp.content_type == "text/csv"
    table = list(csv.reader(io.StringIO(await resp.text())))
    assert table[0] == ["d", "t"] and table[2] == ["urn:ds:weather", "Weather observations"]
    resp = await http.post(
        "/sparql", data={"query": QUERY}, headers={"Accept": "application/sparql-results+xml"}
    )
    assert resp.status == 200 and "<uri>urn:ds:weather</uri>" in await resp.text()
    resp = await http.get(
        "/sparql",
        params={"query": "CONSTRUCT { ?d ?p ?o } WHERE { ?d ?p ?o } LIMIT 3"},
        headers={"Accept": "application/n-triples"},
    )
    assert resp.status == 200 and len((await resp.text()).strip().splitlines()) == 3
    resp = await http.get("/sparql", params={"query": "ASK { ?s ?p ?o }"})
    assert (await resp.json(content_type=None))["boolean"] is True


@pytest.mark.parametrize(
    "method, kwargs, status, reason",
    [
        (
            "POST",
            {
                "data": "INSERT DATA { <urn:a> <urn:b> <urn:c> }",
                "headers": {"Content-Type": "application/sparql-update"},
            },
            400,
            "read-only",
        ),
        ("POST", {"data": {"update": "CLEAR ALL"}}, 400, "read-only"),
        ("GET", {"params": {"query": "DROP ALL"}}, 400, "read-only"),
        (
            "GET",
            {"params": {"query": "SELECT * WHERE { SERVICE <http://127.0.0.1:1/> { ?s ?p ?o } }"}},
            400,
            "SERVICE",
        ),
        ("GET", {"params": {"query": "SELECT ?x WHERE {"}}, 400, "not a SPARQL query"),
        ("GET", {}, 400, "one query"),
        ("GET", {"params": {"query": "ASK {}", "default-graph-uri": "urn:g"}}, 400, "not supported"),
        (
            "GET",
            {"params": {"query": "SELECT * WHERE { ?s ?p ?o }"}, "headers": {"Accept": "image/png"}},
            406,
            "",
        ),
        ("POST", {"data": "ASK {}", "headers": {"Content-Type": "text/plain"}}, 415, ""),
        ("POST", {"data": b"\xff", "headers": {"Content-Type": "application/sparql-query"}}, 400, "UTF-8"),
    ],
)
async def test_sparql_refusals(http: TestClient, method: str, kwargs: dict, status: int, reason: str) -> None:
    resp = await http.request(method, "/sparql", **kwargs)
    assert resp.status == status
    assert reason in (await resp.json())["error"]


async def test_the_broker_describes_itself_and_lists_connectors(http: TestClient) -> None:
    hostile = {"id": "urn:ds:x", "title": "<script>alert(1)</script> weather", "keywords": ["climate"]}
    await _register(http, "tok-alice", description(ALICE, A_URL, [hostile]))
    resp = await http.get("/", headers={"Accept": "text/turtle"})
    assert resp.status == 200 and resp.content_type == "text/turtle"
    g = Graph().parse(data=await resp.text(), format="turtle")
    assert (None, RDF.type, IDS.Broker) in g
    conforms, report = validate_ids(g)  # its own description passes the IDS shapes
    assert conforms, report
    resp = await http.get("/", params={"q": "weather"}, headers={"Accept": "text/html"})
    page = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Connector of AA:keyid:01" in page and "1 datasets found" in page
    resp = await http.get("/", params={"q": "'><script>"}, headers={"Accept": "text/html"})
    assert "<script>" not in await resp.text()
    assert (await http.get("/", headers={"Accept": "image/png"})).status == 406

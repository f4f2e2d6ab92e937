"""The broker's core on SQLite and PostgreSQL: registration, ownership, replacement, keyword
search with filters and paging, availability, SPARQL kept in step with the store."""

from __future__ import annotations

import dataclasses
import json

import pytest
from broker_testlib import description
from conftest import Clock

from connector.broker.description import DescriptionRefused
from connector.broker.service import Broker, NotYours
from connector.broker.sparql import SparqlIndex, SparqlRefused, serialize_result
from connector.broker.store import OwnedByAnother, SearchQuery, prune_changes
from connector.selfdescription import JSON_LD, TURTLE
from connector.store import Store

ALICE, BOB = "AA:keyid:01", "BB:keyid:02"
A_URL, B_URL = "https://alice.example/dsp", "https://bob.example/dsp"
WEATHER = {
    "id": "urn:ds:weather",
    "title": "Weather observations",
    "description": "Hourly temperature and rain, 2010-2024",
    "keywords": ["climate", "rain"],
    "media_type": "text/csv",
}
TRAFFIC = {
    "id": "urn:ds:traffic",
    "title": "Traffic counts",
    "description": "Vehicles per hour on motorways",
    "keywords": ["mobility"],
    "media_type": "application/json",
}
STATIONS = {"id": "urn:ds:stations", "title": "Weather stations", "keywords": ["climate"]}


async def test_register_then_find_by_keyword(broker: Broker) -> None:
    done = await broker.register(ALICE, description(ALICE, A_URL, [WEATHER, TRAFFIC]), TURTLE)
    assert done.created and done.registration.owner == ALICE
    assert done.registration.endpoint == A_URL and done.registration.datasets == 2
    page = await broker.search(SearchQuery(text="temperature"))
    assert [h.dataset_id for h in page.hits] == ["urn:ds:weather"]
    hit = page.hits[0]
    assert (hit.endpoint, hit.participant, hit.available) == (A_URL, ALICE, True)
    # whole words, or prefixes with *; several words all required; case-insensitive
    assert (await broker.search(SearchQuery(text="MOTORWAY"))).total == 0
    assert [h.dataset_id for h in (await broker.search(SearchQuery(text="MOTORWAY*"))).hits] == [
        "urn:ds:traffic"
    ]
    assert (await broker.search(SearchQuery(text="weather mobility"))).total == 0
    assert [h.dataset_id for h in (await broker.search(SearchQuery(text="rain"))).hits] == ["urn:ds:weather"]


async def test_json_ld_registration_reads_the_same(broker: Broker) -> None:
    await broker.register(ALICE, description(ALICE, A_URL, [WEATHER], JSON_LD), JSON_LD)
    assert [h.title for h in (await broker.search(SearchQuery(text="hourly"))).hits] == [
        "Weather observations"
    ]


async def test_filters_and_paging(broker: Broker) -> None:
    await broker.register(ALICE, description(ALICE, A_URL, [WEATHER, TRAFFIC]), TURTLE)
    await broker.register(BOB, description(BOB, B_URL, [STATIONS]), TURTLE)
    csv_only = await broker.search(SearchQuery(filters={"format": ["text/csv"]}))
    assert [h.dataset_id for h in csv_only.hits] == ["urn:ds:weather"]
    climate = await broker.search(SearchQuery(text="climate", filters={"format": ["text/csv"]}))
    assert [h.dataset_id for h in climate.hits] == ["urn:ds:weather"]
    everything = await broker.search(SearchQuery(limit=2))
    assert everything.total == 3 and len(everything.hits) == 2
    rest = await broker.search(SearchQuery(limit=2, offset=2))
    assert len(rest.hits) == 1
    assert {h.dataset_id for h in everything.hits + rest.hits} == {
        "urn:ds:weather",
        "urn:ds:traffic",
        "urn:ds:stations",
    }
    by_title = await broker.search(SearchQuery(sort="title"))
    assert [h.title for h in by_title.hits] == ["Traffic counts", "Weather observations", "Weather stations"]
    reverse = await broker.search(SearchQuery(sort="-title", limit=1))
    assert [h.title for h in reverse.hits] == ["Weather stations"]


async def test_hostile_query_text_is_only_words(broker: Broker) -> None:
    await broker.register(ALICE, description(ALICE, A_URL, [WEATHER]), TURTLE)
    for text in [
        '"',
        "weather' OR 1=1 --",
        "NEAR(weather rain)",
        "title:*",
        "') ; DROP TABLE x",
        "weather*",
        "&|!:()",
        "\x00",
    ]:
        page = await broker.search(SearchQuery(text=text))
        assert page.total in (0, 1)
    assert (await broker.search(SearchQuery(text="weather' OR 1=1 --"))).total == 0


async def test_reregistration_replaces(broker: Broker) -> None:
    await broker.register(ALICE, description(ALICE, A_URL, [WEATHER, TRAFFIC]), TURTLE)
    again = await broker.register(ALICE, description(ALICE, A_URL, [STATIONS]), TURTLE)
    assert not again.created
    assert [h.dataset_id for h in (await broker.search(SearchQuery())).hits] == ["urn:ds:stations"]
    assert (await broker.search(SearchQuery(text="traffic"))).total == 0
    assert len(await broker.registrations()) == 1


async def test_nobody_registers_or_removes_another_participants_connector(broker: Broker) -> None:
    # Bob sends Alice's description: it is not about him
    with pytest.raises(NotYours, match="not about the token's subject"):
        await broker.register(BOB, description(ALICE, A_URL, [WEATHER]), TURTLE)
    done = await broker.register(ALICE, description(ALICE, A_URL, [WEATHER]), TURTLE)
    # Bob describes himself at Alice's connector IRI: the entry is Alice's
    with pytest.raises(OwnedByAnother):
        await broker.register(BOB, description(BOB, A_URL, [TRAFFIC]), TURTLE)
    with pytest.raises(OwnedByAnother):
        await broker.unregister(BOB, done.registration.id)
    assert [h.dataset_id for h in (await broker.search(SearchQuery())).hits] == ["urn:ds:weather"]
    await broker.unregister(ALICE, done.registration.id)
    assert (await broker.search(SearchQuery())).total == 0
    with pytest.raises(KeyError):
        await broker.unregister(ALICE, done.registration.id)


async def test_not_renewed_becomes_unavailable(broker: Broker, clock: Clock) -> None:
    await broker.register(ALICE, description(ALICE, A_URL, [WEATHER]), TURTLE)
    clock.now += 30
    await broker.register(BOB, description(BOB, B_URL, [STATIONS]), TURTLE)
    clock.now += 45  # Alice's entry is 75 s old, the ttl 60 s
    assert [h.dataset_id for h in (await broker.search(SearchQuery(text="weather"))).hits] == [
        "urn:ds:stations"
    ]
    with_stale = await broker.search(SearchQuery(text="weather", include_unavailable=True))
    assert {(h.dataset_id, h.available) for h in with_stale.hits} == {
        ("urn:ds:stations", True),
        ("urn:ds:weather", False),
    }
    views = {r.owner: r.view(clock.now, 60.0)["available"] for r in await broker.registrations()}
    assert views == {ALICE: False, BOB: True}
    await broker.register(ALICE, description(ALICE, A_URL, [WEATHER]), TURTLE)  # renewal
    assert (await broker.search(SearchQuery(text="weather"))).total == 2


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"<urn:a> <urn:b> <urn:c> .", "no connector"),
        (
            b"@prefix ids: <https://w3id.org/idsa/core/> . <https://x.example/> a ids:BaseConnector .",
            "no endpoint",
        ),
        (
            b"@prefix ids: <https://w3id.org/idsa/core/> . <https://x.example/> a ids:BaseConnector . "
            b"<https://y.example/> a ids:TrustedConnector .",
            "2 connectors",
        ),
        (b"this is not turtle", "invalid Turtle"),
    ],
)
async def test_what_cannot_be_indexed_is_refused(broker: Broker, body: bytes, problem: str) -> None:
    with pytest.raises(DescriptionRefused) as refused:
        await broker.register(ALICE, body, TURTLE)
    assert any(problem in p for p in refused.value.problems)


async def test_sparql_follows_registrations(broker: Broker) -> None:
    query = (
        "PREFIX dct: <http://purl.org/dc/terms/> PREFIX dcat: <http://www.w3.org/ns/dcat#> "
        "SELECT ?d ?t WHERE { ?d a dcat:Dataset ; dct:title ?t } ORDER BY ?d"
    )
    await broker.register(ALICE, description(ALICE, A_URL, [WEATHER, TRAFFIC]), TURTLE)
    reg = (await broker.register(BOB, description(BOB, B_URL, [STATIONS]), TURTLE)).registration
    result = await broker.index.query(query)
    assert [str(r[0].value) for r in result.rows if r[0] is not None] == [
        "urn:ds:stations",
        "urn:ds:traffic",
        "urn:ds:weather",
    ]
    body = json.loads(serialize_result(result, "application/sparql-results+json"))
    assert body["head"]["vars"] == ["d", "t"] and len(body["results"]["bindings"]) == 3
    await broker.unregister(BOB, reg.id)
    assert len((await broker.index.query(query)).rows) == 2
    # a fresh broker (a restart, another replica) rebuilds the index from the store
    other = Broker(broker.store, SparqlIndex(), broker.settings, clock=broker.clock)
    await other.start()
    assert len((await other.index.query(query)).rows) == 2


async def test_sparql_refuses_updates_service_and_big_results(broker: Broker) -> None:
    await broker.register(ALICE, description(ALICE, A_URL, [WEATHER]), TURTLE)
    with pytest.raises(SparqlRefused, match="read-only"):
        await broker.index.query("INSERT DATA { <urn:a> <urn:b> <urn:c> }")
    with pytest.raises(SparqlRefused, match="read-only"):
        await broker.index.query("PREFIX x: <urn:x#> DELETE WHERE { ?s ?p ?o }")
    with pytest.raises(SparqlRefused, match="SERVICE"):
        await broker.index.query("SELECT * WHERE { service <http://127.0.0.1:1/> { ?s ?p ?o } }")
    # the word inside a string or an IRI is not the keyword
    await broker.index.query('SELECT * WHERE { ?s ?p "SERVICE" . ?s ?q <urn:SERVICE> }')
    with pytest.raises(SparqlRefused, match="more than 100 rows"):
        await broker.index.query("SELECT * WHERE { ?s ?p ?o . ?a ?b ?c }")
    with pytest.raises(SparqlRefused, match="not a SPARQL query"):
        await broker.index.query("SELECT WHERE")
    assert (await broker.index.query("ASK { ?s ?p ?o }")).boolean


async def test_a_renewal_with_the_same_description_only_renews(broker: Broker, clock: Clock) -> None:
    first = await broker.register(ALICE, description(ALICE, A_URL, [WEATHER]), TURTLE)
    clock.now += 10
    again = await broker.register(ALICE, description(ALICE, A_URL, [WEATHER]), TURTLE)
    assert not again.created
    assert again.registration.renewed_at == clock.now
    assert again.registration.registered_at == first.registration.registered_at
    assert again.registration.datasets == 1


@pytest.mark.parametrize("mode", ["lenient", "strict"])
async def test_ids_shape_validation(broker: Broker, mode: str) -> None:
    settings = dataclasses.replace(broker.settings, validation=mode)
    checked = Broker(broker.store, broker.index, settings, clock=broker.clock)
    # conforming: indexed without violations in both modes
    done = await checked.register(ALICE, description(ALICE, A_URL, [WEATHER]), TURTLE)
    assert done.registration.violations == ()
    # a connector without the model versions and security profile the shapes require
    sloppy = (
        b"@prefix ids: <https://w3id.org/idsa/core/> .\n"
        b"@prefix dspace: <https://w3id.org/dspace/2025/1/> .\n"
        b'<https://bob.example/> a ids:BaseConnector ; dspace:participantId "'
        + BOB.encode()
        + b'" ; ids:hasDefaultEndpoint <https://bob.example/#dsp> .\n'
        b"<https://bob.example/#dsp> a ids:ConnectorEndpoint ; "
        b"ids:accessURL <https://bob.example/dsp> .\n"
    )
    if mode == "strict":
        with pytest.raises(DescriptionRefused) as refused:
            await checked.register(BOB, sloppy, TURTLE)
        assert "strict mode" in refused.value.problems[0] and len(refused.value.problems) > 1
        assert len(await checked.registrations()) == 1
    else:
        lenient = await checked.register(BOB, sloppy, TURTLE)
        assert lenient.registration.violations
        assert any("https://bob.example/" in v for v in lenient.registration.violations)


async def test_a_plain_string_key_value_is_coerced(broker: Broker) -> None:
    body = description(ALICE, A_URL, [WEATHER]) + (
        b"\n<https://alice.example/dsp/> <https://w3id.org/idsa/core/publicKey> <urn:key> .\n"
        b'<urn:key> <https://w3id.org/idsa/core/keyValue> "QUJD" .\n'
        b'<urn:key2> <https://w3id.org/idsa/core/keyValue> "not base64!" .\n'
    )
    done = await broker.register(ALICE, body, TURTLE)
    assert done.coerced == ("urn:key: ids:keyValue typed xsd:base64Binary",)
    result = await broker.index.query(
        "SELECT ?v WHERE { <urn:key> <https://w3id.org/idsa/core/keyValue> ?v }"
    )
    value = result.rows[0][0]
    assert value is not None and value.datatype.value.endswith("#base64Binary")  # type: ignore[union-attr]


async def test_replicas_on_one_store_answer_the_same(broker: Broker, clock: Clock, db_url: str) -> None:
    """Two brokers on one database (replicas): each sees the other's registrations in search at
    once and in SPARQL after a sync; a removal reaches the other's index too."""
    other_store = await Store.open(db_url)
    try:
        other = Broker(other_store, SparqlIndex(), broker.settings, clock=clock)
        await other.start()
        reg = (await broker.register(ALICE, description(ALICE, A_URL, [WEATHER]), TURTLE)).registration
        await other.register(BOB, description(BOB, B_URL, [STATIONS]), TURTLE)
        for b in (broker, other):
            assert {h.dataset_id for h in (await b.search(SearchQuery(text="weather"))).hits} == {
                "urn:ds:weather",
                "urn:ds:stations",
            }
        ask = "ASK { <urn:ds:weather> ?p ?o }"
        assert not (await other.index.query(ask)).boolean
        clock.now += 1
        assert await other.sync() >= 1
        assert (await other.index.query(ask)).boolean
        assert await other.sync() == 0  # each change once
        await broker.unregister(ALICE, reg.id)
        clock.now += 1
        await other.sync()
        assert not (await other.index.query(ask)).boolean
        assert (await other.index.query("ASK { <urn:ds:stations> ?p ?o }")).boolean
        assert await prune_changes(broker.store, clock.now + 1) >= 3  # saved twice, removed once
        assert await prune_changes(broker.store, clock.now + 1) == 0
        clock.now += 3600  # a replica that missed the window rebuilds
        assert await other.sync() == -1
        assert (await other.index.query("ASK { <urn:ds:stations> ?p ?o }")).boolean
    finally:
        await other_store.close()

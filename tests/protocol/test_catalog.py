"""The catalog a requester sees: filtered by the offers' compiled access policies, paginated with
Link headers, valid against the official catalog and dataset schemas, and cheap per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from protocol_testlib import CONSUMER, NOW, PROVIDER, assert_wire_valid, offer

from connector.odrl.compile import Decider, DecisionRequest, compile_policy
from connector.odrl.parse import load_policy
from connector.protocol import messages as m
from connector.protocol.catalog import CatalogBuilder, CatalogDataset, CatalogDistribution
from connector.protocol.decide import KnownOffer, Requester
from connector.protocol.errors import ProtocolError

DSP = ["https://w3id.org/dspace/2025/1/context.jsonld", "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"]
MEMBER = "https://w3id.org/idsa/code/USER"
SERVICE = m.DataService(id="urn:uuid:service-1", endpoint_url="https://provider.example/dsp")
PUSH_SERVICE = m.DataService(id="urn:uuid:service-push", endpoint_url="https://push.example/dsp")
BASE = "https://provider.example/dsp/catalog/request"


class Counting:
    """A compiled decider that counts its decisions."""

    def __init__(self, decider: Decider) -> None:
        self.decider, self.calls = decider, 0

    def __call__(self, req: DecisionRequest) -> Any:
        self.calls += 1
        return self.decider(req)


MEMBERS_ONLY = Counting(
    compile_policy(
        load_policy(
            {
                "@context": DSP,
                "@type": "Set",
                "@id": "urn:access:members",
                "permission": [
                    {
                        "action": "use",
                        "constraint": [{"leftOperand": MEMBER, "operator": "eq", "rightOperand": "gold"}],
                    }
                ],
            }
        )
    )
)
ONLY_CONSUMER = Counting(
    compile_policy(
        load_policy(
            {
                "@context": DSP,
                "@type": "Set",
                "@id": "urn:access:consumer",
                "permission": [{"action": "use", "assignee": CONSUMER}],
            }
        )
    )
)

GOLD = Requester.of(CONSUMER, {MEMBER: "gold"})
STRANGER = Requester.of("did:web:stranger.example")


def dataset(i: int, access: Any = None, **extra: Any) -> CatalogDataset:
    did = f"urn:uuid:dataset-{i:02d}"
    return CatalogDataset(
        id=did, offers=(KnownOffer(offer(f"urn:uuid:offer-{i:02d}", target=None), did, access),), **extra
    )


def builder(datasets: list[CatalogDataset]) -> CatalogBuilder:
    return CatalogBuilder(
        catalog_id="urn:uuid:catalog-1",
        participant_id=PROVIDER,
        service=SERVICE,
        services=[PUSH_SERVICE],
        datasets=datasets,
    )


DATASETS = [
    dataset(0, title="Weather", description="Hourly observations", keywords=("weather", "open")),
    dataset(
        1,
        MEMBERS_ONLY,
        distributions=(CatalogDistribution(m.PULL), CatalogDistribution(m.PUSH, "urn:uuid:service-push")),
    ),
    dataset(2, ONLY_CONSUMER),
    CatalogDataset(
        id="urn:uuid:dataset-03",
        offers=(
            KnownOffer(offer("urn:uuid:offer-03a", target=None), "urn:uuid:dataset-03", MEMBERS_ONLY),
            KnownOffer(offer("urn:uuid:offer-03b", target="urn:uuid:dataset-03"), "urn:uuid:dataset-03"),
        ),
    ),
]


def ids_of(cat: m.Catalog) -> list[str]:
    return [d.id for d in cat.dataset or []]


def test_each_requester_sees_the_offers_its_access_policies_permit() -> None:
    b = builder(DATASETS)
    full = b.catalog(GOLD, NOW).catalog
    wire = assert_wire_valid(full)  # valid against catalog-schema.json
    assert ids_of(full) == [f"urn:uuid:dataset-0{i}" for i in range(4)]
    assert wire["participantId"] == PROVIDER
    d0 = wire["dataset"][0]
    assert d0["dct:title"] == "Weather" and d0["dcat:keyword"] == ["weather", "open"]
    assert d0["distribution"] == [
        {"@type": "Distribution", "format": "HttpData-PULL", "accessService": "urn:uuid:service-1"}
    ]
    assert [s["@id"] for s in wire["service"]] == ["urn:uuid:service-1", "urn:uuid:service-push"]
    assert all("target" not in o for d in wire["dataset"] for o in d["hasPolicy"])

    seen = b.catalog(STRANGER, NOW).catalog
    assert_wire_valid(seen)
    assert ids_of(seen) == ["urn:uuid:dataset-00", "urn:uuid:dataset-03"]
    assert [o["@id"] for o in seen.dataset[1].has_policy] == ["urn:uuid:offer-03b"]  # type: ignore[index]
    assert [s.id for s in seen.service or []] == ["urn:uuid:service-1"]

    not_member = Requester.of(CONSUMER, {MEMBER: "silver"})
    assert ids_of(b.catalog(not_member, NOW).catalog) == [
        "urn:uuid:dataset-00",
        "urn:uuid:dataset-02",
        "urn:uuid:dataset-03",
    ]


def test_an_empty_catalog_is_still_valid() -> None:
    b = builder([dataset(1, MEMBERS_ONLY)])
    page = b.catalog(STRANGER, NOW, base_url=BASE)
    wire = assert_wire_valid(page.catalog)
    assert "dataset" not in wire and page.links == []


def test_single_dataset_response() -> None:
    b = builder(DATASETS)
    ds = b.dataset("urn:uuid:dataset-01", GOLD, NOW)
    wire = assert_wire_valid(ds)  # valid against dataset-schema.json
    assert wire["@context"] == ["https://w3id.org/dspace/2025/1/context.jsonld"]
    assert wire["distribution"][1]["accessService"] == {
        "@id": "urn:uuid:service-push",
        "@type": "DataService",
        "endpointURL": "https://push.example/dsp",
    }
    for missing in ("urn:uuid:dataset-01", "urn:uuid:nope"):  # hidden and unknown look the same
        with pytest.raises(ProtocolError) as exc:
            b.dataset(missing, STRANGER, NOW)
        assert exc.value.status == 404 and exc.value.reasons == [f"no dataset {missing}"]


def pages(b: CatalogBuilder, who: Requester, size: int) -> Iterator[tuple[list[str], Any]]:
    cursor = None
    while True:
        page = b.catalog(who, NOW, page_size=size, cursor=cursor, base_url=BASE)
        assert_wire_valid(page.catalog)
        yield ids_of(page.catalog), page
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def test_pagination_forward_and_back() -> None:
    datasets = [dataset(i, MEMBERS_ONLY if i % 3 == 0 else None) for i in range(20)]
    b = builder(datasets)
    visible = [d.id for i, d in enumerate(datasets) if i % 3]
    got = list(pages(b, STRANGER, 5))
    assert [len(ids) for ids, _ in got] == [5, 5, 3]
    assert [x for ids, _ in got for x in ids] == visible
    first, second, last = (p for _, p in got)
    assert first.previous_cursor is None and first.links == [
        f'<{BASE}?cursor={first.next_cursor}>; rel="next"'
    ]
    assert len(second.links) == 2 and second.links[1].endswith('; rel="previous"')
    assert last.next_cursor is None and last.links[0].endswith('rel="previous"')
    # back from the last page
    link = last.links[0]
    cursor = parse_qs(urlparse(link[1 : link.index(">")]).query)["cursor"][0]
    back = b.catalog(STRANGER, NOW, page_size=5, cursor=cursor)
    assert ids_of(back.catalog) == got[1][0]
    assert back.next_cursor is not None and back.previous_cursor is not None
    assert ids_of(b.catalog(STRANGER, NOW, page_size=5, cursor=back.previous_cursor).catalog) == got[0][0]
    # with every dataset visible, pages are of the page size
    assert [len(ids) for ids, _ in pages(b, GOLD, 7)] == [7, 7, 6]


def test_pages_stay_stable_when_datasets_change() -> None:
    datasets = [dataset(i) for i in range(10)]
    page = builder(datasets).catalog(STRANGER, NOW, page_size=4)
    inserted = CatalogDataset(
        id="urn:uuid:dataset-00a",
        offers=(KnownOffer(offer("urn:uuid:offer-00a", target=None), "urn:uuid:dataset-00a"),),
    )
    changed = builder([dataset(i) for i in range(1, 10)] + [inserted])  # one removed, one added before
    nxt = changed.catalog(STRANGER, NOW, page_size=4, cursor=page.next_cursor)
    assert ids_of(nxt.catalog)[0] == "urn:uuid:dataset-04"


def test_bad_cursor_and_page_size() -> None:
    b = builder(DATASETS)
    for cursor in ("garbage!", "e30", "WyJzaWRld2F5cyIsIngiXQ"):
        with pytest.raises(ProtocolError, match="cursor") as exc:
            b.catalog(GOLD, NOW, cursor=cursor)
        assert exc.value.status == 400
    with pytest.raises(ProtocolError, match="page size"):
        b.catalog(GOLD, NOW, page_size=0)


def test_a_request_costs_one_compiled_decision_per_offer_and_no_rdf(monkeypatch: pytest.MonkeyPatch) -> None:
    b = builder(DATASETS)

    def no_rdf(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("RDF / JSON-LD work while answering a catalog request")

    import connector.odrl.parse as parse_module
    import connector.protocol.messages as messages_module

    monkeypatch.setattr(parse_module, "jsonld_to_graph", no_rdf)
    monkeypatch.setattr(messages_module, "jsonld_to_graph", no_rdf)
    before = MEMBERS_ONLY.calls, ONLY_CONSUMER.calls
    b.catalog(GOLD, NOW)
    assert (MEMBERS_ONLY.calls - before[0], ONLY_CONSUMER.calls - before[1]) == (2, 1)


def test_builder_refuses_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="names target"):
        builder([CatalogDataset(id="urn:a", offers=(KnownOffer(offer("urn:o", target="urn:b"), "urn:a"),))])
    with pytest.raises(ValueError, match="unknown service"):
        builder([dataset(1, distributions=(CatalogDistribution(m.PULL, "urn:uuid:elsewhere"),))])
    with pytest.raises(ValueError, match="unique"):
        builder([dataset(1), dataset(1)])

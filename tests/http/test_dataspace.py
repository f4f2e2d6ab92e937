"""Every page of a peer's catalog as one (connector.services.catalog.merge_pages): datasets and
nested catalogs joined, a nested catalog split by a page boundary joined again."""

from __future__ import annotations

from connector.http.outbound import same_endpoint
from connector.services.catalog import merge_pages


def test_pages_of_a_catalog_of_catalogs_are_joined() -> None:
    head = {"@id": "urn:broker", "@type": "Catalog", "participantId": "BR"}
    pages = [
        {
            **head,
            "catalog": [
                {"@id": "urn:a", "dataset": [{"@id": "a1"}]},
                {"@id": "urn:b", "dataset": [{"@id": "b1"}]},
            ],
        },
        {**head, "catalog": [{"@id": "urn:b", "dataset": [{"@id": "b2"}]}]},
        {**head, "catalog": [{"@id": "urn:c", "dataset": [{"@id": "c1"}]}]},
    ]
    merged = merge_pages(pages)
    assert {k: merged[k] for k in head} == head
    assert [(c["@id"], [d["@id"] for d in c["dataset"]]) for c in merged["catalog"]] == [
        ("urn:a", ["a1"]),
        ("urn:b", ["b1", "b2"]),
        ("urn:c", ["c1"]),
    ]
    assert "dataset" not in merged
    # the input pages are left as they were
    assert pages[0]["catalog"][1]["dataset"] == [{"@id": "b1"}]


def test_pages_of_a_connectors_catalog_are_joined() -> None:
    pages = [
        {"@id": "urn:p", "@type": "Catalog", "dataset": [{"@id": "d1"}]},
        {"@id": "urn:p", "@type": "Catalog", "dataset": [{"@id": "d2"}, "junk"]},
    ]
    merged = merge_pages(pages)
    assert [d["@id"] for d in merged["dataset"]] == ["d1", "d2"] and "catalog" not in merged


def test_a_next_page_is_followed_only_at_the_same_endpoint() -> None:
    first = "https://p.example/dsp/catalog/request"
    assert same_endpoint(f"{first}?cursor=x&pageSize=5", first)
    for elsewhere in (
        "https://q.example/dsp/catalog/request?cursor=x",
        "http://p.example/dsp/catalog/request",
        "https://p.example:8443/dsp/catalog/request",
        "https://p.example/other/catalog/request",
    ):
        assert not same_endpoint(elsewhere, first)

"""Ids in the management API's paths, end to end against a real connector process: any id,
percent-encoded as one path segment, reaches its resource (issue 9: an asset whose id has `{`
or `}` could not be deleted, the route did not match it; IRIs with `/` are common ids)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from dataspace_testlib import Connector, DataSpace

# absolute IRIs (as ids must be: `{` and `}` are refused by the id rule, connector/ids.py),
# with every character a path handles specially
IDS = [
    "https://example.com/data/set;1",
    "https://example.com/data/a?b=c#frag",
    "urn:asset:naïve-😀/ü",
    "https://example.com/100%25/x%2Fy%20",
    "urn:x:a:b+c&d=e",
]
# not an IRI, still routed to the handler (which answers 404 for a process id it does not know)
ROUTED_IDS = [*IDS, "urn:x:{a}:{b}", "set{1}"]


def seg(resource_id: str) -> str:
    return quote(resource_id, safe="")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connector]:
    space = DataSpace(tmp_path_factory.mktemp("openapi-ids"), tls=True)
    try:
        yield space.connector("ids", roles=("provider",))
    finally:
        space.close()


@pytest.mark.parametrize("asset_id", IDS)
def test_assets_with_any_id_are_read_listed_and_deleted(provider: Connector, asset_id: str) -> None:
    data = provider.data_dir / "ids.bin"
    data.write_bytes(b"x")
    status, made = provider.api(
        "POST", "/api/assets", {"id": asset_id, "dataAddress": {"type": "file", "path": str(data)}}
    )
    assert status == 201, made
    assert made["id"] == asset_id
    status, got = provider.api("GET", f"/api/assets/{seg(asset_id)}")
    assert (status, got["id"]) == (200, asset_id)
    status, listed = provider.api("GET", "/api/assets?limit=500")
    assert asset_id in [a["id"] for a in listed]
    status, _ = provider.api("DELETE", f"/api/assets/{seg(asset_id)}")
    assert status == 204
    status, err = provider.api("GET", f"/api/assets/{seg(asset_id)}")
    # the handler's 404 (the route matched), not the router's
    assert (status, err["error"]) == (404, "no such asset")


def test_policies_and_offers_with_iri_ids(provider: Connector) -> None:
    data = provider.data_dir / "ids.bin"
    data.write_bytes(b"x")
    asset_id, policy_id, offer_id = (
        "https://example.com/assets/a%7B1%7D",
        "https://example.com/p/1?v=2",
        "https://example.com/offers/ö/1#x",
    )
    assert (
        provider.api(
            "POST", "/api/assets", {"id": asset_id, "dataAddress": {"type": "file", "path": str(data)}}
        )[0]
        == 201
    )
    status, p = provider.api("POST", "/api/policies", {"id": policy_id, "template": "allow-usage"})
    assert status == 201, p
    status, o = provider.api(
        "POST",
        "/api/offers",
        {"id": offer_id, "assetIds": [asset_id], "accessPolicyId": policy_id, "contractPolicyId": policy_id},
    )
    assert status == 201, o
    assert provider.api("GET", f"/api/policies/{seg(policy_id)}")[1]["id"] == policy_id
    assert provider.api("GET", f"/api/offers/{seg(offer_id)}")[1]["id"] == offer_id
    status, err = provider.api("DELETE", f"/api/policies/{seg(policy_id)}")
    assert status == 409, err
    for path in (
        f"/api/offers/{seg(offer_id)}",
        f"/api/policies/{seg(policy_id)}",
        f"/api/assets/{seg(asset_id)}",
    ):
        assert provider.api("DELETE", path)[0] == 204, path
        assert provider.api("GET", path)[0] == 404, path


@pytest.mark.parametrize(
    "path",
    [
        "/api/agreements/{}",
        "/api/negotiations/{}",
        "/api/transfers/{}",
        "/api/transfers/{}/pull",
        "/api/vault/{}",
    ],
)
def test_process_routes_match_any_id(provider: Connector, path: str) -> None:
    for some_id in ROUTED_IDS:
        status, err = provider.api("GET", path.format(seg(some_id)))
        assert status == 404 and err["error"].startswith("no "), (some_id, err)
        assert err["error"] != "404: Not Found", some_id  # the router's own 404


def test_commands_on_process_routes_match_any_id(provider: Connector) -> None:
    for some_id in ROUTED_IDS:
        status, err = provider.api("POST", f"/api/negotiations/{seg(some_id)}/terminate", {"reason": "r"})
        assert status == 404 and some_id in err["error"], err
        status, err = provider.api("POST", f"/api/transfers/{seg(some_id)}/suspend")
        assert status == 404 and some_id in err["error"], err

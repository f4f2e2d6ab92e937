"""The management API in process, on a real store: input checks, secrets, OpenAPI, auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connector.http.client import DspClient
from connector.http.management import management_app
from connector.http.outbound import OutboundPolicy
from connector.runtime import ControlPlane
from connector.store import Store

KEY = "k" * 24


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[TestClient]:
    store = await Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    await store.migrate()

    async def no_token() -> str:
        raise RuntimeError("no peers in this test")

    dsp = DspClient(no_token, ssl_context=None, policy=OutboundPolicy())
    cp = ControlPlane(store, dsp, participant_id="urn:test:provider", dsp_url="http://127.0.0.1:9")
    client = TestClient(TestServer(management_app(cp, KEY)))
    await client.start_server()
    client.session.headers["X-Api-Key"] = KEY
    try:
        yield client
    finally:
        await client.close()
        await dsp.close()
        await store.close()


async def call(api: TestClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with api.request(method, path, json=body) as r:
        text = await r.text()
        return r.status, (await r.json()) if text else None


async def test_requires_the_api_key(api: TestClient) -> None:
    async with api.get("/api/assets", headers={"X-Api-Key": "wrong" * 5}) as r:
        assert r.status == 401
    async with api.get("/api/openapi.json", headers={"X-Api-Key": ""}) as r:
        doc = await r.json()
        assert r.status == 200 and doc["openapi"] == "3.1.0"
        assert "/api/negotiations" in doc["paths"] and "Asset" in doc["components"]["schemas"]


async def test_asset_secrets_are_stored_but_never_echoed(api: TestClient) -> None:
    status, a = await call(api, "POST", "/api/assets", {
        "id": "urn:asset:1", "title": "one",
        "dataAddress": {"type": "http", "url": "https://internal.example/data",
                        "headers": {"Authorization": "Bearer s3cr3t"}}})
    assert status == 201, a
    assert "s3cr3t" not in str(a)
    status, got = await call(api, "GET", "/api/assets/urn:asset:1")
    assert status == 200 and "s3cr3t" not in str(got)
    status, _ = await call(api, "POST", "/api/assets", {"id": "urn:asset:1", "dataAddress": {
        "type": "http", "url": "https://internal.example/other"}})
    assert status == 409
    status, listed = await call(api, "GET", "/api/assets")
    assert [x["id"] for x in listed] == ["urn:asset:1"]
    assert (await call(api, "DELETE", "/api/assets/urn:asset:1"))[0] == 204
    assert (await call(api, "GET", "/api/assets/urn:asset:1"))[0] == 404


@pytest.mark.parametrize(("body", "expected"), [
    ({"dataAddress": {"type": "ftp"}}, "dataAddress.type"),
    ({"dataAddress": {"type": "file"}}, "needs 'path'"),
    ({"dataAddress": {"type": "http", "url": "gopher://x"}}, "http(s) 'url'"),
    ({"title": "no address"}, "dataAddress"),
    ({"dataAddress": {"type": "file", "path": "/x"}, "surprise": 1}, "surprise"),
])
async def test_bad_assets_are_refused_with_the_field(api: TestClient, body: dict, expected: str) -> None:
    status, err = await call(api, "POST", "/api/assets", body)
    assert status == 400
    assert expected in str(err)


async def test_policies_are_validated_on_input(api: TestClient) -> None:
    status, p = await call(api, "POST", "/api/policies",
                           {"template": "n-times-usage", "params": {"max": "3"}})
    assert status == 201, p
    status, p2 = await call(api, "POST", "/api/policies", {"policy": {"permission": [
        {"action": "use", "constraint": [{"leftOperand": "purpose", "operator": "eq",
                                          "rightOperand": "dpv:ResearchAndDevelopment"}]}]}})
    assert status == 201, p2
    assert p2["policy"]["permission"][0]["constraint"][0]["rightOperand"] == {
        "@id": "https://w3id.org/dpv#ResearchAndDevelopment"}
    status, err = await call(api, "POST", "/api/policies", {"policy": {"permission": [
        {"action": "frobnicate", "constraint": [{"leftOperand": "mood", "operator": "eq",
                                                 "rightOperand": "happy"}]}]}})
    assert status == 400
    details = " ".join(err["details"])
    assert "unknown action" in details and "unknown left operand" in details
    status, err = await call(api, "POST", "/api/policies", {"template": "n-times-usage",
                                                            "params": {"max": "many"}})
    assert status == 400 and "max" in err["error"]
    status, err = await call(api, "POST", "/api/policies", {"template": "x", "policy": {}})
    assert status == 400


async def test_offers_need_existing_policies_and_assets(api: TestClient) -> None:
    _, pol = await call(api, "POST", "/api/policies", {"template": "allow-usage", "params": {}})
    status, err = await call(api, "POST", "/api/offers", {
        "assetIds": ["urn:asset:none"], "accessPolicyId": pol["id"], "contractPolicyId": pol["id"]})
    assert status == 400 and "urn:asset:none" in err["error"]
    status, err = await call(api, "POST", "/api/offers", {
        "allAssets": True, "accessPolicyId": "urn:policy:none", "contractPolicyId": pol["id"]})
    assert status == 400 and "urn:policy:none" in err["error"]
    status, offer = await call(api, "POST", "/api/offers", {
        "allAssets": True, "accessPolicyId": pol["id"], "contractPolicyId": pol["id"]})
    assert status == 201
    status, err = await call(api, "DELETE", f"/api/policies/{pol['id']}")
    assert status == 409 and "offer" in err["error"]
    assert (await call(api, "DELETE", f"/api/offers/{offer['id']}"))[0] == 204
    assert (await call(api, "DELETE", f"/api/policies/{pol['id']}"))[0] == 204


async def test_malformed_json_and_unknown_ids(api: TestClient) -> None:
    async with api.post("/api/assets", data=b"{nope") as r:
        assert r.status == 400 and "not JSON" in (await r.json())["error"]
    for path in ("/api/negotiations/urn:x", "/api/agreements/urn:x", "/api/offers/urn:x"):
        assert (await call(api, "GET", path))[0] == 404
    status, err = await call(api, "POST", "/api/negotiations/urn:x/terminate", {"reason": "stop"})
    assert status == 404 and "urn:x" in err["error"]

"""The management API in process, on a real store: input checks, secrets, OpenAPI, auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator

from connector.assets import DataRoots
from connector.http.client import DspClient
from connector.http.management import management_app
from connector.http.outbound import OutboundPolicy
from connector.http.views import AssetView, OfferView, PolicyView
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
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.csv").write_text("a,b\n")
    client = TestClient(TestServer(management_app(cp, KEY, data_roots=DataRoots.build([data]))))
    await client.start_server()
    client.session.headers["X-Api-Key"] = KEY
    client.app["data_dir"] = data
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
        assert "/api/negotiations" in doc["paths"] and "AssetIn" in doc["components"]["schemas"]


async def test_asset_secrets_are_stored_but_never_echoed(api: TestClient) -> None:
    status, a = await call(
        api,
        "POST",
        "/api/assets",
        {
            "id": "urn:asset:1",
            "title": "one",
            "dataAddress": {
                "type": "http",
                "url": "https://internal.example/data",
                "headers": {"Authorization": "Bearer s3cr3t"},
            },
        },
    )
    assert status == 201, a
    assert "s3cr3t" not in str(a)
    status, got = await call(api, "GET", "/api/assets/urn:asset:1")
    assert status == 200 and "s3cr3t" not in str(got)
    status, _ = await call(
        api,
        "POST",
        "/api/assets",
        {"id": "urn:asset:1", "dataAddress": {"type": "http", "url": "https://internal.example/other"}},
    )
    assert status == 409
    status, listed = await call(api, "GET", "/api/assets")
    assert [x["id"] for x in listed] == ["urn:asset:1"]
    assert (await call(api, "DELETE", "/api/assets/urn:asset:1"))[0] == 204
    assert (await call(api, "GET", "/api/assets/urn:asset:1"))[0] == 404


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"dataAddress": {"type": "ftp"}}, "does not match any of the expected tags: 'file', 'http'"),
        ({"dataAddress": {"type": "file"}}, "dataAddress.file.path: Field required"),
        ({"dataAddress": {"type": "http", "url": "gopher://x"}}, "dataAddress.http.url"),
        ({"dataAddress": {"type": "http", "url": "https://"}}, "dataAddress.http.url"),
        ({"dataAddress": {"type": "file", "path": "/x", "url": "https://x"}}, "dataAddress.file.url"),
        ({"title": "no address"}, "dataAddress"),
        ({"dataAddress": {"type": "file", "path": "/x"}, "surprise": 1}, "surprise"),
    ],
)
async def test_bad_assets_are_refused_with_the_field(api: TestClient, body: dict, expected: str) -> None:
    status, err = await call(api, "POST", "/api/assets", body)
    assert status == 400
    assert expected in str(err)


async def test_policies_are_validated_on_input(api: TestClient) -> None:
    status, p = await call(
        api, "POST", "/api/policies", {"template": "n-times-usage", "params": {"max": "3"}}
    )
    assert status == 201, p
    status, p2 = await call(
        api,
        "POST",
        "/api/policies",
        {
            "policy": {
                "permission": [
                    {
                        "action": "use",
                        "constraint": [
                            {
                                "leftOperand": "purpose",
                                "operator": "eq",
                                "rightOperand": "dpv:ResearchAndDevelopment",
                            }
                        ],
                    }
                ]
            }
        },
    )
    assert status == 201, p2
    assert p2["policy"]["permission"][0]["constraint"][0]["rightOperand"] == {
        "@id": "https://w3id.org/dpv#ResearchAndDevelopment"
    }
    status, err = await call(
        api,
        "POST",
        "/api/policies",
        {
            "policy": {
                "permission": [
                    {
                        "action": "frobnicate",
                        "constraint": [{"leftOperand": "mood", "operator": "eq", "rightOperand": "happy"}],
                    }
                ]
            }
        },
    )
    assert status == 400
    details = " ".join(err["details"])
    assert "unknown action" in details and "unknown left operand" in details
    status, err = await call(
        api, "POST", "/api/policies", {"template": "n-times-usage", "params": {"max": "many"}}
    )
    assert status == 400 and "max" in err["error"]
    status, err = await call(api, "POST", "/api/policies", {"template": "x", "policy": {}})
    assert status == 400


async def test_offers_need_existing_policies_and_assets(api: TestClient) -> None:
    _, pol = await call(api, "POST", "/api/policies", {"template": "allow-usage", "params": {}})
    status, err = await call(
        api,
        "POST",
        "/api/offers",
        {"assetIds": ["urn:asset:none"], "accessPolicyId": pol["id"], "contractPolicyId": pol["id"]},
    )
    assert status == 400 and "urn:asset:none" in err["error"]
    status, err = await call(
        api,
        "POST",
        "/api/offers",
        {"allAssets": True, "accessPolicyId": "urn:policy:none", "contractPolicyId": pol["id"]},
    )
    assert status == 400 and "urn:policy:none" in err["error"]
    status, offer = await call(
        api,
        "POST",
        "/api/offers",
        {"allAssets": True, "accessPolicyId": pol["id"], "contractPolicyId": pol["id"]},
    )
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


# ------------------------------------------------------------------ the OpenAPI document


async def openapi(api: TestClient) -> dict[str, Any]:
    async with api.get("/api/openapi.json") as r:
        assert r.status == 200
        doc: dict[str, Any] = await r.json()
        return doc


def schema_of(doc: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


async def test_the_document_lists_every_route_and_status(api: TestClient) -> None:
    doc = await openapi(api)
    Draft202012Validator.check_schema({"components": doc["components"]})
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    routed = set()
    assert isinstance(api.server, TestServer)
    for route in api.server.app.router.routes():
        if route.method == "HEAD":
            continue
        canonical = route.resource.canonical if route.resource else ""
        routed.add((route.method, canonical.replace(":[^/]+", "")))
    assert routed == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            statuses = set(op["responses"])
            if path == "/api/openapi.json":
                assert statuses == {"200"}
                continue
            assert {"401", "503"} <= statuses, (method, path)
            assert op["responses"]["503"]["headers"]["Retry-After"]["required"]
            if "requestBody" in op:
                assert {"400", "413"} <= statuses, (method, path)
            if "{" in path:
                assert "404" in statuses, (method, path)
            for status, response in op["responses"].items():
                if status == "400":  # also aiohttp's parser's own refusals, in text
                    assert set(response["content"]) == {"application/json", "text/plain"}
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"
                    }
    ops = doc["paths"]
    assert set(ops["/api/assets/{id}"]["delete"]["responses"]) >= {"204", "404", "409"}
    assert "502" in ops["/api/catalog"]["post"]["responses"]
    assert "502" in ops["/api/transfers/{id}/refresh"]["post"]["responses"]
    assert "409" in ops["/api/transfers/{id}/refresh"]["post"]["responses"]
    assert "202" in ops["/api/transfers/{id}/pull"]["post"]["responses"]
    params = {p["name"]: p for p in ops["/api/negotiations/{id}"]["get"]["parameters"]}
    assert params["timeout"]["schema"]["maximum"] == 60 and params["waitFor"]["explode"] is False
    params = {p["name"]: p for p in ops["/api/assets"]["get"]["parameters"]}
    assert (params["limit"]["schema"]["minimum"], params["limit"]["schema"]["maximum"]) == (1, 500)


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        ({"dataAddress": {"type": "file"}}, False),
        ({"dataAddress": {"type": "file", "path": ""}}, False),
        ({"dataAddress": {"type": "http"}}, False),
        ({"dataAddress": {"type": "http", "url": "ftp://x/y"}}, False),
        ({"dataAddress": {"type": "http", "path": "/x"}}, False),
        ({"dataAddress": {"type": "file", "path": "/x", "headers": {}}}, False),
        ({"dataAddress": {"type": "s3", "path": "/x"}}, False),
        ({"dataAddress": {"type": "file", "path": "{data}/data.csv"}}, True),
        (
            {
                "dataAddress": {
                    "type": "http",
                    "url": "https://upstream.example/x",
                    "headers": {"Authorization": "Bearer t"},
                }
            },
            True,
        ),
    ],
)
async def test_the_asset_schema_refuses_what_the_server_refuses(
    api: TestClient, body: dict[str, Any], accepted: bool
) -> None:
    """issue 9: the document accepted a file data address without a path."""
    doc = await openapi(api)
    if "{data}" in body["dataAddress"].get("path", ""):  # a file inside the data root
        body = {
            "dataAddress": {
                **body["dataAddress"],
                "path": body["dataAddress"]["path"].replace("{data}", str(api.app["data_dir"])),
            }
        }
    assert schema_of(doc, "AssetIn").is_valid(body) is accepted
    status, _ = await call(api, "POST", "/api/assets", body)
    assert (status == 201) is accepted


async def test_answers_match_their_view_models(api: TestClient) -> None:
    _, pol = await call(api, "POST", "/api/policies", {"template": "allow-usage", "params": {}})
    PolicyView.model_validate(pol)
    _, asset = await call(
        api,
        "POST",
        "/api/assets",
        {"id": "urn:asset:v", "dataAddress": {"type": "file", "path": str(api.app["data_dir"] / "data.csv")}},
    )
    AssetView.model_validate(asset)
    _, offer = await call(
        api,
        "POST",
        "/api/offers",
        {"assetIds": ["urn:asset:v"], "accessPolicyId": pol["id"], "contractPolicyId": pol["id"]},
    )
    OfferView.model_validate(offer)
    doc = await openapi(api)
    for name, value in (("PolicyView", pol), ("AssetView", asset), ("OfferView", offer)):
        assert schema_of(doc, name).is_valid(value), name


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=501", "limit=abc", "offset=-1", "offset=1e3", "limit=99999999999999999999"]
)
async def test_paging_is_checked(api: TestClient, query: str) -> None:
    status, err = await call(api, "GET", f"/api/assets?{query}")
    assert status == 400 and err["error"] == "invalid query", err


@pytest.mark.parametrize(
    "query",
    [
        "waitFor=FINALIZED&timeout=abc",
        "waitFor=FINALIZED&timeout=nan",
        "waitFor=FINALIZED&timeout=inf",
        "waitFor=FINALIZED&timeout=61",
        "waitFor=FINALIZED&timeout=-1",
        "waitFor=DONE",
        "waitFor=",
        "waitFor=FINALIZED,",
    ],
)
async def test_a_wait_is_checked(api: TestClient, query: str) -> None:
    """issue 9: `timeout=abc` was a 500 and `timeout=nan` a hang."""
    status, err = await call(api, "GET", f"/api/negotiations/urn:x?{query}")
    assert status == 400 and err["error"] == "invalid query", err


async def test_router_errors_have_the_error_body(api: TestClient) -> None:
    status, err = await call(api, "GET", "/api/nothing-here")
    assert status == 404 and set(err) == {"error", "details"}
    async with api.put("/api/assets", json={}) as r:
        assert r.status == 405 and "POST" in r.headers["Allow"]
        assert set(await r.json()) == {"error", "details"}
    async with api.get("/api/assets/x", headers={"X-Api-Key": ""}) as r:
        assert r.status == 401 and set(await r.json()) == {"error", "details"}


async def test_a_long_purpose_header_is_refused(api: TestClient) -> None:
    async with api.get("/api/vault/v1/data", headers={"X-Purpose": "p" * 2001}) as r:
        assert r.status == 400

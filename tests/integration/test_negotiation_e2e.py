"""Authority + provider + consumer as real processes: negotiate to FINALIZED over TLS."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, negotiate, offer_asset

from connector.devspace import process_env

pytestmark = pytest.mark.integration


def test_negotiate_to_finalized_over_tls(space: DataSpace) -> None:
    provider = space.connector("provider", roles=("provider",))
    consumer = space.connector("consumer", roles=("consumer",))
    offer_id = offer_asset(
        provider,
        asset_id="urn:asset:weather",
        contract={"template": "n-times-usage", "params": {"max": "10"}},
    )
    status, cat = consumer.api("POST", "/api/catalog", {"peerUrl": provider.dsp_url})
    assert status == 200, cat
    assert [d["id"] for d in cat["datasets"]] == ["urn:asset:weather"]
    n = negotiate(consumer, provider, offer_id)
    assert n["state"] == "FINALIZED", (n, consumer.log[-20:], provider.log[-20:])
    status, agreements = provider.api("GET", "/api/agreements")
    assert status == 200 and [a["id"] for a in agreements] == [n["agreementId"]]
    assert agreements[0]["consumerId"] == consumer.participant_id
    status, mine = consumer.api("GET", f"/api/agreements/{n['agreementId']}")
    assert status == 200 and mine["providerId"] == provider.participant_id
    _health_ready_and_metrics(provider)


def _health_ready_and_metrics(c: Connector) -> None:
    """/health and /ready answer without the key; /metrics wants it and shows what happened."""
    for path, expected in (
        ("/health", {"status": "live"}),
        ("/ready", {"status": "ready", "checks": {"store": "ok", "authority": "ok", "dat": "ok"}}),
    ):
        with urllib.request.urlopen(c.api_url + path, timeout=10) as resp:
            assert json.loads(resp.read()) == expected
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(c.api_url + "/metrics", timeout=10)
    assert refused.value.code == 401
    req = urllib.request.Request(c.api_url + "/metrics", headers={"X-Api-Key": c.api_key})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    lines = text.splitlines()
    # the provider took the consumer's request on its DSP port, by route pattern
    assert any(
        line.startswith('connector_http_requests_total{app="dsp",route="/negotiations/request",status="201"}')
        for line in lines
    ), text
    assert 'connector_transitions_total{kind="negotiation",state="FINALIZED"}' in text
    assert 'connector_processes{kind="negotiation",state="FINALIZED"}' in text
    assert "connector_store_transaction_seconds_count" in text
    assert 'connector_dat_refreshes_total{result="ok"}' in text


def test_cli_wrappers_and_self_description(space: DataSpace, tmp_path: Path) -> None:
    import asyncio
    import json
    import subprocess

    import aiohttp
    from rdflib import Graph

    from connector.devspace import process_env
    from connector.http.tls import client_context

    provider = space.connector("cliprov", roles=("provider",))
    consumer = space.connector("clicons", roles=("consumer",))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "connector", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=process_env(),
        )

    data = provider.data_dir / "weather.csv"  # inside its data root ([assets] roots)
    data.write_text("day,temp\n1,12\n")
    r = run(
        "asset",
        "add",
        "--config",
        str(provider.config),
        "--id",
        "urn:asset:cli",
        "--file",
        str(data),
        "--title",
        "CLI weather",
    )
    assert r.returncode == 0, r.stderr
    r = run(
        "offer",
        "add",
        "--config",
        str(provider.config),
        "--id",
        "urn:offer:cli",
        "--asset",
        "urn:asset:cli",
        "--contract-template",
        "n-times-usage",
        "--contract-set",
        "max=5",
    )
    assert r.returncode == 0, r.stderr
    r = run("catalog", provider.dsp_url, "--config", str(consumer.config), "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)["datasets"][0]
    assert shown["title"] == "CLI weather"
    offers = shown["offers"]
    assert [o["id"] for o in offers] == ["urn:offer:cli:urn:asset:cli"]
    assert offers[0]["terms"] == ["use, at most 5 times"]
    r = run("catalog", provider.dsp_url, "--config", str(consumer.config))  # for people
    assert r.returncode == 0 and "CLI weather" in r.stdout, r.stdout
    assert "offer urn:offer:cli:urn:asset:cli\n    use, at most 5 times" in r.stdout, r.stdout
    # the id `offer add` printed names the same offer (its one dataset)
    r = run("negotiate", provider.dsp_url, "urn:offer:cli", "--config", str(consumer.config))
    assert r.returncode == 0 and r.stdout.startswith("FINALIZED"), r.stdout + r.stderr
    r = run("negotiate", provider.dsp_url, "urn:offer:cli:urn:asset:cli", "--config", str(consumer.config))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("FINALIZED") and "agreement urn:uuid:" in r.stdout
    r = run("negotiate", provider.dsp_url, "urn:offer:none", "--config", str(consumer.config))
    assert r.returncode != 0 and "offers no urn:offer:none" in r.stderr

    # the self-description, over mutual TLS with the consumer's certificate, by Accept
    d = consumer.directory
    ssl = client_context(d / "ca.crt", d / "tls.crt", d / "tls.key")

    async def get(accept: str) -> tuple[int, str, str]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(provider.dsp_url + "/", headers={"Accept": accept}, ssl=ssl) as resp,
        ):
            return resp.status, resp.content_type, await resp.text()

    for accept, fmt in (
        ("text/turtle", "turtle"),
        ("application/ld+json", None),
        ("application/n-triples", "nt"),
    ):
        status, ctype, body = asyncio.run(get(accept))
        assert status == 200 and ctype == accept
        if fmt:
            g = Graph().parse(data=body, format=fmt)
            assert any("urn:asset:cli" in str(s) for s in g.subjects())
    assert asyncio.run(get("image/png"))[0] == 406


def test_a_catalog_of_200_datasets_is_read_whole(space: DataSpace) -> None:
    """Every page: 200 datasets at a provider, all in the consumer's view, and an offer on the
    last page negotiable."""
    provider = space.connector("bigprov", roles=("provider",))
    consumer = space.connector("bigcons", roles=("consumer",))
    data = provider.data_dir / "d.csv"
    data.write_text("a\n1\n")
    for i in range(200):
        status, body = provider.api(
            "POST",
            "/api/assets",
            {
                "id": f"urn:asset:d{i:03d}",
                "title": f"Dataset {i}",
                "keywords": ["series", f"k{i}"],
                "dataAddress": {"type": "file", "path": str(data)},
            },
        )
        assert status == 201, body
    status, policy = provider.api(
        "POST", "/api/policies", {"template": "n-times-usage", "params": {"max": "3"}}
    )
    assert status == 201, policy
    status, offer = provider.api(
        "POST",
        "/api/offers",
        {
            "id": "urn:offer:all",
            "allAssets": True,
            "accessPolicyId": policy["id"],
            "contractPolicyId": policy["id"],
        },
    )
    assert status == 201, offer
    status, cat = consumer.api("POST", "/api/catalog", {"peerUrl": provider.dsp_url})
    assert status == 200, cat
    assert cat["pages"] > 1
    assert sorted(d["id"] for d in cat["datasets"]) == [f"urn:asset:d{i:03d}" for i in range(200)]
    last = next(d for d in cat["datasets"] if d["id"] == "urn:asset:d199")
    assert last["title"] == "Dataset 199" and last["keywords"] == ["series", "k199"]
    assert last["offers"][0]["terms"] == ["use, at most 3 times"]
    # the consumer's CLI: the whole catalog as JSON, and every dataset in the words view
    cli = [sys.executable, "-m", "connector", "catalog", provider.dsp_url, "--config", str(consumer.config)]
    shown = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=120, env=process_env())
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)
    assert sorted(d["id"] for d in listed["datasets"]) == [f"urn:asset:d{i:03d}" for i in range(200)]
    words = subprocess.run(cli, capture_output=True, text=True, timeout=120, env=process_env())
    assert words.returncode == 0, words.stderr
    assert all(f"Dataset {i}" in words.stdout for i in range(200))
    assert words.stdout.count("use, at most 3 times") == 200
    n = negotiate(consumer, provider, last["offers"][0]["id"])
    assert n["state"] == "FINALIZED", n


def test_cli_lists_shows_and_deletes_every_resource(space: DataSpace) -> None:
    """list (a table, or --json), show and delete for assets, offers, stored policies; list
    for agreements, transfers and the vault; refusals exit 1 with the API's reason."""
    provider = space.connector("crudprov", roles=("provider",))
    consumer = space.connector("crudcons", roles=("consumer",))
    offer_id = offer_asset(
        provider, asset_id="urn:asset:crud", contract={"template": "n-times-usage", "params": {"max": "2"}}
    )
    n = negotiate(consumer, provider, offer_id)
    assert n["state"] == "FINALIZED", n

    def run(*args: str, ok: bool = True) -> str:
        r = subprocess.run(
            [sys.executable, "-m", "connector", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=process_env(),
        )
        assert (r.returncode == 0) is ok, r.stdout + r.stderr
        return r.stdout + r.stderr

    prov, cons = ("--config", str(provider.config)), ("--config", str(consumer.config))
    table = run("asset", "list", *prov)
    assert table.splitlines()[0].split() == ["ID", "TITLE", "SOURCE", "CREATED"]
    assert "urn:asset:crud" in table
    assert [a["id"] for a in json.loads(run("asset", "list", *prov, "--json"))] == ["urn:asset:crud"]
    assert json.loads(run("asset", "show", "urn:asset:crud", *prov))["id"] == "urn:asset:crud"
    offers = json.loads(run("offer", "list", *prov, "--json"))
    assert [o["id"] for o in offers] == [offer_id.rsplit(":urn:asset:", 1)[0]]
    policies = json.loads(run("policy", "list", *prov, "--json"))
    assert policies and "use, at most 2 times" in run("policy", "list", *prov)
    assert json.loads(run("policy", "show", policies[0]["id"], *prov))["id"] == policies[0]["id"]
    # in use: refused with the reason, exit 1
    assert "409" in run("asset", "delete", "urn:asset:crud", *prov, ok=False)
    assert "409" in run("policy", "delete", policies[0]["id"], *prov, ok=False)
    assert "FINALIZED" not in run("agreement", "list", *cons)  # a table of agreements
    assert n["agreementId"] in run("agreement", "list", *cons)
    assert [a["id"] for a in json.loads(run("agreement", "list", *prov, "--json"))] == [n["agreementId"]]
    assert run("transfer", "list", *cons).strip() == "(none)"
    assert json.loads(run("vault", "list", *cons, "--json")) == []
    # withdraw the offer: then the asset's only tie is the agreement (still 409); a new asset
    # without offers goes
    assert "deleted offer" in run("offer", "delete", offers[0]["id"], *prov)
    assert json.loads(run("offer", "list", *prov, "--json")) == []
    status, _ = provider.api(
        "POST",
        "/api/assets",
        {"id": "urn:asset:loose", "dataAddress": {"type": "http", "url": "https://example.org/x"}},
    )
    assert status == 201
    assert "deleted asset urn:asset:loose" in run("asset", "delete", "urn:asset:loose", *prov)
    assert "404" in run("asset", "show", "urn:asset:loose", *prov, ok=False)


def test_assets_and_offers_from_a_file_in_one_call(space: DataSpace, tmp_path: Path) -> None:
    """`asset add --from` and `offer add --from`: 60 assets and their offers in two commands
    (a script that added 120 assets with offers took minutes, one process per item); a refusal
    names the item and keeps what was added before it."""
    provider = space.connector("bulkprov", roles=("provider",))
    data = provider.data_dir / "bulk.csv"
    data.write_text("a\n1\n")
    assets = [
        {"id": f"urn:asset:bulk{i:02d}", "title": f"Bulk {i}", "file": str(data), "keywords": ["bulk"]}
        for i in range(60)
    ]
    (tmp_path / "assets.json").write_text(json.dumps(assets))
    offers = [
        {
            "id": f"urn:offer:bulk{i:02d}",
            "assets": [f"urn:asset:bulk{i:02d}"],
            "contractTemplate": "n-times-usage",
            "contractParams": {"max": "2"},
        }
        for i in range(60)
    ]
    (tmp_path / "offers.jsonl").write_text("\n".join(json.dumps(o) for o in offers))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "connector", *args, "--config", str(provider.config)],
            capture_output=True,
            text=True,
            timeout=120,
            env=process_env(),
        )

    r = run("asset", "add", "--from", str(tmp_path / "assets.json"))
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 60
    r = run("offer", "add", "--from", str(tmp_path / "offers.jsonl"))
    assert r.returncode == 0, r.stderr
    assert [o["id"] for o in json.loads(r.stdout)] == [o["id"] for o in offers]
    status, listed = provider.api("GET", "/api/assets?limit=500")
    assert status == 200 and len(listed) == 60 and listed[0]["keywords"] == ["bulk"]
    # the second item clashes with the first: stop there, say which, keep the first
    clash = [
        {"id": "urn:asset:new1", "url": "https://example.org/a"},
        {"id": "urn:asset:new1", "url": "https://example.org/b"},
        {"id": "urn:asset:new2", "url": "https://example.org/c"},
    ]
    (tmp_path / "clash.json").write_text(json.dumps(clash))
    r = run("asset", "add", "--from", str(tmp_path / "clash.json"))
    assert r.returncode == 1 and "item 1 refused (1 added before it)" in r.stderr, r.stderr
    assert provider.api("GET", "/api/assets/urn:asset:new1")[0] == 200
    assert provider.api("GET", "/api/assets/urn:asset:new2")[0] == 404

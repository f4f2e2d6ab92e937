"""The agreement life cycle and provider-held facts between real processes: a provider retires an
agreement (CLI), its running transfer is terminated on both sides with the reason, a new
transfer request is refused with it, both audit logs record it; held facts through the CLI."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, cli, negotiate, offer_asset

pytestmark = pytest.mark.integration
CONTENT = b"day,temp\n1,20\n2,21\n"


@pytest.fixture(scope="module")
def pair(space: DataSpace) -> tuple[Connector, Connector]:
    return (space.connector("lprov", roles=("provider",)), space.connector("lcons", roles=("consumer",)))


def wait_for(c: Connector, path: str, done: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status, body = c.api("GET", path)
        assert status == 200, body
        if done(body) or time.monotonic() > deadline:
            return body


def pull(consumer: Connector, t: dict[str, Any]) -> tuple[int, bytes]:
    from connector.http.tls import client_context

    ssl = client_context(consumer.directory / "ca.crt")

    async def go() -> tuple[int, bytes]:
        token = t["endpointProperties"]["authorization"]
        async with (
            aiohttp.ClientSession() as http,
            http.get(t["endpoint"], ssl=ssl, headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            return r.status, await r.read()

    return asyncio.run(go())


def test_retire_terminates_and_refuses_with_the_reason(pair: tuple[Connector, Connector]) -> None:
    provider, consumer = pair
    offer = offer_asset(
        provider,
        asset_id="urn:asset:retired",
        content=CONTENT,
        contract={"template": "n-times-usage", "params": {"max": "100"}},
    )
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    agreement_id = n["agreementId"]
    status, t = consumer.api("POST", "/api/transfers", {"agreementId": agreement_id})
    assert status == 201, t
    t = wait_for(consumer, f"/api/transfers/{t['id']}", lambda x: x["state"] != "REQUESTED")
    assert t["state"] == "STARTED", t
    assert pull(consumer, t) == (200, CONTENT)

    out = cli(
        "agreement", "retire", "--config", provider.config, agreement_id, "--reason", "licence withdrawn"
    )
    assert out.strip() == f"retired: agreement {agreement_id} (licence withdrawn)"
    why = f"agreement {agreement_id} retired: licence withdrawn"

    # both sides end the running transfer, with the reason
    ct = wait_for(consumer, f"/api/transfers/{t['id']}", lambda x: x["state"] == "TERMINATED")
    assert ct["state"] == "TERMINATED" and ct["terminationReason"] == [why], ct
    status, pt = provider.api("GET", f"/api/transfers/{t['providerPid']}")
    assert pt["state"] == "TERMINATED" and pt["terminationReason"] == [why], pt
    assert pull(consumer, t)[0] == 403

    # a new request under the retired agreement is refused by the provider, with the reason
    status, t2 = consumer.api("POST", "/api/transfers", {"agreementId": agreement_id})
    assert status == 201, t2
    t2 = wait_for(consumer, f"/api/transfers/{t2['id']}", lambda x: x["state"] == "TERMINATED")
    assert t2["state"] == "TERMINATED", t2
    assert why in " ".join(t2["terminationReason"] or []), t2
    status, provider_side = provider.api("GET", "/api/transfers?limit=500")
    assert [x["id"] for x in provider_side if x["agreementId"] == agreement_id] == [t["providerPid"]]

    # the agreement shows as retired; both audit logs record it
    status, a = provider.api("GET", f"/api/agreements/{agreement_id}")
    assert (a["status"], a["retiredReason"]) == ("retired", "licence withdrawn")
    for c in (provider, consumer):
        rows = wait_for(c, "/api/audit?kind=agreement.retired", lambda r: bool(r))
        assert [r["agreementId"] for r in rows] == [agreement_id], (c.name, rows)
        assert "licence withdrawn" in str(rows[0]["data"]["reason"])


def test_held_facts_through_the_cli(pair: tuple[Connector, Connector]) -> None:
    provider, _ = pair
    out = cli(
        "facts",
        "set",
        "--config",
        provider.config,
        "idsc:STATE",
        "idsc:ACTIVE",
        "urn:state:audited",
        "--until",
        "2099-01-01T00:00:00Z",
    )
    assert out.strip() == (
        "https://w3id.org/idsa/code/STATE = https://w3id.org/idsa/code/ACTIVE, "
        "urn:state:audited (until 2099-01-01T00:00:00Z)"
    )
    cli("facts", "set", "--config", provider.config, "event", "urn:event:fair")
    listed = cli("facts", "list", "--config", provider.config, "--json")
    assert {f["name"]: f["values"] for f in listed} == {
        "https://w3id.org/idsa/code/STATE": ["https://w3id.org/idsa/code/ACTIVE", "urn:state:audited"],
        "http://www.w3.org/ns/odrl/2/event": ["urn:event:fair"],
    }
    assert cli("facts", "unset", "--config", provider.config, "odrl:event").strip() == "unset odrl:event"
    assert [f["name"] for f in cli("facts", "list", "--config", provider.config, "--json")] == [
        "https://w3id.org/idsa/code/STATE"
    ]
    with pytest.raises(RuntimeError, match="did you mean idsc:STATE"):
        cli("facts", "set", "--config", provider.config, "state", "x")

"""The address matrix through every outbound path of a running connector (a real process on
loopback), driven by a hostile participant: negotiation and transfer callbackAddresses, the
management API's and the CLI's peerUrl, push destinations, HTTP upstreams of assets.

The connector allows exactly one private address on each path (127.0.0.3, where the hostile
participant's own endpoints listen); every forbidden URL that points at loopback points at a
socket that records connections, and none may ever be made.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from outbound_testlib import ALLOWED, MALFORMED, Recorder, Stub, forbidden

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, cli

from connector.devspace import process_env
from connector.identity.client import DatClient, ParticipantIdentity

pytestmark = pytest.mark.integration
CONTEXT = ["https://w3id.org/dspace/2025/1/context.jsonld"]
PUSH_ENDPOINT_TYPE = "https://w3id.org/idsa/v4.1/HTTP"


class Attacker:
    """A registered participant with a valid DAT that speaks DSP by hand."""

    def __init__(self, space: DataSpace, root: Path) -> None:
        cli("init", root / "attacker", "--name", "Attacker")
        cli("authority", "register", space.authority.directory, root / "attacker" / "participant.csr")

        async def token() -> str:
            async with aiohttp.ClientSession() as http:
                client = await DatClient.discover(
                    http, space.authority.url, ParticipantIdentity.load(root / "attacker")
                )
                return await client.token()

        self.token = asyncio.run(token())

    def call(self, url: str, body: Any = None, method: str = "POST") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def agreement(self, provider: Connector, dataset_id: str, stub: Stub) -> str:
        """Negotiate the provider's offer for `dataset_id` to FINALIZED; the agreement id."""
        status, catalog = self.call(
            f"{provider.dsp_url}/catalog/request", {"@context": CONTEXT, "@type": "CatalogRequestMessage"}
        )
        assert status == 200, catalog
        datasets = catalog["dataset"] if isinstance(catalog["dataset"], list) else [catalog["dataset"]]
        offer = next(d for d in datasets if d["@id"] == dataset_id)["hasPolicy"][0]
        cpid = f"urn:uuid:{uuid.uuid4()}"
        status, n = self.call(
            f"{provider.dsp_url}/negotiations/request",
            {
                "@context": CONTEXT,
                "@type": "ContractRequestMessage",
                "consumerPid": cpid,
                "offer": {**offer, "target": dataset_id},
                "callbackAddress": stub.url,
            },
        )
        assert status == 201, n
        ppid = n["providerPid"]
        agreed = stub.wait_for(f"/negotiations/{cpid}/agreement")
        status, body = self.call(
            f"{provider.dsp_url}/negotiations/{ppid}/agreement/verification",
            {
                "@context": CONTEXT,
                "@type": "ContractAgreementVerificationMessage",
                "providerPid": ppid,
                "consumerPid": cpid,
            },
        )
        assert status == 200, body
        stub.wait_for(f"/negotiations/{cpid}/events")
        # FINALIZED at the provider once it has the acknowledgement of its event message
        deadline = time.monotonic() + 30
        while True:
            status, n = provider.api("GET", f"/api/negotiations/{ppid}")
            if n.get("state") == "FINALIZED" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert n.get("state") == "FINALIZED", n
        return str(agreed["agreement"]["@id"])

    def request_transfer(
        self,
        provider: Connector,
        agreement_id: str,
        *,
        callback: str,
        fmt: str = "HttpData-PULL",
        push_to: str | None = None,
    ) -> tuple[str, int, Any]:
        cpid = f"urn:uuid:{uuid.uuid4()}"
        body: dict[str, Any] = {
            "@context": CONTEXT,
            "@type": "TransferRequestMessage",
            "consumerPid": cpid,
            "agreementId": agreement_id,
            "format": fmt,
            "callbackAddress": callback,
        }
        if push_to is not None:
            body["dataAddress"] = {
                "@type": "DataAddress",
                "endpointType": PUSH_ENDPOINT_TYPE,
                "endpoint": push_to,
                "endpointProperties": [
                    {"@type": "EndpointProperty", "name": "authorization", "value": "secret"}
                ],
            }
        status, answer = self.call(f"{provider.dsp_url}/transfers/request", body)
        return cpid, status, answer


@dataclass
class World:
    space: DataSpace
    guarded: Connector
    attacker: Attacker
    stub: Stub
    r4: Recorder
    r6: Recorder

    def matrix(self) -> list[tuple[str, str, str]]:
        return forbidden(self.r4, self.r6)

    def assert_nothing_connected(self) -> None:
        assert self.r4.connections == [] and self.r6.connections == [], (
            self.r4.connections,
            self.r6.connections,
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("outbound")
    r4, r6, stub = Recorder("127.0.0.1"), Recorder("::1"), Stub()
    space = DataSpace(root, tls=False)
    try:
        guarded = space.connector(
            "guarded",
            roles=("provider", "consumer"),
            peer_allow=ALLOWED,
            push_allow=ALLOWED,
            pull_allow=ALLOWED,
            upstream_allow=ALLOWED,
        )
        w = World(space, guarded, Attacker(space, root), stub, r4, r6)
        yield w
        w.assert_nothing_connected()
        space.assert_wire_valid()
    finally:
        space.close()
        stub.close()
        r4.close()
        r6.close()


def offer_http_asset(provider: Connector, asset_id: str, url: str) -> None:
    status, a = provider.api(
        "POST",
        "/api/assets",
        {"id": asset_id, "title": asset_id, "dataAddress": {"type": "http", "url": url}},
    )
    assert status == 201, a
    ids = []
    for _ in range(2):
        status, p = provider.api("POST", "/api/policies", {"template": "allow-usage", "params": {}})
        assert status == 201, p
        ids.append(p["id"])
    status, o = provider.api(
        "POST", "/api/offers", {"assetIds": [asset_id], "accessPolicyId": ids[0], "contractPolicyId": ids[1]}
    )
    assert status == 201, o


def processes(c: Connector, kind: str) -> list[dict[str, Any]]:
    status, rows = c.api("GET", f"/api/{kind}?limit=500")
    assert status == 200, rows
    return list(rows)


def provider_transfer(c: Connector, consumer_pid: str, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        found = [t for t in processes(c, "transfers") if t["consumerPid"] == consumer_pid]
        if found and found[0]["state"] in states:
            return found[0]
        assert time.monotonic() < deadline, found
        time.sleep(0.1)


@pytest.fixture(scope="module")
def push_agreement(world: World) -> str:
    """An agreement of the attacker's on an asset whose upstream is the (allowed) stub."""
    offer_http_asset(world.guarded, "urn:asset:push-source", f"{world.stub.url}/data")
    return world.attacker.agreement(world.guarded, "urn:asset:push-source", world.stub)


# ------------------------------------------------------------------ callbackAddress


def test_negotiation_callbacks_refused_with_a_dsp_error_and_no_process(world: World) -> None:
    before = processes(world.guarded, "negotiations")
    offer = {
        "@id": "urn:offer:any",
        "@type": "Offer",
        "target": "urn:asset:any",
        "permission": [{"action": "use"}],
    }
    for name, url, why in [*world.matrix(), *MALFORMED]:
        status, body = world.attacker.call(
            f"{world.guarded.dsp_url}/negotiations/request",
            {
                "@context": CONTEXT,
                "@type": "ContractRequestMessage",
                "consumerPid": f"urn:uuid:{uuid.uuid4()}",
                "offer": offer,
                "callbackAddress": url,
            },
        )
        assert status == 400, (name, status, body)
        assert body["@type"] == "ContractNegotiationError", (name, body)
        assert any(why in r and "callbackAddress" in r for r in body["reason"]), (name, why, body)
    assert processes(world.guarded, "negotiations") == before
    world.assert_nothing_connected()


def test_transfer_callbacks_refused_with_a_dsp_error_and_no_process(
    world: World, push_agreement: str
) -> None:
    before = processes(world.guarded, "transfers")
    for name, url, why in [*world.matrix(), *MALFORMED]:
        _, status, body = world.attacker.request_transfer(world.guarded, push_agreement, callback=url)
        assert status == 400, (name, status, body)
        assert body["@type"] == "TransferError", (name, body)
        assert any(why in r and "callbackAddress" in r for r in body["reason"]), (name, why, body)
    assert processes(world.guarded, "transfers") == before
    world.assert_nothing_connected()


def test_a_callback_that_redirects_is_not_followed_and_fails_for_good(world: World) -> None:
    offer_http_asset(world.guarded, "urn:asset:redirected-callback", f"{world.stub.url}/data")
    status, catalog = world.attacker.call(
        f"{world.guarded.dsp_url}/catalog/request", {"@context": CONTEXT, "@type": "CatalogRequestMessage"}
    )
    assert status == 200, catalog
    datasets = catalog["dataset"] if isinstance(catalog["dataset"], list) else [catalog["dataset"]]
    offer = next(d for d in datasets if d["@id"] == "urn:asset:redirected-callback")["hasPolicy"][0]
    to = world.stub.redirect(f"http://localhost:{world.r4.port}/")
    status, n = world.attacker.call(
        f"{world.guarded.dsp_url}/negotiations/request",
        {
            "@context": CONTEXT,
            "@type": "ContractRequestMessage",
            "consumerPid": "urn:uuid:redirected",
            "offer": {**offer, "target": "urn:asset:redirected-callback"},
            "callbackAddress": to,
        },
    )
    assert status == 201, n
    deadline = time.monotonic() + 30
    while True:
        row = next(
            r for r in processes(world.guarded, "negotiations") if r["consumerPid"] == "urn:uuid:redirected"
        )
        if row["errorDetail"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "redirects are not followed" in (row["errorDetail"] or ""), row
    world.assert_nothing_connected()


# ------------------------------------------------------------------ peerUrl


def test_peer_urls_refused_with_400_and_the_reason(world: World) -> None:
    before = processes(world.guarded, "negotiations")
    for name, url, why in [*world.matrix(), *MALFORMED]:
        for path, body in (
            ("/api/catalog", {"peerUrl": url}),
            ("/api/negotiations", {"peerUrl": url, "offerId": "urn:offer:x"}),
        ):
            status, answer = world.guarded.api("POST", path, body)
            assert status == 400, (name, path, status, answer)
            assert why in json.dumps(answer, ensure_ascii=False), (name, why, answer)
    assert processes(world.guarded, "negotiations") == before
    # a peer the policy allows that redirects: never followed (the peer's failure: 502)
    status, answer = world.guarded.api(
        "POST", "/api/catalog", {"peerUrl": world.stub.redirect(f"http://localhost:{world.r4.port}/")}
    )
    assert status == 502 and "redirects are not followed" in answer["error"], answer
    world.assert_nothing_connected()


def test_the_cli_refuses_peer_urls_with_the_reason(world: World) -> None:
    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "connector", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=60,
            env=process_env(),
        )

    r = run("catalog", f"http://localhost:{world.r4.port}", "--config", world.guarded.config)
    assert r.returncode == 1 and "400" in r.stderr and "loopback" in r.stderr, r.stderr
    r = run(
        "negotiate", f"http://2130706433:{world.r4.port}", "urn:offer:x", "--config", world.guarded.config
    )
    assert r.returncode == 2 and "non-canonical" in r.stderr, r.stderr
    world.assert_nothing_connected()


# ------------------------------------------------------------------ push destinations


def test_push_destinations_refused_and_never_connected(world: World, push_agreement: str) -> None:
    cases = [(name, f"{url}/push", why) for name, url, why in world.matrix()]
    cases.append(
        (
            "redirect",
            world.stub.redirect(f"http://127.0.0.1:{world.r4.port}/push"),
            "redirects are not followed",
        )
    )
    started = []
    for name, destination, why in cases:
        cpid, status, body = world.attacker.request_transfer(
            world.guarded, push_agreement, callback=world.stub.url, fmt="HttpData-PUSH", push_to=destination
        )
        assert status == 201, (name, body)
        started.append((name, cpid, why))
    for name, cpid, why in started:
        t = provider_transfer(world.guarded, cpid, {"TERMINATED", "COMPLETED"})
        assert t["state"] == "TERMINATED", (name, t)
        reason = " ".join(t["terminationReason"] or [])
        assert "the push failed" in reason and why in reason, (name, why, reason)
    world.assert_nothing_connected()


# ------------------------------------------------------------------ HTTP upstreams


def test_upstreams_refused_and_never_connected(world: World) -> None:
    # a negotiation per asset: a representative part of the matrix
    subset = [
        m
        for m in world.matrix()
        if m[0]
        in (
            "loopback",
            "ipv6-loopback",
            "dns-to-loopback",
            "mapped",
            "decimal",
            "octal",
            "private-10",
            "metadata",
        )
    ]
    cases = [(name, f"{url}/data", "upstream refused", why) for name, url, why in subset]
    cases += [
        (f"redirect-{name}", world.stub.redirect(f"{url}/data"), "upstream redirect refused", why)
        for name, url, why in subset
        if name in ("dns-to-loopback", "mapped", "octal")
    ]
    for name, url, refused, why in cases:
        asset = f"urn:asset:upstream-{name}"
        offer_http_asset(world.guarded, asset, url)
        agreement = world.attacker.agreement(world.guarded, asset, world.stub)
        cpid, status, body = world.attacker.request_transfer(
            world.guarded, agreement, callback=world.stub.url
        )
        assert status == 201, (name, body)
        start = world.stub.wait_for(f"/transfers/{cpid}/start")
        address = start["dataAddress"]
        token = next(p["value"] for p in address["endpointProperties"] if p["name"] == "authorization")
        req = urllib.request.Request(address["endpoint"], headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        text = err.value.read().decode(errors="replace")
        assert err.value.code == 502 and refused in text and why in text, (name, why, text)
    world.assert_nothing_connected()

"""The outbound clients in process, on a real store and real loopback servers: the consumer's
pulls (the endpoint the provider gave) through the address matrix and a redirect; DNS rebinding
against every client that resolves names (the address checked is the one connected to); the
outbox checking a destination again when it sends, and giving up on a refusal at once.

The policies allow 127.0.0.3 only; forbidden URLs that point at loopback point at sockets that
record connections, and none may ever be made.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from outbound_testlib import ALLOWED, ALLOWED_HOST, Recorder, forbidden

from connector.consumer import ConsumerConfig, Downloads, DutyRunner, Vault
from connector.dataplane.push import push
from connector.dataplane.receipts import ReceiptChain
from connector.dataplane.sources import HttpSource
from connector.http.client import DspClient
from connector.http.management import management_app
from connector.http.outbound import OutboundPolicy
from connector.identity.ca import CertificateAuthority, certificate_pem
from connector.identity.keys import SigningKey, generate_private_key
from connector.protocol.messages import PULL
from connector.runtime import ControlPlane
from connector.store import Store
from connector.store.rows import AgreementRow, TransferRow

POLICY = OutboundPolicy.from_config(ALLOWED)
KEY = "k" * 24


async def no_token() -> str:
    return "not-a-real-dat"


class Flip:
    """A DNS that answers `first` once, then `then` (a rebinding attacker's name server)."""

    def __init__(self, first: str, then: str) -> None:
        self.first, self.then, self.calls = first, then, 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [self.first if self.calls == 1 else self.then]


class Allowed:
    """An HTTP server on the allowed address: what it was asked, and a redirect on /redirect."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.location = ""
        self.catalog: dict[str, Any] = {}
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.server = TestServer(app, host=ALLOWED_HOST)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(f"{request.method} {request.path}")
        await request.read()
        if request.path.startswith("/redirect"):
            return web.Response(status=302, headers={"Location": self.location})
        if request.path == "/catalog/request":
            return web.json_response(self.catalog)
        if request.path == "/data":
            return web.Response(body=b"allowed data\n")
        return web.json_response({})

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port


@pytest.fixture
async def allowed() -> AsyncIterator[Allowed]:
    a = Allowed()
    await a.server.start_server()
    try:
        yield a
    finally:
        await a.server.close()


@pytest.fixture
def recorders() -> Iterator[tuple[Recorder, Recorder]]:
    r4, r6 = Recorder("127.0.0.1"), Recorder("::1")
    try:
        yield r4, r6
    finally:
        r4.close()
        r6.close()


@pytest.fixture
def rebound(allowed: Allowed) -> Iterator[Recorder]:
    """A recorder on 127.0.0.2 at the allowed server's port: where a rebound name would lead."""
    r = Recorder("127.0.0.2", allowed.port)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
async def store(sqlite_store: Store) -> Store:
    return sqlite_store


# ------------------------------------------------------------------ the consumer's pulls


async def test_pulls_refuse_forbidden_endpoints_and_redirects(
    tmp_path: Path, store: Store, allowed: Allowed, recorders: tuple[Recorder, Recorder]
) -> None:
    r4, r6 = recorders
    ca = CertificateAuthority.create(generate_private_key("EdDSA"), "Test", now=time.time())
    (tmp_path / "ca.crt").write_text(certificate_pem(ca.certificate))
    dsp = DspClient(no_token, ssl_context=None, policy=POLICY)
    cp = ControlPlane(store, dsp, participant_id="urn:test:consumer", dsp_url=f"http://{ALLOWED_HOST}:9")
    config = ConsumerConfig.load(
        ca_file=tmp_path / "ca.crt",
        vault_dir=tmp_path / "vault",
        signing_key=SigningKey.from_private_key(generate_private_key("EdDSA")),
        certificate=ca.certificate,
        outbound=POLICY,
    )
    downloads = Downloads(cp, config, DutyRunner(cp, config, Vault(store)))
    allowed.location = f"http://localhost:{r4.port}/data"
    cases = [(name, f"{url}/data/x", why) for name, url, why in forbidden(r4, r6)]
    cases.append(
        (
            "redirect",
            f"http://{ALLOWED_HOST}:{allowed.port}/redirect",
            "the provider's data plane answered 302",
        )
    )
    async with store.transaction() as tx:
        await tx.agreements.add(
            AgreementRow(
                id="urn:agreement:1",
                provider_id="urn:test:provider",
                consumer_id="urn:test:consumer",
                target="urn:asset:1",
                signed_at=datetime.now(UTC),
                policy={
                    "@id": "urn:agreement:1",
                    "@type": "Agreement",
                    "target": "urn:asset:1",
                    "assigner": "urn:test:provider",
                    "assignee": "urn:test:consumer",
                    "permission": [{"action": "use"}],
                },
            )
        )
    try:
        for name, endpoint, why in cases:
            transfer_id = f"urn:uuid:{uuid.uuid4()}"
            now = datetime.now(UTC)
            async with store.transaction() as tx:
                await tx.transfers.add(
                    TransferRow(
                        id=transfer_id,
                        role="consumer",
                        state="STARTED",
                        created_at=now,
                        updated_at=now,
                        agreement_id="urn:agreement:1",
                        provider_pid=f"urn:uuid:{uuid.uuid4()}",
                        consumer_pid=transfer_id,
                        format=PULL,
                        counter_party_id="urn:test:provider",
                        counter_party_address=f"http://{ALLOWED_HOST}:9",
                        data={
                            "data_address": {
                                "@type": "DataAddress",
                                "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
                                "endpoint": endpoint,
                                "endpointProperties": [
                                    {"@type": "EndpointProperty", "name": "authorization", "value": "t"}
                                ],
                            }
                        },
                    )
                )
            await downloads.start(transfer_id, out=None, purpose=None, complete=False)
            job = await downloads.wait(transfer_id, 10)
            assert job is not None and job.state == "failed", (name, job)
            assert why in job.error, (name, why, job.error)
    finally:
        await downloads.close()
        await dsp.close()
    assert allowed.hits == ["GET /redirect"]  # the one allowed hop, never its target
    assert r4.connections == [] and r6.connections == []


# ------------------------------------------------------------------ DNS rebinding


async def test_dsp_client_connects_to_the_address_it_checked(allowed: Allowed, rebound: Recorder) -> None:
    dns = Flip(ALLOWED_HOST, "127.0.0.2")
    dsp = DspClient(no_token, ssl_context=None, policy=POLICY, resolve=dns)
    try:
        d = await dsp.request("GET", f"http://rebind.example:{allowed.port}/negotiations/x")
        assert d.ok, d
        refused = await dsp.request("GET", f"http://rebind.example:{allowed.port}/negotiations/x")
    finally:
        await dsp.close()
    # checked again for the second call: the rebound answer is refused, permanently
    assert refused.refused and refused.permanent and "127.0.0.2, a loopback" in refused.reason
    assert allowed.hits == ["GET /negotiations/x"] and rebound.connections == []


async def test_an_upstream_connects_to_the_address_it_checked(allowed: Allowed, rebound: Recorder) -> None:
    dns = Flip(ALLOWED_HOST, "127.0.0.2")
    source = HttpSource(f"http://rebind.example:{allowed.port}/data", POLICY, resolve=dns)
    r = await source.open(None)
    try:
        assert r.status == 200, r.reason
        assert b"".join([c async for c in r.chunks]) == b"allowed data\n"
    finally:
        await r.close()
    assert dns.calls == 1 and allowed.hits == ["GET /data"] and rebound.connections == []


async def test_a_push_connects_to_the_address_it_checked(
    tmp_path: Path, allowed: Allowed, rebound: Recorder
) -> None:
    dns = Flip(ALLOWED_HOST, "127.0.0.2")
    upstream = HttpSource(f"http://{ALLOWED_HOST}:{allowed.port}/data", POLICY)
    chain = ReceiptChain(
        "urn:uuid:t", "urn:agreement:1", SigningKey.generate("EdDSA"), "urn:test:provider", interval=3600
    )

    async def still_allowed() -> str | None:
        return None

    result = await push(
        upstream,
        destination=f"http://rebind.example:{allowed.port}/push",
        authorization=None,
        policy=POLICY,
        chain=chain,
        still_allowed=still_allowed,
        resolve=dns,
    )
    assert result.ok, result.reason
    assert dns.calls == 1 and "PUT /push" in allowed.hits and rebound.connections == []


# ------------------------------------------------------------------ the outbox at send time


async def test_the_outbox_checks_again_when_it_sends_and_gives_up_at_once(
    store: Store, allowed: Allowed, rebound: Recorder
) -> None:
    """The management API checks the peer (the catalog is fetched from the allowed address);
    the name is rebound before the negotiation's first message is sent: that delivery is refused
    for good, with the reason, after one attempt, and nothing connects to the new address."""
    dns = Flip(ALLOWED_HOST, "127.0.0.2")
    peer = f"http://rebind.example:{allowed.port}"
    allowed.catalog = {
        "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
        "@type": "Catalog",
        "@id": "urn:catalog:1",
        "participantId": "urn:test:provider",
        "dataset": [
            {
                "@id": "urn:asset:1",
                "@type": "Dataset",
                "hasPolicy": [{"@id": "urn:offer:1", "@type": "Offer", "permission": [{"action": "use"}]}],
                "distribution": [{"@type": "Distribution", "format": PULL, "accessService": "x"}],
            }
        ],
    }
    dsp = DspClient(no_token, ssl_context=None, policy=POLICY, resolve=dns)
    cp = ControlPlane(store, dsp, participant_id="urn:test:consumer", dsp_url=f"http://{ALLOWED_HOST}:9")
    await cp.start()
    api = TestClient(TestServer(management_app(cp, KEY)))
    await api.start_server()
    try:
        async with api.post(
            "/api/negotiations", json={"peerUrl": peer, "offerId": "urn:offer:1"}, headers={"X-Api-Key": KEY}
        ) as r:
            assert r.status == 201, await r.text()
            negotiation = await r.json()
        row = await cp.wait_for(negotiation["id"], {"TERMINATED"}, 10)
        assert row is not None
        async with store.transaction(readonly=True) as tx:
            sent = await tx.outbox.list(process_id=negotiation["id"])
    finally:
        await api.close()
        await cp.stop()
        await dsp.close()
    assert [(m.status, m.attempts) for m in sent] == [("dead", 1)], sent
    assert "rebind.example resolves to 127.0.0.2, a loopback address" in (sent[0].last_error or "")
    assert "127.0.0.2, a loopback address" in (row.data.get("delivery_error") or ""), row
    assert allowed.hits == ["POST /catalog/request"] and rebound.connections == []

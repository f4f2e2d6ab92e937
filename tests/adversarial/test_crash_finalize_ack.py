"""A crash of the consumer between taking in the provider's FINALIZED event and answering it
(found by the kill -9 chaos runs, connector.chaos): the consumer is FINALIZED and asks for a
transfer at once, while the provider, its acknowledgement lost, still waits (FINALIZING) for its
retry's backoff. The provider (a real control plane on a real store) must take the transfer
request as the acknowledgement; it used to refuse it with a 400, which the consumer's outbox
takes as final: the transfer died although both sides held the agreement as finalized.

The consumer here is a stand-in DSP peer on loopback that answers every FINALIZED event 503, as a
consumer that died after committing it looks to the provider's outbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from connector.dataplane.wiring import transfer_tokens
from connector.devspace import free_port
from connector.http.client import DspClient
from connector.http.outbound import OutboundPolicy
from connector.identity.keys import SigningKey
from connector.protocol.messages import (
    PULL,
    ContractAgreementVerificationMessage,
    ContractNegotiation,
    ContractRequestMessage,
    TransferProcess,
    TransferRequestMessage,
)
from connector.runtime import ControlPlane
from connector.store import Store
from connector.store.rows import AssetRow, OfferRow, PolicyRow

PROVIDER, CONSUMER = "urn:test:provider", "urn:test:consumer"
CPID, TPID = "urn:uuid:consumer-negotiation", "urn:uuid:consumer-transfer"


@asynccontextmanager
async def consumer_peer() -> AsyncIterator[tuple[str, list[str]]]:
    """Acknowledges every message but the FINALIZED event (503, as if it crashed after taking it
    in); yields its URL and the paths it was sent."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        body = await request.json()
        if request.path.startswith("/negotiations/"):
            if body.get("eventType") == "FINALIZED":
                return web.json_response({"error": "down"}, status=503)
            return web.json_response(
                ContractNegotiation(
                    provider_pid=body["providerPid"], consumer_pid=CPID, state="AGREED"
                ).to_wire()
            )
        return web.json_response(
            TransferProcess(
                provider_pid=body.get("providerPid", ""), consumer_pid=TPID, state="STARTED"
            ).to_wire()
        )

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def seed(store: Store, path: Path) -> None:
    now = datetime.now(UTC)
    policy = {
        "@context": [
            "https://w3id.org/dspace/2025/1/context.jsonld",
            "https://w3id.org/dspace/2025/1/odrl-profile.jsonld",
        ],
        "@type": "Offer",
        "@id": "urn:policy:open",
        "permission": [{"action": "use"}],
    }
    path.write_bytes(b"data")
    async with store.transaction() as tx:
        await tx.policies.add(PolicyRow(id="urn:policy:open", body=json.dumps(policy), created_at=now))
        await tx.assets.add(
            AssetRow(id="urn:asset:a", created_at=now, data_address={"type": "file", "path": str(path)})
        )
        await tx.offers.add(
            OfferRow(
                id="urn:offer:o",
                access_policy_id="urn:policy:open",
                contract_policy_id="urn:policy:open",
                created_at=now,
                asset_selector={"assetIds": ["urn:asset:a"]},
            )
        )


async def state_of(store: Store, negotiation_id: str) -> Any:
    async with store.transaction(readonly=True) as tx:
        return await tx.negotiations.get(negotiation_id)


async def until(check: Any, seconds: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_transfer_request_before_the_finalized_ack_is_the_ack(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'provider.db'}")
    await store.migrate()
    await seed(store, tmp_path / "a.bin")

    async def dat() -> str:
        return "a DAT the stand-in consumer does not check"

    async with aiohttp.ClientSession(), consumer_peer() as (url, seen):
        cp = ControlPlane(
            store,
            DspClient(dat, ssl_context=None, policy=OutboundPolicy.from_config(["127.0.0.1"])),
            participant_id=PROVIDER,
            dsp_url="http://127.0.0.1:9",
            transfer_tokens=transfer_tokens(SigningKey.generate("EdDSA"), PROVIDER),
            dataplane_url="http://127.0.0.1:9/data",
        )
        await cp.start()
        try:
            offer = dict((await cp.catalog()).offers[0].offer)
            status, ack = await cp.negotiation_message(
                ContractRequestMessage(consumer_pid=CPID, offer=offer, callback_address=url).to_wire(),
                CONSUMER,
                {},
                None,
            )
            assert status == 201, ack
            pid = ack["providerPid"]

            async def agreed() -> bool:
                return (await state_of(store, pid)).state == "AGREED"

            await until(agreed)
            await cp.negotiation_message(
                ContractAgreementVerificationMessage(provider_pid=pid, consumer_pid=CPID).to_wire(),
                CONSUMER,
                {},
                pid,
            )

            async def event_dropped() -> bool:
                return any(p.endswith("/events") for p in seen)

            await until(event_dropped)
            row = await state_of(store, pid)
            assert row.state == "FINALIZING", row.state  # its acknowledgement is lost

            # the consumer, FINALIZED on its side, asks for a transfer under the agreement
            status, process = await cp.transfer_message(
                TransferRequestMessage(
                    consumer_pid=TPID, agreement_id=row.agreement_id, format=PULL, callback_address=url
                ).to_wire(),
                CONSUMER,
                None,
            )
            assert status == 201, process
            assert (await state_of(store, pid)).state == "FINALIZED"
        finally:
            await cp.stop()
            await store.close()

"""Two provider replicas (one participant, one shared store, one public data plane URL) serve
one transfer: uses are counted exactly across both, each signs its own receipt chain, and either
replica hands the consumer every chain's receipts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import DataSpace, negotiate, offer_asset
from test_transfer_e2e import start

from connector.dataplane.receipts import ReceiptVerifier, certified_key
from connector.http.tls import client_context

pytestmark = pytest.mark.integration
CONTENT = b"k,v\n" + b"".join(f"{i},{i * 3}\n".encode() for i in range(4000))


def test_two_replicas_count_exactly_and_share_their_receipts(space: DataSpace) -> None:
    store = f"sqlite:///{space.root / 'replicated.db'}"
    a = space.connector("repA", roles=("provider",), store=store)
    b = space.connector(
        "repB",
        roles=("provider",),
        store=store,
        participant_dir=a.directory,
        dataplane_public_url=f"https://127.0.0.1:{a.data_port}",
    )
    consumer = space.connector("repcons", roles=("consumer",))
    offer = offer_asset(
        a,
        asset_id="urn:asset:replicated-data",
        content=CONTENT,
        contract={"template": "n-times-usage", "params": {"max": "4"}},
    )
    n = negotiate(consumer, a, offer)
    assert n["state"] == "FINALIZED", n
    t = start(consumer, n["agreementId"])
    token = t["endpointProperties"]["authorization"]
    path = t["endpoint"].split("/", 3)[3]  # data/<transfer>
    replicas = [f"https://127.0.0.1:{a.data_port}", f"https://127.0.0.1:{b.data_port}"]
    ssl = client_context(consumer.directory / "ca.crt")

    async def go() -> tuple[list[tuple[int, str, int, bytes]], list[str]]:
        seen = []
        async with aiohttp.ClientSession() as http:
            for i in range(5):  # alternating replicas: 4 permits, then the 5th is denied
                async with http.get(
                    f"{replicas[i % 2]}/{path}", ssl=ssl, headers={"Authorization": f"Bearer {token}"}
                ) as r:
                    seen.append(
                        (
                            r.status,
                            r.headers.get("X-Receipt-Chain", ""),
                            int(r.headers["X-Receipt-Seq"]),
                            await r.read(),
                        )
                    )
            await asyncio.sleep(1.6)  # every replica signs its pending responses within ~1.25 s
            async with http.get(
                f"{replicas[1]}/{path}/receipts", ssl=ssl, headers={"Authorization": f"Bearer {token}"}
            ) as r:
                receipts = (await r.json())["receipts"]
        return seen, receipts

    seen, receipts = asyncio.run(go())
    assert [s for s, *_ in seen] == [200, 200, 200, 200, 403], [(s, b[:100]) for s, _, _, b in seen]
    assert b"use number 5 (4 completed)" in seen[4][3]
    chains = {c for _, c, _, _ in seen}
    assert len(chains) == 2 and "" not in chains  # each replica its own named chain
    key = certified_key(
        receipts[0], ca=_ca(consumer.directory), provider_id=a.participant_id, now=__import__("time").time()
    )
    v = ReceiptVerifier(
        key, transfer_id=t["providerPid"], agreement_id=n["agreementId"], issuer=a.participant_id
    )
    for _, chain, seq, body in seen:
        v.add_body(seq, body, chain)
    coverage = v.verify(receipts)  # replica B handed out replica A's receipts too
    assert coverage.bytes == sum(len(body) for *_, body in seen)


def _ca(directory: Path) -> Any:
    from cryptography import x509

    return x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())

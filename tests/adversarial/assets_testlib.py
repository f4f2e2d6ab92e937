"""Helpers of the asset tests (issue 9): start a pull transfer and pull through the provider's
data plane, as a consumer's own client would (the EDR's endpoint and token)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector

from connector.http.tls import client_context


def start_transfer(consumer: Connector, agreement_id: str, timeout: float = 20) -> dict[str, Any]:
    status, t = consumer.api("POST", "/api/transfers", {"agreementId": agreement_id})
    assert status == 201, t
    deadline = time.monotonic() + timeout
    while t["state"] not in ("STARTED", "TERMINATED") and time.monotonic() < deadline:
        time.sleep(0.05)
        status, t = consumer.api("GET", f"/api/transfers/{t['id']}")
        assert status == 200, t
    assert t["state"] == "STARTED", t
    return t


def pull(consumer: Connector, transfer: dict[str, Any]) -> tuple[int, bytes]:
    """One GET of the transfer's data: (status, body)."""
    ssl = client_context(consumer.directory / "ca.crt") if consumer.tls else None

    async def go() -> tuple[int, bytes]:
        token = transfer["endpointProperties"]["authorization"]
        async with (
            aiohttp.ClientSession() as http,
            http.get(transfer["endpoint"], ssl=ssl, headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            return r.status, await r.read()

    return asyncio.run(go())

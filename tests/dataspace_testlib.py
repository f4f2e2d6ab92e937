"""The loopback data space of connector.devspace, with every DSP message on the wire validated
against the official schemas (the integration tests fail on any violation)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from connector import devspace
from connector.devspace import Connector, cli, free_port, negotiate, offer_asset, wait_final
from connector.identity.client import DatClient, ParticipantIdentity

DSP_SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "dsp" / "schemas"

__all__ = [
    "Connector",
    "DataSpace",
    "admin",
    "cli",
    "free_port",
    "fresh_dat",
    "negotiate",
    "offer_asset",
    "wait_final",
    "wait_transfer",
]


class DataSpace(devspace.DataSpace):
    def __init__(self, root: Path, *, tls: bool = True) -> None:
        super().__init__(root, tls=tls, wire_schemas=DSP_SCHEMAS)


def wait_transfer(c: Connector, tid: str, states: set[str], timeout: float = 20) -> dict[str, Any]:
    """The transfer once in one of ``states`` (or as it is when ``timeout`` runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        status, t = c.api("GET", f"/api/transfers/{tid}")
        assert status == 200, t
        if t["state"] in states or time.monotonic() > deadline:
            return dict(t)
        time.sleep(0.05)


def admin(space: devspace.DataSpace, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """The authority's admin API, as its operator uses it."""
    token = (space.authority.directory / "admin.token").read_text().strip()
    req = urllib.request.Request(
        space.authority.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def fresh_dat(space: devspace.DataSpace, c: Connector) -> str:
    """A DAT of ``c``'s participant from the data space's authority."""

    async def go() -> str:
        async with aiohttp.ClientSession() as http:
            client = await DatClient.discover(
                http, space.authority.url, ParticipantIdentity.load(c.directory)
            )
            return await client.token()

    return asyncio.run(go())
